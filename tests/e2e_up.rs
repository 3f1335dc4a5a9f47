//! End to end, the way a user meets SensorFleet: `sensorfleet up` on free ports with a
//! temporary data dir, readings published with Debian's `mosquitto_pub`, and every REST
//! endpoint, the WebSocket feed, a threshold alert's lifecycle, the dead-letter counts and
//! a restart checked from the outside.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use sensorfleet::http::HttpClient;
use sensorfleet_model::reading::format_ts;
use serde_json::Value;
use support::hostile::{self, Outcome};
use support::{Publish, Up, eventually, require_tool};

const FLEET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lab.yaml");

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn reading(device: &str, ts_ms: i64, celsius: f64) -> String {
    format!(
        r#"{{"device_id":"{device}","device_type":"temperature_sensor","location":"Lab","timestamp":"{}","temperature_celsius":{celsius},"temperature_fahrenheit":{},"meta":{{"battery_level":87,"signal_strength":-61}}}}"#,
        format_ts(ts_ms),
        celsius * 9.0 / 5.0 + 32.0
    )
}

async fn get_json(client: &mut HttpClient, path: &str) -> (u16, Value) {
    let response = client
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (response.status, response.json())
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn alerts_of(client: &mut HttpClient, device: &str) -> Vec<Value> {
    let (_, body) = get_json(client, &format!("/api/alerts?device_id={device}")).await;
    body["alerts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_platform_end_to_end() {
    if !require_tool("mosquitto_pub", "mosquitto-clients") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut up = Up::start(dir.path(), &["--no-simulator", "-f", FLEET]).await;
    let mut api = up.client();
    let base = now_ms() - 60_000;

    // Normal readings, one connection, in order.
    let normal: Vec<String> = (0..10)
        .map(|i| reading("lab-temp-1", base + i * 1000, 20.0 + i as f64 * 0.1))
        .collect();
    up.publish_lines("sensors/temperature_sensor/lab-temp-1", &normal);

    let latest = eventually(10, "lab-temp-1's latest reading", || {
        let mut api = up.client();
        async move {
            let (status, body) = get_json(&mut api, "/api/device/lab-temp-1/latest").await;
            (status == 200 && body["temperature"] == 20.9).then_some(body)
        }
    })
    .await;
    assert_eq!(latest["device_id"], "lab-temp-1");
    assert_eq!(latest["temperature_celsius"], 20.9);
    assert_eq!(latest["meta_battery_level"], 87.0);
    assert_eq!(latest["humidity"], Value::Null);
    assert_eq!(latest["timestamp"], format_ts(base + 9000));

    // What the processor computes, under its own names: the main field's moving
    // average and window statistics.
    let computed = eventually(10, "lab-temp-1's window statistics", || {
        let mut api = up.client();
        async move {
            let (_, body) = get_json(&mut api, "/api/device/lab-temp-1/latest").await;
            (body["window"]["count"] == 10).then_some(body)
        }
    })
    .await;
    assert_eq!(computed["main_field"], "temperature_celsius");
    let near =
        |value: &Value, expected: f64| (value.as_f64().unwrap_or(f64::NAN) - expected).abs() < 1e-6;
    assert!(near(&computed["window"]["mean"], 20.45), "{computed}");
    assert!(near(&computed["window"]["min"], 20.0), "{computed}");
    assert!(near(&computed["window"]["max"], 20.9), "{computed}");
    assert!(
        near(&computed["window"]["stddev"], 0.287_228_132),
        "{computed}"
    );
    assert!(near(&computed["moving_average"], 20.45), "{computed}");

    // History: every field of every reading, ascending.
    let (status, history) = get_json(
        &mut api,
        "/api/device/lab-temp-1/history?hours=1&field=temperature_celsius",
    )
    .await;
    assert_eq!(status, 200);
    let data = history["data"].as_array().expect("data");
    assert_eq!(data.len(), 10, "{history}");
    assert_eq!(data[0]["field"], "temperature_celsius");
    assert_eq!(data[0]["value"], 20.0);
    assert_eq!(data[0]["timestamp"], format_ts(base));
    let (_, all_fields) = get_json(&mut api, "/api/device/lab-temp-1/history?hours=1").await;
    assert_eq!(
        all_fields["data"].as_array().map(Vec::len),
        Some(40),
        "4 fields × 10 readings"
    );

    // Devices: declared ones, with health once the processor reports.
    let devices = eventually(10, "a health score for lab-temp-1", || {
        let mut api = up.client();
        async move {
            let (_, body) = get_json(&mut api, "/api/devices").await;
            let has_health = body["devices"]
                .as_array()?
                .iter()
                .any(|d| d["device_id"] == "lab-temp-1" && d["health_score"].is_number());
            has_health.then_some(body)
        }
    })
    .await;
    let listed = devices["devices"].as_array().expect("devices");
    assert_eq!(listed.len(), 3, "the three declared devices: {devices}");
    let one = listed
        .iter()
        .find(|d| d["device_id"] == "lab-temp-1")
        .expect("lab-temp-1");
    assert_eq!(one["device_type"], "temperature_sensor");
    assert_eq!(one["location"], "Lab");
    assert_eq!(one["status"], "online");
    let score = one["health_score"].as_f64().expect("score");
    assert!((0.0..=1.0).contains(&score));
    let two = listed
        .iter()
        .find(|d| d["device_id"] == "lab-temp-2")
        .expect("lab-temp-2");
    assert_eq!(two["status"], "unknown", "declared, never reported");
    assert_eq!(two["location"], "Lab, bench 2");

    // WebSocket: subscribe to lab-temp-2, publish, receive it.
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/ws?device=lab-temp-2", up.http))
            .await
            .expect("WebSocket connects");
    up.publish(
        "sensors/temperature_sensor/lab-temp-2",
        &reading("lab-temp-2", base + 1000, 19.5),
    );
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a frame within 10 s")
        .expect("stream open")
        .expect("a valid frame");
    let frame: Value = serde_json::from_str(frame.to_text().expect("text")).expect("JSON frame");
    assert_eq!(frame["type"], "reading");
    assert_eq!(frame["data"]["device_id"], "lab-temp-2");
    assert_eq!(frame["data"]["fields"]["temperature_celsius"], 19.5);

    // Threshold alert: 35 °C for 2 s fires once; 29.5 holds (hysteresis); 28 resolves.
    // One mosquitto_pub each, so they arrive in order.
    for (offset, value) in [
        (20_000, 35.0),
        (21_000, 35.5),
        (22_500, 36.0),
        (23_000, 36.5),
    ] {
        up.publish(
            "sensors/temperature_sensor/lab-temp-1",
            &reading("lab-temp-1", base + offset, value),
        );
    }
    let fired = eventually(10, "the lab-too-hot alert to fire", || {
        let mut api = up.client();
        async move {
            let alerts = alerts_of(&mut api, "lab-temp-1").await;
            alerts.into_iter().find(|a| a["state"] == "firing")
        }
    })
    .await;
    assert_eq!(fired["alert_type"], "threshold");
    assert_eq!(fired["rule"], "lab-too-hot");
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["threshold"], "10-30");
    assert_eq!(
        fired["value"], 36.0,
        "fires on the reading that completes `for`"
    );
    assert_eq!(fired["timestamp"], format_ts(base + 22_500));
    assert_eq!(fired["started_at"], format_ts(base + 20_000));
    up.publish(
        "sensors/temperature_sensor/lab-temp-1",
        &reading("lab-temp-1", base + 24_000, 29.5),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alerts = alerts_of(&mut api, "lab-temp-1").await;
    assert_eq!(
        alerts.len(),
        1,
        "fired once, not once per reading: {alerts:?}"
    );
    assert_eq!(
        alerts[0]["state"], "firing",
        "29.5 is inside the hysteresis band"
    );
    let (_, stats) = get_json(&mut api, "/api/dashboard/stats").await;
    eventually(5, "the dashboard to count the firing alert", || {
        let mut api = up.client();
        async move {
            let (_, stats) = get_json(&mut api, "/api/dashboard/stats").await;
            (stats["total_alerts"] == 1).then_some(())
        }
    })
    .await;
    assert!(stats["active_devices"].as_u64().is_some(), "{stats}");
    up.publish(
        "sensors/temperature_sensor/lab-temp-1",
        &reading("lab-temp-1", base + 25_000, 28.0),
    );
    let resolved = eventually(10, "the alert to resolve", || {
        let mut api = up.client();
        async move {
            let alerts = alerts_of(&mut api, "lab-temp-1").await;
            alerts.into_iter().find(|a| a["state"] == "resolved")
        }
    })
    .await;
    assert_eq!(
        resolved["id"], fired["id"],
        "the resolved alert is the same alert"
    );
    assert_eq!(alerts_of(&mut api, "lab-temp-1").await.len(), 1);

    // Acknowledge and clear, by hand, on a second episode.
    for (offset, value) in [(30_000, 40.0), (32_000, 40.0)] {
        up.publish(
            "sensors/temperature_sensor/lab-temp-1",
            &reading("lab-temp-1", base + offset, value),
        );
    }
    let second = eventually(10, "a second firing alert", || {
        let mut api = up.client();
        async move {
            let (_, body) = get_json(&mut api, "/api/alerts?state=firing").await;
            body["alerts"].as_array()?.first().cloned()
        }
    })
    .await;
    assert_ne!(second["id"], fired["id"], "a new episode is a new alert");
    let id = second["id"].as_str().expect("id").replace('/', "%2F");
    let acked = api
        .post(&format!("/api/alerts/{id}/ack"))
        .await
        .expect("ack");
    assert_eq!(acked.status, 200);
    assert_eq!(acked.json()["state"], "acknowledged");
    let cleared = api
        .post(&format!("/api/alerts/{id}/clear"))
        .await
        .expect("clear");
    assert_eq!(cleared.status, 200);
    assert_eq!(cleared.json()["state"], "resolved");
    let again = api
        .post(&format!("/api/alerts/{id}/clear"))
        .await
        .expect("clear again");
    assert_eq!(again.status, 404, "nothing active to clear any more");
    assert_eq!(again.json()["code"], "not_found");

    // Malformed and hostile payloads: dead-lettered with a reason, the stream unharmed.
    up.publish("sensors/temperature_sensor/lab-temp-3", "not json at all");
    up.publish(
        "sensors/temperature_sensor/lab-temp-3",
        r#"{"device_id":"lab-temp-3","temperature_celsius":NaN}"#,
    );
    up.publish(
        "sensors/temperature_sensor/lab-temp-3",
        r#"{"temperature_celsius":21}"#,
    );
    up.publish(
        "sensors/temperature_sensor/lab-temp-3",
        r#"{"device_id":"someone-else","temperature_celsius":21}"#,
    );
    up.publish(
        "sensors/temperature_sensor/lab-temp-3",
        r#"{"device_id":"lab-temp-3","temperature_celsius":21,"timestamp":"2999-01-01T00:00:00Z"}"#,
    );
    up.publish(
        "sensors/temperature_sensor/lab-temp-3",
        &format!(
            r#"{{"device_id":"lab-temp-3","pad":"{}"}}"#,
            "x".repeat(20_000)
        ),
    );
    up.publish(
        "sensors/temperature_sensor/AA:BB:CC:DD:EE:03",
        &reading("AA:BB:CC:DD:EE:03", base + 1000, 22.0),
    );
    let metrics = eventually(10, "the rejects to be counted", || {
        let mut api = up.client();
        async move {
            let text = String::from_utf8(api.get("/metrics").await.ok()?.body).ok()?;
            (metric(
                &text,
                "sensorfleet_bridge_rejects_total{reason=\"too_large\"}",
            ) >= 1.0)
                .then_some(text)
        }
    })
    .await;
    for reason in [
        "not_json",
        "non_finite",
        "missing_device_id",
        "topic_mismatch",
        "future_timestamp",
        "too_large",
    ] {
        let line = format!("sensorfleet_bridge_rejects_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&metrics, &line), 1.0, "{reason} counted once");
    }
    assert!(metric(&metrics, "sensorfleet_bridge_readings_accepted_total") >= 18.0);
    assert!(metrics.contains("sensorfleet_api_requests_total"));
    let mac = eventually(10, "the reading published behind the rejects", || {
        let mut api = up.client();
        async move {
            let (status, body) = get_json(&mut api, "/api/device/AA:BB:CC:DD:EE:03/latest").await;
            (status == 200).then_some(body)
        }
    })
    .await;
    assert_eq!(mac["temperature"], 22.0);

    // Errors: JSON with the right status.
    let (status, body) = get_json(&mut api, "/api/device/nope/latest").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = get_json(&mut api, "/api/device/lab-temp-1/history?hours=abc").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_parameter"))
    );
    assert!(body["error"].as_str().unwrap_or_default().contains("hours"));
    let (status, _) = get_json(&mut api, "/api/device/lab-temp-1/history?hours=-1").await;
    assert_eq!(status, 400);
    let (status, _) = get_json(&mut api, "/api/device/bad%20id/latest").await;
    assert_eq!(status, 400);
    let (status, _) = get_json(&mut api, "/api/devices?status=sleeping").await;
    assert_eq!(status, 400);

    // Health, OpenAPI, dashboard.
    let (status, health) = get_json(&mut api, "/health/system").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["devices"]["total"], 3);
    let (_, services) = get_json(&mut api, "/health/services").await;
    let names: Vec<&str> = services["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for name in ["time_series", "registry", "cache", "mqtt", "processor"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let (status, devices_health) = get_json(&mut api, "/health/devices").await;
    assert_eq!(status, 200);
    assert_eq!(devices_health["online"], 3);
    let (status, openapi) = get_json(&mut api, "/api/openapi.json").await;
    assert_eq!(status, 200);
    assert!(openapi["paths"]["/api/device/{id}/history"].is_object());
    let index = api.get("/").await.expect("dashboard");
    assert_eq!(index.status, 200);
    assert!(String::from_utf8_lossy(&index.body).contains("SensorFleet"));

    // Restart: history and the alert history survive.
    let status = up.stop();
    assert!(status.success(), "a clean shutdown exits 0");
    assert!(up.log_text().contains("SensorFleet stopped cleanly"));
    let up = Up::start(dir.path(), &["--no-simulator", "-f", FLEET]).await;
    let mut api = up.client();
    let (_, history) = get_json(
        &mut api,
        "/api/device/lab-temp-1/history?hours=1&field=temperature_celsius",
    )
    .await;
    assert_eq!(
        history["data"].as_array().map(Vec::len),
        Some(18),
        "{history}"
    );
    let alerts = alerts_of(&mut api, "lab-temp-1").await;
    assert_eq!(
        alerts.len(),
        2,
        "both episodes are in the history after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_alert_survives_a_restart_without_refiring() {
    if !require_tool("mosquitto_pub", "mosquitto-clients") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut up = Up::start(dir.path(), &["--no-simulator", "-f", FLEET]).await;
    let base = now_ms() - 30_000;
    for (offset, value) in [(0, 33.0), (3_000, 34.0)] {
        up.publish(
            "sensors/temperature_sensor/lab-temp-2",
            &reading("lab-temp-2", base + offset, value),
        );
    }
    let fired = eventually(10, "the alert to fire", || {
        let mut api = up.client();
        async move {
            alerts_of(&mut api, "lab-temp-2")
                .await
                .into_iter()
                .find(|a| a["state"] == "firing")
        }
    })
    .await;
    assert!(up.stop().success());

    let up = Up::start(dir.path(), &["--no-simulator", "-f", FLEET]).await;
    assert!(
        up.log_text().contains("restored=1"),
        "rule state restored: {}",
        up.log_text()
    );
    up.publish(
        "sensors/temperature_sensor/lab-temp-2",
        &reading("lab-temp-2", base + 5_000, 35.0),
    );
    up.publish(
        "sensors/temperature_sensor/lab-temp-2",
        &reading("lab-temp-2", base + 6_000, 20.0),
    );
    let resolved = eventually(10, "the restored alert to resolve", || {
        let mut api = up.client();
        async move {
            alerts_of(&mut api, "lab-temp-2")
                .await
                .into_iter()
                .find(|a| a["state"] == "resolved")
        }
    })
    .await;
    assert_eq!(
        resolved["id"], fired["id"],
        "the alert from before the restart resolves; nothing refired"
    );
    let mut api = up.client();
    assert_eq!(alerts_of(&mut api, "lab-temp-2").await.len(), 1);
}

/// `--mqtt-url` points `up` at an external broker — Eclipse Mosquitto, started here on a
/// free port — and then starts none of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_uses_an_external_mosquitto_broker() {
    if !require_tool("mosquitto", "mosquitto")
        || !require_tool("mosquitto_pub", "mosquitto-clients")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = support::free_addr().port();
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"),
    )
    .expect("write mosquitto.conf");
    let broker = support::Broker::start(&config, port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let up = Up::start(
        dir.path(),
        &["--no-simulator", "-f", FLEET, "--mqtt-url", &url],
    )
    .await;
    assert!(
        !up.log_text()
            .contains("embedded MQTT ingest endpoint listening"),
        "no embedded MQTT endpoint with --mqtt-url: {}",
        up.log_text()
    );
    let ts = now_ms() - 1000;
    broker.publish(
        "sensors/temperature_sensor/lab-temp-3",
        &reading("lab-temp-3", ts, 23.25),
    );
    let latest = eventually(10, "the reading sent through Mosquitto", || {
        let mut api = up.client();
        async move {
            let (status, body) = get_json(&mut api, "/api/device/lab-temp-3/latest").await;
            (status == 200).then_some(body)
        }
    })
    .await;
    assert_eq!(latest["temperature"], 23.25);
    assert_eq!(latest["timestamp"], format_ts(ts));
    let (_, services) = get_json(&mut up.client(), "/health/services").await;
    let mqtt = services["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "mqtt").cloned())
        .expect("an mqtt entry");
    assert_eq!(
        (mqtt["backend"].as_str(), mqtt["status"].as_str()),
        (Some("external"), Some("up"))
    );
}

/// The burst of issue 9: 8 publishers at QoS 1 send 80,000 readings each as fast as `up`
/// takes them. Every reading a publisher had acknowledged is in the SQLite store the
/// moment the publishers are done, because the embedded ingest endpoint acknowledges only
/// what the bridge has stored: stored == published. Bounded: the publishers are killed
/// (and the test fails) after 300 s: a bound, not a timing (the burst took 96.6 s alone on
/// 2026-12-02, 128 s on 2026-12-03, and over 150 s beside this file's other tests under
/// load; its time is BENCHMARKS.md's to record).
///
/// Each publisher's 80,000 lines go through two `mosquitto_pub -l` runs of 40,000, one
/// after the other: mosquitto_pub 2.0.11 numbers messages with a 16-bit id and, in `-l`
/// mode, disconnects (exit 0) when the PUBACK for the id of its *last* line arrives —
/// after 80,000 lines that id recurs at line 14,465, and the other 65,535 queued lines
/// are silently dropped. That client bug, more than the broker, probably explains the
/// 115,808 of 640,000 issue 9 found stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stores_every_acknowledged_reading_of_a_640k_burst() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    if !require_tool("mosquitto_pub", "mosquitto-clients") {
        return;
    }
    const PUBLISHERS: usize = 8;
    const PER_PUBLISHER: i64 = 80_000;
    // Below mosquitto_pub's 16-bit message id range, see above.
    const PER_RUN: i64 = 40_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = dir.path().join("burst.yaml");
    let devices: String = (0..PUBLISHERS)
        .map(|p| format!("    - id: burst-{p}\n"))
        .collect();
    std::fs::write(
        &fleet,
        format!(
            "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\nmetadata:\n  name: burst\nspec:\n  deviceType: temperature_sensor\n  location: Lab\n  publishInterval: 1s\n  offlineAfter: 1h\n  devices:\n{devices}"
        ),
    )
    .expect("write the burst fleet");
    let mut up = Up::start(
        dir.path(),
        &["--no-simulator", "-f", &fleet.display().to_string()],
    )
    .await;
    let port = up.mqtt.port().to_string();
    // One reading per millisecond per device, ending 10 s ago: recent, and every
    // (device, timestamp) distinct, so the store keeps each one.
    let base = now_ms() - PER_PUBLISHER - 10_000;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let lanes: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let port = port.clone();
            std::thread::spawn(move || {
                let device = format!("burst-{p}");
                for run in 0..PER_PUBLISHER / PER_RUN {
                    let mut child = Command::new("mosquitto_pub")
                        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-l"])
                        .args(["-t", &format!("sensors/temperature_sensor/{device}")])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("start mosquitto_pub -l");
                    let stdin = child.stdin.take().expect("stdin");
                    let lines = (run * PER_RUN)..((run + 1) * PER_RUN);
                    let device_id = device.clone();
                    let writer = std::thread::spawn(move || {
                        let mut stdin = std::io::BufWriter::with_capacity(1 << 16, stdin);
                        for i in lines {
                            let line =
                                reading(&device_id, base + i, 20.0 + (i % 100) as f64 / 10.0);
                            // A publisher killed at the deadline closes the pipe.
                            if writeln!(stdin, "{line}").is_err() {
                                return;
                            }
                        }
                        let _ = stdin.flush();
                    });
                    let status = loop {
                        if let Some(status) = child.try_wait().expect("wait for mosquitto_pub") {
                            break Some(status);
                        }
                        if Instant::now() > deadline {
                            let _ = child.kill();
                            let _ = child.wait();
                            break None;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    };
                    writer.join().expect("writer thread");
                    if !status.is_some_and(|s| s.success()) {
                        return Err(format!("{device} run {run}: {status:?}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    let results: Vec<Result<(), String>> = lanes
        .into_iter()
        .map(|lane| lane.join().expect("publisher lane"))
        .collect();
    let elapsed = started.elapsed();
    assert!(
        results.iter().all(Result::is_ok),
        "every publisher finished, all acknowledged, within 300 s: {results:?}; log:\n{}",
        up.log_text()
    );
    let published = PUBLISHERS as u64 * PER_PUBLISHER as u64;
    let store = sensorfleet_backends::sqlite::SqliteStore::open(&up.data_dir)
        .await
        .expect("open the store");
    let stored = store.total_readings().await.expect("count the readings");
    eprintln!(
        "burst: {published} readings acknowledged in {:.1} s ({:.0} readings/s); {stored} stored",
        elapsed.as_secs_f64(),
        published as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(stored, published, "stored == published");
    assert!(up.stop().success());
}

/// Issue 9's hostile corpus (`support/hostile.rs`) through `up`'s embedded endpoint: every
/// case counted under its reason, the valid odd ones stored and served, the process the
/// same, and a declared device's fresh reading still reaches `/latest` behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_dead_letters_a_hostile_corpus_and_goes_on() {
    if !require_tool("mosquitto_pub", "mosquitto-clients") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut up = Up::start(dir.path(), &["--no-simulator", "-f", FLEET]).await;
    let cases = hostile::corpus("up", "lab-temp-2");
    for case in &cases {
        up.publish_bytes(&case.topic, &case.payload);
    }
    let fresh = now_ms() - 1_000;
    up.publish(
        "sensors/temperature_sensor/lab-temp-1",
        &reading("lab-temp-1", fresh, 23.5),
    );
    let expected = hostile::expected_rejects(&cases);
    let total: usize = expected.values().sum();
    // Poll until every case is counted (or 30 s), then compare reason by reason.
    let counted = |text: &str| -> BTreeMap<&'static str, usize> {
        expected
            .keys()
            .map(|r| {
                let line = format!("sensorfleet_bridge_rejects_total{{reason=\"{r}\"}}");
                (*r, metric(text, &line) as usize)
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let text = match up.client().get("/metrics").await {
            Ok(response) => String::from_utf8_lossy(&response.body).into_owned(),
            Err(_) => String::new(),
        };
        if counted(&text).values().sum::<usize>() >= total || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(counted(&metrics), expected, "rejects counted per reason");
    let mut api = up.client();
    for case in cases.iter().filter(|c| c.outcome == Outcome::Stored) {
        let path = format!("/api/device/{}/latest", case.device_id);
        eventually(30, &format!("{} in /latest", case.name), || {
            let mut api = up.client();
            let path = path.clone();
            async move { (api.get(&path).await.ok()?.status == 200).then_some(()) }
        })
        .await;
    }
    let (status, latest) = get_json(&mut api, "/api/device/lab-temp-1/latest").await;
    assert_eq!(status, 200);
    assert_eq!(latest["temperature"], 23.5, "{latest}");
    assert!(up.running(), "up restarted or exited:\n{}", up.log_text());
}

/// `sensorfleet credentials` for `up`'s data dir: the device's password.
fn credential(up: &Up, device: &str, rotate: bool) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sensorfleet"));
    command.args(["credentials", "--device", device, "--data-dir"]);
    command.arg(&up.data_dir);
    if rotate {
        command.arg("--rotate");
    }
    let output = command.output().expect("run sensorfleet credentials");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("device_id,password"));
    let (id, password) = lines.next().and_then(|l| l.split_once(',')).expect("a row");
    assert_eq!(id, device);
    password.to_owned()
}

/// `mosquitto_pub` of one reading as `login` (none: anonymous); its output when refused.
fn publish_as(
    up: &Up,
    login: Option<(&str, &str)>,
    topic: &str,
    payload: &str,
) -> Result<(), String> {
    let mut command = support::mosquitto_pub(up.mqtt_port());
    command.args(["-t", topic, "-m", payload]);
    if let Some((username, password)) = login {
        command.args(["-u", username, "-P", password]);
    }
    let output = command.output().expect("run mosquitto_pub");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_device_auth_admits_each_device_to_its_own_topic_only() {
    if !require_tool("mosquitto_pub", "mosquitto-clients") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let up = Up::start(dir.path(), &["--device-auth", "-f", FLEET]).await;
    let topic = "sensors/temperature_sensor/lab-temp-1";
    let base = now_ms() - 10_000;

    // Anonymous, and a wrong password: refused at CONNECT.
    let anonymous = publish_as(&up, None, topic, &reading("lab-temp-1", base, 20.0));
    assert!(
        anonymous
            .as_ref()
            .is_err_and(|e| e.contains("not authorised")),
        "{anonymous:?}"
    );
    let guess = publish_as(
        &up,
        Some(("lab-temp-1", "guess")),
        topic,
        &reading("lab-temp-1", base, 20.0),
    );
    assert!(guess.is_err(), "a wrong password is refused");

    // Its own password, its own topic: stored.
    let password = credential(&up, "lab-temp-1", false);
    publish_as(
        &up,
        Some(("lab-temp-1", &password)),
        topic,
        &reading("lab-temp-1", base + 1_000, 21.5),
    )
    .expect("the device's own topic");
    let stored = eventually(10, "lab-temp-1's reading", || {
        let mut api = up.client();
        async move {
            let (status, body) = get_json(&mut api, "/api/device/lab-temp-1/latest").await;
            (status == 200).then_some(body)
        }
    })
    .await;
    assert_eq!(stored["temperature_celsius"], 21.5);

    // Another device's topic with lab-temp-1's password: the connection is closed and
    // nothing is stored for lab-temp-2. (mosquitto_pub may or may not see the close
    // before it exits, so what counts is what the store holds.)
    let _ = publish_as(
        &up,
        Some(("lab-temp-1", &password)),
        "sensors/temperature_sensor/lab-temp-2",
        &reading("lab-temp-2", base + 2_000, 99.0),
    );
    // A marker on its own topic after it: once it is stored, the forged one would be too.
    publish_as(
        &up,
        Some(("lab-temp-1", &password)),
        topic,
        &reading("lab-temp-1", base + 3_000, 22.5),
    )
    .expect("the device's own topic again");
    eventually(10, "the marker reading", || {
        let mut api = up.client();
        async move {
            let (_, body) = get_json(&mut api, "/api/device/lab-temp-1/latest").await;
            (body["temperature_celsius"] == 22.5).then_some(())
        }
    })
    .await;
    let (status, _) = get_json(&mut up.client(), "/api/device/lab-temp-2/latest").await;
    assert_eq!(status, 404, "nothing was stored for lab-temp-2");

    // A rotation: the old password stops working at the next connect, the new one works,
    // without restarting up.
    let rotated = credential(&up, "lab-temp-1", true);
    assert_ne!(rotated, password);
    let old = publish_as(
        &up,
        Some(("lab-temp-1", &password)),
        topic,
        &reading("lab-temp-1", base + 4_000, 23.0),
    );
    assert!(old.is_err(), "the rotated-out password is refused");
    publish_as(
        &up,
        Some(("lab-temp-1", &rotated)),
        topic,
        &reading("lab-temp-1", base + 5_000, 23.5),
    )
    .expect("the new password");
    // No password in up's log.
    let log = up.log_text();
    assert!(
        !log.contains(&password) && !log.contains(&rotated),
        "a password in the log"
    );
}
