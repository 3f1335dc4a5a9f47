//! The cache suite against a real Redis: `scripts/testenv up redis`, then
//! `eval "$(scripts/testenv env)"` sets `SENSORFLEET_TEST_REDIS_URL`.
//!
//! Without that variable the tests print `SKIPPED: …` and pass, except under `CI`, where a
//! missing service is a failure. Each run uses its own key prefix, so runs can share one
//! server and nothing is flushed.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, KeysInterface};
use fred::types::{ClusterHash, CustomCommand};
use sensorfleet_backends::cache::redis::RedisCache;
use sensorfleet_backends::{BackendError, Cache, DeviceMetrics, LiveEvent, conformance};

/// The test server's URL; `None` (after saying why) when the test should skip.
fn redis_url() -> Option<String> {
    conformance::service_url("SENSORFLEET_TEST_REDIS_URL", "redis")
}

/// A prefix no other run uses: pid and time.
fn unique_run() -> String {
    conformance::unique_name("t", "")
}

/// Deletes the keys a run left (the latest readings, lists and sets have no TTL), with
/// `SCAN` so a shared server is never blocked. A failed test keeps its keys to look at.
async fn remove_keys(url: &str, prefix: &str) {
    let config = Config::from_url(url).expect("a Redis URL");
    let client = Builder::from_config(config).build().expect("client");
    client.init().await.expect("connect for cleanup");
    let scan = CustomCommand::new_static("SCAN", ClusterHash::Random, false);
    let mut cursor = "0".to_owned();
    loop {
        let args = vec![
            cursor,
            "MATCH".into(),
            format!("{prefix}*"),
            "COUNT".into(),
            "1000".into(),
        ];
        let (next, keys): (String, Vec<String>) =
            client.custom(scan.clone(), args).await.expect("scan");
        if !keys.is_empty() {
            let _: i64 = client.del(keys).await.expect("del");
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let _ = client.quit().await;
}

/// A cache whose keys carry a prefix unique to this run, so runs never see each other.
async fn connect_unique(url: &str) -> (RedisCache, String, String) {
    let run = unique_run();
    let prefix = format!("sensorfleet-test:{run}:");
    let cache = RedisCache::connect_with_prefix(url, &prefix)
        .await
        .expect("connect to the test Redis");
    (cache, run, prefix)
}

#[tokio::test]
async fn redis_passes_the_cache_suite() {
    let Some(url) = redis_url() else { return };
    let (cache, run, prefix) = connect_unique(&url).await;
    assert_eq!(cache.name(), "redis");
    sensorfleet_backends::conformance::cache_suite(&cache, &run).await;
    remove_keys(&url, &prefix).await;
}

#[tokio::test]
async fn redis_keeps_one_alert_entry_per_id_and_lists_metrics() {
    let Some(url) = redis_url() else { return };
    let (cache, run, prefix) = connect_unique(&url).await;
    let mut live = cache.live();

    let json = |state: &str, ts: &str| {
        serde_json::json!({
            "id": format!("{run}-a"), "device_id": format!("{run}-d"),
            "alert_type": "threshold", "rule": "too-hot", "severity": "critical",
            "state": state, "value": 35.0, "threshold": "10-30", "timestamp": ts,
            "started_at": ts, "message": "too hot"
        })
    };
    let firing =
        serde_json::from_value(json("firing", "2026-05-29T10:30:00.000Z")).expect("an alert");
    let resolved =
        serde_json::from_value(json("resolved", "2026-05-29T10:35:00.000Z")).expect("an alert");
    cache.push_alerts(&[firing]).await.expect("push");
    cache
        .push_alerts(std::slice::from_ref(&resolved))
        .await
        .expect("push");
    let listed = cache.alerts(10).await.expect("alerts");
    assert_eq!(
        listed,
        vec![resolved.clone()],
        "the newer state replaced the older"
    );

    let event = tokio::time::timeout(Duration::from_secs(5), live.recv())
        .await
        .expect("a live event within 5 s")
        .expect("live event");
    assert!(matches!(event, LiveEvent::Alert(a) if a.id == resolved.id));

    let now = 1_780_000_000_000;
    let metrics: Vec<DeviceMetrics> = (0..3)
        .map(|i| DeviceMetrics {
            device_id: format!("{run}-m{i}"),
            avg_temp: None,
            humidity: Some(40.0 + f64::from(i)),
            health_score: 0.5,
            status: "online".to_owned(),
            ..DeviceMetrics::default()
        })
        .collect();
    cache.put_metrics(&metrics, now).await.expect("metrics");
    assert_eq!(cache.all_metrics(now).await.expect("all"), metrics);
    assert!(
        cache
            .all_metrics(now + 300_000)
            .await
            .expect("all")
            .is_empty()
    );
    assert_eq!(
        cache.latest(&format!("{run}-none")).await.expect("get"),
        None
    );
    remove_keys(&url, &prefix).await;
}

#[tokio::test]
async fn redis_caps_the_alert_list_and_its_index() {
    let Some(url) = redis_url() else { return };
    let (cache, run, prefix) = connect_unique(&url).await;
    let cap = sensorfleet_backends::cache::ALERT_LIST_CAP;
    let alerts: Vec<sensorfleet_model::Alert> = (0..cap + 3)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "id": format!("{run}-a{i}"), "device_id": format!("{run}-d"),
                "alert_type": "threshold", "rule": "too-hot", "severity": "warning",
                "state": "firing", "value": 35.0, "threshold": "10-30",
                "timestamp": "2026-05-29T10:30:00.000Z",
                "started_at": "2026-05-29T10:30:00.000Z", "message": "too hot"
            }))
            .expect("an alert")
        })
        .collect();
    // One call, several script chunks, one round trip.
    cache.push_alerts(&alerts).await.expect("push");
    let listed = cache.alerts(cap + 10).await.expect("alerts");
    assert_eq!(listed.len(), cap, "capped");
    assert_eq!(listed[0].id, alerts[cap + 2].id, "newest first");
    assert_eq!(
        listed[cap - 1].id,
        alerts[3].id,
        "the oldest three were dropped"
    );

    let config = Config::from_url(&url).expect("a Redis URL");
    let client = Builder::from_config(config).build().expect("client");
    client.init().await.expect("connect");
    let hlen = CustomCommand::new_static("HLEN", ClusterHash::FirstKey, false);
    let indexed: usize = client
        .custom(hlen, vec![format!("{prefix}alerts:by_id")])
        .await
        .expect("hlen");
    assert_eq!(
        indexed, cap,
        "ids trimmed from the list leave the index too"
    );
    let _ = client.quit().await;
    remove_keys(&url, &prefix).await;
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_and_names_the_url_without_password() {
    let result = RedisCache::connect("redis://:hunter2@127.0.0.1:1").await;
    match result {
        Err(e @ BackendError::Unavailable { .. }) => {
            let text = e.to_string();
            eprintln!("as expected: {text}");
            assert!(text.contains("127.0.0.1:1"), "names the URL: {text}");
            assert!(!text.contains("hunter2"), "masks the password: {text}");
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("connected to 127.0.0.1:1"),
    }
}
