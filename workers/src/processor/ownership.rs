//! Which devices this processor answers for, when several share the readings topic.
//!
//! **The choice: ownership follows the consumer's assignment, by key.** The bridge keys
//! every reading by its device id, so a device lives in one partition, the one
//! [`Assignment::owns`] computes with the producer's partitioner. After each poll the
//! loop reads the consumer's assignment; when it changed, [`adopt`]:
//!
//! 1. **forgets** the devices whose partition is no longer owned: no `offline` alert, no
//!    metrics and no acknowledge or clear are produced for them here any more. Their
//!    alert and rule state is in the registry already (the sinks flush before every
//!    poll, and the revocation happens inside a poll);
//! 2. **adopts** the devices of newly owned partitions it does not know: their rule
//!    state from the registry (an alert the old owner raised is continued, not raised
//!    again) and, for declared devices, their last-seen time from the cache (the bridge
//!    writes it with every latest reading), so a device that went silent before the move
//!    — or while every processor was down — still goes `offline`, once, by its owner.
//!
//! Records polled from a partition that is not in the assignment read right after the
//! poll are skipped: the consumer does not commit them, and their new owner gets them.
//!
//! Rejected alternative: forgetting every device at any revocation and re-learning only
//! from records that arrive. Simpler, but a device that never sends again would never go
//! `offline` anywhere. The cost of the choice: with librdkafka's default (eager)
//! assignors every rebalance revokes all partitions first, so a processor that keeps a
//! partition re-reads its devices' state and their windows start again.
//!
//! The embedded log is one partition a consumer always owns: the first poll adopts
//! everything, which is the restart path (rule state and silence clocks restored).

use std::collections::HashSet;

use sensorfleet_backends::{Assignment, BackendError};
use sensorfleet_model::DeclaredDevice;
use tokio::sync::watch;
use tracing::info;

use super::ProcessorSinks;
use super::engine::Engine;
use crate::retry::retry;

/// A device that arrived: its id, declared type and last-seen time (unix ms).
pub(super) type Clock = (String, String, i64);

/// Of everything the registry and the cache hold, what concerns the devices `arrived`
/// selects: their rule state rows, and the silence clocks of the declared ones among
/// them that have a last-seen time.
pub(super) fn arrivals(
    rows: Vec<(String, String, String)>,
    last_seen: Vec<(String, i64)>,
    declared: &[DeclaredDevice],
    arrived: impl Fn(&str) -> bool,
) -> (Vec<(String, String, String)>, Vec<Clock>) {
    let rows = rows.into_iter().filter(|(id, _, _)| arrived(id)).collect();
    let seen: std::collections::HashMap<String, i64> = last_seen.into_iter().collect();
    let clocks = declared
        .iter()
        .filter(|d| arrived(&d.device_id))
        .filter_map(|d| {
            let ts = *seen.get(&d.device_id)?;
            Some((d.device_id.clone(), d.device_type.clone(), ts))
        })
        .collect();
    (rows, clocks)
}

/// Makes the engine hold exactly the devices of `assignment` (see the module docs).
pub(super) async fn adopt(
    engine: &mut Engine,
    assignment: &Assignment,
    declared: &[DeclaredDevice],
    sinks: &ProcessorSinks,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), BackendError> {
    let forgotten = engine.forget(|id| assignment.owns(id));
    let rows = retry("processor", "registry", shutdown, || {
        sinks.registry.load_rule_state()
    })
    .await?;
    let last_seen = retry("processor", "cache", shutdown, || sinks.cache.last_seen()).await?;
    // Decided before restoring: a restored device is not "known" for the clocks.
    let known: HashSet<String> = rows
        .iter()
        .map(|(id, _, _)| id.as_str())
        .chain(declared.iter().map(|d| d.device_id.as_str()))
        .filter(|id| engine.knows(id))
        .map(str::to_owned)
        .collect();
    let (rows, clocks) = arrivals(rows, last_seen, declared, |id| {
        assignment.owns(id) && !known.contains(id)
    });
    let restored = engine.restore(&rows);
    let seeded = clocks
        .iter()
        .filter(|(id, device_type, ts)| engine.seed(id, device_type, *ts))
        .count();
    info!(
        partitions = ?assignment.owned,
        of = assignment.partitions,
        forgotten,
        restored,
        seeded,
        "assignment changed; devices adopted"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(id: &str) -> DeclaredDevice {
        DeclaredDevice {
            device_id: id.to_owned(),
            device_type: "temperature_sensor".to_owned(),
            location: None,
            fleet: "f".to_owned(),
            publish_interval_ms: 1000,
            offline_after_ms: 3000,
        }
    }

    fn row(id: &str) -> (String, String, String) {
        (id.to_owned(), "offline".to_owned(), "{}".to_owned())
    }

    #[test]
    fn only_arrived_devices_are_loaded_and_only_declared_ones_get_a_clock() {
        let rows = vec![row("a"), row("b"), row("stray")];
        let seen = vec![
            ("a".to_owned(), 10),
            ("b".to_owned(), 20),
            ("stray".to_owned(), 30),
        ];
        let (rows, clocks) = arrivals(
            rows,
            seen,
            &[declared("a"), declared("b"), declared("never-seen")],
            |id| id != "b",
        );
        let ids: Vec<&str> = rows.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "stray"]);
        assert_eq!(
            clocks,
            vec![("a".to_owned(), "temperature_sensor".to_owned(), 10)],
            "b is not ours, stray is not declared, never-seen has no time"
        );
    }
}
