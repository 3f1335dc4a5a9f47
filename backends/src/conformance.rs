//! The shared test suite every implementation of a backend trait must pass: the embedded
//! ones in this crate's unit tests, the production ones against the real services.
//!
//! Each suite panics with a message on the first broken promise; ids are prefixed with a
//! caller-chosen `run` string so suites can run against a shared, non-empty service.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sensorfleet_model::CompiledRule;
use sensorfleet_model::analytics::alert::Threshold;
use sensorfleet_model::{Alert, AlertKind, AlertPhase, Reading, Severity};

use crate::{
    Assignment, Cache, Delivery, DeviceMetrics, DeviceRecord, EventLog, HistoryQuery, LiveEvent,
    LogConsumer, Record, Registry, TimeSeries, Topic, partition_of,
};

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

/// Devices, rules, alert history and rule state round-trip.
pub async fn registry_suite(registry: &dyn Registry, run: &str) {
    let fleet = format!("{run}-fleet");
    let device = |n: u32, location: &str| DeviceRecord {
        device_id: format!("{run}-dev-{n}"),
        device_type: "temperature_sensor".to_owned(),
        location: Some(location.to_owned()),
        status: "active".to_owned(),
        fleet: Some(fleet.clone()),
        publish_interval_ms: Some(10_000),
        offline_after_ms: Some(300_000),
    };
    registry
        .upsert_devices(&[device(1, "A"), device(2, "B"), device(3, "C")])
        .await
        .expect("upsert");
    registry
        .upsert_devices(&[device(2, "B2")])
        .await
        .expect("update");
    let two = registry
        .device(&format!("{run}-dev-2"))
        .await
        .expect("device")
        .expect("present");
    assert_eq!(two.location.as_deref(), Some("B2"), "upsert updates");

    let mut seen = device(1, "elsewhere");
    seen.status = "unregistered".to_owned();
    registry
        .insert_missing_devices(&[seen])
        .await
        .expect("insert missing");
    let one = registry
        .device(&format!("{run}-dev-1"))
        .await
        .expect("device")
        .expect("present");
    assert_eq!(
        one.location.as_deref(),
        Some("A"),
        "insert_missing never overwrites"
    );

    let pruned = registry
        .prune_fleet(&fleet, &[format!("{run}-dev-1"), format!("{run}-dev-2")])
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    let ours: Vec<_> = registry
        .devices()
        .await
        .expect("devices")
        .into_iter()
        .filter(|d| d.fleet.as_deref() == Some(fleet.as_str()))
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ours, [format!("{run}-dev-1"), format!("{run}-dev-2")]);
    assert!(
        registry
            .device("no-such-device")
            .await
            .expect("lookup")
            .is_none()
    );

    let rule = |name: &str, max: f64| CompiledRule {
        name: format!("{run}-{name}"),
        device_type: Some("temperature_sensor".to_owned()),
        fleet: None,
        metric: "temperature_celsius".to_owned(),
        threshold: Threshold {
            min: Some(10.0),
            max: Some(max),
            clear_min: None,
            clear_max: Some(max - 1.0),
        },
        for_ms: 30_000,
        severity: Severity::Critical,
    };
    registry
        .replace_rules(&[rule("a", 30.0), rule("b", 40.0)])
        .await
        .expect("rules");
    registry
        .replace_rules(&[rule("b", 45.0)])
        .await
        .expect("rules again");
    let rules: Vec<_> = registry
        .rules()
        .await
        .expect("rules")
        .into_iter()
        .filter(|r| r.name.starts_with(run))
        .collect();
    assert_eq!(
        rules,
        [rule("b", 45.0)],
        "replace_rules makes the set exactly the given rules"
    );

    let id = format!("{run}-dev-1/too-hot/1");
    // Relative: the registry may be shared with other tests that keep their alerts.
    let active_before = registry.active_alert_count().await.expect("count");
    registry
        .record_alerts(&[alert(
            &id,
            &format!("{run}-dev-1"),
            AlertPhase::Firing,
            "2026-05-29T10:30:00.000Z",
        )])
        .await
        .expect("alert");
    assert_eq!(
        registry.active_alert_count().await.expect("count"),
        active_before + 1,
        "a firing alert is active"
    );
    registry
        .record_alerts(&[alert(
            &id,
            &format!("{run}-dev-1"),
            AlertPhase::Resolved,
            "2026-05-29T10:35:00.000Z",
        )])
        .await
        .expect("alert update");
    assert_eq!(
        registry.active_alert_count().await.expect("count"),
        active_before,
        "a resolved alert is not"
    );
    let stored = registry.alert(&id).await.expect("alert").expect("present");
    assert_eq!(
        stored.state,
        AlertPhase::Resolved,
        "an alert id is one row, updated"
    );
    assert!(
        registry
            .alerts(1000)
            .await
            .expect("alerts")
            .iter()
            .any(|a| a.id == id)
    );

    let key = (format!("{run}-dev-1"), "rule:too-hot".to_owned());
    registry
        .save_rule_state(&[(
            key.0.clone(),
            key.1.clone(),
            Some("{\"firing\":1}".to_owned()),
        )])
        .await
        .expect("save state");
    let states = registry.load_rule_state().await.expect("load state");
    assert!(states.contains(&(key.0.clone(), key.1.clone(), "{\"firing\":1}".to_owned())));
    registry
        .save_rule_state(&[(key.0.clone(), key.1.clone(), None)])
        .await
        .expect("delete state");
    let states = registry.load_rule_state().await.expect("load state");
    assert!(
        !states.iter().any(|(d, s, _)| (d, s) == (&key.0, &key.1)),
        "None deletes the row"
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

/// How long the event log suite waits for records it expects (a Kafka consumer first has
/// to join its group and be assigned partitions).
const LOG_DEADLINE: Duration = Duration::from_secs(60);
/// How long it keeps polling after the expected records, to catch any that should not
/// have come (a redelivery from another partition arrives at about the same time).
const LOG_SETTLE: Duration = Duration::from_millis(1500);

/// Reading `seq` of device `key`: the payload names both, the headers carry them too.
fn log_record(key: &str, seq: u32) -> Record {
    Record {
        key: key.to_owned(),
        payload: format!("{key}#{seq}").into_bytes(),
        headers: vec![
            ("seq".to_owned(), seq.to_string()),
            ("note".to_owned(), "héllo, wörld".to_owned()),
        ],
    }
}

/// `seq` from..to of every key, interleaved as a bridge batch would be.
fn log_batch(keys: &[String], seqs: std::ops::Range<u32>) -> Vec<Record> {
    seqs.flat_map(|seq| keys.iter().map(move |key| log_record(key, seq)))
        .collect()
}

/// Polls until `want` records arrived, then a little longer; panics on too few or too
/// many, and when offsets go backwards within a partition.
async fn poll_exactly(consumer: &mut dyn LogConsumer, want: usize, what: &str) -> Vec<Delivery> {
    let mut got: Vec<Delivery> = Vec::new();
    let deadline = Instant::now() + LOG_DEADLINE;
    while got.len() < want && Instant::now() < deadline {
        got.extend(consumer.poll(want + 10, 200).await.expect("poll"));
    }
    assert_eq!(
        got.len(),
        want,
        "{what}: expected {want} records within {LOG_DEADLINE:?}"
    );
    let settle = Instant::now() + LOG_SETTLE;
    while Instant::now() < settle {
        let extra = consumer.poll(10, 100).await.expect("poll");
        assert!(
            extra.is_empty(),
            "{what}: expected exactly {want} records, then got {:?}",
            extra
                .iter()
                .map(|d| String::from_utf8_lossy(&d.record.payload).into_owned())
                .collect::<Vec<_>>()
        );
    }
    let mut last_offset: HashMap<u32, u64> = HashMap::new();
    for delivery in &got {
        if let Some(previous) = last_offset.insert(delivery.partition, delivery.offset) {
            assert!(
                delivery.offset > previous,
                "{what}: offsets ascend within partition {}",
                delivery.partition
            );
        }
    }
    got
}

/// Checks that `got` holds exactly `seqs` of every key, each key's in order, with
/// payloads and headers as appended.
fn assert_per_key(got: &[Delivery], keys: &[String], seqs: std::ops::Range<u32>, what: &str) {
    for key in keys {
        let of_key: Vec<&Record> = got
            .iter()
            .map(|d| &d.record)
            .filter(|r| &r.key == key)
            .collect();
        let wanted: Vec<Record> = seqs.clone().map(|seq| log_record(key, seq)).collect();
        assert_eq!(
            of_key.len(),
            wanted.len(),
            "{what}: records of {key}, got {:?}",
            of_key
                .iter()
                .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
                .collect::<Vec<_>>()
        );
        for (got, wanted) in of_key.iter().zip(&wanted) {
            assert_eq!(
                *got, wanted,
                "{what}: one device's records arrive in order, payload and headers intact"
            );
        }
    }
}

/// Append, subscribe, poll and commit: per-key order, headers, redelivery of what a
/// group polled but did not commit, none of what it committed, independent groups, and
/// the dead-letter topic. `log` must be empty for this `run` (fresh, or topics of its
/// own); groups and keys carry `run`.
pub async fn event_log_suite(log: &dyn EventLog, run: &str) {
    let keys: Vec<String> = (0..4).map(|k| format!("{run}-dev-{k}")).collect();
    log.append(Topic::Readings, log_batch(&keys, 0..15))
        .await
        .expect("append");
    log.append(Topic::Readings, log_batch(&keys, 15..25))
        .await
        .expect("append a second batch");
    log.append(Topic::Readings, Vec::new())
        .await
        .expect("append nothing");

    let group = format!("{run}-a");
    let mut first = log
        .subscribe(Topic::Readings, &group)
        .await
        .expect("subscribe");
    let got = poll_exactly(first.as_mut(), 100, "the group's first consumer").await;
    assert_per_key(&got, &keys, 0..25, "the group's first consumer");
    first.commit().await.expect("commit");

    // Polled but not committed: the group's next consumer gets exactly these again.
    log.append(Topic::Readings, log_batch(&keys, 25..30))
        .await
        .expect("append");
    let got = poll_exactly(first.as_mut(), 20, "the first consumer, after its commit").await;
    assert_per_key(&got, &keys, 25..30, "the first consumer, after its commit");
    drop(first);
    let mut second = log
        .subscribe(Topic::Readings, &group)
        .await
        .expect("resubscribe");
    let got = poll_exactly(second.as_mut(), 20, "the group's second consumer").await;
    assert_per_key(
        &got,
        &keys,
        25..30,
        "the group's second consumer: what was polled and not committed, nothing committed",
    );
    second.commit().await.expect("commit");
    second
        .commit()
        .await
        .expect("a commit with nothing new is fine");
    drop(second);

    // Committed: a third consumer sees only what came after.
    let marker = log_record(&keys[0], 30);
    log.append(Topic::Readings, vec![marker.clone()])
        .await
        .expect("append");
    let mut third = log
        .subscribe(Topic::Readings, &group)
        .await
        .expect("resubscribe");
    let got = poll_exactly(third.as_mut(), 1, "the group's third consumer").await;
    assert_eq!(got[0].record, marker, "only what came after the commit");
    drop(third);

    // Another group sees everything, on its own.
    let mut other = log
        .subscribe(Topic::Readings, &format!("{run}-b"))
        .await
        .expect("subscribe another group");
    let got = poll_exactly(other.as_mut(), 121, "another group").await;
    assert_per_key(&got, &keys[1..], 0..30, "another group");
    assert_per_key(&got, &keys[..1], 0..31, "another group");
    // Its only member owns every partition, and each key is where the partitioner says.
    let owned = other
        .assignment()
        .await
        .expect("the assignment")
        .expect("assigned, having polled");
    assert_eq!(
        owned,
        Assignment::whole(owned.partitions),
        "the only member"
    );
    for delivery in &got {
        assert_eq!(
            partition_of(&delivery.record.key, owned.partitions),
            delivery.partition,
            "{} is in the partition partition_of computes",
            delivery.record.key
        );
    }

    // Dead letters carry the reason in a header; alerts are a topic of their own.
    let reject = Record {
        key: format!("{run}-bad"),
        payload: b"{\"device_id\": not json".to_vec(),
        headers: vec![
            ("reason".to_owned(), "unparseable".to_owned()),
            (
                "topic".to_owned(),
                "sensors/temperature_sensor/x".to_owned(),
            ),
        ],
    };
    log.append(Topic::DeadLetter, vec![reject.clone()])
        .await
        .expect("append a dead letter");
    let alert = Record {
        key: keys[0].clone(),
        payload: b"{\"alert\":1}".to_vec(),
        headers: Vec::new(),
    };
    log.append(Topic::Alerts, vec![alert.clone()])
        .await
        .expect("append an alert");
    let mut dead = log
        .subscribe(Topic::DeadLetter, &format!("{run}-dlq"))
        .await
        .expect("subscribe to dead letters");
    let got = poll_exactly(dead.as_mut(), 1, "the dead-letter topic").await;
    assert_eq!(
        got[0].record, reject,
        "a dead letter keeps its reason header"
    );
    let mut alerts = log
        .subscribe(Topic::Alerts, &format!("{run}-alerts"))
        .await
        .expect("subscribe to alerts");
    let got = poll_exactly(alerts.as_mut(), 1, "the alerts topic").await;
    assert_eq!(got[0].record, alert);

    // A tail reads only what comes after it (it may take a moment to find the end:
    // markers are appended until the first arrives), and commits nothing.
    let mut tail = log.tail(Topic::Alerts).await.expect("tail");
    let mut seen = Vec::new();
    let deadline = Instant::now() + LOG_DEADLINE;
    let mut n = 0;
    while seen.is_empty() && Instant::now() < deadline {
        let marker = log_record(&keys[1], 100 + n);
        n += 1;
        log.append(Topic::Alerts, vec![marker])
            .await
            .expect("append a marker");
        seen.extend(tail.poll(10, 500).await.expect("poll the tail"));
    }
    assert!(
        !seen.is_empty(),
        "the tail got nothing within {LOG_DEADLINE:?}"
    );
    assert!(
        seen.iter().all(|d| d.record != alert),
        "a tail does not read what was there before it"
    );
    tail.commit().await.expect("a tail's commit is a no-op");
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
