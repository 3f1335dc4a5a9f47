//! The bridge: reads device messages from a [`Transport`] (an MQTT broker's `sensors/+/+`
//! or the embedded ingest endpoint), validates and normalises each, and delivers batches
//! to the event log, the time-series store and the latest-value cache. Rejects go to the
//! dead-letter stream with their reason.
//!
//! Nothing a device sends stops the bridge: a payload that does not validate, a device
//! that changes type or exceeds the caps of the [`book`], and a reading a sink refuses
//! for its content (found by bisecting the batch, [`crate::sink`]) are dead-lettered with
//! their reason and acknowledged with the rest of their batch. Only an unavailable or
//! misconfigured sink holds the batch (and so the broker's in-flight window).
//!
//! A message is acknowledged to its transport only after its batch is durable in every
//! sink, so a bridge crash makes the publisher (or the broker) resend instead of losing.
//! The transport's window of unacknowledged messages is the bound on what the bridge
//! holds, and the back-pressure when a sink is slow.

pub mod book;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sensorfleet_backends::{BackendError, Cache, EventLog, Record, TimeSeries, Topic};
use sensorfleet_model::manifest::DeclaredDevice;
use sensorfleet_model::reading::{Limits, Reading, Reject, RejectReason, parse_payload};
use tokio::sync::watch;
use tracing::{debug, info};

use self::book::{BookLimits, DeviceBook};
use crate::clock::now_ms;
use crate::deadletter::{DeadLetters, SpoolConfig};
use crate::sink::{Refused, write_isolating};
use crate::telemetry;
use crate::transport::Transport;

/// Bridge settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Most messages per batch.
    pub batch_max: usize,
    /// How long a batch waits to fill before it is flushed anyway.
    pub linger: Duration,
    /// Payload limits.
    pub limits: Limits,
    /// Caps of the device book: undeclared devices, locations per device.
    pub book: BookLimits,
    /// Declared devices: their type is the one their readings must carry, and they are
    /// never capped.
    pub declared: Vec<DeclaredDevice>,
    /// Where dead letters wait while the event log is unavailable.
    pub spool: SpoolConfig,
}

/// Where the bridge delivers.
#[derive(Clone)]
pub struct BridgeSinks {
    /// Readings and dead letters.
    pub log: Arc<dyn EventLog>,
    /// Raw readings.
    pub series: Arc<dyn TimeSeries>,
    /// Latest value per device.
    pub cache: Arc<dyn Cache>,
}

/// One batch, split into what is accepted and what is rejected.
#[derive(Debug, Default, PartialEq)]
pub struct Sorted {
    /// Valid readings.
    pub readings: Vec<Reading>,
    /// Dead letters: the original payload with `reason`, `detail` and `topic` headers.
    pub rejects: Vec<Record>,
}

/// Validates a batch of `(topic, payload)` messages received at `now_ms`. Pure.
pub fn sort_batch<'a>(
    messages: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    now_ms: i64,
    limits: &Limits,
) -> Sorted {
    let mut sorted = Sorted::default();
    for (topic, payload) in messages {
        match parse_payload(topic, payload, now_ms, limits) {
            Ok(reading) => sorted.readings.push(reading),
            Err(Reject { reason, detail }) => sorted.rejects.push(Record {
                key: topic.rsplit('/').next().unwrap_or_default().to_owned(),
                payload: payload[..payload.len().min(limits.max_payload_bytes)].to_vec(),
                headers: vec![
                    ("reason".to_owned(), reason.as_str().to_owned()),
                    ("detail".to_owned(), detail),
                    ("topic".to_owned(), topic.to_owned()),
                ],
            }),
        }
    }
    // Messages of one device can arrive out of order over different broker connections;
    // a batch at least goes downstream in time order.
    sorted.readings.sort_by_key(|r| r.ts_ms);
    sorted
}

/// Runs the bridge on `transport` until its stream ends or `shutdown` turns true. Each
/// message is acknowledged once its batch is in the event log and the stores, never
/// before; the last batch is delivered and acknowledged before it returns.
pub async fn run<T: Transport>(
    config: BridgeConfig,
    sinks: BridgeSinks,
    mut transport: T,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BackendError> {
    let (mut book, dead_letters) = screening(&config, &sinks);
    let mut batch = Vec::with_capacity(config.batch_max);
    loop {
        let received = tokio::select! {
            received = transport.recv_many(&mut batch, config.batch_max) => received,
            _ = shutdown.changed() => 0,
        };
        if received == 0 {
            break;
        }
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.batch_max {
            let room = config.batch_max - batch.len();
            match tokio::time::timeout_at(deadline, transport.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let view: Vec<(&str, &[u8])> = batch
            .iter()
            .map(|m| (m.topic.as_str(), m.payload.as_ref()))
            .collect();
        deliver(
            &config,
            &sinks,
            &mut book,
            &dead_letters,
            &view,
            &mut shutdown,
        )
        .await?;
        drop(view);
        transport.acknowledge(batch.drain(..).map(|m| m.ack));
    }
    transport.close().await;
    telemetry::BRIDGE_CONNECTED.set(0);
    info!("bridge stopped; every message it received was delivered and acknowledged");
    Ok(())
}

/// The device book (declared devices first) and the dead letters of a bridge.
fn screening(config: &BridgeConfig, sinks: &BridgeSinks) -> (DeviceBook, DeadLetters) {
    let mut book = DeviceBook::new(config.book);
    for device in &config.declared {
        book.declare(
            &device.device_id,
            &device.device_type,
            device.location.as_deref(),
        );
    }
    let dead_letters = DeadLetters::new("bridge", Arc::clone(&sinks.log), config.spool.clone());
    (book, dead_letters)
}

/// Moves the readings the book does not admit into the rejects. The dead letter
/// carries the normalised reading (the payload was valid).
pub fn screen(book: &mut DeviceBook, sorted: &mut Sorted) {
    let readings = std::mem::take(&mut sorted.readings);
    for reading in readings {
        match book.admit(&reading) {
            Ok(()) => sorted.readings.push(reading),
            Err(Reject { reason, detail }) => {
                sorted
                    .rejects
                    .push(reading_letter(&reading, reason, detail, None));
            }
        }
    }
}

/// A dead letter for a valid reading: its normalised JSON with the usual headers.
fn reading_letter(
    reading: &Reading,
    reason: RejectReason,
    detail: String,
    sink: Option<String>,
) -> Record {
    let mut headers = vec![
        ("reason".to_owned(), reason.as_str().to_owned()),
        ("detail".to_owned(), detail),
        (
            "topic".to_owned(),
            format!("sensors/{}/{}", reading.device_type, reading.device_id),
        ),
    ];
    if let Some(sink) = sink {
        headers.push(("sink".to_owned(), sink));
    }
    Record {
        key: reading.device_id.clone(),
        payload: serde_json::to_vec(reading).unwrap_or_default(),
        headers,
    }
}

/// The dead letters of readings some sink refused: one per reading, naming every sink
/// that refused it and why.
pub fn refused_letters(readings: &[Reading], refusals: &[(&str, Vec<Refused>)]) -> Vec<Record> {
    let mut by_reading: BTreeMap<usize, Vec<(&str, &str)>> = BTreeMap::new();
    for (sink, refused) in refusals {
        for r in refused {
            by_reading
                .entry(r.index)
                .or_default()
                .push((*sink, r.reason.as_str()));
        }
    }
    by_reading
        .into_iter()
        .filter_map(|(index, why)| {
            let reading = readings.get(index)?;
            let sinks: Vec<&str> = why.iter().map(|(sink, _)| *sink).collect();
            let details: Vec<&str> = why.iter().map(|(_, reason)| *reason).collect();
            Some(reading_letter(
                reading,
                RejectReason::SinkRefused,
                details.join("; "),
                Some(sinks.join(",")),
            ))
        })
        .collect()
}

async fn deliver(
    config: &BridgeConfig,
    sinks: &BridgeSinks,
    book: &mut DeviceBook,
    dead_letters: &DeadLetters,
    batch: &[(&str, &[u8])],
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), BackendError> {
    let started = Instant::now();
    let mut sorted = sort_batch(batch.iter().copied(), now_ms(), &config.limits);
    screen(book, &mut sorted);
    telemetry::BRIDGE_RECEIVED.inc_by(batch.len() as u64);
    let records: Vec<Record> = sorted
        .readings
        .iter()
        .map(|r| Record {
            key: r.device_id.clone(),
            // Infallible: a derived Serialize of strings, numbers (a non-finite one becomes
            // null), a string-keyed map and an always-string timestamp, into memory.
            payload: serde_json::to_vec(r).expect("a Reading always encodes as JSON"),
            headers: vec![],
        })
        .collect();
    let mut log_shutdown = shutdown.clone();
    let mut series_shutdown = shutdown.clone();
    let mut cache_shutdown = shutdown.clone();
    let readings = &sorted.readings;
    let to_log = write_isolating(
        "bridge",
        "event log",
        records.len(),
        &mut log_shutdown,
        |range| sinks.log.append(Topic::Readings, records[range].to_vec()),
    );
    let to_series = write_isolating(
        "bridge",
        "time series",
        readings.len(),
        &mut series_shutdown,
        |range| sinks.series.write(&readings[range]),
    );
    let to_cache = write_isolating(
        "bridge",
        "cache",
        readings.len(),
        &mut cache_shutdown,
        |range| sinks.cache.put_latest(&readings[range]),
    );
    let (logged, stored, cached) = tokio::join!(to_log, to_series, to_cache);
    let refusals = [
        (sinks.log.name(), logged?),
        (sinks.series.name(), stored?),
        (sinks.cache.name(), cached?),
    ];
    let refused = refused_letters(readings, &refusals);
    let accepted = readings.len() - refused.len();
    sorted.rejects.extend(refused);
    for reject in &sorted.rejects {
        let reason = reject
            .headers
            .first()
            .map_or("unknown", |(_, v)| v.as_str());
        telemetry::BRIDGE_REJECTS.with_label_values(&[reason]).inc();
        debug!(reason, key = %reject.key, "message rejected");
    }
    dead_letters.send(std::mem::take(&mut sorted.rejects)).await;
    telemetry::BRIDGE_ACCEPTED.inc_by(accepted as u64);
    telemetry::BRIDGE_FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_always_encodes_even_with_odd_values() {
        // Why the record encoding may `expect`: nothing a reading holds can fail to encode.
        let reading = Reading {
            device_id: "d".to_owned(),
            device_type: "t".to_owned(),
            location: Some("\u{0}\"".to_owned()),
            ts_ms: i64::MAX,
            fields: [
                ("nan".to_owned(), f64::NAN),
                ("inf".to_owned(), f64::INFINITY),
            ]
            .into(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&reading).expect("encodes")).expect("JSON");
        assert!(json["fields"]["nan"].is_null(), "{json}");
    }

    #[test]
    fn sorts_valid_and_rejected_and_keeps_the_reason() {
        let messages: Vec<(&str, &[u8])> = vec![
            (
                "sensors/temperature_sensor/a",
                br#"{"device_id":"a","temperature_celsius":21.5}"#,
            ),
            ("sensors/temperature_sensor/b", b"{not json"),
            (
                "sensors/temperature_sensor/c",
                br#"{"device_id":"c","temperature_celsius":22}"#,
            ),
            (
                "sensors/temperature_sensor/d",
                br#"{"device_id":"x","temperature_celsius":22}"#,
            ),
        ];
        let sorted = sort_batch(messages, 1_780_000_000_000, &Limits::default());
        let ids: Vec<_> = sorted
            .readings
            .iter()
            .map(|r| r.device_id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["a", "c"],
            "a reject never takes the messages behind it along"
        );
        assert_eq!(sorted.rejects.len(), 2);
        assert_eq!(sorted.rejects[0].key, "b");
        assert_eq!(sorted.rejects[0].payload, b"{not json");
        assert_eq!(
            sorted.rejects[0].headers[0],
            ("reason".to_owned(), "not_json".to_owned())
        );
        assert_eq!(sorted.rejects[1].headers[0].1, "topic_mismatch");
        assert_eq!(sorted.rejects[1].headers[1].0, "detail");
        assert_eq!(
            sorted.rejects[1].headers[2].1,
            "sensors/temperature_sensor/d"
        );
    }

    #[test]
    fn the_book_moves_what_it_refuses_to_the_rejects_with_the_reason() {
        let messages: Vec<(&str, &[u8])> = vec![
            (
                "sensors/temperature_sensor/a",
                br#"{"device_id":"a","temperature_celsius":21.5}"#,
            ),
            (
                "sensors/humidity_sensor/a",
                br#"{"device_id":"a","humidity_percent":40}"#,
            ),
            (
                "sensors/humidity_sensor/b",
                br#"{"device_id":"b","humidity_percent":41}"#,
            ),
        ];
        let mut sorted = sort_batch(messages, 1_780_000_000_000, &Limits::default());
        let mut book = DeviceBook::new(BookLimits {
            max_undeclared: 1,
            max_locations: 4,
        });
        screen(&mut book, &mut sorted);
        let ids: Vec<_> = sorted
            .readings
            .iter()
            .map(|r| r.device_id.as_str())
            .collect();
        assert_eq!(ids, ["a"]);
        let reasons: Vec<(&str, &str)> = sorted
            .rejects
            .iter()
            .map(|r| (r.key.as_str(), r.headers[0].1.as_str()))
            .collect();
        assert_eq!(reasons, [("a", "type_mismatch"), ("b", "too_many_devices")]);
        assert_eq!(sorted.rejects[0].headers[2].1, "sensors/humidity_sensor/a");
    }

    #[test]
    fn one_dead_letter_per_refused_reading_naming_every_sink() {
        let messages: Vec<(&str, &[u8])> = vec![
            ("sensors/t/a", br#"{"device_id":"a","v":1}"#),
            ("sensors/t/b", br#"{"device_id":"b","v":2}"#),
        ];
        let sorted = sort_batch(messages, 1_780_000_000_000, &Limits::default());
        let refusal = |index: usize, reason: &str| Refused {
            index,
            reason: reason.to_owned(),
        };
        let letters = refused_letters(
            &sorted.readings,
            &[
                ("kafka", vec![]),
                ("influxdb", vec![refusal(1, "HTTP 400: time outside range")]),
                ("redis", vec![refusal(1, "value refused")]),
            ],
        );
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].key, "b");
        assert_eq!(
            letters[0].headers,
            [
                ("reason".to_owned(), "sink_refused".to_owned()),
                (
                    "detail".to_owned(),
                    "HTTP 400: time outside range; value refused".to_owned()
                ),
                ("topic".to_owned(), "sensors/t/b".to_owned()),
                ("sink".to_owned(), "influxdb,redis".to_owned()),
            ]
        );
        let back: Reading = serde_json::from_slice(&letters[0].payload).expect("the reading");
        assert_eq!(back, sorted.readings[1]);
    }
}
