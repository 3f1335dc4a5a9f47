//! Topic administration: create, grow and inspect topics (also used by the operator).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use super::config::{KafkaOptions, check_topic_name, parse_url};
use super::error::{admin_code_error, classify, rejected, unavailable};
use super::{LogContext, client_config};
use crate::BackendError;

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
#[derive(Clone)]
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

    pub(super) fn new(bootstrap: &str, options: &KafkaOptions) -> Result<Self, BackendError> {
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

    /// The names of the consumer groups the cluster knows (with members or committed
    /// offsets), sorted: what an operator audits for groups nobody uses any more.
    pub async fn consumer_groups(&self) -> Result<Vec<String>, BackendError> {
        let client = Arc::clone(&self.client);
        let timeout = self.timeout;
        // librdkafka's group list call blocks its thread.
        let list = tokio::task::spawn_blocking(move || {
            client.inner().fetch_group_list(None, timeout).map(|list| {
                list.groups()
                    .iter()
                    .map(|g| g.name().to_owned())
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|e| unavailable(format!("group list task: {e}")))?
        .map_err(|e| classify(&e, "listing consumer groups"))?;
        let mut names = list;
        names.sort();
        Ok(names)
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

#[cfg(test)]
mod tests {
    use super::*;

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
