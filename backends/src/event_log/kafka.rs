//! The production event log: Apache Kafka through librdkafka (the `rdkafka` crate, with
//! its bundled librdkafka).
//!
//! Chosen by a URL: `kafka://host:9092[,host2:9092][?param=value&…]`, parameters:
//!
//! | parameter | default | meaning |
//! | --- | --- | --- |
//! | `topic_prefix` | empty | prepended to the three default topic names |
//! | `readings_topic`, `alerts_topic`, `dead_letter_topic` | `sensor-readings`, `sensor-alerts`, `sensor-readings-dlq` | explicit names (win over the prefix) |
//! | `partitions` | 3 | partitions of a topic this log creates |
//! | `replication` | the broker's `default.replication.factor` | replication factor of a topic this log creates |
//! | `create_topics` | `true` | create missing topics on connect (Admin API) |
//! | `delivery_timeout_ms` | 30000 | librdkafka's `message.timeout.ms`: how long an append waits for acknowledgement |
//! | `request_timeout_ms` | 10000 | admin requests, metadata, offset commits, and the producer's `request.timeout.ms` |
//! | `client_id` | `sensorfleet` | Kafka `client.id` |
//!
//! Credentials in the URL are refused (this build has no SASL or TLS) and are never
//! echoed: errors show them as `***`.
//!
//! **Producer.** Idempotent (`enable.idempotence=true`, `acks=all`), so librdkafka's
//! retries neither duplicate nor reorder a device's records. Records are keyed by the
//! device id (one device, one partition, in order) and carry their headers. `append`
//! queues the whole batch, then awaits every delivery report: it returns `Ok` only once
//! every record is acknowledged by all in-sync replicas. When librdkafka's local queue is
//! full, it waits for its own oldest record to be acknowledged and tries again
//! (back-pressure, not failure).
//!
//! **Bounded waits.** While the brokers are unreachable an append fails with
//! [`BackendError::Unavailable`] after at most `delivery_timeout_ms` for queued records
//! (plus up to `request_timeout_ms` for a request already on the wire); librdkafka keeps
//! reconnecting in the background with backoff, and the next append after the broker
//! returns succeeds. A poll never waits longer than its `wait_ms`; when librdkafka has
//! reported that all brokers are down and nothing arrived, poll checks the cluster with
//! one metadata request (bounded by `request_timeout_ms`) and returns `Unavailable` if it
//! fails. Commits are bounded by `request_timeout_ms`.
//!
//! **Consumer.** `enable.auto.commit=false`, `auto.offset.reset=earliest`. The consumer
//! remembers, per partition, the offset after the last record polled; `commit` commits
//! those synchronously. On a rebalance (librdkafka's default eager assignors: every
//! partition is revoked, then the new assignment given), what was polled from a revoked
//! partition but not committed is forgotten, and `commit` also skips any partition not in
//! the current assignment: the consumer never commits for a partition it no longer owns
//! (that could skip records the new owner has not processed). Those records are
//! delivered again, to the new owner or, after a reassignment, to us: at-least-once,
//! absorbed by the idempotent stores.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::{Delivery, EventLog, LogConsumer, Record, Topic};
use crate::BackendError;

const BACKEND: &str = "kafka";

/// The names of the three topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    /// Normalised readings; `sensor-readings` by default.
    pub readings: String,
    /// Alerts; `sensor-alerts` by default.
    pub alerts: String,
    /// Rejects; `sensor-readings-dlq` by default.
    pub dead_letter: String,
    /// Acknowledge/clear requests between API and processors; `sensor-alert-commands`.
    pub commands: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

impl TopicNames {
    /// The default names with `prefix` in front (e.g. a test run's unique prefix).
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |topic: Topic| format!("{prefix}{}", topic.default_name());
        Self {
            readings: name(Topic::Readings),
            alerts: name(Topic::Alerts),
            dead_letter: name(Topic::DeadLetter),
            commands: name(Topic::Commands),
        }
    }

    /// The name of `topic`.
    pub fn name(&self, topic: Topic) -> &str {
        match topic {
            Topic::Readings => &self.readings,
            Topic::Alerts => &self.alerts,
            Topic::DeadLetter => &self.dead_letter,
            Topic::Commands => &self.commands,
        }
    }

    fn all(&self) -> [&str; 4] {
        [
            &self.readings,
            &self.alerts,
            &self.dead_letter,
            &self.commands,
        ]
    }
}

/// Settings of a [`KafkaLog`] and [`KafkaAdmin`]; URL parameters override them.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Topic names.
    pub topics: TopicNames,
    /// Partitions of a topic created on connect.
    pub partitions: u32,
    /// Replication factor of a created topic; `None` takes the broker's default.
    pub replication: Option<u16>,
    /// Create missing topics on connect.
    pub create_topics: bool,
    /// How long an append waits for acknowledgement (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Bound on admin requests, metadata requests and offset commits.
    pub request_timeout: Duration,
    /// Kafka `client.id`, for the brokers' logs and quotas.
    pub client_id: String,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            topics: TopicNames::default(),
            // DESIGN §6: a pipeline's minPartitions defaults to 3.
            partitions: 3,
            replication: None,
            create_topics: true,
            delivery_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            client_id: "sensorfleet".to_owned(),
        }
    }
}

/// A parsed `kafka://` URL: the bootstrap servers, with the options it overrides
/// applied.
#[derive(Debug, Clone)]
struct KafkaUrl {
    bootstrap: String,
    options: KafkaOptions,
}

fn rejected(detail: impl Into<String>) -> BackendError {
    BackendError::Rejected {
        backend: BACKEND,
        detail: detail.into(),
    }
}

fn unavailable(detail: impl Into<String>) -> BackendError {
    BackendError::Unavailable {
        backend: BACKEND,
        detail: detail.into(),
    }
}

/// The URL with any `user:password@` replaced, for error messages.
fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn parse_url(url: &str, defaults: &KafkaOptions) -> Result<KafkaUrl, BackendError> {
    let shown = masked(url);
    let bad = |what: &str| {
        rejected(format!(
            "bad Kafka URL {shown}: {what} (expected kafka://host:9092[,host2:9092][?topic_prefix=…&partitions=…])"
        ))
    };
    let rest = url
        .strip_prefix("kafka://")
        .ok_or_else(|| bad("it must start with kafka://"))?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains('@') {
        return Err(bad(
            "credentials are not supported (this build has no SASL/TLS); remove user:password@",
        ));
    }
    if authority.contains('/') {
        return Err(bad("a Kafka URL has no path"));
    }
    let mut servers = Vec::new();
    for server in authority.split(',') {
        servers.push(parse_server(server).map_err(|what| bad(&what))?);
    }

    let mut options = defaults.clone();
    let mut prefix = None;
    let mut names: [Option<String>; 3] = [None, None, None];
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let number = |max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| bad(&format!("{key} must be a number from 1 to {max}")))
        };
        match key.as_ref() {
            "topic_prefix" => prefix = Some(value.into_owned()),
            "readings_topic" => names[0] = Some(value.into_owned()),
            "alerts_topic" => names[1] = Some(value.into_owned()),
            "dead_letter_topic" => names[2] = Some(value.into_owned()),
            "partitions" => options.partitions = number(1_000_000)? as u32,
            "replication" => options.replication = Some(number(u16::MAX.into())? as u16),
            "create_topics" => {
                options.create_topics = match value.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad("create_topics must be true or false")),
                }
            }
            "delivery_timeout_ms" => {
                options.delivery_timeout = Duration::from_millis(number(i32::MAX as u64)?)
            }
            "request_timeout_ms" => {
                options.request_timeout = Duration::from_millis(number(i32::MAX as u64)?)
            }
            "client_id" => options.client_id = value.into_owned(),
            other => return Err(bad(&format!("unknown parameter {other}"))),
        }
    }
    if let Some(prefix) = prefix {
        options.topics = TopicNames::with_prefix(&prefix);
    }
    let [readings, alerts, dead_letter] = names;
    options.topics.readings = readings.unwrap_or(options.topics.readings);
    options.topics.alerts = alerts.unwrap_or(options.topics.alerts);
    options.topics.dead_letter = dead_letter.unwrap_or(options.topics.dead_letter);
    for name in options.topics.all() {
        check_topic_name(name).map_err(|what| bad(&what))?;
    }
    Ok(KafkaUrl {
        bootstrap: servers.join(","),
        options,
    })
}

/// `host:port`, `host` (port 9092) or `[v6]:port`.
fn parse_server(server: &str) -> Result<String, String> {
    if server.is_empty() {
        return Err("a server is missing (empty entry between commas)".to_owned());
    }
    let (host, port) = match server.rsplit_once(':') {
        // A bare IPv6 address in brackets has colons but no port.
        Some((host, port)) if !server.ends_with(']') => (host, Some(port)),
        _ => (server, None),
    };
    if host.is_empty() {
        return Err(format!("server {server} has no host"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("server {server} has a bad port"))?,
        None => 9092,
    };
    Ok(format!("{host}:{port}"))
}

/// Kafka's rule: 1–249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
fn check_topic_name(name: &str) -> Result<(), String> {
    let legal = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > 249 || !legal || name == "." || name == ".." {
        return Err(format!(
            "topic name {name:?} is not a legal Kafka topic name (1–249 of [A-Za-z0-9._-])"
        ));
    }
    Ok(())
}

/// Errors Kafka will not fix by retrying the same request; everything else (brokers
/// down, timeouts, leader elections, coordinator moves, rebalances) is transient.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BadMessage
            | C::InvalidArgument
            | C::UnknownTopic
            | C::InvalidMessage
            | C::InvalidMessageSize
            | C::MessageSizeTooLarge
            | C::MessageBatchTooLarge
            | C::OffsetMetadataTooLarge
            | C::InvalidTopic
            | C::InvalidRequiredAcks
            | C::InvalidGroupId
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidTimestamp
            | C::UnsupportedVersion
            | C::InvalidPartitions
            | C::InvalidReplicationFactor
            | C::InvalidReplicaAssignment
            | C::InvalidConfig
            | C::InvalidRequest
            | C::UnsupportedForMessageFormat
            | C::PolicyViolation
            | C::InvalidRecord
            | C::TopicDeletionDisabled
            | C::UnsupportedCompressionType
            | C::Authentication
            | C::SaslAuthenticationFailed
            | C::UnsupportedSASLMechanism
            | C::NotImplemented
            | C::UnsupportedFeature
            | C::Fatal
    )
}

/// Errors about one record's content (too large, a timestamp or record the broker
/// refuses): that record will never be appended, the others will.
fn is_content(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::InvalidTimestamp
            | C::BadMessage
    )
}

/// Maps a librdkafka error to the backend error the workers act on.
fn classify(error: &KafkaError, what: &str) -> BackendError {
    let detail = format!("{what}: {error}");
    match error {
        KafkaError::Canceled => BackendError::Closed(BACKEND),
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => rejected(detail),
        _ => match error.rdkafka_error_code() {
            Some(code) if is_content(code) => BackendError::Content {
                backend: BACKEND,
                detail,
            },
            Some(code) if is_permanent(code) => rejected(detail),
            _ => unavailable(detail),
        },
    }
}

fn admin_code_error(topic: &str, code: RDKafkaErrorCode, what: &str) -> BackendError {
    let detail = format!("{what} {topic}: {code}");
    if is_permanent(code) {
        rejected(detail)
    } else {
        unavailable(detail)
    }
}

/// librdkafka's logs and errors into `tracing`; remembers "all brokers down" so a poll
/// that got nothing can tell an idle topic from an unreachable cluster.
#[derive(Default)]
struct LogContext {
    brokers_down: AtomicBool,
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => warn!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.brokers_down.store(true, Ordering::Relaxed);
        }
        warn!(%error, reason, "kafka client error");
    }
}

/// The consumer's context: logging, plus the offsets polled but not yet committed, which
/// a revocation drops (see the module docs).
#[derive(Default)]
struct ConsumerState {
    log: LogContext,
    /// Partition → the offset after the last record polled from it.
    uncommitted: Mutex<HashMap<i32, i64>>,
}

impl ConsumerState {
    fn uncommitted(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i64>> {
        // Plain data: a panic elsewhere leaves it usable.
        self.uncommitted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientContext for ConsumerState {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for ConsumerState {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let mut uncommitted = self.uncommitted();
            let mut dropped = 0;
            for element in revoked.elements() {
                dropped += usize::from(uncommitted.remove(&element.partition()).is_some());
            }
            if dropped > 0 {
                info!(
                    partitions = dropped,
                    "partitions revoked with records polled but not committed; \
                     their next owner gets them again"
                );
            }
        }
    }
}

fn client_config(bootstrap: &str, options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", &options.client_id);
    config
}

fn millis(duration: Duration) -> String {
    duration.as_millis().clamp(1, i32::MAX as u128).to_string()
}

/// What [`KafkaAdmin::ensure_partitions`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    /// The topic.
    pub topic: String,
    /// The partition count asked for.
    pub requested: u32,
    /// The count before; `None` when the topic was created.
    pub previous: Option<u32>,
    /// The count now: never below `previous` (partitions only grow).
    pub partitions: u32,
}

impl TopicReport {
    /// The topic did not exist and was created.
    pub fn created(&self) -> bool {
        self.previous.is_none()
    }

    /// The topic existed with fewer partitions and was grown.
    pub fn grown(&self) -> bool {
        self.previous.is_some_and(|before| before < self.partitions)
    }

    /// The topic has more partitions than requested and kept them (Kafka cannot shrink).
    pub fn kept_more(&self) -> bool {
        self.partitions > self.requested
    }
}

impl fmt::Display for TopicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (topic, partitions, requested) = (&self.topic, self.partitions, self.requested);
        match self.previous {
            None => write!(f, "created {topic} with {partitions} partitions"),
            Some(before) if before < partitions => {
                write!(f, "grew {topic} from {before} to {partitions} partitions")
            }
            Some(_) if partitions > requested => write!(
                f,
                "kept {partitions} partitions of {topic}, {requested} requested \
                 (partitions only grow)"
            ),
            Some(_) => write!(f, "{topic} has {partitions} partitions as requested"),
        }
    }
}

/// Topic administration without a producer: create, grow and inspect topics. Used by
/// [`KafkaLog::connect`] and by the operator, which grows the readings topic as devices
/// are declared.
pub struct KafkaAdmin {
    client: Arc<AdminClient<LogContext>>,
    replication: Option<u16>,
    timeout: Duration,
}

impl KafkaAdmin {
    /// An admin client for the cluster at `url` (`kafka://host:9092[,…]`; of the
    /// parameters, `replication` and `request_timeout_ms` apply). Connects lazily.
    pub fn connect(url: &str, options: &KafkaOptions) -> Result<Self, BackendError> {
        let url = parse_url(url, options)?;
        Self::new(&url.bootstrap, &url.options)
    }

    fn new(bootstrap: &str, options: &KafkaOptions) -> Result<Self, BackendError> {
        let client = client_config(bootstrap, options)
            .create_with_context(LogContext::default())
            .map_err(|e| classify(&e, "creating the Kafka admin client"))?;
        Ok(Self {
            client: Arc::new(client),
            replication: options.replication,
            timeout: options.request_timeout,
        })
    }

    fn admin_options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// The partition count of `topic`, or `None` when it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Option<u32>, BackendError> {
        let client = Arc::clone(&self.client);
        let name = topic.to_owned();
        let timeout = self.timeout;
        // librdkafka's metadata call blocks its thread.
        let metadata = tokio::task::spawn_blocking(move || {
            client.inner().fetch_metadata(Some(&name), timeout)
        })
        .await
        .map_err(|e| unavailable(format!("metadata request task: {e}")))?
        .map_err(|e| classify(&e, &format!("reading metadata of {topic}")))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match found.error().map(RDKafkaErrorCode::from) {
            None => Ok(Some(found.partitions().len() as u32)),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
            Some(code) => Err(admin_code_error(topic, code, "reading metadata of")),
        }
    }

    /// Creates `topic` with `partitions` partitions when it is missing; an existing topic
    /// is left as it is.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<TopicReport, BackendError> {
        self.ensure(topic, partitions, false).await
    }

    /// Creates `topic` with `partitions` partitions, or grows it to that many. Never
    /// shrinks (Kafka cannot): a topic with more keeps them, and the report says so.
    pub async fn ensure_partitions(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<TopicReport, BackendError> {
        self.ensure(topic, partitions, true).await
    }

    async fn ensure(
        &self,
        topic: &str,
        requested: u32,
        grow: bool,
    ) -> Result<TopicReport, BackendError> {
        check_topic_name(topic).map_err(rejected)?;
        let count = i32::try_from(requested)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                rejected(format!(
                    "{requested} partitions for {topic}: need 1 or more"
                ))
            })?;
        let report = |previous, partitions| TopicReport {
            topic: topic.to_owned(),
            requested,
            previous,
            partitions,
        };
        let previous = match self.partitions(topic).await? {
            Some(current) => current,
            None => match self.create(topic, count).await? {
                true => {
                    self.await_metadata(topic, requested).await;
                    return Ok(report(None, requested));
                }
                // Someone else created it between our look and our request.
                false => self.partitions(topic).await?.ok_or_else(|| {
                    unavailable(format!("{topic} exists but has no metadata yet"))
                })?,
            },
        };
        if !grow || previous >= requested {
            return Ok(report(Some(previous), previous));
        }
        let grown = NewPartitions::new(topic, requested as usize);
        let results = self
            .client
            .create_partitions([&grown], &self.admin_options())
            .await
            .map_err(|e| classify(&e, &format!("adding partitions to {topic}")))?;
        for result in results {
            match result {
                Ok(_) => {}
                // Grown concurrently to at least as many: what we wanted.
                Err((_, RDKafkaErrorCode::InvalidPartitions)) => {
                    let now = self.partitions(topic).await?.unwrap_or(0);
                    if now >= requested {
                        return Ok(report(Some(previous), now));
                    }
                    return Err(admin_code_error(
                        topic,
                        RDKafkaErrorCode::InvalidPartitions,
                        "adding partitions to",
                    ));
                }
                Err((_, code)) => {
                    return Err(admin_code_error(topic, code, "adding partitions to"));
                }
            }
        }
        info!(topic, from = previous, to = requested, "grew Kafka topic");
        self.await_metadata(topic, requested).await;
        Ok(report(Some(previous), requested))
    }

    /// Waits (up to the request timeout) until the brokers' metadata shows `topic` with
    /// at least `partitions`: the controller answers before every broker knows, and a
    /// caller may produce, consume or look right after.
    async fn await_metadata(&self, topic: &str, partitions: u32) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.partitions(topic).await {
                Ok(Some(seen)) if seen >= partitions => return,
                _ if tokio::time::Instant::now() >= deadline => {
                    warn!(topic, partitions, "topic metadata not yet visible");
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Creates the topic; `false` when it already existed.
    async fn create(&self, topic: &str, partitions: i32) -> Result<bool, BackendError> {
        // -1: the broker's default.replication.factor.
        let replication = self.replication.map_or(-1, i32::from);
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        let results = self
            .client
            .create_topics([&new], &self.admin_options())
            .await
            .map_err(|e| classify(&e, &format!("creating topic {topic}")))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
                Err((_, code)) => return Err(admin_code_error(topic, code, "creating topic")),
            }
        }
        info!(topic, partitions, "created Kafka topic");
        Ok(true)
    }

    /// Deletes topics (tests clean up their own); missing ones are ignored.
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<(), BackendError> {
        let results = self
            .client
            .delete_topics(topics, &self.admin_options())
            .await
            .map_err(|e| classify(&e, "deleting topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => return Err(admin_code_error(&topic, code, "deleting topic")),
            }
        }
        Ok(())
    }
}

/// The Kafka event log: one idempotent producer shared by all appends, one consumer per
/// [`EventLog::subscribe`].
pub struct KafkaLog {
    producer: FutureProducer<LogContext>,
    admin: KafkaAdmin,
    bootstrap: String,
    options: KafkaOptions,
}

impl KafkaLog {
    /// Connects to the cluster at `url` (see the module docs for its parameters, which
    /// override `options`), creating missing topics unless `create_topics` is off.
    pub async fn connect(url: &str, options: KafkaOptions) -> Result<Self, BackendError> {
        let KafkaUrl { bootstrap, options } = parse_url(url, &options)?;
        let admin = KafkaAdmin::new(&bootstrap, &options)?;
        let producer = client_config(&bootstrap, &options)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", millis(options.delivery_timeout))
            .set("request.timeout.ms", millis(options.request_timeout))
            .create_with_context(LogContext::default())
            .map_err(|e| classify(&e, "creating the Kafka producer"))?;
        if options.create_topics {
            for topic in options.topics.all() {
                let report = admin.ensure_topic(topic, options.partitions).await?;
                debug!(%report, "Kafka topic ready");
            }
        }
        info!(bootstrap = %bootstrap, readings = %options.topics.readings, "connected to Kafka");
        Ok(Self {
            producer,
            admin,
            bootstrap,
            options,
        })
    }

    /// The topic names in use.
    pub fn topics(&self) -> &TopicNames {
        &self.options.topics
    }

    /// The admin client this log created its topics with.
    pub fn admin(&self) -> &KafkaAdmin {
        &self.admin
    }
}

async fn delivered(future: DeliveryFuture, topic: &str) -> Result<(), BackendError> {
    match future.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(classify(&error, &format!("appending to {topic}"))),
        Err(_canceled) => Err(BackendError::Closed(BACKEND)),
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn append(&self, topic: Topic, records: Vec<Record>) -> Result<(), BackendError> {
        let name = self.options.topics.name(topic);
        let mut in_flight = std::collections::VecDeque::with_capacity(records.len());
        for record in &records {
            let mut message = FutureRecord::to(name)
                .key(record.key.as_str())
                .payload(record.payload.as_slice());
            if !record.headers.is_empty() {
                let headers = record.headers.iter().fold(
                    OwnedHeaders::new_with_capacity(record.headers.len()),
                    |headers, (key, value)| {
                        headers.insert(Header {
                            key,
                            value: Some(value.as_str()),
                        })
                    },
                );
                message = message.headers(headers);
            }
            loop {
                match self.producer.send_result(message) {
                    Ok(future) => {
                        in_flight.push_back(future);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        message = back;
                        // The local queue is full: wait for room rather than fail. Our
                        // own oldest record frees a slot when acknowledged; with none in
                        // flight, other appends fill the queue and will drain it.
                        match in_flight.pop_front() {
                            Some(oldest) => delivered(oldest, name).await?,
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    Err((error, _)) => {
                        return Err(classify(&error, &format!("appending to {name}")));
                    }
                }
            }
        }
        for future in in_flight {
            delivered(future, name).await?;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: Topic,
        group: &str,
    ) -> Result<Box<dyn LogConsumer>, BackendError> {
        let name = self.options.topics.name(topic).to_owned();
        let consumer: StreamConsumer<ConsumerState> = client_config(&self.bootstrap, &self.options)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create_with_context(ConsumerState::default())
            .map_err(|e| classify(&e, "creating the Kafka consumer"))?;
        consumer
            .subscribe(&[&name])
            .map_err(|e| classify(&e, &format!("subscribing to {name}")))?;
        Ok(Box::new(KafkaConsumer {
            consumer: Arc::new(consumer),
            topic: name,
            timeout: self.options.request_timeout,
        }))
    }

    fn name(&self) -> &'static str {
        "kafka"
    }
}

struct KafkaConsumer {
    consumer: Arc<StreamConsumer<ConsumerState>>,
    topic: String,
    timeout: Duration,
}

fn delivery(message: &impl Message) -> Delivery {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(text).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Delivery {
        // Fetched records always have a partition ≥ 0 and an offset ≥ 0.
        partition: u32::try_from(message.partition()).unwrap_or_default(),
        offset: u64::try_from(message.offset()).unwrap_or_default(),
        record: Record {
            key: message.key().map(text).unwrap_or_default(),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        },
    }
}

impl KafkaConsumer {
    /// After librdkafka reported all brokers down: is the cluster reachable again?
    async fn check_reachable(&self) -> Result<(), BackendError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || consumer.fetch_metadata(Some(&topic), timeout))
            .await
            .map_err(|e| unavailable(format!("metadata request task: {e}")))?
            .map_err(|e| classify(&e, &format!("reaching the brokers of {}", self.topic)))?;
        self.consumer
            .context()
            .log
            .brokers_down
            .store(false, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl LogConsumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait_ms: u64) -> Result<Vec<Delivery>, BackendError> {
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        while batch.len() < max {
            // Wait for the first record; after it, take only what is already fetched.
            let until = if batch.is_empty() {
                deadline
            } else {
                tokio::time::Instant::now()
            };
            let message = match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Ok(message)) => message,
                Ok(Err(error)) if batch.is_empty() => {
                    return Err(classify(&error, &format!("polling {}", self.topic)));
                }
                Ok(Err(error)) => {
                    // Hand over what we have; a persistent problem shows on the next poll.
                    warn!(%error, topic = %self.topic, "kafka consumer error");
                    break;
                }
            };
            let record = delivery(&message);
            self.consumer
                .context()
                .uncommitted()
                .insert(message.partition(), message.offset() + 1);
            batch.push(record);
        }
        if batch.is_empty()
            && self
                .consumer
                .context()
                .log
                .brokers_down
                .load(Ordering::Relaxed)
        {
            self.check_reachable().await?;
        }
        Ok(batch)
    }

    async fn commit(&mut self) -> Result<(), BackendError> {
        let polled: Vec<(i32, i64)> = self
            .consumer
            .context()
            .uncommitted()
            .iter()
            .map(|(p, o)| (*p, *o))
            .collect();
        if polled.is_empty() {
            return Ok(());
        }
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        // The assignment is read where the commit is made, so a partition revoked since
        // the poll is never committed (see the module docs).
        let commit = tokio::task::spawn_blocking(move || {
            let owned = consumer.assignment()?;
            let mut offsets = TopicPartitionList::new();
            let mut committed = Vec::new();
            for (partition, offset) in polled {
                if owned.find_partition(&topic, partition).is_some() {
                    offsets.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
                    committed.push((partition, offset));
                }
            }
            if offsets.count() > 0 {
                consumer.commit(&offsets, CommitMode::Sync)?;
            }
            Ok::<_, KafkaError>(committed)
        });
        let committed = tokio::time::timeout(self.timeout, commit)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "committing offsets of {} took longer than {:?}",
                    self.topic, self.timeout
                ))
            })?
            .map_err(|e| unavailable(format!("commit task: {e}")))?
            .map_err(|e| classify(&e, &format!("committing offsets of {}", self.topic)))?;
        let mut uncommitted = self.consumer.context().uncommitted();
        for (partition, offset) in committed {
            if uncommitted.get(&partition) == Some(&offset) {
                uncommitted.remove(&partition);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<KafkaUrl, BackendError> {
        parse_url(url, &KafkaOptions::default())
    }

    #[test]
    fn parses_servers_and_parameters() {
        let url = parse(
            "kafka://k1:9092,k2,[::1]:9094/?topic_prefix=t1-&partitions=6&replication=3\
             &dead_letter_topic=rejects&create_topics=false&delivery_timeout_ms=1500",
        )
        .expect("valid");
        assert_eq!(url.bootstrap, "k1:9092,k2:9092,[::1]:9094");
        let options = url.options;
        assert_eq!(options.topics.readings, "t1-sensor-readings");
        assert_eq!(options.topics.alerts, "t1-sensor-alerts");
        assert_eq!(
            options.topics.dead_letter, "rejects",
            "explicit beats prefix"
        );
        assert_eq!(options.partitions, 6);
        assert_eq!(options.replication, Some(3));
        assert!(!options.create_topics);
        assert_eq!(options.delivery_timeout, Duration::from_millis(1500));

        let plain = parse("kafka://localhost:9092").expect("valid");
        assert_eq!(plain.options.topics, TopicNames::default());
        assert_eq!(
            plain.options.topics.name(Topic::DeadLetter),
            "sensor-readings-dlq"
        );
        assert_eq!(plain.options.replication, None);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, expected) in [
            ("http://k:9092", "must start with kafka://"),
            ("kafka://", "server is missing"),
            ("kafka://k:9092,", "server is missing"),
            ("kafka://k:http", "bad port"),
            ("kafka://k:9092/path", "no path"),
            ("kafka://k:9092?partitions=0", "partitions must be a number"),
            (
                "kafka://k:9092?partitoins=3",
                "unknown parameter partitoins",
            ),
            (
                "kafka://k:9092?topic_prefix=a/b",
                "not a legal Kafka topic name",
            ),
        ] {
            let error = parse(url).expect_err(url).to_string();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(
                !BackendError::Rejected {
                    backend: BACKEND,
                    detail: String::new()
                }
                .is_transient()
            );
        }
    }

    #[test]
    fn passwords_are_never_echoed() {
        let error = parse("kafka://fleet:s3cret@k:9092?partitions=x")
            .expect_err("credentials are refused")
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
        assert!(error.contains("kafka://***@k:9092"), "{error}");
        assert!(error.contains("credentials are not supported"), "{error}");
    }

    #[test]
    fn errors_split_into_transient_and_permanent() {
        let produce = |code| classify(&KafkaError::MessageProduction(code), "append");
        assert!(produce(RDKafkaErrorCode::MessageTimedOut).is_transient());
        assert!(produce(RDKafkaErrorCode::AllBrokersDown).is_transient());
        assert!(produce(RDKafkaErrorCode::NotEnoughReplicas).is_transient());
        assert!(!produce(RDKafkaErrorCode::MessageSizeTooLarge).is_transient());
        assert!(produce(RDKafkaErrorCode::MessageSizeTooLarge).is_content());
        assert!(!produce(RDKafkaErrorCode::TopicAuthorizationFailed).is_content());
        assert!(!produce(RDKafkaErrorCode::TopicAuthorizationFailed).is_transient());
        assert!(
            classify(
                &KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress),
                "c"
            )
            .is_transient()
        );
    }

    #[test]
    fn reports_read_as_sentences() {
        let report = |previous, partitions, requested| TopicReport {
            topic: "sensor-readings".into(),
            requested,
            previous,
            partitions,
        };
        assert_eq!(
            report(Some(12), 12, 6).to_string(),
            "kept 12 partitions of sensor-readings, 6 requested (partitions only grow)"
        );
        assert!(report(Some(12), 12, 6).kept_more());
        assert!(report(Some(3), 6, 6).grown());
        assert_eq!(
            report(Some(3), 6, 6).to_string(),
            "grew sensor-readings from 3 to 6 partitions"
        );
        assert!(report(None, 6, 6).created());
        assert!(!report(Some(6), 6, 6).grown() && !report(Some(6), 6, 6).kept_more());
    }
}
