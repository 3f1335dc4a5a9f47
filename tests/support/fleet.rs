//! What the tests of the real stack publish and read back: readings as devices send
//! them, SensorFleet and AlertRule manifests, and the counts and alerts to check.

use super::stack::{RoleProcess, Stack};

/// A minute ago, whole seconds: every reading of a test is in the past, yet recent
/// enough that no device passes its `offlineAfter` (5 min) while the test runs.
pub fn base_ts_ms() -> i64 {
    (chrono::Utc::now().timestamp() - 60) * 1000
}

/// A temperature reading as a device publishes it (JSON), stamped `ts_ms`.
pub fn reading(device: &str, ts_ms: i64, celsius: f64) -> String {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms)
        .expect("a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"{{"device_id":"{device}","device_type":"temperature_sensor","timestamp":"{ts}","temperature_celsius":{celsius},"meta":{{"battery_level":90,"signal_strength":-60}}}}"#
    )
}

/// A SensorFleet of temperature sensors `ids` (publishing every second, offline after 5 min).
pub fn fleet(name: &str, ids: &[String]) -> String {
    fleet_offline_after(name, ids, "5m")
}

/// A SensorFleet of temperature sensors `ids` publishing every second, offline after
/// `offline_after` (a duration such as `4s`).
pub fn fleet_offline_after(name: &str, ids: &[String], offline_after: &str) -> String {
    let devices: Vec<String> = ids.iter().map(|id| format!("    - {{id: {id}}}")).collect();
    format!(
        "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\nmetadata: {{name: {name}}}\n\
         spec:\n  deviceType: temperature_sensor\n  location: Lab\n  publishInterval: 1s\n  \
         offlineAfter: {offline_after}\n  devices:\n{}\n",
        devices.join("\n")
    )
}

/// Fires above 30 °C, resolves at 29 °C or below.
pub fn too_hot_rule(name: &str, fleet: &str) -> String {
    format!("{}  clearMax: 29\n", hot_rule(name, fleet, 30.0))
}

/// The alerts of `device` the API lists (newest first) that `keep` selects; `None` while
/// the API does not answer.
pub async fn alerts_of(
    api: &RoleProcess,
    device: &str,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Option<Vec<serde_json::Value>> {
    let json = api.client().get("/api/alerts?limit=500").await.ok()?.json();
    Some(
        json["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["device_id"] == device && keep(a))
            .cloned()
            .collect(),
    )
}

/// Points of `temperature_celsius` in the run's InfluxDB database whose device id
/// matches `device_regex` (one point per device and timestamp).
pub async fn influx_count(stack: &Stack, device_regex: &str) -> u64 {
    let json = stack
        .influx_query(&format!(
            "SELECT count(temperature_celsius) FROM temperature_sensor WHERE device_id =~ /{device_regex}/"
        ))
        .await;
    json["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

/// An AlertRule on `fleet`: critical above `max` °C.
pub fn hot_rule(name: &str, fleet: &str, max: f64) -> String {
    format!(
        "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: AlertRule\nmetadata: {{name: {name}}}\n\
         spec:\n  deviceType: temperature_sensor\n  fleet: {fleet}\n  metric: temperature_celsius\n  \
         max: {max}\n  severity: critical\n"
    )
}

/// Acknowledges alert `id` through the API and asserts it answered `acknowledged`.
pub async fn acknowledge(api: &RoleProcess, id: &str) {
    let path = format!("/api/alerts/{}/ack", id.replace('/', "%2F"));
    let acked = api.client().post(&path).await.expect("ack");
    assert_eq!(
        acked.status,
        200,
        "{}",
        String::from_utf8_lossy(&acked.body)
    );
    assert_eq!(acked.json()["state"], "acknowledged");
}
