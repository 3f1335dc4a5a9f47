//! The PostgreSQL registry against a real server: the shared registry suite, plus what
//! only this backend has (batches larger than one statement, the schema's length
//! limits, connection errors).
//!
//! Reads `SENSORFLEET_TEST_POSTGRES_URL` (`scripts/testenv up postgres`, then
//! `eval "$(scripts/testenv env)"`). Unset: skipped with a message, or a failure when
//! `CI` is set, so CI never passes without having run it.

use std::time::Instant;

use sensorfleet_backends::registry::postgres::PostgresRegistry;
use sensorfleet_backends::{BackendError, DeviceRecord, Registry, conformance};

const URL_VAR: &str = "SENSORFLEET_TEST_POSTGRES_URL";

/// The server's URL, or `None` (after saying so) when the test should be skipped.
fn server_url() -> Option<String> {
    conformance::service_url(URL_VAR, "postgres")
}

/// A prefix no earlier run on the same database used: ids from different runs never
/// collide, so the suite runs against a shared, non-empty database.
fn unique_run(tag: &str) -> String {
    conformance::unique_name("pg", tag)
}

async fn connect(url: &str) -> PostgresRegistry {
    PostgresRegistry::connect(url, 4)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL: {e}"))
}

#[tokio::test]
async fn postgres_passes_the_registry_suite() {
    let Some(url) = server_url() else { return };
    let registry = connect(&url).await;
    assert_eq!(registry.name(), "postgres");
    conformance::registry_suite(&registry, &unique_run("suite")).await;
    // Connecting again finds the schema migrated and keeps the data.
    let again = connect(&url).await;
    assert!(!again.devices().await.expect("devices").is_empty());
}

#[tokio::test]
async fn batches_span_several_statements_and_repeated_ids_resolve_like_single_writes() {
    let Some(url) = server_url() else { return };
    let registry = connect(&url).await;
    let run = unique_run("batch");
    let fleet = format!("{run}-fleet");
    let device = |n: usize, location: &str| DeviceRecord {
        device_id: format!("{run}-{n:05}"),
        device_type: "humidity_sensor".to_owned(),
        location: Some(location.to_owned()),
        status: "active".to_owned(),
        fleet: Some(fleet.clone()),
        publish_interval_ms: Some(10_000),
        offline_after_ms: None,
    };
    // 2500 rows (three statements), device 7 twice: the later one wins, as if written one by one.
    let mut batch: Vec<DeviceRecord> = (0..2500).map(|n| device(n, "first")).collect();
    batch.push(device(7, "second"));
    registry.upsert_devices(&batch).await.expect("upsert");
    let ours: Vec<DeviceRecord> = registry
        .devices()
        .await
        .expect("devices")
        .into_iter()
        .filter(|d| d.fleet.as_deref() == Some(fleet.as_str()))
        .collect();
    assert_eq!(ours.len(), 2500);
    assert!(
        ours.windows(2).all(|w| w[0].device_id < w[1].device_id),
        "sorted by id"
    );
    assert_eq!(ours[7].location.as_deref(), Some("second"));

    // Seen-before-declared with repeats: the first wins, an existing row is kept.
    let mut seen = device(9000, "seen-first");
    seen.status = "unregistered".to_owned();
    let mut seen_again = seen.clone();
    seen_again.location = Some("seen-second".to_owned());
    registry
        .insert_missing_devices(&[seen, seen_again, device(1, "never")])
        .await
        .expect("insert missing");
    let got = registry
        .device(&format!("{run}-09000"))
        .await
        .expect("device")
        .expect("present");
    assert_eq!(got.location.as_deref(), Some("seen-first"));
    let kept = registry
        .device(&format!("{run}-00001"))
        .await
        .expect("device")
        .expect("present");
    assert_eq!(kept.location.as_deref(), Some("first"));

    let keep: Vec<String> = (0..1200).map(|n| format!("{run}-{n:05}")).collect();
    assert_eq!(
        registry.prune_fleet(&fleet, &keep).await.expect("prune"),
        1301,
        "1300 undeclared plus the one seen before it was declared"
    );

    // Rule state: a save then a delete of one key in one batch leaves no row.
    let key = (format!("{run}-00001"), "rule:x".to_owned());
    registry
        .save_rule_state(&[
            (key.0.clone(), key.1.clone(), Some("{}".to_owned())),
            (key.0.clone(), key.1.clone(), None),
        ])
        .await
        .expect("save state");
    assert!(
        !registry
            .load_rule_state()
            .await
            .expect("load")
            .iter()
            .any(|(d, s, _)| (d, s) == (&key.0, &key.1))
    );

    // Leave the shared database as we found it: an empty keep list empties the fleet.
    assert_eq!(
        registry.prune_fleet(&fleet, &[]).await.expect("prune all"),
        1200
    );
}

#[tokio::test]
async fn the_longest_values_the_model_accepts_fit_the_schema() {
    let Some(url) = server_url() else { return };
    let registry = connect(&url).await;
    let run = unique_run("long");
    let device = DeviceRecord {
        device_id: format!("{run}-{}", "x".repeat(128 - run.len() - 1)),
        device_type: "t".repeat(64),
        location: Some("l".repeat(100)),
        status: "unregistered".to_owned(),
        fleet: None,
        publish_interval_ms: None,
        offline_after_ms: None,
    };
    registry
        .insert_missing_devices(std::slice::from_ref(&device))
        .await
        .expect("a 128-byte id, a 64-byte type and a 100-byte location are accepted");
    assert_eq!(
        registry
            .device(&device.device_id)
            .await
            .expect("device")
            .as_ref(),
        Some(&device)
    );
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_as_unavailable_without_the_password() {
    let started = Instant::now();
    let result = PostgresRegistry::connect(
        "postgres://sensorfleet:s3cret-pw@127.0.0.1:1/sensorfleet",
        2,
    )
    .await;
    let elapsed = started.elapsed();
    let error = match result {
        Ok(_) => panic!("connecting to port 1 succeeded"),
        Err(e) => e,
    };
    let message = error.to_string();
    assert!(
        matches!(error, BackendError::Unavailable { .. }),
        "expected Unavailable, got {error:?}"
    );
    assert!(!message.contains("s3cret-pw"), "password leaked: {message}");
    assert!(
        message.contains("127.0.0.1:1"),
        "names the server: {message}"
    );
    assert!(elapsed.as_secs() < 5, "took {elapsed:?}");
}

/// A NUL byte in text is a data exception (SQLSTATE 22021): `Content`, so the caller
/// dead-letters that row and writes the others, which the server still accepts.
#[tokio::test]
async fn a_nul_byte_is_a_content_error_and_the_rest_still_writes() {
    let Some(url) = server_url() else { return };
    let registry = connect(&url).await;
    let run = unique_run("nul");
    let device = |id: &str, location: &str| DeviceRecord {
        device_id: format!("{run}-{id}"),
        device_type: "temperature_sensor".to_owned(),
        location: Some(location.to_owned()),
        status: "unregistered".to_owned(),
        fleet: None,
        publish_interval_ms: None,
        offline_after_ms: None,
    };
    let error = registry
        .insert_missing_devices(&[device("bad", "a\u{0}b")])
        .await
        .expect_err("PostgreSQL refuses a NUL in text");
    assert!(error.is_content(), "{error:?}");
    assert!(error.to_string().contains("22021"), "{error}");
    registry
        .insert_missing_devices(&[device("good", "Lab")])
        .await
        .expect("a good row after the refused one");
    let stored = registry
        .device(&format!("{run}-good"))
        .await
        .expect("read back");
    assert_eq!(stored.and_then(|d| d.location).as_deref(), Some("Lab"));
}

#[tokio::test]
async fn a_malformed_url_is_rejected_without_the_password() {
    let error =
        match PostgresRegistry::connect("postgres://sf:s3cret-pw@127.0.0.1:notaport/db", 1).await {
            Ok(_) => panic!("a malformed URL connected"),
            Err(e) => e,
        };
    assert!(matches!(error, BackendError::Rejected { .. }), "{error:?}");
    assert!(!error.to_string().contains("s3cret-pw"), "{error}");
}

/// Whether the pool's connection to the server is encrypted.
async fn encrypted(registry: &PostgresRegistry) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(registry.pool())
        .await
        .expect("pg_stat_ssl")
}

/// TLS by the URL's libpq parameters, against the test server's own CA (`scripts/testenv`
/// turns TLS on with a private CA): verify-full works and is encrypted, disable is not,
/// and a server certificate the client cannot verify is refused with what to check.
#[tokio::test]
async fn tls_follows_sslmode_and_verifies_the_server() {
    let (url, ca) = (
        server_url(),
        conformance::service_url("SENSORFLEET_TEST_POSTGRES_CA", "postgres"),
    );
    let (Some(url), Some(ca)) = (url, ca) else {
        return;
    };
    let verified =
        PostgresRegistry::connect(&format!("{url}?sslmode=verify-full&sslrootcert={ca}"), 1)
            .await
            .expect("verify-full with the server's CA");
    assert!(encrypted(&verified).await, "verify-full is encrypted");
    verified.devices().await.expect("a query over TLS");

    let plain = PostgresRegistry::connect(&format!("{url}?sslmode=disable"), 1)
        .await
        .expect("sslmode=disable");
    assert!(!encrypted(&plain).await, "sslmode=disable is not");

    // The system's roots do not know the test CA.
    let refused = PostgresRegistry::connect(&format!("{url}?sslmode=verify-full"), 1).await;
    match refused {
        Err(BackendError::Rejected { detail, .. }) => {
            assert!(detail.contains("sslrootcert"), "{detail}");
            assert!(
                !detail.contains(":sensorfleet@"),
                "password masked: {detail}"
            );
        }
        other => panic!(
            "an unverifiable server must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
}
