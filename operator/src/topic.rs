//! The Kafka topic, behind a trait: the Pipeline reconciler asks for partitions, an
//! implementation creates or grows the topic. [`KafkaTopicAdmin`] does it on the
//! Pipeline's cluster with the backends crate's [`KafkaAdmin`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sensorfleet_backends::BackendError;
use sensorfleet_backends::event_log::kafka::{KafkaAdmin, KafkaOptions, TopicReport};

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

/// Creates and grows topics on the cluster each request names, through one
/// [`KafkaAdmin`] per cluster and replication factor, kept for the next reconcile.
///
/// The cache holds one entry per distinct `spec.kafka` of the Pipelines this operator
/// has seen (a handful, not one per object), and an admin client connects lazily, so an
/// entry for a cluster that went away costs a few idle sockets at most.
#[derive(Default)]
pub struct KafkaTopicAdmin {
    admins: Mutex<HashMap<(String, i16), Arc<KafkaAdmin>>>,
}

impl KafkaTopicAdmin {
    /// An admin with no clusters yet: each is connected on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// The admin of `request`'s cluster, made on first use. The replication factor is
    /// part of the key because a [`KafkaAdmin`] applies one to every topic it creates.
    fn admin(&self, request: &TopicRequest) -> Result<Arc<KafkaAdmin>, TopicError> {
        let key = (
            request.bootstrap_servers.clone(),
            request.replication_factor,
        );
        // A poisoned lock only means another reconcile panicked while inserting: the map
        // itself is still a valid cache.
        let mut admins = self.admins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(admin) = admins.get(&key) {
            return Ok(Arc::clone(admin));
        }
        let replication = u16::try_from(request.replication_factor)
            .ok()
            .filter(|r| *r > 0)
            .ok_or_else(|| TopicError::Refused {
                topic: request.topic.clone(),
                detail: format!(
                    "replication factor {} is not a positive number",
                    request.replication_factor
                ),
            })?;
        let options = KafkaOptions {
            replication: Some(replication),
            ..KafkaOptions::default()
        };
        let url = format!("kafka://{}", request.bootstrap_servers);
        let admin = KafkaAdmin::connect(&url, &options)
            .map(Arc::new)
            .map_err(|e| topic_error(request, e))?;
        admins.insert(key, Arc::clone(&admin));
        Ok(admin)
    }
}

#[async_trait]
impl TopicAdmin for KafkaTopicAdmin {
    async fn ensure_partitions(
        &self,
        request: &TopicRequest,
    ) -> Result<PartitionCount, TopicError> {
        let partitions = u32::try_from(request.partitions)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| TopicError::Refused {
                topic: request.topic.clone(),
                detail: format!("{} partitions: need 1 or more", request.partitions),
            })?;
        let admin = self.admin(request)?;
        let report = admin
            .ensure_partitions(&request.topic, partitions)
            .await
            .map_err(|e| topic_error(request, e))?;
        tracing::debug!(%report, "ensured Kafka topic");
        Ok(partition_count(request, &report))
    }
}

/// The reconciler's view of what the admin found and did.
fn partition_count(request: &TopicRequest, report: &TopicReport) -> PartitionCount {
    PartitionCount {
        // Kafka caps partitions far below i32::MAX; saturate rather than wrap.
        current: i32::try_from(report.partitions).unwrap_or(i32::MAX),
        requested: request.partitions,
        changed: report.created() || report.grown(),
    }
}

/// Transient backend errors are retried as `Unreachable`; what the cluster refused (or
/// a request it can never accept, like an illegal topic name) is `Refused`.
fn topic_error(request: &TopicRequest, error: BackendError) -> TopicError {
    match error {
        BackendError::Rejected { detail, .. } | BackendError::Content { detail, .. } => {
            TopicError::Refused {
                topic: request.topic.clone(),
                detail,
            }
        }
        BackendError::Unavailable { detail, .. } => TopicError::Unreachable {
            bootstrap: request.bootstrap_servers.clone(),
            detail,
        },
        closed @ BackendError::Closed(_) => TopicError::Unreachable {
            bootstrap: request.bootstrap_servers.clone(),
            detail: closed.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(partitions: i32, replication_factor: i16) -> TopicRequest {
        TopicRequest {
            bootstrap_servers: "127.0.0.1:1".into(),
            topic: "readings".into(),
            partitions,
            replication_factor,
        }
    }

    #[test]
    fn backend_errors_map_to_retry_or_refusal() {
        let unavailable = BackendError::Unavailable {
            backend: "kafka",
            detail: "all brokers down".into(),
        };
        assert_eq!(
            topic_error(&request(3, 1), unavailable),
            TopicError::Unreachable {
                bootstrap: "127.0.0.1:1".into(),
                detail: "all brokers down".into(),
            }
        );
        let rejected = BackendError::Rejected {
            backend: "kafka",
            detail: "replication factor larger than available brokers".into(),
        };
        assert!(matches!(
            topic_error(&request(3, 3), rejected),
            TopicError::Refused { topic, .. } if topic == "readings"
        ));
        assert!(matches!(
            topic_error(&request(3, 1), BackendError::Closed("kafka")),
            TopicError::Unreachable { .. }
        ));
    }

    #[test]
    fn a_report_becomes_the_partition_count() {
        let report = |previous, partitions| TopicReport {
            topic: "readings".into(),
            requested: 5,
            previous,
            partitions,
        };
        let count = |r: TopicReport| partition_count(&request(5, 1), &r);
        assert_eq!(
            count(report(None, 5)),
            PartitionCount {
                current: 5,
                requested: 5,
                changed: true
            }
        );
        assert!(count(report(Some(3), 5)).changed, "grown");
        let kept = count(report(Some(50), 50));
        assert_eq!((kept.current, kept.changed), (50, false), "never shrunk");
    }

    #[tokio::test]
    async fn impossible_requests_are_refused_without_a_broker() {
        let admin = KafkaTopicAdmin::new();
        for bad in [request(0, 1), request(-2, 1), request(3, 0)] {
            assert!(
                matches!(
                    admin.ensure_partitions(&bad).await,
                    Err(TopicError::Refused { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
