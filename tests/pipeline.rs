//! The production pipeline, all real, each role its own process:
//! `mosquitto_pub` and `sensorfleet simulate` → Mosquitto → `sensorfleet bridge` → Kafka →
//! `sensorfleet processor` → InfluxDB + Redis + PostgreSQL → `sensorfleet api`,
//! checked through the REST API, directly in InfluxDB (HTTP), Redis (`redis-cli`) and
//! Kafka (`kcat`). Then the crash test: kill -9 the processor and the bridge in the
//! middle of a steady stream and find every reading stored exactly once.
//!
//! Needs `scripts/testenv up` and `eval "$(scripts/testenv env)"` (make test does both).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::fleet::{
    acknowledge, alerts_of, base_ts_ms, fleet, hot_rule, influx_count, reading, too_hot_rule,
};
use support::stack::Stack;
use support::{Publish, eventually};

/// Publishes lines with one `mosquitto_pub -l` at QoS 1, `per_tick` lines every `tick`.
fn publish_paced(
    port: u16,
    client_id: &str,
    topic: &str,
    lines: &[String],
    per_tick: usize,
    tick: Duration,
) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-i", client_id, "-l", "-t", topic])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run mosquitto_pub -l");
    let mut stdin = child.stdin.take().expect("stdin");
    for chunk in lines.chunks(per_tick.max(1)) {
        for line in chunk {
            writeln!(stdin, "{line}").expect("write to mosquitto_pub");
        }
        stdin.flush().expect("flush");
        std::thread::sleep(tick);
    }
    drop(stdin);
    assert!(child.wait().expect("mosquitto_pub").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_to_api_through_every_real_backend() {
    let Some(stack) = Stack::start("pipe") else {
        return;
    };
    let base = base_ts_ms();
    let manual: Vec<String> = (1..=2).map(|i| format!("{}-m{i}", stack.run)).collect();
    let simulated: Vec<String> = (1..=4).map(|i| format!("{}-s{i}", stack.run)).collect();
    let manual_fleet = stack.manifest(
        "manual.yaml",
        &format!(
            "{}---\n{}",
            fleet("manual", &manual),
            too_hot_rule("too-hot", "manual")
        ),
    );
    let sim_fleet = stack.manifest("sim.yaml", &fleet("simulated", &simulated));
    stack.apply(&[&manual_fleet, &sim_fleet]);

    let processor = stack.role("processor", &[]);
    let bridge = stack.role("bridge", &["--connections", "2"]);
    let api = stack.role("api", &[]);
    processor.ready(60).await;
    bridge.ready(60).await;
    api.ready(60).await;

    // Readings by hand: three normal, two too hot (fires), acknowledged through the
    // API (which asks the processor over Kafka), then back to normal (resolves).
    let device = &manual[0];
    let topic = format!("sensors/temperature_sensor/{device}");
    let values = [21.0, 22.0, 23.0, 35.0, 36.0, 24.0, 22.5];
    let publish = |range: std::ops::Range<usize>| {
        for i in range {
            stack
                .broker
                .publish(&topic, &reading(device, base + i as i64 * 1000, values[i]));
        }
    };
    publish(0..5);
    let (api_ref, device_id) = (&api, device.as_str());
    let firing = eventually(30, "the too-hot alert firing", || async move {
        let found = alerts_of(api_ref, device_id, |a| a["state"] == "firing").await?;
        found.into_iter().next()
    })
    .await;
    acknowledge(&api, firing["id"].as_str().expect("alert id")).await;
    publish(5..values.len());

    // Hostile and malformed payloads: dead-lettered, never stalling the stream.
    let bad = [
        ("sensors/temperature_sensor/x", "not json at all".to_owned()),
        (
            "sensors/temperature_sensor/other",
            reading(&manual[1], base, 20.0),
        ),
        (
            topic.as_str(),
            format!(
                r#"{{"device_id":"{device}","timestamp":"2026-05-29T10:30:00Z","temperature_celsius":NaN}}"#
            ),
        ),
        (topic.as_str(), r#"{"temperature_celsius":20}"#.to_owned()),
    ];
    for (bad_topic, payload) in &bad {
        stack.broker.publish(bad_topic, payload);
    }
    let after = format!("sensors/temperature_sensor/{}", manual[1]);
    stack
        .broker
        .publish(&after, &reading(&manual[1], base + 500, 19.5));

    // The simulator: 4 devices, 200 readings at QoS 1.
    let simulate = Command::new(env!("CARGO_BIN_EXE_sensorfleet"))
        .args(["simulate", "-f", &sim_fleet.display().to_string()])
        .args([
            "--mqtt-url",
            &format!("mqtt://127.0.0.1:{}", stack.mqtt_port),
        ])
        .args(["--rate", "400", "--limit", "200", "--dropout-rate", "0"])
        .output()
        .expect("run sensorfleet simulate");
    assert!(simulate.status.success(), "simulate failed");

    // The REST API sees the latest value, the whole history and the alert.
    let mut client = api.client();
    let latest = eventually(30, "the last manual reading in /latest", || {
        let mut client = api.client();
        let path = format!("/api/device/{device}/latest");
        async move {
            let response = client.get(&path).await.ok()?;
            (response.status == 200 && response.json()["timestamp"].as_str()?.starts_with("2026"))
                .then(|| response.json())
                .filter(|json| json["temperature_celsius"] == 22.5)
        }
    })
    .await;
    assert_eq!(latest["device_id"], device.as_str());
    let history = client
        .get(&format!(
            "/api/device/{device}/history?hours=2&field=temperature_celsius&resolution=raw"
        ))
        .await
        .expect("history");
    assert_eq!(
        history.status,
        200,
        "{}",
        String::from_utf8_lossy(&history.body)
    );
    let points = history.json()["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(points.len(), values.len(), "history: {points:?}");

    let alert = eventually(30, "the too-hot alert, resolved", || async move {
        let found = alerts_of(api_ref, device_id, |a| a["state"] == "resolved").await?;
        found.into_iter().next()
    })
    .await;
    let too_hot = alerts_of(&api, device, |a| a["rule"] == "too-hot")
        .await
        .expect("the alerts");
    assert_eq!(too_hot.len(), 1, "one alert, fired once: {too_hot:?}");

    // InfluxDB, read directly: the design's schema, every reading once.
    assert_eq!(
        influx_count(&stack, &format!("^{device}$")).await,
        values.len() as u64
    );
    let sim_count = eventually(30, "200 simulated readings in InfluxDB", || {
        let stack = &stack;
        let regex = format!("^{}-s", stack.run);
        async move {
            let n = influx_count(stack, &regex).await;
            (n == 200).then_some(n)
        }
    })
    .await;
    assert_eq!(sim_count, 200);
    let tags = stack
        .influx_query("SHOW TAG KEYS FROM temperature_sensor")
        .await;
    let tags = tags.to_string();
    assert!(
        tags.contains("device_id") && tags.contains("location"),
        "{tags}"
    );
    let fields = stack
        .influx_query("SHOW FIELD KEYS FROM temperature_sensor")
        .await
        .to_string();
    for field in [
        "temperature_celsius",
        "meta_battery_level",
        "meta_signal_strength",
    ] {
        assert!(fields.contains(field), "{field} missing from {fields}");
    }

    // Redis, read directly: latest values, the alert list, device metrics.
    let prefix = &stack.redis_prefix;
    let listed = stack.redis_cli(&["LRANGE", &format!("{prefix}alerts"), "0", "-1"]);
    assert!(
        listed.contains(alert["id"].as_str().expect("alert id")),
        "alert list in Redis: {listed}"
    );
    let health = eventually(30, "a health score in Redis", || {
        let key = format!("{prefix}device:{device}:health_score");
        let stack = &stack;
        async move {
            let value = stack.redis_cli(&["GET", &key]);
            value.trim().parse::<f64>().ok()
        }
    })
    .await;
    assert!((0.0..=1.0).contains(&health), "health {health}");

    // Kafka, read with kcat: readings keyed by device, rejects with their reason.
    let dead = stack.kafka_records("sensor-readings-dlq");
    assert_eq!(dead.len(), bad.len(), "dead letters: {dead:?}");
    for (_, headers, _) in &dead {
        assert!(headers.contains("reason="), "a reason header: {headers}");
    }
    let reasons: Vec<&str> = dead.iter().map(|(_, h, _)| h.as_str()).collect();
    for reason in [
        "not_json",
        "topic_mismatch",
        "non_finite",
        "missing_device_id",
    ] {
        assert!(
            reasons
                .iter()
                .any(|h| h.contains(&format!("reason={reason}"))),
            "{reason} among {reasons:?}"
        );
    }
    let readings = stack.kafka_records("sensor-readings");
    assert!(
        readings.iter().filter(|(key, _, _)| key == device).count() == values.len(),
        "keyed readings of {device} in Kafka"
    );
    // The reading after the bad ones arrived: the stream did not stall.
    assert_eq!(influx_count(&stack, &format!("^{}$", manual[1])).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_processor_then_bridge_loses_nothing_and_duplicates_nothing() {
    let Some(stack) = Stack::start("kill") else {
        return;
    };
    let base = base_ts_ms();
    let devices: Vec<String> = (1..=20).map(|i| format!("{}-d{i:02}", stack.run)).collect();
    let manifest = stack.manifest(
        "fleet.yaml",
        &format!(
            "{}---\n{}",
            fleet("crash", &devices),
            too_hot_rule("crash-hot", "crash")
        ),
    );
    stack.apply(&[&manifest]);
    let mut processor = stack.role("processor", &[]);
    let mut bridge = stack.role("bridge", &["--connections", "2"]);
    let api = stack.role("api", &[]);
    processor.ready(60).await;
    bridge.ready(60).await;
    api.ready(60).await;

    // 20 devices × 400 readings, 20 ms apart in device time (the pace they are sent
    // at, so no device looks silent); device 01 runs hot
    // from its 50th reading on, so its alert fires before the first kill and must not
    // fire again after the restarts.
    let per_device = 400;
    let mut lines = Vec::with_capacity(devices.len() * per_device);
    for i in 0..per_device {
        for (d, device) in devices.iter().enumerate() {
            let hot = d == 0 && i >= 50;
            let value = if hot {
                40.0
            } else {
                20.0 + (i % 7) as f64 * 0.1
            };
            lines.push(reading(device, base + i as i64 * 20, value));
        }
    }
    let total = lines.len() as u64;
    let port = stack.mqtt_port;
    // ~1,000 readings/s for ~8 s: one QoS 1 publisher per device (its own topic), each
    // sending 5 readings every 100 ms.
    let by_device: Vec<(String, Vec<String>)> = devices
        .iter()
        .map(|device| {
            let mine: Vec<String> = lines
                .iter()
                .filter(|l| l.contains(&format!("\"{device}\"")))
                .cloned()
                .collect();
            (format!("sensors/temperature_sensor/{device}"), mine)
        })
        .collect();
    let run = stack.run.clone();
    let publishers: Vec<std::thread::JoinHandle<()>> = by_device
        .into_iter()
        .enumerate()
        .map(|(n, (topic, mine))| {
            let client_id = format!("{run}-pub{n}");
            std::thread::spawn(move || {
                publish_paced(
                    port,
                    &client_id,
                    &topic,
                    &mine,
                    5,
                    Duration::from_millis(100),
                )
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    processor.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    processor.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    bridge.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    bridge.restart();
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    eprintln!("published {total} readings in {:?}", started.elapsed());

    let regex = format!("^{}-d", stack.run);
    let stored = eventually(90, "every reading in InfluxDB", || {
        let stack = &stack;
        let regex = regex.clone();
        async move {
            let n = influx_count(stack, &regex).await;
            (n >= total).then_some(n)
        }
    })
    .await;
    assert_eq!(stored, total, "exactly once: count by device and timestamp");
    // Per device, too (a loss in one and a duplicate in another must not cancel out).
    for device in &devices {
        assert_eq!(
            influx_count(&stack, &format!("^{device}$")).await,
            per_device as u64,
            "{device}"
        );
    }
    // The processor caught up and the hot device's alert exists exactly once.
    let hot = &devices[0];
    let api_ref = &api;
    let alerts = eventually(60, "the processor caught up", || async move {
        let mine = alerts_of(api_ref, hot, |_| true).await?;
        mine.iter()
            .any(|a| a["rule"] == "crash-hot")
            .then_some(mine)
    })
    .await;
    // Every alert of the hot device (threshold, and the detectors a constant 40 °C
    // trips: stuck, anomaly, spike) exists once: no episode fired again on replay.
    let mut rules: Vec<&str> = alerts.iter().filter_map(|a| a["rule"].as_str()).collect();
    rules.sort_unstable();
    let before = rules.len();
    rules.dedup();
    assert_eq!(
        rules.len(),
        before,
        "an alert was duplicated by the restarts: {alerts:?}"
    );
    assert!(
        rules.contains(&"crash-hot"),
        "the threshold alert: {alerts:?}"
    );
    assert!(
        processor.log_text().matches("processor starting").count() == 2,
        "the processor really restarted"
    );
    assert!(bridge.log_text().matches("bridge starting").count() == 2);
}

/// A burst far larger than the bridge's batch, at full speed over one connection: the
/// bridge keeps acknowledging while its event loop keeps receiving. (Handing an
/// acknowledgement over used to wait on an event loop that was itself waiting for the
/// bridge to take what it had received: the stream stopped after a few batches.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_batch_does_not_stall_the_bridge() {
    let Some(stack) = Stack::start("burst") else {
        return;
    };
    let base = base_ts_ms();
    let devices: Vec<String> = (1..=10).map(|i| format!("{}-b{i:02}", stack.run)).collect();
    let manifest = stack.manifest("fleet.yaml", &fleet("burst", &devices));
    stack.apply(&[&manifest]);
    let bridge = stack.role(
        "bridge",
        &["--connections", "1", "--batch-max", "8", "--linger-ms", "1"],
    );
    bridge.ready(60).await;

    let per_device = 300;
    let publishers: Vec<std::thread::JoinHandle<()>> = devices
        .iter()
        .enumerate()
        .map(|(n, device)| {
            let lines: Vec<String> = (0..per_device)
                .map(|i| reading(device, base + i as i64 * 10, 20.0 + (i % 5) as f64))
                .collect();
            let topic = format!("sensors/temperature_sensor/{device}");
            let client_id = format!("{}-pub{n}", stack.run);
            let port = stack.mqtt_port;
            std::thread::spawn(move || {
                publish_paced(port, &client_id, &topic, &lines, per_device, Duration::ZERO)
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    let total = (devices.len() * per_device) as u64;
    let regex = format!("^{}-b", stack.run);
    let stored = eventually(60, "the whole burst in InfluxDB", || {
        let stack = &stack;
        let regex = regex.clone();
        async move {
            let n = influx_count(stack, &regex).await;
            (n >= total).then_some(n)
        }
    })
    .await;
    assert_eq!(stored, total);
}

/// An AlertRule edited while the processor runs (as `kubectl apply` through the operator,
/// or `sensorfleet apply`, would change its row in PostgreSQL) applies without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_processor_applies_a_changed_alert_rule() {
    let Some(stack) = Stack::start("edit") else {
        return;
    };
    let base = base_ts_ms();
    let device = format!("{}-e1", stack.run);
    let fleet_file = stack.manifest("fleet.yaml", &fleet("edit", std::slice::from_ref(&device)));
    let loose = stack.manifest("rule.yaml", &hot_rule("edit-hot", "edit", 30.0));
    stack.apply(&[&fleet_file, &loose]);
    let processor = stack.role("processor", &["--refresh", "1s"]);
    let bridge = stack.role("bridge", &["--connections", "1"]);
    let api = stack.role("api", &[]);
    processor.ready(60).await;
    bridge.ready(60).await;
    api.ready(60).await;

    let topic = format!("sensors/temperature_sensor/{device}");
    let (api_ref, device_id) = (&api, device.as_str());
    let alerts_of_rule = |rule: &'static str| async move {
        alerts_of(api_ref, device_id, |a| a["rule"] == rule).await
    };
    // 25 °C is within the rule (max 30): the processor sees it, no alert.
    for i in 0..3 {
        stack
            .broker
            .publish(&topic, &reading(&device, base + i * 1000, 25.0));
    }
    let latest = format!("/api/device/{device}/latest");
    eventually(30, "the first readings processed", || {
        let mut client = api.client();
        let latest = latest.clone();
        async move {
            let json = client.get(&latest).await.ok()?.json();
            (json["temperature_celsius"] == 25.0).then_some(())
        }
    })
    .await;
    assert_eq!(alerts_of_rule("edit-hot").await, Some(vec![]));

    // The rule tightens to max 20; the processor picks it up from the registry.
    let strict = stack.manifest("rule.yaml", &hot_rule("edit-hot", "edit", 20.0));
    stack.apply(&[&fleet_file, &strict]);
    eventually(30, "the processor applying the changed rule", || {
        let text = processor.log_text();
        async move { text.contains("registry changed; applying").then_some(()) }
    })
    .await;
    for i in 3..6 {
        stack
            .broker
            .publish(&topic, &reading(&device, base + i * 1000, 25.0));
    }
    let fired = eventually(30, "the tightened rule firing", || {
        let pending = alerts_of_rule("edit-hot");
        async move { pending.await?.into_iter().next() }
    })
    .await;
    assert_eq!(fired["threshold"], "> 20", "{fired}");
    assert!(
        processor.log_text().matches("processor starting").count() == 1,
        "no restart"
    );
}

/// Readings of `devices`, `per_device` each 20 ms apart in device time, published by one
/// QoS 1 `mosquitto_pub` per device at 5 readings every 100 ms, on their own threads.
fn publish_devices(
    stack: &Stack,
    devices: &[String],
    per_device: usize,
    base: i64,
) -> Vec<std::thread::JoinHandle<()>> {
    devices
        .iter()
        .enumerate()
        .map(|(n, device)| {
            let lines: Vec<String> = (0..per_device)
                .map(|i| reading(device, base + i as i64 * 20, 20.0 + (i % 7) as f64 * 0.1))
                .collect();
            let topic = format!("sensors/temperature_sensor/{device}");
            let client_id = format!("{}-{device}-pub{n}", stack.run);
            let port = stack.mqtt_port;
            std::thread::spawn(move || {
                publish_paced(
                    port,
                    &client_id,
                    &topic,
                    &lines,
                    5,
                    Duration::from_millis(100),
                )
            })
        })
        .collect()
}

/// Waits until the count of `regex` in InfluxDB has not moved for `quiet`; returns it.
async fn settled_count(stack: &Stack, regex: &str, quiet: Duration) -> u64 {
    let mut last = influx_count(stack, regex).await;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while since.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "{regex}: the count never settled"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = influx_count(stack, regex).await;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// Bridges keep their MQTT sessions across a rollout: two bridges in one shared
/// subscription under the ids the operator's StatefulSet gives them (the pod names
/// `<pipeline>-bridge-<ordinal>`), rolled as a StatefulSet rolls them — ordinal 1, then
/// 0, each stopped with SIGTERM and started again under the same id while the readings
/// keep coming at QoS 1 — store every reading exactly once.
///
/// Then the counter-proof, what a Deployment's new pod names did: a bridge restarted
/// under a new id leaves its old session in the group, the broker keeps dealing it
/// readings that nobody takes; they arrive only once a bridge under the old id returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_of_bridges_under_their_stateful_set_ids_loses_nothing() {
    let Some(stack) = Stack::start("roll") else {
        return;
    };
    let base = base_ts_ms();
    let devices: Vec<String> = (1..=10).map(|i| format!("{}-r{i:02}", stack.run)).collect();
    let lost: Vec<String> = (1..=10).map(|i| format!("{}-x{i:02}", stack.run)).collect();
    let all: Vec<String> = devices.iter().chain(&lost).cloned().collect();
    stack.apply(&[&stack.manifest("fleet.yaml", &fleet("roll", &all))]);

    let id = |ordinal: u32| format!("{}-bridge-{ordinal}", stack.run);
    let bridge =
        |client_id: &str| stack.role("bridge", &["--client-id", client_id, "--connections", "2"]);
    let mut ordinals = [bridge(&id(0)), bridge(&id(1))];
    for b in &ordinals {
        b.ready(60).await;
    }

    // 10 devices × 300 readings over ~6 s; the rollout happens in the middle of it.
    let per_device = 300;
    let publishers = publish_devices(&stack, &devices, per_device, base);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for ordinal in [1, 0] {
        let b = &mut ordinals[ordinal];
        b.stop();
        // The broker keeps dealing this session its share while the pod is away.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        b.restart();
        b.ready(60).await;
    }
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    let total = (devices.len() * per_device) as u64;
    let regex = format!("^{}-r", stack.run);
    let stored = eventually(180, "every reading of the rollout in InfluxDB", || {
        let stack = &stack;
        let regex = regex.clone();
        async move {
            let n = influx_count(stack, &regex).await;
            (n >= total).then_some(n)
        }
    })
    .await;
    assert_eq!(stored, total, "exactly once: count by device and timestamp");
    for device in &devices {
        assert_eq!(
            influx_count(&stack, &format!("^{device}$")).await,
            per_device as u64,
            "{device}"
        );
    }
    for b in &ordinals {
        let log = b.log_text();
        assert_eq!(log.matches("bridge starting").count(), 2, "{log}");
        // The restart found the session the broker kept for its id.
        assert!(log.contains("session_present=true"), "{log}");
    }

    // The counter-proof: ordinal 1 comes back under a new id, as a Deployment's pod did.
    ordinals[1].stop();
    let mut renamed = bridge(&format!("{}-bridge-7f9c2", stack.run));
    renamed.ready(60).await;
    let publishers = publish_devices(&stack, &lost, per_device, base);
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    let regex = format!("^{}-x", stack.run);
    let stranded = settled_count(&stack, &regex, Duration::from_secs(5)).await;
    let total = (lost.len() * per_device) as u64;
    assert!(
        stranded < total,
        "a bridge under a new id lost nothing ({stranded} of {total}): the broker no longer \
         deals to offline sessions, and the StatefulSet's stable ids are not what saves a rollout"
    );
    // What was dealt to the old id waited in its session: the old id takes it up.
    ordinals[1].restart();
    ordinals[1].ready(60).await;
    let stored = eventually(60, "the stranded readings, once the old id is back", || {
        let stack = &stack;
        let regex = regex.clone();
        async move {
            let n = influx_count(stack, &regex).await;
            (n >= total).then_some(n)
        }
    })
    .await;
    assert_eq!(stored, total);
    renamed.stop();
}

/// Readings of `devices` stamped with the wall clock, one per device every `every`, by
/// one `mosquitto_pub -l` per device, until `stop` turns true. Live timestamps, so that
/// short `offlineAfter` thresholds measure real silence.
fn publish_live(
    stack: &Stack,
    devices: &[String],
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let port = stack.mqtt_port;
    let run = stack.run.clone();
    let devices = devices.to_vec();
    std::thread::spawn(move || {
        let mut children: Vec<(String, std::process::Child)> = devices
            .iter()
            .enumerate()
            .map(|(n, device)| {
                let child = Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
                    .args(["-i", &format!("{run}-live{n}"), "-l"])
                    .args(["-t", &format!("sensors/temperature_sensor/{device}")])
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("run mosquitto_pub -l");
                (device.clone(), child)
            })
            .collect();
        let mut i = 0u32;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let now = chrono::Utc::now().timestamp_millis();
            // Gentle variation: no stuck-value or anomaly alert.
            let celsius = 21.0 + f64::from(i % 7) * 0.1;
            i += 1;
            for (device, child) in &mut children {
                let stdin = child.stdin.as_mut().expect("stdin");
                writeln!(stdin, "{}", reading(device, now, celsius)).expect("write a reading");
                stdin.flush().expect("flush");
            }
            std::thread::sleep(every);
        }
        for (_, mut child) in children {
            drop(child.stdin.take());
            assert!(child.wait().expect("mosquitto_pub").success());
        }
    })
}

/// The dashboard's numbers, once the API answers.
async fn dashboard(api: &support::stack::RoleProcess) -> Option<serde_json::Value> {
    let response = api.client().get("/api/dashboard/stats").await.ok()?;
    (response.status == 200).then(|| response.json())
}

/// `offline` alerts of each device, by device id.
async fn offline_alerts(
    api: &support::stack::RoleProcess,
    devices: &[String],
) -> Option<Vec<(String, usize)>> {
    let mut counts = Vec::with_capacity(devices.len());
    for device in devices {
        let found = alerts_of(api, device, |a| a["alert_type"] == "offline").await?;
        counts.push((device.clone(), found.len()));
    }
    Some(counts)
}

/// Two processors in one group: the second takes over partitions from the first. While
/// the devices send, the dashboard counts every device whichever processor writes it;
/// once they all fall silent, each device goes `offline` exactly once — raised by its
/// new owner, and never by the processor that lost it (which used to keep every device
/// it had ever seen and alert on the ones it no longer received).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rebalance_only_the_new_owner_raises_offline_and_the_dashboard_counts_all() {
    let Some(stack) = Stack::start("rebal") else {
        return;
    };
    let devices: Vec<String> = (1..=12).map(|i| format!("{}-v{i:02}", stack.run)).collect();
    let manifest = stack.manifest(
        "fleet.yaml",
        &support::fleet::fleet_offline_after("rebal", &devices, "6s"),
    );
    stack.apply(&[&manifest]);
    let first = stack.role("processor", &[]);
    let bridge = stack.role("bridge", &["--connections", "1"]);
    let api = stack.role("api", &[]);
    first.ready(60).await;
    bridge.ready(60).await;
    api.ready(60).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = publish_live(&stack, &devices, Duration::from_secs(1), stop.clone());
    let total = devices.len() as u64;
    let api_ref = &api;
    eventually(
        60,
        "the first processor counting every device",
        || async move {
            let stats = dashboard(api_ref).await?;
            (stats["active_devices"] == total).then_some(())
        },
    )
    .await;

    // The second processor joins: the group rebalances and the partitions are shared.
    let second = stack.role("processor", &[]);
    second.ready(60).await;
    eventually(60, "the second processor owning partitions", || {
        let text = second.log_text();
        async move {
            text.lines()
                .any(|l| l.contains("devices adopted") && !l.contains("partitions=[]"))
                .then_some(())
        }
    })
    .await;
    eventually(60, "the first processor left with a share", || {
        let text = first.log_text();
        async move {
            text.lines()
                .rfind(|l| l.contains("devices adopted"))
                .filter(|l| !l.contains("partitions=[0, 1, 2]") && !l.contains("partitions=[]"))
                .map(|_| ())
        }
    })
    .await;
    // Whole-fleet counters, whoever wrote them last: ten samples in a row count all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for sample in 0..10 {
        let stats = dashboard(&api).await.expect("the dashboard");
        assert_eq!(
            stats["active_devices"], total,
            "sample {sample}: the dashboard counts every device, not one processor's share: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    // Every device falls silent: each goes offline once, by its owner only.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    publisher.join().expect("publisher");
    let devices_ref = &devices;
    eventually(60, "every device offline", || async move {
        let counts = offline_alerts(api_ref, devices_ref).await?;
        counts.iter().all(|(_, n)| *n >= 1).then_some(())
    })
    .await;
    // Time for a phantom from the other processor (it ticks every second).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let counts = offline_alerts(&api, &devices).await.expect("the alerts");
    let twice: Vec<&(String, usize)> = counts.iter().filter(|(_, n)| *n != 1).collect();
    assert!(
        twice.is_empty(),
        "one offline alert per device; a processor that lost a device alerted on it too: {twice:?}"
    );
    // Every active alert of the fleet, whichever processor raised it.
    let mut active = 0;
    for device in &devices {
        let mine = alerts_of(&api, device, |a| {
            a["state"] == "firing" || a["state"] == "acknowledged"
        })
        .await
        .expect("the alerts");
        active += mine.len() as u64;
    }
    assert!(active >= total, "at least the offline alerts: {active}");
    eventually(
        30,
        "the dashboard counting every active alert",
        || async move {
            let stats = dashboard(api_ref).await?;
            (stats["total_alerts"] == active && stats["active_devices"] == 0).then_some(stats)
        },
    )
    .await;
    let (a, b) = (first.log_text(), second.log_text());
    assert!(
        a.matches("processor starting").count() == 1
            && b.matches("processor starting").count() == 1,
        "no restart"
    );
}

/// A device heard from, then silent while no processor runs (the other keeps sending):
/// the processor that comes back seeds its silence clock from the cache and raises
/// `offline` for it, and not for the one that kept sending. (A restarted processor used
/// to know only devices whose records it received again, so the silent one stayed
/// "online" forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_silent_while_every_processor_was_down_goes_offline_when_one_returns() {
    let Some(stack) = Stack::start("outage") else {
        return;
    };
    let quiet = format!("{}-quiet", stack.run);
    let chatty = format!("{}-chatty", stack.run);
    let both = [quiet.clone(), chatty.clone()];
    let manifest = stack.manifest(
        "fleet.yaml",
        &support::fleet::fleet_offline_after("outage", &both, "4s"),
    );
    stack.apply(&[&manifest]);
    let mut processor = stack.role("processor", &[]);
    let bridge = stack.role("bridge", &["--connections", "1"]);
    let api = stack.role("api", &[]);
    processor.ready(60).await;
    bridge.ready(60).await;
    api.ready(60).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = publish_live(
        &stack,
        std::slice::from_ref(&chatty),
        Duration::from_millis(500),
        stop.clone(),
    );
    let hush = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let quiet_publisher = publish_live(
        &stack,
        std::slice::from_ref(&quiet),
        Duration::from_millis(500),
        hush.clone(),
    );
    let api_ref = &api;
    eventually(30, "both devices processed", || async move {
        let stats = dashboard(api_ref).await?;
        (stats["active_devices"] == 2).then_some(())
    })
    .await;

    // The quiet device stops sending, and at once every processor stops.
    hush.store(true, std::sync::atomic::Ordering::SeqCst);
    quiet_publisher.join().expect("publisher");
    processor.stop();
    // Longer than `offlineAfter` with no processor at all.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let restarted_ms = chrono::Utc::now().timestamp_millis();
    processor.restart();
    processor.ready(60).await;
    let quiet_ref = quiet.as_str();
    let alert = eventually(
        30,
        "the quiet device offline after the outage",
        || async move {
            let found = alerts_of(api_ref, quiet_ref, |a| a["alert_type"] == "offline").await?;
            found.into_iter().next()
        },
    )
    .await;
    assert_eq!(alert["state"], "firing", "{alert}");
    let since: i64 = alert["id"]
        .as_str()
        .and_then(|id| id.rsplit('/').next())
        .and_then(|t| t.parse().ok())
        .expect("an alert id ending in its start time");
    assert!(
        since >= restarted_ms,
        "raised by the processor that came back, not before it stopped: {alert}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let chatty_offline = alerts_of(&api, &chatty, |a| a["alert_type"] == "offline")
        .await
        .expect("the alerts");
    assert!(
        chatty_offline.is_empty(),
        "the device that kept sending is not offline: {chatty_offline:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    publisher.join().expect("publisher");
    let quiet_alerts = alerts_of(&api, &quiet, |a| a["alert_type"] == "offline")
        .await
        .expect("the alerts");
    assert_eq!(quiet_alerts.len(), 1, "offline once: {quiet_alerts:?}");
    assert_eq!(
        processor.log_text().matches("processor starting").count(),
        2
    );
}

/// The state of alert `id` in the run's PostgreSQL registry, read with `psql`.
fn registry_state(stack: &Stack, id: &str) -> String {
    stack
        .registry_rows(&format!(
            "SELECT state FROM alerts WHERE id = '{}'",
            id.replace('\'', "''")
        ))
        .trim()
        .to_owned()
}

/// Acknowledge and clear over the commands topic: when the API answers, the registry
/// holds the new state already; a restarted processor does not apply the commands of
/// its earlier life again (it used to read the whole topic from the beginning in a new
/// consumer group per start) and leaves no consumer group behind; and commands still
/// reach it after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_not_replayed_at_restart_and_leave_no_group_and_are_persisted_first() {
    let Some(stack) = Stack::start("cmds") else {
        return;
    };
    let base = base_ts_ms();
    let device = format!("{}-c1", stack.run);
    let manifest = stack.manifest(
        "fleet.yaml",
        &format!(
            "{}---\n{}",
            fleet("cmds", std::slice::from_ref(&device)),
            too_hot_rule("cmds-hot", "cmds")
        ),
    );
    stack.apply(&[&manifest]);
    let mut processor = stack.role("processor", &[]);
    let bridge = stack.role("bridge", &["--connections", "1"]);
    let api = stack.role("api", &[]);
    processor.ready(60).await;
    bridge.ready(60).await;
    api.ready(60).await;

    let topic = format!("sensors/temperature_sensor/{device}");
    for (i, value) in [20.0, 35.0, 36.0].into_iter().enumerate() {
        stack
            .broker
            .publish(&topic, &reading(&device, base + i as i64 * 1000, value));
    }
    let (api_ref, device_id) = (&api, device.as_str());
    let firing = eventually(30, "the alert firing", || async move {
        let found = alerts_of(api_ref, device_id, |a| {
            a["rule"] == "cmds-hot" && a["state"] == "firing"
        })
        .await?;
        found.into_iter().next()
    })
    .await;
    let id = firing["id"].as_str().expect("alert id").to_owned();
    acknowledge(&api, &id).await;
    assert_eq!(
        registry_state(&stack, &id),
        "acknowledged",
        "persisted before the API answered"
    );
    eventually(10, "the processor logging the acknowledgement", || {
        let text = processor.log_text();
        async move { (text.matches("alert changed by hand").count() == 1).then_some(()) }
    })
    .await;

    processor.stop();
    processor.restart();
    processor.ready(60).await;
    eventually(30, "the restarted processor owning its partitions", || {
        let text = processor.log_text();
        async move { (text.matches("devices adopted").count() >= 2).then_some(()) }
    })
    .await;
    // Time for a replay, had there been one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = processor.log_text();
    let second_life = log.rsplit("processor starting").next().unwrap_or_default();
    assert!(
        !second_life.contains("alert changed by hand"),
        "the restarted processor applied an old command again: {second_life}"
    );

    let admin = sensorfleet_backends::event_log::kafka::KafkaAdmin::connect(
        &stack.kafka_url,
        &sensorfleet_backends::event_log::kafka::KafkaOptions::default(),
    )
    .expect("a Kafka admin client");
    let groups: Vec<String> = admin
        .consumer_groups()
        .await
        .expect("the consumer groups")
        .into_iter()
        .filter(|g| g.starts_with(&stack.run))
        .collect();
    assert_eq!(
        groups,
        [format!("{}-processor", stack.run)],
        "only the readings group: no group per start for the commands"
    );

    // After the restart a command still arrives, and is stored before the answer.
    let path = format!("/api/alerts/{}/clear", id.replace('/', "%2F"));
    let cleared = api.client().post(&path).await.expect("clear");
    assert_eq!(
        cleared.status,
        200,
        "{}",
        String::from_utf8_lossy(&cleared.body)
    );
    assert_eq!(cleared.json()["state"], "resolved");
    assert_eq!(registry_state(&stack, &id), "resolved");
    drop(bridge);
}
