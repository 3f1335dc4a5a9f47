//! Writing a batch to a sink so that nothing a device sends can stop the pipeline.
//!
//! What a backend says decides what happens to a batch ([`BackendError`]):
//!
//! | the backend says | what happens |
//! | --- | --- |
//! | unavailable (connection refused, timeout, HTTP 5xx/429, SQLSTATE 08/53/…) | hold: retry the same batch with backoff (100 ms doubling to 5 s) until it is back |
//! | rejected (HTTP 401/403, database not found, no permission) | hold too, logged as an error every time: it is not the data's fault, so nothing is dead-lettered; someone fixes the configuration and the pipeline resumes by itself |
//! | content (HTTP 400/413/422 from InfluxDB, SQLSTATE 22/23, a Kafka record too large) | split the batch and retry the halves ([`Bisection`]) until the refused items are alone; those are returned with the backend's reason, everything else is written |
//! | closed, or anything once shutdown is set | returned to the caller, which stops without acknowledging |
//!
//! A refused item costs about `2 · log2(batch)` extra requests; writes are idempotent, so
//! rewriting the part of a half that a backend had already taken (an InfluxDB partial
//! write) is harmless.

use std::future::Future;
use std::ops::Range;

use sensorfleet_backends::BackendError;
use tokio::sync::watch;
use tracing::warn;

use crate::retry::hold;

/// One item a sink refused for its content: its index in the batch and the backend's
/// reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Index in the batch that was written.
    pub index: usize,
    /// What the backend said about it.
    pub reason: String,
}

/// The plan of a bisection over a batch of `len` items: which range to write next, and
/// what the answers so far mean. Pure: the caller does the writing and reports each
/// refusal back ([`Bisection::refused`]); a written range needs no report.
///
/// Ranges are handed out depth first, left half before right, so items are written in
/// their batch order (time order, for readings) as far as splitting allows.
#[derive(Debug)]
pub struct Bisection {
    pending: Vec<Range<usize>>,
    refused: Vec<usize>,
    attempts: usize,
}

impl Bisection {
    /// A plan for a batch of `len` items; an empty batch needs no write.
    pub fn new(len: usize) -> Self {
        Self {
            pending: if len == 0 {
                Vec::new()
            } else {
                // the whole batch, one range (not the numbers in it)
                vec![Range { start: 0, end: len }]
            },
            refused: Vec::new(),
            attempts: 0,
        }
    }

    /// The next range to write, or `None` when every item is written or refused.
    pub fn next_range(&mut self) -> Option<Range<usize>> {
        let range = self.pending.pop()?;
        self.attempts += 1;
        Some(range)
    }

    /// The range was refused for its content: one item is refused for good, a larger
    /// range is split in two and each half tried on its own.
    pub fn refused(&mut self, range: Range<usize>) {
        if range.len() <= 1 {
            self.refused.push(range.start);
            return;
        }
        let middle = range.start + range.len() / 2;
        // A stack: the left half is popped first.
        self.pending.push(middle..range.end);
        self.pending.push(range.start..middle);
    }

    /// Indices refused so far, ascending.
    pub fn refused_items(&self) -> Vec<usize> {
        let mut items = self.refused.clone();
        items.sort_unstable();
        items
    }

    /// Writes attempted so far.
    pub fn attempts(&self) -> usize {
        self.attempts
    }
}

/// Writes `len` items with `write(range)`, holding through unavailability and
/// misconfiguration (see the module docs) and isolating content refusals. Returns the
/// refused items with their reasons; `Err` only for a closed backend or at shutdown.
pub async fn write_isolating<F, Fut>(
    component: &'static str,
    sink: &'static str,
    len: usize,
    shutdown: &mut watch::Receiver<bool>,
    mut write: F,
) -> Result<Vec<Refused>, BackendError>
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = Result<(), BackendError>>,
{
    let mut plan = Bisection::new(len);
    let mut refused = Vec::new();
    while let Some(range) = plan.next_range() {
        let outcome = hold(component, sink, shutdown, || write(range.clone())).await;
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_content() => {
                if range.len() == 1 {
                    refused.push(Refused {
                        index: range.start,
                        reason: e.to_string(),
                    });
                }
                plan.refused(range);
            }
            Err(e) => return Err(e),
        }
    }
    if !refused.is_empty() {
        warn!(
            component,
            sink,
            refused = refused.len(),
            batch = len,
            attempts = plan.attempts(),
            first_reason = %refused[0].reason,
            "the backend refused some items for their content; dead-lettering them, the rest is written"
        );
    }
    refused.sort_by_key(|r| r.index);
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;

    /// Runs the plan against a sink that refuses any range holding a bad item.
    fn bisect(len: usize, bad: &BTreeSet<usize>) -> (Vec<usize>, Vec<usize>, usize) {
        let mut plan = Bisection::new(len);
        let mut written = Vec::new();
        while let Some(range) = plan.next_range() {
            if range.clone().any(|i| bad.contains(&i)) {
                plan.refused(range);
            } else {
                written.extend(range);
            }
        }
        (written, plan.refused_items(), plan.attempts())
    }

    #[test]
    fn a_clean_batch_is_one_write() {
        let (written, refused, attempts) = bisect(1000, &BTreeSet::new());
        assert_eq!(written, (0..1000).collect::<Vec<_>>());
        assert!(refused.is_empty());
        assert_eq!(attempts, 1);
        assert_eq!(Bisection::new(0).next_range(), None, "nothing to write");
    }

    #[test]
    fn every_bad_item_is_found_and_every_good_one_written_once_in_order() {
        for (len, bad) in [
            (1, vec![0]),
            (2, vec![1]),
            (7, vec![0, 6]),
            (1000, vec![0]),
            (1000, vec![999]),
            (1000, vec![3, 4, 500, 998]),
            (4000, (0..4000).step_by(97).collect()),
            (5, vec![0, 1, 2, 3, 4]),
        ] {
            let bad: BTreeSet<usize> = bad.into_iter().collect();
            let (written, refused, attempts) = bisect(len, &bad);
            let good: Vec<usize> = (0..len).filter(|i| !bad.contains(i)).collect();
            assert_eq!(
                written, good,
                "len {len}: the good ones, once each, in order"
            );
            assert_eq!(
                refused,
                bad.iter().copied().collect::<Vec<_>>(),
                "len {len}"
            );
            // Each bad item costs at most one write per level of the halving.
            let levels = (usize::BITS - len.leading_zeros()) as usize + 1;
            assert!(
                attempts <= 1 + 2 * bad.len() * levels,
                "len {len}, {} bad: {attempts} writes",
                bad.len()
            );
        }
    }

    #[test]
    fn one_bad_item_in_a_thousand_costs_about_twenty_writes() {
        let (_, refused, attempts) = bisect(1000, &BTreeSet::from([617]));
        assert_eq!(refused, [617]);
        assert!(attempts <= 21, "{attempts}");
    }

    fn content(detail: &str) -> BackendError {
        BackendError::Content {
            backend: "test",
            detail: detail.to_owned(),
        }
    }

    #[tokio::test]
    async fn write_isolating_returns_the_refused_with_the_backends_reason() {
        let stored = Mutex::new(Vec::new());
        let items = ["a", "b", "nul\0", "d", "e"];
        let (_tx, mut shutdown) = watch::channel(false);
        let refused = write_isolating("test", "sink", items.len(), &mut shutdown, |range| {
            let batch = &items[range];
            let stored = &stored;
            async move {
                if let Some(bad) = batch.iter().find(|i| i.contains('\0')) {
                    return Err(content(&format!("{bad:?} has a NUL")));
                }
                stored.lock().expect("lock").extend_from_slice(batch);
                Ok(())
            }
        })
        .await
        .expect("content errors are not fatal");
        assert_eq!(
            refused,
            [Refused {
                index: 2,
                reason: "test refused the data: \"nul\\0\" has a NUL".to_owned()
            }]
        );
        assert_eq!(*stored.lock().expect("lock"), ["a", "b", "d", "e"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_and_rejected_hold_and_then_resume_without_dead_letters() {
        let calls = Mutex::new(0u32);
        let (_tx, mut shutdown) = watch::channel(false);
        let refused = write_isolating("test", "sink", 3, &mut shutdown, |_| {
            let calls = &calls;
            async move {
                let mut n = calls.lock().expect("lock");
                *n += 1;
                match *n {
                    1 => Err(BackendError::Unavailable {
                        backend: "test",
                        detail: "connection refused".into(),
                    }),
                    2 | 3 => Err(BackendError::Rejected {
                        backend: "test",
                        detail: "HTTP 401".into(),
                    }),
                    _ => Ok(()),
                }
            }
        })
        .await
        .expect("held until it worked");
        assert!(refused.is_empty(), "good data is never dead-lettered");
        assert_eq!(*calls.lock().expect("lock"), 4, "the whole batch, retried");
    }

    #[tokio::test]
    async fn closed_and_shutdown_return_the_error() {
        let (tx, mut shutdown) = watch::channel(false);
        let closed = write_isolating("test", "sink", 2, &mut shutdown, |_| async {
            Err(BackendError::Closed("test"))
        })
        .await;
        assert!(matches!(closed, Err(BackendError::Closed(_))));
        tx.send(true).expect("send");
        let stopping = write_isolating("test", "sink", 2, &mut shutdown, |_| async {
            Err(BackendError::Unavailable {
                backend: "test",
                detail: "down".into(),
            })
        })
        .await;
        assert!(stopping.is_err(), "no retry loop once shutting down");
    }
}
