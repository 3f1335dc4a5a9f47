//! The embedded event log: one bounded in-process queue per topic.
//!
//! `Readings` applies back-pressure: an append waits while `capacity` records are
//! appended but not yet committed by the consumer, so memory stays bounded and a slow
//! processor slows the bridge, which slows MQTT acknowledgements. `Alerts` and
//! `DeadLetter` have no consumer embedded; they keep the newest `capacity` records for
//! inspection ([`MemoryLog::recent`]) and never block.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

use super::{Delivery, EventLog, LogConsumer, Record, Topic};
use crate::BackendError;

const BACKEND: &str = "embedded event log";

/// The embedded event log.
pub struct MemoryLog {
    readings: Arc<Queue>,
    alerts: Mutex<Ring>,
    dead_letters: Mutex<Ring>,
}

struct Queue {
    records: Mutex<QueueState>,
    readable: Notify,
    space: Semaphore,
    capacity: usize,
}

#[derive(Default)]
struct QueueState {
    records: VecDeque<Delivery>,
    next_offset: u64,
    subscribed: bool,
}

struct Ring {
    records: VecDeque<Record>,
    capacity: usize,
}

impl Ring {
    fn push(&mut self, records: Vec<Record>) {
        for record in records {
            if self.records.len() == self.capacity {
                self.records.pop_front();
            }
            self.records.push_back(record);
        }
    }
}

impl MemoryLog {
    /// A log holding at most `capacity` uncommitted readings (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        let ring = || {
            Mutex::new(Ring {
                records: VecDeque::new(),
                capacity,
            })
        };
        Self {
            readings: Arc::new(Queue {
                records: Mutex::new(QueueState::default()),
                readable: Notify::new(),
                space: Semaphore::new(capacity),
                capacity,
            }),
            alerts: ring(),
            dead_letters: ring(),
        }
    }

    /// The newest `limit` records of `Alerts` or `DeadLetter`, oldest first.
    pub fn recent(&self, topic: Topic, limit: usize) -> Vec<Record> {
        let ring = match topic {
            Topic::Readings | Topic::Commands => return Vec::new(),
            Topic::Alerts => &self.alerts,
            Topic::DeadLetter => &self.dead_letters,
        };
        let ring = lock(ring);
        let skip = ring.records.len().saturating_sub(limit);
        ring.records.iter().skip(skip).cloned().collect()
    }

    /// Readings appended but not yet committed.
    pub fn backlog(&self) -> usize {
        self.readings.capacity - self.readings.space.available_permits()
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
        match topic {
            Topic::Alerts => lock(&self.alerts).push(records),
            Topic::DeadLetter => lock(&self.dead_letters).push(records),
            Topic::Commands => {
                // In one process the API talks to the processor over a channel.
                return Err(BackendError::Rejected {
                    backend: BACKEND,
                    detail: "alert commands travel over the event log only between processes; \
                             the embedded log does not carry them"
                        .into(),
                });
            }
            Topic::Readings => {
                let queue = &self.readings;
                for chunk in records.chunks(queue.capacity) {
                    let permits = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
                    queue
                        .space
                        .acquire_many(permits)
                        .await
                        .map_err(|_| BackendError::Closed(BACKEND))?
                        .forget();
                    let mut state = lock(&queue.records);
                    for record in chunk {
                        let offset = state.next_offset;
                        state.next_offset += 1;
                        state.records.push_back(Delivery {
                            partition: 0,
                            offset,
                            record: record.clone(),
                        });
                    }
                    drop(state);
                    queue.readable.notify_one();
                }
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: Topic,
        _group: &str,
    ) -> Result<Box<dyn LogConsumer>, BackendError> {
        if topic != Topic::Readings {
            return Err(BackendError::Rejected {
                backend: BACKEND,
                detail: format!("{} has no consumers when embedded", topic.default_name()),
            });
        }
        let mut state = lock(&self.readings.records);
        if state.subscribed {
            return Err(BackendError::Rejected {
                backend: BACKEND,
                detail: "the embedded log serves one consumer; run Kafka for more".into(),
            });
        }
        state.subscribed = true;
        Ok(Box::new(MemoryConsumer {
            queue: Arc::clone(&self.readings),
            uncommitted: 0,
        }))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

struct MemoryConsumer {
    queue: Arc<Queue>,
    uncommitted: usize,
}

impl MemoryConsumer {
    fn take(&mut self, max: usize) -> Vec<Delivery> {
        let mut state = lock(&self.queue.records);
        let n = max.min(state.records.len());
        self.uncommitted += n;
        state.records.drain(..n).collect()
    }
}

#[async_trait]
impl LogConsumer for MemoryConsumer {
    async fn poll(&mut self, max: usize, wait_ms: u64) -> Result<Vec<Delivery>, BackendError> {
        let batch = self.take(max);
        if !batch.is_empty() || wait_ms == 0 {
            return Ok(batch);
        }
        // notify_one stores a permit when nobody waits, so a record appended between
        // take() and here still wakes us.
        let _ = tokio::time::timeout(
            Duration::from_millis(wait_ms),
            self.queue.readable.notified(),
        )
        .await;
        Ok(self.take(max))
    }

    async fn commit(&mut self) -> Result<(), BackendError> {
        self.queue.space.add_permits(self.uncommitted);
        self.uncommitted = 0;
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        lock(&self.queue.records).subscribed = false;
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
        let keys: Vec<_> = batch.iter().map(|d| d.record.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(batch[2].offset, 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !writer.is_finished(),
            "a full log must hold the writer until commit"
        );

        consumer.commit().await.unwrap();
        writer.await.unwrap().unwrap();
        let batch = consumer.poll(10, 1000).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].record.key, "d");
        assert_eq!(batch[0].offset, 3);
    }

    #[tokio::test]
    async fn poll_times_out_empty() {
        let log = MemoryLog::new(3);
        let mut consumer = log.subscribe(Topic::Readings, "g").await.unwrap();
        assert!(consumer.poll(10, 20).await.unwrap().is_empty());
        assert!(
            log.subscribe(Topic::Readings, "g").await.is_err(),
            "one consumer only"
        );
    }

    #[tokio::test]
    async fn dead_letters_keep_the_newest() {
        let log = MemoryLog::new(2);
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
    }
}
