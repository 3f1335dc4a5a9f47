//! The event log between bridge and processor: Kafka in production, a bounded in-process
//! queue embedded.
//!
//! Records are keyed by device id so one device's readings stay in order. A consumer
//! commits only after its sinks have flushed: what was polled but not committed is
//! delivered again after a restart (at-least-once), which the idempotent stores absorb.
//!
//! Several consumers of one group share a topic's partitions; each can say which it owns
//! now ([`LogConsumer::assignment`]), and [`Assignment::owns`] maps a key to its
//! partition as the producer does, so a consumer can tell which devices are its own
//! without having seen a record of them.

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

    /// Reads `topic` from its end on, across all partitions, without a consumer group:
    /// only what is appended after the call, nothing committed, no group left behind.
    /// For a broadcast every process reads once, live (the alert commands).
    async fn tail(&self, topic: Topic) -> Result<Box<dyn LogConsumer>, BackendError>;

    /// Moves `group`'s committed position in `topic`, in every partition, to the first
    /// record appended at or after `from_ms` (unix ms; the end where there is none, the
    /// oldest record kept where all are newer), so the group's consumers reprocess from
    /// there when they next start. Refused while the group has members: a running
    /// consumer would commit over it. A log that keeps no history refuses it.
    async fn rewind(
        &self,
        topic: Topic,
        group: &str,
        from_ms: i64,
    ) -> Result<Vec<Rewound>, BackendError> {
        let _ = (topic, group, from_ms);
        Err(BackendError::Rejected {
            backend: self.name(),
            detail: "this event log keeps no history once it is processed, so there is \
                     nothing to replay: replay needs Kafka"
                .to_owned(),
        })
    }

    /// Short name for logs and health, e.g. `memory` or `kafka`.
    fn name(&self) -> &'static str;
}

/// What [`EventLog::rewind`] did to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewound {
    /// The partition.
    pub partition: u32,
    /// The group's committed offset before; `None` when it had none.
    pub before: Option<u64>,
    /// The committed offset now: the next record the group reads.
    pub to: u64,
    /// The partition's end (the offset the next appended record gets).
    pub end: u64,
}

impl Rewound {
    /// Records the group reads again (or for the first time) from `to` on.
    pub fn records(&self) -> u64 {
        self.end.saturating_sub(self.to)
    }
}

/// A consumer in a group.
#[async_trait]
pub trait LogConsumer: Send {
    /// Waits up to `wait_ms` for records and returns at most `max` (possibly none).
    async fn poll(&mut self, max: usize, wait_ms: u64) -> Result<Vec<Delivery>, BackendError>;

    /// Marks everything polled so far as processed. Call only after the sinks flushed.
    /// A [`EventLog::tail`] reader has nothing to commit.
    async fn commit(&mut self) -> Result<(), BackendError>;

    /// The partitions this consumer owns now, `None` before its group gave it any. It
    /// changes after a rebalance; compare with the last one seen.
    async fn assignment(&mut self) -> Result<Option<Assignment>, BackendError>;
}

/// The partitions a consumer owns, of how many the topic has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Partitions of the topic.
    pub partitions: u32,
    /// Those owned, ascending.
    pub owned: Vec<u32>,
}

impl Assignment {
    /// Every partition of a topic of `partitions`.
    pub fn whole(partitions: u32) -> Self {
        Self {
            partitions,
            owned: (0..partitions).collect(),
        }
    }

    /// Whether partition `partition` is owned.
    pub fn has(&self, partition: u32) -> bool {
        self.owned.binary_search(&partition).is_ok()
    }

    /// Whether records keyed `key` land in an owned partition.
    pub fn owns(&self, key: &str) -> bool {
        self.has(partition_of(key, self.partitions))
    }
}

/// The partition the producer puts a record keyed `key` in, of `partitions`: librdkafka's
/// default partitioner (`consistent_random`), CRC-32 of the key modulo the partition
/// count. (An empty key goes to a random partition there; here to 0, and no device has
/// an empty id.)
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    if partitions == 0 || key.is_empty() {
        return 0;
    }
    crc32(key.as_bytes()) % partitions
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32` and librdkafka's `rd_crc32`).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_checksum() {
        // The standard check value, and zlib's crc32 of a short id.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"a"), 0xE8B7_BE43);
    }

    #[test]
    fn a_key_maps_to_one_owned_partition_of_the_assignment() {
        let key = "device-17";
        let p = partition_of(key, 3);
        assert!(p < 3);
        assert_eq!(p, crc32(key.as_bytes()) % 3);
        assert!(Assignment::whole(3).owns(key));
        let others: Vec<u32> = (0..3).filter(|&q| q != p).collect();
        let theirs = Assignment {
            partitions: 3,
            owned: others,
        };
        assert!(!theirs.owns(key));
        assert!(
            Assignment::whole(1).owns(key),
            "one partition holds every key"
        );
        assert_eq!(partition_of(key, 0), 0);
    }
}
