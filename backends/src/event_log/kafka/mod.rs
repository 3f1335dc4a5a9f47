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
//!
//! **Assignment.** The rebalance callbacks keep the set of partitions owned (revoked ones
//! leave it before the revocation completes, assigned ones join it after);
//! [`LogConsumer::assignment`](crate::LogConsumer::assignment) returns it with the
//! topic's partition count, re-read from the cluster whenever the set changed. Keys map to
//! partitions by librdkafka's default partitioner ([`crate::partition_of`]), the one the
//! producer uses.
//!
//! **Tail.** [`EventLog::tail`](crate::EventLog::tail) assigns every partition at its end
//! (`assign`, not `subscribe`; the `group.id` librdkafka requires for that is
//! `<topic>-tail`, never joined): no group is created on the broker, nothing is
//! committed, and the reader sees only what is appended after it started.

mod admin;
mod config;
mod consumer;
mod error;
mod producer;
mod rewind;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, error, info, warn};

pub use self::admin::{KafkaAdmin, TopicReport};
pub use self::config::{KafkaOptions, TopicNames};
pub use self::producer::KafkaLog;

const BACKEND: &str = "kafka";

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

/// A consumer that never subscribes (the rewind's) needs no rebalance handling.
impl rdkafka::consumer::ConsumerContext for LogContext {}

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
