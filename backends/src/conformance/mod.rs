//! The shared test suite every implementation of a backend trait must pass: the embedded
//! ones in this crate's unit tests, the production ones against the real services.
//!
//! Each suite panics with a message on the first broken promise; ids are prefixed with a
//! caller-chosen `run` string so suites can run against a shared, non-empty service.

mod event_log;
mod registry;

use std::collections::BTreeMap;

use sensorfleet_model::{Alert, AlertKind, AlertPhase, Reading, Severity};

pub use self::event_log::event_log_suite;
pub use self::registry::registry_suite;
use crate::{Cache, DeviceMetrics, HistoryQuery, LiveEvent, TimeSeries};

/// The URL of a real service a test runs against, from the environment variable `var`
/// that `scripts/testenv env` exports. Unset, the test is skipped with a line saying how to
/// run it, except under `CI`, where a missing service fails the run instead.
/// `service` is the name `scripts/testenv up` takes (`kafka`, `postgres`, …).
pub fn service_url(var: &str, service: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let message = format!(
                "{var} is not set: start the service with `scripts/testenv up {service}` and \
                 export its URL with `eval \"$(scripts/testenv env)\"` (make test does both)"
            );
            assert!(
                std::env::var_os("CI").is_none(),
                "{message}; CI is set, so this test must run"
            );
            println!("SKIPPED: {message}");
            None
        }
    }
}

/// A name no other run uses (process id and clock), for topics, databases, key prefixes
/// and ids on a shared service: `<prefix><tag>_<pid>_<nanos>`, legal in all of them.
pub fn unique_name(prefix: &str, tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}{tag}_{}_{nanos}", std::process::id())
}

fn reading(device_id: &str, ts_ms: i64, value: f64) -> Reading {
    Reading {
        device_id: device_id.to_owned(),
        device_type: "temperature_sensor".to_owned(),
        location: Some("Lab".to_owned()),
        ts_ms,
        fields: BTreeMap::from([
            ("temperature_celsius".to_owned(), value),
            ("meta_battery_level".to_owned(), 80.0),
        ]),
    }
}

fn alert(id: &str, device_id: &str, state: AlertPhase, timestamp: &str) -> Alert {
    Alert {
        id: id.to_owned(),
        device_id: device_id.to_owned(),
        alert_type: AlertKind::Threshold,
        rule: "too-hot".to_owned(),
        metric: Some("temperature_celsius".to_owned()),
        severity: Severity::Critical,
        state,
        value: 35.0,
        threshold: "10-30".to_owned(),
        timestamp: timestamp.to_owned(),
        started_at: timestamp.to_owned(),
        message: "too hot".to_owned(),
    }
}

/// Writes, rewrites (idempotence), reads history raw and rolled up.
pub async fn time_series_suite(store: &dyn TimeSeries, run: &str) {
    let device = format!("{run}-ts-1");
    let base = 1_780_000_000_000 / 3_600_000 * 3_600_000; // an hour boundary
    let batch: Vec<Reading> = (0..10)
        .map(|i| reading(&device, base + i * 60_000, 20.0 + i as f64))
        .collect();
    store.write(&batch).await.expect("write");
    store.write(&batch[3..6]).await.expect("replayed write");
    assert_eq!(
        store
            .count(&device, base, base + 3_600_000)
            .await
            .expect("count"),
        10,
        "a replayed reading must overwrite itself, not add a row"
    );

    let mut query = HistoryQuery {
        device_id: device.clone(),
        since_ms: base,
        until_ms: base + 3_600_000,
        field: Some("temperature_celsius".to_owned()),
        limit: 1000,
        rollup: false,
    };
    let points = store.history(&query).await.expect("history");
    assert_eq!(points.len(), 10, "one point per reading for one field");
    assert_eq!(points[0].ts_ms, base, "ascending by time");
    assert_eq!(points[9].value, 29.0);
    assert!(points.iter().all(|p| p.field == "temperature_celsius"));

    query.limit = 3;
    let newest = store.history(&query).await.expect("history with limit");
    assert_eq!(
        newest.iter().map(|p| p.value).collect::<Vec<_>>(),
        [27.0, 28.0, 29.0],
        "limit keeps the newest"
    );

    query.field = None;
    query.limit = 1000;
    assert_eq!(store.history(&query).await.expect("all fields").len(), 20);

    query.since_ms = base + 3_600_000;
    query.until_ms = base + 7_200_000;
    assert!(store.history(&query).await.expect("empty range").is_empty());

    let rolled = store.rollup(base, base + 3_600_000).await.expect("rollup");
    assert!(rolled >= 2, "one rollup row per field, got {rolled}");
    let rollups = store
        .history(&HistoryQuery {
            device_id: device.clone(),
            since_ms: base,
            until_ms: base + 3_600_000,
            field: Some("temperature_celsius".to_owned()),
            limit: 10,
            rollup: true,
        })
        .await
        .expect("rollup history");
    assert_eq!(rollups.len(), 1);
    assert_eq!(rollups[0].ts_ms, base);
    assert!(
        (rollups[0].value - 24.5).abs() < 1e-9,
        "hourly mean, got {}",
        rollups[0].value
    );
}

/// Latest values, metrics with TTL, capped alert list, dashboard, live feed.
pub async fn cache_suite(cache: &dyn Cache, run: &str) {
    let device = format!("{run}-c-1");
    let now = 1_780_000_000_000;
    let mut live = cache.live();
    cache
        .put_latest(&[
            reading(&device, now, 21.0),
            reading(&device, now - 1000, 99.0),
        ])
        .await
        .expect("put latest");
    let latest = cache
        .latest(&device)
        .await
        .expect("latest")
        .expect("present");
    assert_eq!(
        latest.field("temperature_celsius"),
        Some(21.0),
        "an older reading never replaces a newer one"
    );
    assert!(
        cache
            .last_seen()
            .await
            .expect("last seen")
            .contains(&(device.clone(), now))
    );
    match live.recv().await.expect("live event") {
        LiveEvent::Reading(r) => assert_eq!(r.device_id, device),
        other => panic!("expected a reading, got {other:?}"),
    }

    let metrics = DeviceMetrics {
        device_id: device.clone(),
        avg_temp: Some(21.5),
        humidity: None,
        health_score: 0.9,
        status: "online".to_owned(),
        main_field: Some("temperature_celsius".to_owned()),
        moving_average: Some(21.5),
        window: Some(sensorfleet_model::analytics::WindowStats {
            count: 3,
            mean: 21.0,
            min: 20.0,
            max: 22.0,
            stddev: 0.8,
        }),
    };
    cache
        .put_metrics(std::slice::from_ref(&metrics), now)
        .await
        .expect("metrics");
    assert_eq!(
        cache.metrics(&device, now + 1000).await.expect("metrics"),
        Some(metrics)
    );
    assert_eq!(
        cache
            .metrics(&device, now + 301_000)
            .await
            .expect("metrics"),
        None,
        "metrics expire after 300 s"
    );

    let a = alert(
        &format!("{run}-a1"),
        &device,
        AlertPhase::Firing,
        "2026-05-29T10:30:00.000Z",
    );
    let b = alert(
        &format!("{run}-a2"),
        &device,
        AlertPhase::Firing,
        "2026-05-29T10:31:00.000Z",
    );
    cache
        .push_alerts(&[a.clone(), b.clone()])
        .await
        .expect("alerts");
    let listed = cache.alerts(2).await.expect("alerts");
    assert_eq!(listed[0].id, b.id, "newest first");
    assert_eq!(listed[1].id, a.id);

    let counters = crate::DashboardCounters {
        active_devices: 3,
        total_alerts: 1,
        average_health_score: 0.8,
    };
    cache.put_dashboard(counters, now).await.expect("dashboard");
    assert_eq!(
        cache.dashboard(now + 1000).await.expect("dashboard"),
        Some(counters)
    );
    assert_eq!(
        cache.dashboard(now + 61_000).await.expect("dashboard"),
        None,
        "dashboard expires after 60 s"
    );
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::memory::MemoryCache;
    use crate::event_log::memory::MemoryLog;
    use crate::sqlite::SqliteStore;

    #[tokio::test]
    async fn sqlite_passes_the_time_series_suite() {
        let store = SqliteStore::in_memory().await.expect("open");
        time_series_suite(&store, "t").await;
    }

    #[tokio::test]
    async fn sqlite_passes_the_registry_suite() {
        let store = SqliteStore::in_memory().await.expect("open");
        registry_suite(&store, "t").await;
    }

    #[tokio::test]
    async fn sqlite_file_keeps_history_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).await.expect("open");
        store
            .write(&[reading("d", 1_780_000_000_000, 1.0)])
            .await
            .expect("write");
        drop(store);
        let store = SqliteStore::open(dir.path()).await.expect("reopen");
        assert_eq!(store.total_readings().await.expect("count"), 1);
    }

    #[tokio::test]
    async fn memory_cache_passes_the_cache_suite() {
        cache_suite(&MemoryCache::default(), "t").await;
    }

    #[tokio::test]
    async fn memory_log_passes_the_event_log_suite() {
        event_log_suite(&MemoryLog::new(1000), "t").await;
    }
}
