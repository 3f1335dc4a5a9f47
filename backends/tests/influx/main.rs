//! The InfluxDB time-series store against a real server: the shared time-series suite,
//! plus what only this backend has (the stored schema, line-protocol escaping, InfluxQL
//! quoting, rejections naming the point, batching and streamed answers, retries).
//!
//! Reads `SENSORFLEET_TEST_INFLUX_URL` (`scripts/testenv up influxdb`, then
//! `eval "$(scripts/testenv env)"`). Unset: skipped with a message, or a failure when `CI`
//! is set. Each test uses its own database (created on connect, dropped at the end; a
//! failed test keeps it to look at). The schema is checked over plain HTTP with a tiny
//! client of its own, not through the code under test.
//!
//! The test environment's InfluxDB is 1.6: it has no `/api/v2/write`, so in CI the v2 write
//! path is covered by the unit test of its request (`config.rs`) and by a stand-in HTTP
//! server here that checks what arrives. With `SENSORFLEET_TEST_INFLUX2_URL` (and the token
//! in `SENSORFLEET_INFLUX_TOKEN`) the shared suite also runs against a real InfluxDB 2.x;
//! it passed against 2.7.12 built from its Go module (libflux needs its lints capped for
//! today's rustc, through a `RUSTC_WRAPPER` adding `--cap-lints=warn`, since `RUSTFLAGS`
//! does not reach its build dependencies under `--target`). The retry tests use stand-ins
//! too: a real server cannot be made to answer 503 or 429 on demand.
//!
//! Hostile text and refusals are in `content.rs`, the stand-in servers' tests in
//! `standins.rs`.
//!
//! Throughput: `cargo test --release -p sensorfleet-backends --test influx -- --ignored
//! --nocapture write_throughput`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sensorfleet_backends::timeseries::influx::{InfluxOptions, InfluxStore, RetryPolicy};
use sensorfleet_backends::{BackendError, HistoryQuery, TimeSeries, conformance};
use sensorfleet_model::Reading;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod content;
mod standins;

const URL_VAR: &str = "SENSORFLEET_TEST_INFLUX_URL";
const HOUR: i64 = 3_600_000;
/// An hour boundary in 2026.
const BASE: i64 = 1_780_000_000_000 / HOUR * HOUR;

/// The server's `host:port`, or `None` (after saying so) when the test should be skipped.
fn server() -> Option<String> {
    let url = conformance::service_url(URL_VAR, "influxdb")?;
    let parsed = url::Url::parse(&url).expect("SENSORFLEET_TEST_INFLUX_URL parses");
    Some(format!(
        "{}:{}",
        parsed.host_str().expect("a host"),
        parsed.port().unwrap_or(8086)
    ))
}

/// A name no other run uses.
fn unique(tag: &str) -> String {
    conformance::unique_name("sftest_", tag)
}

/// One HTTP/1.0 request (so the answer is never chunked and ends with the connection);
/// returns the status and body.
fn http(
    authority: &str,
    method: &str,
    path: &str,
    body: &str,
    content_type: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(authority).expect("connect to InfluxDB");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A test database: created by the store on connect, dropped when the test passed.
struct TestDb {
    authority: String,
    name: String,
}

impl TestDb {
    fn new(authority: &str, tag: &str) -> Self {
        Self {
            authority: authority.to_owned(),
            name: unique(tag),
        }
    }

    fn url(&self) -> String {
        format!("influx://{}?db={}", self.authority, self.name)
    }

    async fn store(&self, options: InfluxOptions) -> InfluxStore {
        InfluxStore::connect(&self.url(), options)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test InfluxDB: {e}"))
    }

    /// Runs InfluxQL over plain HTTP; the JSON answer.
    fn query(&self, statement: &str) -> Value {
        let (status, body) = http(
            &self.authority,
            "POST",
            &format!("/query?{}", form(&[("db", &self.name), ("epoch", "ms")])),
            &form(&[("q", statement)]),
            "application/x-www-form-urlencoded",
        );
        assert_eq!(status, 200, "{statement}: {body}");
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        assert!(
            answer["results"][0]["error"].is_null(),
            "{statement}: {answer}"
        );
        answer
    }

    /// The rows of the first series of a statement, as `column → value` maps.
    fn rows(&self, statement: &str) -> Vec<BTreeMap<String, Value>> {
        let answer = self.query(statement);
        let mut rows = Vec::new();
        for series in answer["results"][0]["series"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let columns: Vec<String> = series["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| c.as_str().expect("a name").to_owned())
                .collect();
            for row in series["values"].as_array().expect("values") {
                let cells = row.as_array().expect("a row");
                rows.push(columns.iter().cloned().zip(cells.iter().cloned()).collect());
            }
        }
        rows
    }

    /// The first column of every row of every series (SHOW … answers).
    fn names(&self, statement: &str) -> BTreeSet<String> {
        self.rows(statement)
            .iter()
            .filter_map(|row| row.values().next()?.as_str().map(str::to_owned))
            .collect()
    }

    /// Writes raw line protocol, bypassing the store.
    fn write_raw(&self, lines: &str) -> (u16, String) {
        http(
            &self.authority,
            "POST",
            &format!(
                "/write?{}",
                form(&[("db", &self.name), ("precision", "ms")])
            ),
            lines,
            "text/plain",
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept database {} for inspection", self.name);
            return;
        }
        let statement = format!("DROP DATABASE \"{}\"", self.name);
        let _ = http(
            &self.authority,
            "POST",
            "/query",
            &form(&[("q", &statement)]),
            "application/x-www-form-urlencoded",
        );
    }
}

fn reading(
    device_id: &str,
    device_type: &str,
    location: Option<&str>,
    ts_ms: i64,
    fields: &[(&str, f64)],
) -> Reading {
    Reading {
        device_id: device_id.to_owned(),
        device_type: device_type.to_owned(),
        location: location.map(str::to_owned),
        ts_ms,
        fields: fields.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
    }
}

fn history(device_id: &str, since_ms: i64, until_ms: i64) -> HistoryQuery {
    HistoryQuery {
        device_id: device_id.to_owned(),
        since_ms,
        until_ms,
        field: None,
        limit: 10_000,
        rollup: false,
    }
}

#[tokio::test]
async fn influx_passes_the_time_series_suite() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server, "suite");
    let store = db.store(InfluxOptions::default()).await;
    assert_eq!(store.name(), "influxdb");
    assert!(
        db.names("SHOW DATABASES").contains(&db.name),
        "connect created the database"
    );
    conformance::time_series_suite(&store, &db.name).await;
    // Connecting again finds the database and keeps the data.
    let again = db.store(InfluxOptions::default()).await;
    let device = format!("{}-ts-1", db.name);
    assert_eq!(
        again
            .count(&device, BASE, BASE + HOUR)
            .await
            .expect("count"),
        10
    );
}

/// The same suite through the v2 write API of an InfluxDB 2.x, when one is given:
/// `SENSORFLEET_TEST_INFLUX2_URL=influx://host:port?org=…&bucket=…` with the token in
/// `SENSORFLEET_INFLUX_TOKEN`. The test environment runs 1.6 only, so this one skips
/// without it, in CI too. Reads go through 2.x's v1 API on the bucket's DBRP mapping.
#[tokio::test]
async fn influx2_passes_the_time_series_suite_through_the_v2_api() {
    let Ok(url) = std::env::var("SENSORFLEET_TEST_INFLUX2_URL") else {
        println!("SKIPPED: SENSORFLEET_TEST_INFLUX2_URL is not set (no InfluxDB 2.x here)");
        return;
    };
    let store = InfluxStore::connect(&url, InfluxOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connecting to the InfluxDB 2.x: {e}"));
    // A shared bucket: the run's unique prefix keeps its devices apart.
    let run = unique("v2");
    conformance::time_series_suite(&store, &run).await;
    let device = format!("{run}-ts-1");
    assert_eq!(
        store
            .count(&device, BASE, BASE + HOUR)
            .await
            .expect("count"),
        10
    );
}

#[tokio::test]
async fn the_stored_schema_is_the_design_schema() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server, "schema");
    let store = db.store(InfluxOptions::default()).await;
    store
        .write(&[
            reading(
                "srv-temp-0001",
                "temperature_sensor",
                Some("Server Room"),
                BASE + 123,
                &[
                    ("temperature_celsius", 22.5),
                    ("temperature_fahrenheit", 72.5),
                    ("meta_battery_level", 87.0),
                    ("meta_signal_strength", -61.0),
                ],
            ),
            reading(
                "office-hum-01",
                "humidity_sensor",
                None,
                BASE + 456,
                &[("humidity_percent", 41.0), ("dew_point", 9.25)],
            ),
        ])
        .await
        .expect("write");

    assert_eq!(
        db.names("SHOW MEASUREMENTS"),
        BTreeSet::from([
            "humidity_sensor".to_owned(),
            "temperature_sensor".to_owned()
        ])
    );
    assert_eq!(
        db.names("SHOW TAG KEYS FROM \"temperature_sensor\""),
        BTreeSet::from(["device_id".to_owned(), "location".to_owned()])
    );
    assert_eq!(
        db.names("SHOW TAG KEYS FROM \"humidity_sensor\""),
        BTreeSet::from(["device_id".to_owned()]),
        "no location, no location tag"
    );
    let field_types: BTreeMap<String, String> = db
        .rows("SHOW FIELD KEYS FROM \"temperature_sensor\"")
        .into_iter()
        .map(|row| {
            (
                row["fieldKey"].as_str().expect("key").to_owned(),
                row["fieldType"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        field_types,
        BTreeMap::from(
            [
                "meta_battery_level",
                "meta_signal_strength",
                "temperature_celsius",
                "temperature_fahrenheit"
            ]
            .map(|f| (f.to_owned(), "float".to_owned()))
        ),
        "every field is a float, even whole numbers"
    );
    let rows = db.rows("SELECT * FROM \"temperature_sensor\"");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["time"],
        BASE + 123,
        "the reading's time, to the millisecond"
    );
    assert_eq!(rows[0]["device_id"], "srv-temp-0001");
    assert_eq!(rows[0]["location"], "Server Room");
    assert_eq!(rows[0]["temperature_celsius"], 22.5);

    // The same series and time again: overwritten, not added.
    store
        .write(&[reading(
            "srv-temp-0001",
            "temperature_sensor",
            Some("Server Room"),
            BASE + 123,
            &[
                ("temperature_celsius", 23.0),
                ("temperature_fahrenheit", 73.4),
                ("meta_battery_level", 87.0),
                ("meta_signal_strength", -61.0),
            ],
        )])
        .await
        .expect("rewrite");
    let rows = db.rows("SELECT * FROM \"temperature_sensor\"");
    assert_eq!(rows.len(), 1, "idempotent: {rows:?}");
    assert_eq!(rows[0]["temperature_celsius"], 23.0);

    // Values round-trip exactly, extremes included.
    let extremes = [
        1e300,
        -5e-324,
        0.1 + 0.2,
        f64::MAX,
        -0.0,
        123_456_789.012_345_68,
    ];
    let fields: Vec<(String, f64)> = extremes
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("x{i}"), *v))
        .collect();
    let fields: Vec<(&str, f64)> = fields.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    store
        .write(&[reading("extreme", "gps_tracker", None, BASE, &fields)])
        .await
        .expect("write extremes");
    let points = store
        .history(&history("extreme", BASE, BASE + 1))
        .await
        .expect("history");
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    assert_eq!(values, extremes, "field order x0..x5 is the value order");
}

#[tokio::test]
async fn small_batches_and_streamed_answers_give_the_same_results() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server, "batches");
    let options = InfluxOptions {
        max_batch_lines: 7,
        max_batch_bytes: 400,
        query_chunk_rows: 3,
        ..InfluxOptions::default()
    };
    let store = db.store(options).await;
    // Two devices over two hours, every 5 minutes; the second device moves mid-way (a new
    // series) and sends a reading at the same instant from both locations.
    let mut readings = Vec::new();
    for i in 0..24 {
        let ts = BASE + i * 300_000;
        readings.push(reading(
            "dev-a",
            "temperature_sensor",
            Some("Lab"),
            ts,
            &[
                ("temperature_celsius", i as f64),
                ("meta_battery_level", 100.0 - i as f64),
            ],
        ));
        let location = if i < 12 { "Hall" } else { "Roof" };
        readings.push(reading(
            "dev-b",
            "humidity_sensor",
            Some(location),
            ts,
            &[("humidity_percent", 2.0 * i as f64)],
        ));
    }
    readings.push(reading(
        "dev-b",
        "humidity_sensor",
        Some("Roof"),
        BASE,
        &[("humidity_percent", 0.0)],
    ));
    store
        .write(&readings)
        .await
        .expect("write in requests of at most 7 lines");
    assert_eq!(
        db.rows("SELECT count(*) FROM \"temperature_sensor\"")[0]["count_temperature_celsius"],
        24
    );

    assert_eq!(
        store
            .count("dev-a", BASE, BASE + 2 * HOUR)
            .await
            .expect("count"),
        24
    );
    assert_eq!(
        store
            .count("dev-b", BASE, BASE + 2 * HOUR)
            .await
            .expect("count"),
        24,
        "the instant stored in two series counts once"
    );
    assert_eq!(
        store
            .count("dev-a", BASE + HOUR, BASE + HOUR + 1)
            .await
            .expect("count"),
        1
    );
    assert_eq!(
        store.count("dev-a", BASE, BASE).await.expect("empty range"),
        0
    );

    let mut query = history("dev-a", BASE, BASE + 2 * HOUR);
    let all = store.history(&query).await.expect("history");
    assert_eq!(all.len(), 48);
    assert!(
        all.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms),
        "ascending"
    );
    query.limit = 5;
    let newest = store.history(&query).await.expect("history");
    assert_eq!(
        newest
            .iter()
            .map(|p| (p.ts_ms, p.field.as_str()))
            .collect::<Vec<_>>(),
        [
            (BASE + 21 * 300_000, "meta_battery_level"),
            (BASE + 22 * 300_000, "meta_battery_level"),
            (BASE + 22 * 300_000, "temperature_celsius"),
            (BASE + 23 * 300_000, "meta_battery_level"),
            (BASE + 23 * 300_000, "temperature_celsius"),
        ]
    );
    query.limit = 0;
    assert!(store.history(&query).await.expect("limit 0").is_empty());

    // 2 hours × (2 fields of dev-a + 1 of dev-b) = 6 rollup rows, written 7 lines at most
    // per request; a second run overwrites them.
    assert_eq!(
        store.rollup(BASE, BASE + 2 * HOUR).await.expect("rollup"),
        6
    );
    assert_eq!(
        store
            .rollup(BASE, BASE + 2 * HOUR)
            .await
            .expect("rollup again"),
        6
    );
    let rollup = "\"sensorfleet.rollup_1h\"";
    assert_eq!(
        db.rows(&format!("SELECT * FROM {rollup}")).len(),
        6,
        "idempotent"
    );
    assert_eq!(
        db.names(&format!("SHOW TAG KEYS FROM {rollup}")),
        BTreeSet::from(["device_id".to_owned(), "field".to_owned()])
    );
    let types: BTreeMap<String, String> = db
        .rows(&format!("SHOW FIELD KEYS FROM {rollup}"))
        .into_iter()
        .map(|row| {
            (
                row["fieldKey"].as_str().expect("k").to_owned(),
                row["fieldType"].as_str().expect("t").to_owned(),
            )
        })
        .collect();
    assert_eq!(types["count"], "integer");
    assert_eq!(types["mean"], "float");
    let rows = db.rows(&format!(
        "SELECT * FROM {rollup} WHERE device_id = 'dev-b' AND time >= {}ms",
        BASE + HOUR
    ));
    assert_eq!(rows.len(), 1);
    // dev-b's second hour: i = 12..24, values 24..46 step 2.
    assert_eq!(rows[0]["count"], 12);
    assert_eq!(rows[0]["min"], 24.0);
    assert_eq!(rows[0]["max"], 46.0);
    assert_eq!(rows[0]["mean"], 35.0);

    let rolled = store
        .history(&HistoryQuery {
            device_id: "dev-a".to_owned(),
            since_ms: BASE,
            until_ms: BASE + 2 * HOUR,
            field: None,
            limit: 100,
            rollup: true,
        })
        .await
        .expect("rollup history");
    assert_eq!(
        rolled
            .iter()
            .map(|p| (p.ts_ms, p.field.as_str(), p.value))
            .collect::<Vec<_>>(),
        [
            (BASE, "meta_battery_level", 100.0 - 5.5),
            (BASE, "temperature_celsius", 5.5),
            (BASE + HOUR, "meta_battery_level", 100.0 - 17.5),
            (BASE + HOUR, "temperature_celsius", 17.5),
        ]
    );
    // Raw history never shows rollups, and rollup history never raw points.
    assert!(
        store
            .history(&history("dev-a", BASE, BASE + 2 * HOUR))
            .await
            .expect("raw")
            .iter()
            .all(|p| p.field != "mean")
    );
}

/// Write throughput into the local InfluxDB: batches of 5000 readings with 3 fields.
/// `SENSORFLEET_BENCH_BATCHES` sets the number of batches (default 40: 200k readings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn write_throughput() {
    let Some(server) = server() else { return };
    let batches: usize = std::env::var("SENSORFLEET_BENCH_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let db = TestDb::new(&server, "bench");
    let store = db.store(InfluxOptions::default()).await;
    let devices = 1000;
    let batch_of = |n: usize| -> Vec<Reading> {
        (0..5000)
            .map(|i| {
                let k = n * 5000 + i;
                reading(
                    &format!("srv-temp-{:04}", k % devices),
                    "temperature_sensor",
                    Some("Server Room"),
                    BASE + (k / devices) as i64 * 1000,
                    &[
                        ("temperature_celsius", 20.0 + (k % 100) as f64 / 10.0),
                        ("temperature_fahrenheit", 68.0 + (k % 100) as f64 / 5.0),
                        ("meta_battery_level", (k % 100) as f64),
                    ],
                )
            })
            .collect()
    };
    let prepared: Arc<Vec<Vec<Reading>>> = Arc::new((0..batches).map(batch_of).collect());
    // Callers write one batch at a time; `SENSORFLEET_BENCH_WRITERS` > 1 runs that many
    // such callers at once (several bridges or processors), taking batches in turn.
    let writers: usize = std::env::var("SENSORFLEET_BENCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, prepared) = (store.clone(), prepared.clone());
            tokio::spawn(async move {
                for batch in prepared.iter().skip(w).step_by(writers) {
                    store.write(batch).await.expect("write");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let elapsed = started.elapsed();
    let total = batches * 5000;
    println!(
        "influxdb write: {total} readings (3 fields) in {batches} batches of 5000, {writers} \
         writer(s): {:.2} s, {:.0} readings/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    let last = &prepared[batches - 1][4999];
    assert_eq!(
        store
            .count(&last.device_id, BASE, BASE + 10 * HOUR)
            .await
            .expect("count"),
        (total / devices) as u64,
        "everything arrived"
    );
}
