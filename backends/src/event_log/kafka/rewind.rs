//! Moving a consumer group's committed offsets to a point in time: what
//! `sensorfleet replay` does before the processors start again.
//!
//! A plain consumer of the group (never subscribed, so it never joins it) looks up, per
//! partition, the first offset whose record time (the time the bridge appended it) is at
//! or after the instant, and commits those offsets for the group. Kafka takes such a
//! commit only for a group without members; the group's member list is checked first so
//! that the refusal can say what to do.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::config::KafkaOptions;
use super::error::{classify, rejected, unavailable};
use super::{LogContext, client_config};
use crate::BackendError;
use crate::event_log::Rewound;

/// Rewinds `group` on `topic` to `from_ms` (see [`crate::EventLog::rewind`]).
pub(super) async fn rewind(
    bootstrap: &str,
    options: &KafkaOptions,
    topic: &str,
    group: &str,
    from_ms: i64,
) -> Result<Vec<Rewound>, BackendError> {
    let consumer: BaseConsumer<LogContext> = client_config(bootstrap, options)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(LogContext::default())
        .map_err(|e| classify(&e, "creating the Kafka consumer for the rewind"))?;
    let (topic, group, timeout) = (topic.to_owned(), group.to_owned(), options.request_timeout);
    // librdkafka's group, metadata and offset calls block their thread.
    tokio::task::spawn_blocking(move || {
        let groups = consumer
            .fetch_group_list(Some(&group), timeout)
            .map_err(|e| classify(&e, &format!("describing consumer group {group}")))?;
        if let Some(found) = groups.groups().iter().find(|g| g.name() == group)
            && !found.members().is_empty()
        {
            let hosts: Vec<&str> = found.members().iter().map(|m| m.client_host()).collect();
            return Err(rejected(format!(
                "consumer group {group} has {} running member(s) ({}): stop its consumers \
                 first (in Kubernetes: kubectl scale deployment/<pipeline>-processor \
                 --replicas=0; the operator keeps it there while the Pipeline's \
                 processor.paused is true), then replay, then start them again",
                found.members().len(),
                hosts.join(", ")
            )));
        }
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| classify(&e, &format!("reading metadata of {topic}")))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(rejected(format!(
                "topic {topic} does not exist or has no partitions: check --kafka-url's \
                 topic_prefix (or readings_topic)"
            )));
        }
        let mut all = TopicPartitionList::new();
        let mut times = TopicPartitionList::new();
        for &p in &partitions {
            all.add_partition(&topic, p);
            times
                .add_partition_offset(&topic, p, Offset::Offset(from_ms))
                .map_err(|e| classify(&e, "building the offset lookup"))?;
        }
        let committed = consumer
            .committed_offsets(all, timeout)
            .map_err(|e| classify(&e, &format!("reading the offsets of group {group}")))?;
        let found = consumer
            .offsets_for_times(times, timeout)
            .map_err(|e| classify(&e, &format!("looking up offsets of {topic} by time")))?;
        let mut target = TopicPartitionList::new();
        let mut rewound = Vec::with_capacity(partitions.len());
        for &p in &partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, timeout)
                .map_err(|e| classify(&e, &format!("reading the end of {topic}/{p}")))?;
            let end = u64::try_from(high).unwrap_or(0);
            let to = match found.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => u64::try_from(o).unwrap_or(0).min(end),
                // No record at or after the instant: nothing to read again here.
                _ => end,
            };
            let before = committed
                .find_partition(&topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => u64::try_from(o).ok(),
                    _ => None,
                });
            let to_i64 = i64::try_from(to).map_err(|_| unavailable("offset out of range"))?;
            target
                .add_partition_offset(&topic, p, Offset::Offset(to_i64))
                .map_err(|e| classify(&e, "building the new offsets"))?;
            rewound.push(Rewound {
                partition: u32::try_from(p).unwrap_or(0),
                before,
                to,
                end,
            });
        }
        consumer
            .commit(&target, CommitMode::Sync)
            .map_err(|e| classify(&e, &format!("committing the new offsets of group {group}")))?;
        Ok(rewound)
    })
    .await
    .map_err(|e| unavailable(format!("rewind task: {e}")))?
}
