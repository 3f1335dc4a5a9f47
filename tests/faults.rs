//! Hostile readings against the real stack (the corpus of `support/hostile.rs` and issue
//! 9's reproductions), each role its own process (the reproductions
//! of issue 9): a reading InfluxDB cannot store, one it refuses for a field type conflict,
//! a NUL byte PostgreSQL refuses, straight from MQTT and straight into the event log.
//! After each, the same bridge and processor still run (same process, no restart), the
//! hostile reading is in the dead-letter topic with its reason, and fresh readings of
//! other devices reach `/latest` and still fire alerts.
//!
//! Needs `scripts/testenv up` and `eval "$(scripts/testenv env)"` (make test does both).

mod support;

use std::time::Duration;

use support::hostile::{self, Outcome};
use support::stack::{RoleProcess, Stack};
use support::{Publish, eventually};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn stamp(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms)
        .expect("a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn reading(device: &str, ts_ms: i64, celsius: f64) -> String {
    format!(
        r#"{{"device_id":"{device}","timestamp":"{}","temperature_celsius":{celsius}}}"#,
        stamp(ts_ms)
    )
}

/// A fleet of `ids` with a rule that fires above 30 °C.
fn fleet_with_rule(ids: &[String]) -> String {
    let devices: Vec<String> = ids.iter().map(|id| format!("    - {{id: {id}}}")).collect();
    format!(
        "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\nmetadata: {{name: guarded}}\n\
         spec:\n  deviceType: temperature_sensor\n  location: Lab\n  publishInterval: 1s\n  \
         offlineAfter: 5m\n  devices:\n{}\n---\n\
         apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: AlertRule\nmetadata: {{name: guarded-hot}}\n\
         spec:\n  deviceType: temperature_sensor\n  fleet: guarded\n  metric: temperature_celsius\n  \
         max: 30\n  severity: critical\n",
        devices.join("\n")
    )
}

/// The roles of a run, with the process ids they started with.
struct Roles {
    processor: RoleProcess,
    bridge: RoleProcess,
    api: RoleProcess,
    pids: (Option<u32>, Option<u32>),
    /// The newest timestamp sent so far: each check's readings come after it, so a
    /// second check of the same device is never older than the first one's hot reading.
    last_ts_ms: std::sync::atomic::AtomicI64,
}

async fn start(stack: &Stack, devices: &[String]) -> Roles {
    let manifest = stack.manifest("fleet.yaml", &fleet_with_rule(devices));
    stack.apply(&[&manifest]);
    let processor = stack.role("processor", &[]);
    let bridge = stack.role("bridge", &["--connections", "1"]);
    let api = stack.role("api", &[]);
    processor.ready(60).await;
    bridge.ready(60).await;
    api.ready(60).await;
    let pids = (processor.pid(), bridge.pid());
    Roles {
        processor,
        bridge,
        api,
        pids,
        last_ts_ms: std::sync::atomic::AtomicI64::new(0),
    }
}

impl Roles {
    /// The same processes still run, and neither logged a second start or a stop.
    fn assert_same_processes(&mut self) {
        assert!(
            self.bridge.running(),
            "the bridge exited:\n{}",
            self.bridge.log_text()
        );
        assert!(
            self.processor.running(),
            "the processor exited:\n{}",
            self.processor.log_text()
        );
        assert_eq!((self.processor.pid(), self.bridge.pid()), self.pids);
        let bridge_log = self.bridge.log_text();
        assert_eq!(
            bridge_log.matches("bridge starting").count(),
            1,
            "{bridge_log}"
        );
        assert!(!bridge_log.contains("the bridge stopped"), "{bridge_log}");
        let processor_log = self.processor.log_text();
        assert_eq!(
            processor_log.matches("processor starting").count(),
            1,
            "{processor_log}"
        );
        assert!(
            !processor_log.contains("processor stopped"),
            "{processor_log}"
        );
    }

    /// A fresh reading of `device` reaches `/latest`, and a hot one fires the rule.
    async fn assert_pipeline_flows(&self, stack: &Stack, device: &str, normal: f64) {
        let topic = format!("sensors/temperature_sensor/{device}");
        let last = self.last_ts_ms.load(std::sync::atomic::Ordering::Relaxed);
        let base = (now_ms() - 2_000).max(last + 1);
        self.last_ts_ms
            .store(base + 1_000, std::sync::atomic::Ordering::Relaxed);
        stack.broker.publish(&topic, &reading(device, base, normal));
        let path = format!("/api/device/{device}/latest");
        eventually(30, &format!("{device}'s reading in /latest"), || {
            let mut client = self.api.client();
            let path = path.clone();
            async move {
                let json = client.get(&path).await.ok()?.json();
                (json["temperature_celsius"] == normal).then_some(())
            }
        })
        .await;
        stack
            .broker
            .publish(&topic, &reading(device, base + 1_000, 45.0));
        eventually(30, &format!("{device}'s too-hot alert firing"), || {
            let mut client = self.api.client();
            async move {
                let json = client.get("/api/alerts?limit=500").await.ok()?.json();
                json["alerts"]
                    .as_array()?
                    .iter()
                    .any(|a| {
                        a["device_id"] == device
                            && a["rule"] == "guarded-hot"
                            && a["state"] == "firing"
                    })
                    .then_some(())
            }
        })
        .await;
    }
}

/// The dead letter keyed `key`, once it is there: its headers.
async fn dead_letter(stack: &Stack, key: &str) -> String {
    eventually(30, &format!("{key} in the dead-letter topic"), || async {
        stack
            .kafka_records("sensor-readings-dlq")
            .into_iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, headers, _)| headers)
    })
    .await
}

async fn bridge_metric(bridge: &RoleProcess, line_start: &str) -> f64 {
    let Ok(response) = bridge.client().get("/metrics").await else {
        return 0.0;
    };
    String::from_utf8_lossy(&response.body)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn influx_count(stack: &Stack, device: &str) -> u64 {
    let json = stack
        .influx_query(&format!(
            "SELECT count(temperature_celsius) FROM temperature_sensor WHERE device_id = '{device}'"
        ))
        .await;
    json["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

/// Issue 9's first reproduction: year 1000 used to stop the bridge (InfluxDB answered
/// 400) and every restart got it again from the session. And a reading InfluxDB refuses
/// for a field type conflict, in one batch with good readings of the same device: the
/// batch is bisected, the good ones are stored, the bad one dead-lettered with
/// InfluxDB's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_influxdb_cannot_store_is_dead_lettered_and_ingestion_goes_on() {
    let Some(stack) = Stack::start("ancient") else {
        return;
    };
    let good: Vec<String> = (1..=2).map(|i| format!("{}-g{i}", stack.run)).collect();
    let mut roles = start(&stack, &good).await;

    stack.broker.publish(
        "sensors/temperature_sensor/ancient",
        r#"{"device_id":"ancient","temperature_celsius":1,"timestamp":"1000-01-01T00:00:00Z"}"#,
    );
    let headers = dead_letter(&stack, "ancient").await;
    assert!(headers.contains("reason=bad_timestamp"), "{headers}");
    assert!(
        headers.contains("1677-09-21"),
        "says what the stores hold: {headers}"
    );
    roles.assert_pipeline_flows(&stack, &good[0], 21.0).await;
    roles.assert_same_processes();

    // Another writer made `label` a string field of the measurement; the bridge sends
    // every field as a float, so InfluxDB refuses the one reading that carries `label`.
    let status = stack.influx_write(&format!(
        "temperature_sensor,device_id=other-writer label=\"text\" {}",
        now_ms() - 10_000
    ));
    assert_eq!(status, "204");
    let device = format!("{}-conflict", stack.run);
    let base = now_ms() - 5_000;
    let lines = [
        reading(&device, base, 20.0),
        format!(
            r#"{{"device_id":"{device}","timestamp":"{}","temperature_celsius":20.5,"label":7}}"#,
            stamp(base + 1)
        ),
        reading(&device, base + 2, 21.0),
    ];
    stack
        .broker
        .publish_lines(&format!("sensors/temperature_sensor/{device}"), &lines);
    let headers = dead_letter(&stack, &device).await;
    assert!(headers.contains("reason=sink_refused"), "{headers}");
    assert!(headers.contains("sink=influxdb"), "{headers}");
    assert!(
        headers.contains("field type conflict"),
        "InfluxDB's reason: {headers}"
    );
    let stored = eventually(30, "the two good readings of the batch", || {
        let (stack, device) = (&stack, device.as_str());
        async move {
            let n = influx_count(stack, device).await;
            (n >= 2).then_some(n)
        }
    })
    .await;
    assert_eq!(stored, 2, "the refused reading alone is missing");
    roles.assert_pipeline_flows(&stack, &good[1], 22.0).await;
    roles.assert_same_processes();

    assert_eq!(
        bridge_metric(
            &roles.bridge,
            "sensorfleet_bridge_rejects_total{reason=\"bad_timestamp\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        bridge_metric(
            &roles.bridge,
            "sensorfleet_bridge_rejects_total{reason=\"sink_refused\"}"
        )
        .await,
        1.0
    );
}

/// Issue 9's second reproduction: a NUL byte in `location` used to stop the processor
/// (PostgreSQL refuses it, SQLSTATE 22021) and every replica after the rebalance. From
/// MQTT the bridge now refuses it; written straight into the event log (an older bridge,
/// another producer), the processor finds the row PostgreSQL refuses and dead-letters it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_is_dead_lettered_and_alerting_goes_on() {
    let Some(stack) = Stack::start("nul") else {
        return;
    };
    let good: Vec<String> = (1..=2).map(|i| format!("{}-g{i}", stack.run)).collect();
    let mut roles = start(&stack, &good).await;

    stack.broker.publish(
        "sensors/temperature_sensor/nul",
        r#"{"device_id":"nul","location":"a\u0000b","temperature_celsius":1}"#,
    );
    let headers = dead_letter(&stack, "nul").await;
    assert!(headers.contains("reason=bad_text"), "{headers}");
    roles.assert_pipeline_flows(&stack, &good[0], 21.0).await;
    roles.assert_same_processes();

    // Larger than Mosquitto's message_size_limit (64 KiB) and than what the bridge used
    // to read (66,560-byte packets): the broker acknowledges and drops it, so it never
    // reaches the bridge, which would have lost its connection on it and had it
    // redelivered with the session forever.
    let huge = format!(
        r#"{{"device_id":"huge","temperature_celsius":1,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    stack
        .broker
        .publish("sensors/temperature_sensor/huge", &huge);
    roles.assert_pipeline_flows(&stack, &good[0], 23.0).await;
    let bridge_log = roles.bridge.log_text();
    assert!(!bridge_log.contains("MQTT connection lost"), "{bridge_log}");

    let sneaked = format!("{}-sneaked", stack.run);
    stack.kafka_produce(
        "sensor-readings",
        &sneaked,
        &format!(
            r#"{{"device_id":"{sneaked}","device_type":"temperature_sensor","location":"a\u0000b","timestamp":"{}","fields":{{"temperature_celsius":1.0}}}}"#,
            stamp(now_ms() - 1_000)
        ),
    );
    let headers = dead_letter(&stack, &sneaked).await;
    assert!(headers.contains("reason=sink_refused"), "{headers}");
    assert!(headers.contains("sink=postgres"), "{headers}");
    assert!(headers.contains("22021"), "PostgreSQL's reason: {headers}");
    roles.assert_pipeline_flows(&stack, &good[1], 22.0).await;
    roles.assert_same_processes();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        bridge_metric(
            &roles.bridge,
            "sensorfleet_bridge_rejects_total{reason=\"bad_text\"}"
        )
        .await,
        1.0
    );
    assert!(
        !stack
            .kafka_records("sensor-readings-dlq")
            .iter()
            .any(|(key, _, _)| key == "huge"),
        "the broker, not the bridge, refused the oversized message"
    );
}

/// Issue 9's hostile corpus (`support/hostile.rs`: malformed JSON, numbers beyond f64,
/// NaN and infinity, nesting 200 deep, invalid UTF-8, 65 fields, type confusion, epoch 0,
/// year 9999, ids past the limit, a declared device under another type) through the real
/// stack: each case is dead-lettered with its reason and counted once under it, the odd
/// but valid cases (64 fields of 64-byte names, a 128-character id, the largest finite
/// numbers) are stored and served, and the same processes go on serving other devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_corpus_is_dead_lettered_case_by_case_and_nothing_else_changes() {
    let Some(stack) = Stack::start("corpus") else {
        return;
    };
    let good: Vec<String> = (1..=2).map(|i| format!("{}-g{i}", stack.run)).collect();
    let mut roles = start(&stack, &good).await;
    roles.assert_pipeline_flows(&stack, &good[1], 20.0).await;

    let cases = hostile::corpus(&stack.run, &good[1]);
    for case in &cases {
        stack.broker.publish_bytes(&case.topic, &case.payload);
    }
    roles.assert_pipeline_flows(&stack, &good[0], 21.0).await;
    for case in &cases {
        match case.outcome {
            Outcome::Rejected(reason) => {
                let headers = dead_letter(&stack, &case.device_id).await;
                assert!(
                    headers.contains(&format!("reason={reason}")),
                    "{}: {headers}",
                    case.name
                );
            }
            Outcome::Stored => {
                let path = format!("/api/device/{}/latest", case.device_id);
                eventually(30, &format!("{} in /latest", case.name), || {
                    let mut client = roles.api.client();
                    let path = path.clone();
                    async move { (client.get(&path).await.ok()?.status == 200).then_some(()) }
                })
                .await;
            }
        }
    }
    for (reason, n) in hostile::expected_rejects(&cases) {
        let line = format!("sensorfleet_bridge_rejects_total{{reason=\"{reason}\"}}");
        assert_eq!(
            bridge_metric(&roles.bridge, &line).await,
            n as f64,
            "{reason}"
        );
    }
    roles.assert_pipeline_flows(&stack, &good[1], 22.0).await;
    roles.assert_same_processes();
}
