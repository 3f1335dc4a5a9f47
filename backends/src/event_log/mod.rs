//! The event log between bridge and processor: Kafka in production, a bounded in-process
//! queue embedded.
//!
//! Records are keyed by device id so one device's readings stay in order. A consumer
//! commits only after its sinks have flushed: what was polled but not committed is
//! delivered again after a restart (at-least-once), which the idempotent stores absorb.

pub mod kafka;
pub mod memory;

use async_trait::async_trait;

use crate::BackendError;

/// The three streams of DESIGN §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Normalised readings (`sensor-readings`).
    Readings,
    /// Alerts as they fire and resolve (`sensor-alerts`).
    Alerts,
    /// Rejected messages with the reason in a header (`sensor-readings-dlq`).
    DeadLetter,
    /// Acknowledge/clear requests from API processes to every processor
    /// (`sensor-alert-commands`). Only used when the roles run as separate processes.
    Commands,
}

impl Topic {
    /// The default topic name.
    pub fn default_name(self) -> &'static str {
        match self {
            Self::Readings => "sensor-readings",
            Self::Alerts => "sensor-alerts",
            Self::DeadLetter => "sensor-readings-dlq",
            Self::Commands => "sensor-alert-commands",
        }
    }
}

/// One record: a key (the device id), a payload and headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Partitioning key: the device id (or, for a reject, whatever id could be read).
    pub key: String,
    /// The bytes: a reading or alert as JSON, or the rejected payload as it came.
    pub payload: Vec<u8>,
    /// Headers, e.g. `reason` and `topic` on dead letters.
    pub headers: Vec<(String, String)>,
}

/// A record as a consumer receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Partition the record was in.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// The record.
    pub record: Record,
}

/// Appends records and hands out consumers.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends records; returns once they are durable (Kafka: acknowledged by all
    /// in-sync replicas). Waits while the log is full: that is the back-pressure that
    /// reaches the MQTT broker.
    async fn append(&self, topic: Topic, records: Vec<Record>) -> Result<(), BackendError>;

    /// Joins `group` as a consumer of `topic`.
    async fn subscribe(
        &self,
        topic: Topic,
        group: &str,
    ) -> Result<Box<dyn LogConsumer>, BackendError>;

    /// Short name for logs and health, e.g. `memory` or `kafka`.
    fn name(&self) -> &'static str;
}

/// A consumer in a group.
#[async_trait]
pub trait LogConsumer: Send {
    /// Waits up to `wait_ms` for records and returns at most `max` (possibly none).
    async fn poll(&mut self, max: usize, wait_ms: u64) -> Result<Vec<Delivery>, BackendError>;

    /// Marks everything polled so far as processed. Call only after the sinks flushed.
    async fn commit(&mut self) -> Result<(), BackendError>;
}
