//! A consumer-group member: polling, per-partition offsets, commits that skip revoked
//! partitions, and the current assignment (kept by the rebalance callbacks, its
//! partition count read from the cluster when it changed). Also the group-less tail
//! reader of [`EventLog::tail`](crate::EventLog::tail).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::LogContext;
use super::admin::KafkaAdmin;
use super::error::{classify, unavailable};
use crate::BackendError;
use crate::event_log::{Assignment, Delivery, LogConsumer, Record};

/// The consumer's context: logging, plus the offsets polled but not yet committed, which
/// a revocation drops (see the module docs).
#[derive(Default)]
pub(super) struct ConsumerState {
    log: LogContext,
    /// Partition → the offset after the last record polled from it.
    uncommitted: Mutex<HashMap<i32, i64>>,
    /// The partitions owned, and a generation counted up at every change.
    assigned: Mutex<Owned>,
}

#[derive(Default)]
struct Owned {
    generation: u64,
    /// `None` until the group assigned something.
    partitions: Option<Vec<u32>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: a panic elsewhere leaves it usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ConsumerState {
    fn uncommitted(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i64>> {
        lock(&self.uncommitted)
    }

    /// Adds (`assign`) or removes partitions: union and difference, so eager (revoke
    /// all, assign all) and incremental rebalances both leave the current set.
    fn change(&self, list: &TopicPartitionList, assign: bool) {
        let mut owned = lock(&self.assigned);
        let mut partitions = owned.partitions.take().unwrap_or_default();
        for element in list.elements() {
            let Ok(partition) = u32::try_from(element.partition()) else {
                continue;
            };
            if assign {
                partitions.push(partition);
            } else {
                partitions.retain(|&p| p != partition);
            }
        }
        partitions.sort_unstable();
        partitions.dedup();
        owned.partitions = Some(partitions);
        owned.generation += 1;
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
            // Before the revocation completes: from now on nothing of these is ours.
            self.change(revoked, false);
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

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.change(assigned, true);
            info!(partitions = assigned.count(), "partitions assigned");
        }
    }
}

pub(super) struct KafkaConsumer {
    pub(super) consumer: Arc<StreamConsumer<ConsumerState>>,
    pub(super) topic: String,
    pub(super) timeout: Duration,
    /// Reads the topic's partition count when the assignment changed.
    pub(super) admin: KafkaAdmin,
    /// `false` for a tail reader: nothing to commit, every partition read.
    pub(super) grouped: bool,
    /// The generation and partition count behind the last assignment returned.
    pub(super) seen: Option<(u64, u32)>,
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
        if !self.grouped {
            return Ok(());
        }
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

    async fn assignment(&mut self) -> Result<Option<Assignment>, BackendError> {
        let (generation, owned) = {
            let owned = lock(&self.consumer.context().assigned);
            (owned.generation, owned.partitions.clone())
        };
        let count = match self.seen {
            Some((seen, count)) if seen == generation => count,
            // Partitions only grow, and growing rebalances the group: re-read it then.
            _ => {
                let Some(count) = self.admin.partitions(&self.topic).await? else {
                    return Ok(None);
                };
                self.seen = Some((generation, count));
                count
            }
        };
        if !self.grouped {
            return Ok(Some(Assignment::whole(count)));
        }
        Ok(owned.map(|owned| Assignment {
            partitions: count,
            owned,
        }))
    }
}
