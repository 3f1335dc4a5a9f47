//! The Kafka topic, behind a trait: the Pipeline reconciler asks for partitions, an
//! implementation creates or grows the topic.
//!
//! TODO(merge kafka-log): implement [`TopicAdmin`] with the Kafka admin client in
//! `backends/src/event_log/kafka.rs` (being written on the `kafka-log` branch) and pass
//! it to [`crate::controller::Context`] in `sensorfleet operator`. Until then the
//! operator runs with [`NoTopicAdmin`]: it computes the partitions, sizes the processors
//! from them, and reports `TopicReady=False` with reason `TopicAdminUnavailable`.

use async_trait::async_trait;

/// The topic a Pipeline asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRequest {
    /// Bootstrap servers, `host:port[,…]`.
    pub bootstrap_servers: String,
    /// Topic name.
    pub topic: String,
    /// Partitions wanted; a topic with more keeps them.
    pub partitions: i32,
    /// Replication factor, used only when the topic is created.
    pub replication_factor: i16,
}

/// What the topic has after [`TopicAdmin::ensure_partitions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCount {
    /// Partitions the topic has now (at least `requested`; more when it already had
    /// more, since Kafka cannot remove partitions).
    pub current: i32,
    /// Partitions that were asked for.
    pub requested: i32,
    /// True when this call created the topic or added partitions.
    pub changed: bool,
}

/// Why the topic could not be ensured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// No Kafka admin is wired into this operator build.
    #[error("no Kafka admin client in this build: partitions are computed but not applied")]
    Unavailable,
    /// The cluster could not be reached or timed out: retry.
    #[error("Kafka at {bootstrap} unreachable: {detail}")]
    Unreachable {
        /// Bootstrap servers tried.
        bootstrap: String,
        /// What the client said.
        detail: String,
    },
    /// The cluster refused (e.g. replication factor above the broker count).
    #[error("Kafka refused topic {topic}: {detail}")]
    Refused {
        /// Topic name.
        topic: String,
        /// What the broker said.
        detail: String,
    },
}

/// Creates or grows topics; never shrinks one.
#[async_trait]
pub trait TopicAdmin: Send + Sync {
    /// Makes `request.topic` exist with at least `request.partitions` partitions.
    async fn ensure_partitions(&self, request: &TopicRequest)
    -> Result<PartitionCount, TopicError>;
}

/// The stand-in until the Kafka admin is merged: always [`TopicError::Unavailable`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTopicAdmin;

#[async_trait]
impl TopicAdmin for NoTopicAdmin {
    async fn ensure_partitions(&self, _: &TopicRequest) -> Result<PartitionCount, TopicError> {
        Err(TopicError::Unavailable)
    }
}
