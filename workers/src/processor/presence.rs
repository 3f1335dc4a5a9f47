//! Presence as this processor last wrote it to the registry, so that only changes are
//! written: a device coming online or going offline is one row, not one per report. The
//! operator counts the registry's rows per fleet for `status.onlineCount`.

use std::collections::HashMap;

use super::engine::DeviceReport;

/// Device id → online, as last written.
#[derive(Debug, Default)]
pub(super) struct Presence {
    written: HashMap<String, bool>,
}

impl Presence {
    /// The reports whose presence differs from what was last written, noted as written.
    pub(super) fn changes(&mut self, reports: &[DeviceReport]) -> Vec<(String, bool)> {
        reports
            .iter()
            .filter(|r| self.written.insert(r.device_id.clone(), r.online) != Some(r.online))
            .map(|r| (r.device_id.clone(), r.online))
            .collect()
    }

    /// Forgets a write the registry refused, so the next report tries again.
    pub(super) fn unwrite(&mut self, device_id: &str) {
        self.written.remove(device_id);
    }

    /// Forgets every write: after the partitions moved, another processor may have
    /// written since, so every device held is written again with its next report.
    pub(super) fn forget(&mut self) {
        self.written.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(device_id: &str, online: bool) -> DeviceReport {
        DeviceReport {
            device_id: device_id.to_owned(),
            moving_average: None,
            main_field: None,
            window: None,
            health_score: 1.0,
            online,
        }
    }

    #[test]
    fn only_changes_are_written_and_a_refused_or_forgotten_write_is_retried() {
        let mut presence = Presence::default();
        let first = [report("a", true), report("b", false)];
        assert_eq!(
            presence.changes(&first),
            [("a".to_owned(), true), ("b".to_owned(), false)],
            "first heard: written"
        );
        assert!(presence.changes(&first).is_empty(), "unchanged: nothing");
        assert_eq!(
            presence.changes(&[report("a", false), report("b", false)]),
            [("a".to_owned(), false)],
            "a went offline"
        );
        presence.unwrite("a");
        assert_eq!(
            presence.changes(&[report("a", false)]),
            [("a".to_owned(), false)],
            "a refused write is tried again"
        );
        presence.forget();
        assert_eq!(
            presence.changes(&[report("b", false)]),
            [("b".to_owned(), false)],
            "after a rebalance every device is written again"
        );
    }
}
