//! The embedded event log: one bounded in-process log per topic, with consumer groups.
//!
//! Each topic is a single partition holding at most `capacity` records. Every consumer
//! group has a committed offset; a consumer reads from it, so whatever a group polled but
//! did not commit is delivered again to the group's next consumer (at-least-once, as with
//! Kafka). A group that joins late starts at the oldest record still held (Kafka's
//! `auto.offset.reset=earliest`).
//!
//! When full, the topics differ, as their roles do:
//! - `Readings` applies back-pressure: an append waits while `capacity` records are not
//!   yet committed by every group that ever subscribed, so memory stays bounded and a
//!   slow processor slows the bridge, which slows MQTT acknowledgements. Records every
//!   group committed are kept (for late groups) until newer ones need the room.
//! - `Alerts` and `DeadLetter` never block: they keep the newest `capacity` records, and
//!   a group that fell further behind skips what was dropped, as a Kafka consumer does
//!   past retention. [`MemoryLog::recent`] reads them without a consumer.
//!
//! A group has one consumer at a time: the log is one partition, and a second member
//! would only idle in Kafka too, so it is refused with a clear error instead. A consumer
//! owns that one partition, always ([`Assignment::whole`]).
//!
//! A [`EventLog::tail`] reader has no group: it starts at the next offset appended and
//! holds nothing back (it counts for no topic's back-pressure).

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Assignment, Delivery, EventLog, LogConsumer, Record, Topic};
use crate::BackendError;

const BACKEND: &str = "embedded event log";

/// The embedded event log.
pub struct MemoryLog {
    readings: Arc<TopicLog>,
    alerts: Arc<TopicLog>,
    /// Alert commands: only used between processes, kept for completeness.
    commands: Arc<TopicLog>,
    dead_letters: Arc<TopicLog>,
}

/// What a full topic does with the next append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// Wait until the slowest group commits.
    Wait,
    /// Drop the oldest record, committed or not.
    DropOldest,
}

struct TopicLog {
    state: Mutex<TopicState>,
    /// Woken (all waiters) when records are appended.
    readable: Notify,
    /// Woken (all waiters) when a commit may have made room.
    space: Notify,
    capacity: usize,
    when_full: WhenFull,
}

#[derive(Default)]
struct TopicState {
    /// Records from offset `base` on.
    records: VecDeque<Record>,
    base: u64,
    groups: HashMap<String, Group>,
}

struct Group {
    committed: u64,
    has_member: bool,
}

impl TopicState {
    fn next_offset(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    /// The oldest offset some group has not committed; with no group yet, the oldest
    /// record held (nothing is committed, so nothing may go).
    fn floor(&self) -> u64 {
        self.groups
            .values()
            .map(|g| g.committed)
            .min()
            .unwrap_or(self.base)
            .max(self.base)
    }

    fn uncommitted(&self) -> usize {
        usize::try_from(self.next_offset() - self.floor()).unwrap_or(usize::MAX)
    }

    fn drop_oldest(&mut self) {
        if self.records.pop_front().is_some() {
            self.base += 1;
        }
    }
}

impl TopicLog {
    fn new(capacity: usize, when_full: WhenFull) -> Self {
        Self {
            state: Mutex::new(TopicState::default()),
            readable: Notify::new(),
            space: Notify::new(),
            capacity,
            when_full,
        }
    }

    /// Appends what fits now and returns how many records were taken.
    fn push(&self, records: &[Record]) -> usize {
        let mut state = lock(&self.state);
        let room = match self.when_full {
            WhenFull::DropOldest => records.len(),
            WhenFull::Wait => self.capacity.saturating_sub(state.uncommitted()),
        };
        let taken = room.min(records.len());
        for record in &records[..taken] {
            if state.records.len() == self.capacity {
                // Under `Wait` the oldest is committed by every group (room > 0 said so).
                state.drop_oldest();
            }
            state.records.push_back(record.clone());
        }
        drop(state);
        if taken > 0 {
            self.readable.notify_waiters();
        }
        taken
    }

    async fn append(&self, records: &[Record]) {
        let mut rest = records;
        while !rest.is_empty() {
            // Registered before looking, so a commit in between still wakes us.
            let mut space = pin!(self.space.notified());
            space.as_mut().enable();
            rest = &rest[self.push(rest)..];
            if !rest.is_empty() {
                space.await;
            }
        }
    }
}

impl MemoryLog {
    /// A log holding at most `capacity` records per topic (at least 1); for readings, at
    /// most `capacity` not yet committed by every consumer group.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            readings: Arc::new(TopicLog::new(capacity, WhenFull::Wait)),
            alerts: Arc::new(TopicLog::new(capacity, WhenFull::DropOldest)),
            commands: Arc::new(TopicLog::new(capacity, WhenFull::DropOldest)),
            dead_letters: Arc::new(TopicLog::new(capacity, WhenFull::DropOldest)),
        }
    }

    fn topic(&self, topic: Topic) -> &Arc<TopicLog> {
        match topic {
            Topic::Readings => &self.readings,
            Topic::Alerts => &self.alerts,
            Topic::Commands => &self.commands,
            Topic::DeadLetter => &self.dead_letters,
        }
    }

    /// The newest `limit` records the log still holds for `topic`, oldest first.
    pub fn recent(&self, topic: Topic, limit: usize) -> Vec<Record> {
        let state = lock(&self.topic(topic).state);
        let skip = state.records.len().saturating_sub(limit);
        state.records.iter().skip(skip).cloned().collect()
    }

    /// Readings appended but not yet committed by every consumer group (all readings
    /// held, before any group subscribed).
    pub fn backlog(&self) -> usize {
        lock(&self.readings.state).uncommitted()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl EventLog for MemoryLog {
    async fn append(&self, topic: Topic, records: Vec<Record>) -> Result<(), BackendError> {
        self.topic(topic).append(&records).await;
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: Topic,
        group: &str,
    ) -> Result<Box<dyn LogConsumer>, BackendError> {
        let log = Arc::clone(self.topic(topic));
        let mut state = lock(&log.state);
        let base = state.base;
        let entry = state.groups.entry(group.to_owned()).or_insert(Group {
            committed: base,
            has_member: false,
        });
        if entry.has_member {
            return Err(BackendError::Rejected {
                backend: BACKEND,
                detail: format!(
                    "group {group} already has a consumer of {}; the embedded log serves \
                     one per group (run Kafka for more)",
                    topic.default_name()
                ),
            });
        }
        entry.has_member = true;
        // Where the group's last consumer committed, or past what was dropped since.
        let position = entry.committed.max(base);
        drop(state);
        Ok(Box::new(MemoryConsumer {
            log,
            group: Some(group.to_owned()),
            position,
        }))
    }

    async fn tail(&self, topic: Topic) -> Result<Box<dyn LogConsumer>, BackendError> {
        let log = Arc::clone(self.topic(topic));
        let position = lock(&log.state).next_offset();
        Ok(Box::new(MemoryConsumer {
            log,
            group: None,
            position,
        }))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

struct MemoryConsumer {
    log: Arc<TopicLog>,
    /// `None` for a tail reader.
    group: Option<String>,
    /// The next offset to read; everything before it was polled.
    position: u64,
}

impl MemoryConsumer {
    fn take(&mut self, max: usize) -> Vec<Delivery> {
        let state = lock(&self.log.state);
        // Records dropped from a non-blocking topic before we read them are skipped.
        self.position = self.position.max(state.base);
        let start = usize::try_from(self.position - state.base).unwrap_or(usize::MAX);
        let batch: Vec<Delivery> = state
            .records
            .iter()
            .skip(start)
            .take(max)
            .zip(self.position..)
            .map(|(record, offset)| Delivery {
                partition: 0,
                offset,
                record: record.clone(),
            })
            .collect();
        self.position += batch.len() as u64;
        batch
    }
}

#[async_trait]
impl LogConsumer for MemoryConsumer {
    async fn poll(&mut self, max: usize, wait_ms: u64) -> Result<Vec<Delivery>, BackendError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let log = Arc::clone(&self.log);
        loop {
            // Registered before looking, so an append in between still wakes us.
            let mut readable = pin!(log.readable.notified());
            readable.as_mut().enable();
            let batch = self.take(max);
            if !batch.is_empty() || max == 0 {
                return Ok(batch);
            }
            if tokio::time::timeout_at(deadline, readable).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self) -> Result<(), BackendError> {
        let Some(name) = &self.group else {
            return Ok(());
        };
        let mut state = lock(&self.log.state);
        if let Some(group) = state.groups.get_mut(name) {
            group.committed = group.committed.max(self.position);
        }
        drop(state);
        self.log.space.notify_waiters();
        Ok(())
    }

    async fn assignment(&mut self) -> Result<Option<Assignment>, BackendError> {
        Ok(Some(Assignment::whole(1)))
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        // What was polled and not committed stays uncommitted: the group's next
        // consumer starts from the committed offset and gets it again.
        let Some(name) = &self.group else { return };
        if let Some(group) = lock(&self.log.state).groups.get_mut(name) {
            group.has_member = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> Record {
        Record {
            key: key.into(),
            payload: key.as_bytes().to_vec(),
            headers: vec![],
        }
    }

    fn keys(batch: &[Delivery]) -> Vec<&str> {
        batch.iter().map(|d| d.record.key.as_str()).collect()
    }

    #[tokio::test]
    async fn delivers_in_order_and_applies_back_pressure_until_commit() {
        let log = Arc::new(MemoryLog::new(3));
        let mut consumer = log.subscribe(Topic::Readings, "g").await.unwrap();
        log.append(Topic::Readings, vec![record("a"), record("b"), record("c")])
            .await
            .unwrap();
        assert_eq!(log.backlog(), 3);

        let writer = {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.append(Topic::Readings, vec![record("d")]).await })
        };
        let batch = consumer.poll(10, 100).await.unwrap();
        assert_eq!(keys(&batch), ["a", "b", "c"]);
        assert_eq!(batch[2].offset, 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !writer.is_finished(),
            "a full log must hold the writer until commit"
        );

        consumer.commit().await.unwrap();
        writer.await.unwrap().unwrap();
        let batch = consumer.poll(10, 1000).await.unwrap();
        assert_eq!(keys(&batch), ["d"]);
        assert_eq!(batch[0].offset, 3);
    }

    #[tokio::test]
    async fn the_slowest_group_holds_the_writer() {
        let log = Arc::new(MemoryLog::new(2));
        let mut fast = log.subscribe(Topic::Readings, "fast").await.unwrap();
        let _slow = log.subscribe(Topic::Readings, "slow").await.unwrap();
        log.append(Topic::Readings, vec![record("a"), record("b")])
            .await
            .unwrap();
        assert_eq!(fast.poll(10, 100).await.unwrap().len(), 2);
        fast.commit().await.unwrap();
        assert_eq!(log.backlog(), 2, "the slow group has committed nothing");
        let append = log.append(Topic::Readings, vec![record("c")]);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), append)
                .await
                .is_err(),
            "full for the slow group"
        );
    }

    #[tokio::test]
    async fn a_late_group_starts_at_the_oldest_record_held() {
        let log = MemoryLog::new(2);
        let mut first = log.subscribe(Topic::Readings, "first").await.unwrap();
        for key in ["a", "b", "c"] {
            log.append(Topic::Readings, vec![record(key)])
                .await
                .unwrap();
            first.poll(10, 100).await.unwrap();
            first.commit().await.unwrap();
        }
        let mut late = log.subscribe(Topic::Readings, "late").await.unwrap();
        let batch = late.poll(10, 100).await.unwrap();
        assert_eq!(
            keys(&batch),
            ["b", "c"],
            "committed records stay while there is room"
        );
        assert_eq!(batch[0].offset, 1);
    }

    #[tokio::test]
    async fn poll_times_out_empty_and_a_group_has_one_consumer() {
        let log = MemoryLog::new(3);
        let mut consumer = log.subscribe(Topic::Readings, "g").await.unwrap();
        assert!(consumer.poll(10, 20).await.unwrap().is_empty());
        assert!(
            log.subscribe(Topic::Readings, "g").await.is_err(),
            "one consumer per group"
        );
        drop(consumer);
        assert!(log.subscribe(Topic::Readings, "g").await.is_ok());
    }

    #[tokio::test]
    async fn a_tail_reads_only_what_comes_after_it_and_leaves_no_group() {
        let log = MemoryLog::new(10);
        log.append(Topic::Commands, vec![record("old")])
            .await
            .unwrap();
        let mut tail = log.tail(Topic::Commands).await.unwrap();
        assert!(
            tail.poll(10, 20).await.unwrap().is_empty(),
            "history skipped"
        );
        log.append(Topic::Commands, vec![record("new")])
            .await
            .unwrap();
        let batch = tail.poll(10, 100).await.unwrap();
        assert_eq!(keys(&batch), ["new"]);
        assert_eq!(batch[0].offset, 1);
        tail.commit().await.unwrap();
        drop(tail);
        assert!(lock(&log.commands.state).groups.is_empty());
        let mut again = log.tail(Topic::Commands).await.unwrap();
        assert!(again.poll(10, 20).await.unwrap().is_empty(), "no replay");
    }

    #[tokio::test]
    async fn dead_letters_keep_the_newest_and_lagging_groups_skip() {
        let log = MemoryLog::new(2);
        let mut consumer = log.subscribe(Topic::DeadLetter, "g").await.unwrap();
        log.append(
            Topic::DeadLetter,
            vec![record("a"), record("b"), record("c")],
        )
        .await
        .unwrap();
        let kept: Vec<_> = log
            .recent(Topic::DeadLetter, 10)
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(kept, ["b", "c"]);
        assert_eq!(log.recent(Topic::DeadLetter, 1)[0].key, "c");
        let batch = consumer.poll(10, 100).await.unwrap();
        assert_eq!(keys(&batch), ["b", "c"]);
        assert_eq!(batch[0].offset, 1);
    }
}
