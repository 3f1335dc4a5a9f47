//! The bridge: subscribes to `sensors/+/+`, validates and normalises each message, and
//! delivers batches to the event log, the time-series store and the latest-value cache.
//! Rejects go to the dead-letter stream with their reason.
//!
//! Nothing a device sends stops the bridge: a payload that does not validate, a device
//! that changes type or exceeds the caps of the [`book`], and a reading a sink refuses
//! for its content (found by bisecting the batch, [`crate::sink`]) are dead-lettered with
//! their reason and acknowledged with the rest of their batch. Only an unavailable or
//! misconfigured sink holds the batch (and so the broker's in-flight window).
//!
//! QoS 1 with manual acknowledgements and a persistent session: a message is acknowledged
//! to the broker only after its batch is durable in every sink, so a bridge crash makes
//! the broker redeliver instead of losing. The broker's in-flight window is the bound on
//! what the bridge holds, and the back-pressure when a sink is slow.

pub mod book;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use sensorfleet_backends::backoff::Backoff;
use sensorfleet_backends::{BackendError, Cache, EventLog, Record, TimeSeries, Topic};
use sensorfleet_model::manifest::DeclaredDevice;
use sensorfleet_model::reading::{Limits, Reading, Reject, RejectReason, parse_payload};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use self::book::{BookLimits, DeviceBook};
use crate::clock::now_ms;
use crate::deadletter::{DeadLetters, SpoolConfig};
use crate::ingest::IngestMessage;
use crate::mqtt::MqttEndpoint;
use crate::sink::{Refused, write_isolating};
use crate::telemetry;

/// The largest MQTT packet the bridge reads, at least. Above the broker's own limits
/// (Mosquitto: `max_packet_size 98304`, `message_size_limit 65536` in the test
/// environment and `deploy/kind`): a packet the broker forwards is always readable, so
/// an oversized one never drops the connection and comes back with the session.
pub const MIN_INCOMING_PACKET: usize = 128 * 1024;

/// Bridge settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The broker.
    pub mqtt: MqttEndpoint,
    /// Client id; fixed so the broker keeps the session (and unacknowledged messages)
    /// across a restart.
    pub client_id: String,
    /// Topic filter, `sensors/+/+`.
    pub filter: String,
    /// Shared-subscription group: every bridge replica that names the same group shares
    /// the stream (`$share/<group>/<filter>`), each message going to one of them. `None`
    /// shares only between this bridge's own connections (group = `client_id`).
    pub share_group: Option<String>,
    /// MQTT connections, all in one shared subscription (`$share/<client_id>/<filter>`)
    /// when more than one. A broker keeps at most a fixed number of unacknowledged QoS 1
    /// messages per connection (100 for rumqttd, `max_inflight_messages` for Mosquitto),
    /// and the bridge acknowledges only after a batch is durable, so connections are what
    /// lets a batch grow past that window.
    pub connections: usize,
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
    /// Where dead letters wait while the event log is unavailable; `None`:
    /// [`SpoolConfig::named`] after the client id.
    pub spool: Option<SpoolConfig>,
}

impl BridgeConfig {
    /// Defaults for a broker at `mqtt`.
    pub fn new(mqtt: MqttEndpoint) -> Self {
        Self {
            mqtt,
            client_id: "sensorfleet-bridge".to_owned(),
            filter: "sensors/+/+".to_owned(),
            share_group: None,
            connections: 8,
            batch_max: 4000,
            linger: Duration::from_millis(5),
            limits: Limits::default(),
            book: BookLimits::default(),
            declared: Vec::new(),
            spool: None,
        }
    }
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

/// Runs the bridge until `shutdown` turns true; flushes and acknowledges the last batch.
pub async fn run(
    config: BridgeConfig,
    sinks: BridgeSinks,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BackendError> {
    let connections = config.connections.clamp(1, 64);
    let filter = match (&config.share_group, connections) {
        (Some(group), _) => format!("$share/{group}/{}", config.filter),
        (None, 1) => config.filter.clone(),
        (None, _) => format!("$share/{}/{}", config.client_id, config.filter),
    };
    let (tx, mut rx) = mpsc::channel::<(usize, Publish)>(config.batch_max * 2);
    let mut clients = Vec::with_capacity(connections);
    let mut drivers = Vec::with_capacity(connections);
    for index in 0..connections {
        let client_id = if connections > 1 {
            format!("{}-{index}", config.client_id)
        } else {
            config.client_id.clone()
        };
        let mut options = MqttOptions::new(client_id, &config.mqtt.host, config.mqtt.port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(
                (config.limits.max_payload_bytes * 4 + 1024).max(MIN_INCOMING_PACKET),
                64 * 1024,
            )
            .set_request_channel_capacity(config.batch_max);
        if let (Some(user), Some(password)) = (&config.mqtt.username, &config.mqtt.password) {
            options.set_credentials(user, password);
        }
        let (client, eventloop) = AsyncClient::new(options, config.batch_max);
        drivers.push(tokio::spawn(drive(
            eventloop,
            client.clone(),
            filter.clone(),
            index,
            tx.clone(),
            shutdown.clone(),
        )));
        clients.push(client);
    }
    drop(tx);
    info!(broker = %config.mqtt, filter = %filter, connections, "bridge started");

    let (mut book, dead_letters) = screening(&config, &sinks);
    let mut batch: Vec<(usize, Publish)> = Vec::with_capacity(config.batch_max);
    let mut acks = PendingAcks::new(connections);
    loop {
        batch.clear();
        acks.send(&clients);
        let first = tokio::select! {
            message = rx.recv() => message,
            _ = shutdown.changed() => None,
            // Acknowledgements an event loop had no room for yet: offered again shortly.
            _ = tokio::time::sleep(ACK_RETRY), if !acks.is_empty() => continue,
        };
        let Some(first) = first else { break };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.batch_max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(message)) => batch.push(message),
                _ => break,
            }
        }
        let messages: Vec<(&str, &[u8])> = batch
            .iter()
            .map(|(_, p)| (p.topic.as_str(), p.payload.as_ref()))
            .collect();
        deliver(
            &config,
            &sinks,
            &mut book,
            &dead_letters,
            &messages,
            &mut shutdown,
        )
        .await?;
        acks.extend(&batch);
    }
    // Hand over what is still pending (bounded: the broker redelivers the rest).
    for _ in 0..20 {
        if acks.send(&clients) {
            break;
        }
        tokio::time::sleep(ACK_RETRY).await;
    }
    // Let the event loops send the last acknowledgements, then leave the sessions open on
    // the broker (a clean disconnect would drop what it queued for us).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for driver in drivers {
        driver.abort();
    }
    telemetry::BRIDGE_CONNECTED.set(0);
    info!("bridge stopped; every received message was delivered and acknowledged");
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
    let spool = config
        .spool
        .clone()
        .unwrap_or_else(|| SpoolConfig::named(&format!("bridge-{}", config.client_id)));
    let dead_letters = DeadLetters::new("bridge", Arc::clone(&sinks.log), spool);
    (book, dead_letters)
}

/// Runs the bridge on the embedded ingest endpoint's stream ([`crate::ingest`]) until the
/// stream ends (the endpoint stopped) or `shutdown` turns true. Each message is
/// acknowledged to its publisher once its batch is in the event log and the stores, never
/// before; acknowledging never waits (see [`Ack::ack`](crate::ingest::Ack::ack)).
pub async fn run_embedded(
    config: BridgeConfig,
    sinks: BridgeSinks,
    mut messages: mpsc::Receiver<IngestMessage>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BackendError> {
    // Nothing to connect to: the endpoint is ours, and its stream is the subscription.
    telemetry::BRIDGE_CONNECTED.set(1);
    info!("bridge started on the embedded ingest endpoint");
    let (mut book, dead_letters) = screening(&config, &sinks);
    let mut batch: Vec<IngestMessage> = Vec::with_capacity(config.batch_max);
    loop {
        let received = tokio::select! {
            received = messages.recv_many(&mut batch, config.batch_max) => received,
            _ = shutdown.changed() => 0,
        };
        if received == 0 {
            break;
        }
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.batch_max {
            let room = config.batch_max - batch.len();
            match tokio::time::timeout_at(deadline, messages.recv_many(&mut batch, room)).await {
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
        for message in batch.drain(..) {
            message.ack.ack();
        }
    }
    telemetry::BRIDGE_CONNECTED.set(0);
    info!("bridge stopped; every message it received was delivered and acknowledged");
    Ok(())
}

/// How soon acknowledgements that found an event loop's request queue full are offered
/// again.
const ACK_RETRY: Duration = Duration::from_millis(5);

/// Acknowledgements owed to the broker, per connection, not yet handed to their event
/// loop. Handing them over never waits: an event loop may itself be waiting for this loop
/// to take the messages it received, and a waiting `ack().await` would close that circle
/// (a deadlock seen under full load, when the broker's in-flight window is larger than
/// the request queue). Only the packet id is kept, not the payload.
struct PendingAcks(Vec<std::collections::VecDeque<Publish>>);

impl PendingAcks {
    fn new(connections: usize) -> Self {
        Self(vec![std::collections::VecDeque::new(); connections])
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|queue| queue.is_empty())
    }

    /// Owes an acknowledgement for every QoS 1/2 message of a durable batch.
    fn extend(&mut self, batch: &[(usize, Publish)]) {
        for (index, publish) in batch {
            if publish.qos != QoS::AtMostOnce {
                let mut ack = Publish::new("", publish.qos, Vec::new());
                ack.pkid = publish.pkid;
                self.0[*index].push_back(ack);
            }
        }
    }

    /// Hands over as many as the event loops take now; true when none is left.
    fn send(&mut self, clients: &[AsyncClient]) -> bool {
        for (queue, client) in self.0.iter_mut().zip(clients) {
            while let Some(ack) = queue.front() {
                // Full: this connection's event loop catches up first. (Closed, at
                // shutdown, looks the same; the broker then redelivers.)
                if client.try_ack(ack).is_err() {
                    break;
                }
                queue.pop_front();
            }
        }
        self.is_empty()
    }
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

/// Owns the MQTT event loop: forwards publishes, (re)subscribes when the broker has no
/// session for us, and reconnects with backoff.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filter: String,
    index: usize,
    tx: mpsc::Sender<(usize, Publish)>,
    shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::service();
    let mut connected_once = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if tx.send((index, publish)).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                // Receiving only once subscribed: with a session the broker kept, now.
                if ack.session_present {
                    telemetry::BRIDGE_CONNECTED.set(1);
                }
                if index == 0 {
                    info!(
                        session_present = ack.session_present,
                        "connected to MQTT broker"
                    );
                } else {
                    debug!(
                        connection = index,
                        session_present = ack.session_present,
                        "connected to MQTT broker"
                    );
                }
                connected_once = true;
                if !ack.session_present
                    && let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce)
                {
                    warn!(error = %e, "subscribing failed");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => telemetry::BRIDGE_CONNECTED.set(1),
            Ok(_) => {}
            Err(e) => {
                telemetry::BRIDGE_CONNECTED.set(0);
                let delay = backoff.next_delay();
                let retry_in_ms = delay.as_millis() as u64;
                if connected_once {
                    warn!(error = %e, retry_in_ms, "MQTT connection lost; reconnecting");
                } else {
                    warn!(error = %e, retry_in_ms, "cannot reach the MQTT broker; retrying");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
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
