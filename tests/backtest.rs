//! `sensorfleet backtest` on stored history: from `up`'s SQLite store through the binary,
//! and from the real InfluxDB through the library. A hot spell longer than the rule's
//! `for` fires once and resolves once; a shorter one does not fire.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use sensorfleet::roles::backtest::{BacktestArgs, report};
use sensorfleet_backends::timeseries::TimeSeries;
use sensorfleet_backends::timeseries::influx::{InfluxOptions, InfluxStore};
use sensorfleet_model::Reading;
use sensorfleet_model::reading::format_ts;
use support::{Publish, Up, eventually, require_tool};

const FLEET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lab.yaml");

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// One value a second for 40 s ending now: 25 °C, with a 10 s spell at 35 from 10 s and
/// a 1 s one at 35 at 30 s (shorter than the rule's `for: 2s`).
fn series(start_ms: i64) -> Vec<(i64, f64)> {
    (0..40)
        .map(|s| {
            let hot = (10..20).contains(&s) || s == 30;
            (start_ms + s * 1000, if hot { 35.0 } else { 25.0 })
        })
        .collect()
}

fn args(files: &[&Path], device: &str) -> BacktestArgs {
    BacktestArgs {
        files: files.iter().map(|p| p.to_path_buf()).collect(),
        devices: vec![device.to_owned()],
        fleet: None,
        since: 3_600_000,
        rules_only: true,
        influx_url: String::new(),
        data_dir: ".".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_replays_ups_sqlite_history_through_the_binary() {
    if !require_tool("mosquitto_pub", "mosquitto-clients") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut up = Up::start(dir.path(), &["--no-simulator", "-f", FLEET]).await;
    let start = now_ms() - 45_000;
    let lines: Vec<String> = series(start)
        .into_iter()
        .map(|(ts, v)| {
            format!(
                r#"{{"device_id":"lab-temp-1","timestamp":"{}","temperature_celsius":{v}}}"#,
                format_ts(ts)
            )
        })
        .collect();
    up.publish_lines("sensors/temperature_sensor/lab-temp-1", &lines);
    let last = format_ts(start + 39_000);
    eventually(30, "the last reading stored", || {
        let mut api = up.client();
        let last = last.clone();
        async move {
            let body = api.get("/api/device/lab-temp-1/latest").await.ok()?.json();
            (body["timestamp"] == last.as_str()).then_some(())
        }
    })
    .await;
    assert!(up.stop().success());

    let output = Command::new(env!("CARGO_BIN_EXE_sensorfleet"))
        .args([
            "backtest",
            "-f",
            FLEET,
            "--device",
            "lab-temp-1",
            "--since",
            "1h",
        ])
        .args([
            "--rules-only",
            "--data-dir",
            &dir.path().display().to_string(),
        ])
        .env("SENSORFLEET_LOG", "warn")
        .env_remove("SENSORFLEET_INFLUX_URL")
        .output()
        .expect("run sensorfleet backtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("replayed 40 readings of 1 device(s)"),
        "{stdout}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("lab-too-hot") && l.contains("fired"))
        .unwrap_or_else(|| panic!("no summary line for lab-too-hot:\n{stdout}"));
    assert!(summary.contains("fired    1  resolved    1"), "{summary}");
    let fired_at = format_ts(start + 12_000);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&fired_at) && l.contains("fired")),
        "fired at 12 s (10 s + for: 2s):\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_replays_influxdb_history() {
    let Ok(url) = std::env::var("SENSORFLEET_TEST_INFLUX_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "SENSORFLEET_TEST_INFLUX_URL is not set: run `scripts/testenv up influxdb` and \
             `eval \"$(scripts/testenv env)\"`; CI is set, so this test must run"
        );
        eprintln!("SKIPPED: SENSORFLEET_TEST_INFLUX_URL is not set");
        return;
    };
    let db = format!(
        "backtest_{}_{}",
        std::process::id(),
        now_ms() % 1_000_000_000
    );
    let base = url.split('?').next().expect("a URL");
    let store = InfluxStore::connect(&format!("{base}?db={db}"), InfluxOptions::default())
        .await
        .expect("connect to InfluxDB");
    let device = format!("{db}-t1");
    let start = now_ms() - 45_000;
    let readings: Vec<Reading> = series(start)
        .into_iter()
        .map(|(ts_ms, v)| Reading {
            device_id: device.clone(),
            device_type: "temperature_sensor".to_owned(),
            location: None,
            ts_ms,
            fields: [("temperature_celsius".to_owned(), v)].into(),
        })
        .collect();
    store.write(&readings).await.expect("write the history");

    // The device is not declared: the rule's deviceType says what it is, and a rule
    // narrowed to a fleet would not apply, so this one names none.
    let dir = tempfile::tempdir().expect("temp dir");
    let rule = dir.path().join("rule.yaml");
    std::fs::write(
        &rule,
        "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: hot}\n\
         spec: {deviceType: temperature_sensor, metric: temperature_celsius, max: 30, \
         clearMax: 29, for: 2s, severity: critical}\n",
    )
    .expect("write the rule");
    let store: Arc<dyn TimeSeries> = Arc::new(store);
    let mut out = Vec::new();
    let summaries = report(&args(&[&rule], &device), store, now_ms(), &mut out)
        .await
        .expect("backtest");
    let text = String::from_utf8_lossy(&out);
    let hot = summaries.get("hot").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        (hot.fired, hot.resolved, hot.firing_at_end),
        (1, 1, 0),
        "{text}"
    );
    assert_eq!(hot.firing_ms, 8_000, "firing from 12 s to 20 s:\n{text}");
    assert!(
        text.contains("replayed 40 readings of 1 device(s)"),
        "{text}"
    );
}
