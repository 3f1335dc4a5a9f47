//! The declared world the processor works with: the devices fleets own and the alert
//! rules, read from the registry (where `up`, `apply` or the operator mirror them) at
//! start and again every `refresh`, so a changed rule applies without a restart.

use std::sync::Arc;
use std::time::Duration;

use sensorfleet_backends::{BackendError, DeviceRecord, Registry};
use sensorfleet_model::{CompiledRule, DeclaredDevice};
use tokio::sync::watch;
use tracing::{info, warn};

/// What the processor is told about the declared world, at start and on change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declarations {
    /// The devices the fleets declare.
    pub devices: Vec<DeclaredDevice>,
    /// The alert rules.
    pub rules: Vec<CompiledRule>,
}

/// Offline threshold of a device the registry has no timing for (DESIGN §4 default).
const DEFAULT_OFFLINE_AFTER_MS: i64 = 300_000;
/// Publish interval assumed for such a device.
const DEFAULT_INTERVAL_MS: i64 = 10_000;

/// The declared devices among registry rows: those a fleet owns (a device that only
/// showed up by publishing is known, not declared).
pub fn declared(records: Vec<DeviceRecord>) -> Vec<DeclaredDevice> {
    let mut devices: Vec<DeclaredDevice> = records
        .into_iter()
        .filter_map(|r| {
            Some(DeclaredDevice {
                fleet: r.fleet?,
                device_id: r.device_id,
                device_type: r.device_type,
                location: r.location,
                publish_interval_ms: r.publish_interval_ms.unwrap_or(DEFAULT_INTERVAL_MS),
                offline_after_ms: r.offline_after_ms.unwrap_or(DEFAULT_OFFLINE_AFTER_MS),
            })
        })
        .collect();
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    devices
}

/// The declared devices and the rules, by id and by name.
pub async fn read(registry: &dyn Registry) -> Result<Declarations, BackendError> {
    let devices = declared(registry.devices().await?);
    let mut rules = registry.rules().await?;
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Declarations { devices, rules })
}

/// Re-reads the declarations every `every` and publishes them when they changed.
pub(super) async fn refresh(
    registry: Arc<dyn Registry>,
    every: Duration,
    sender: watch::Sender<Declarations>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match read(registry.as_ref()).await {
            Ok(fresh) => {
                if *sender.borrow() != fresh {
                    info!(
                        devices = fresh.devices.len(),
                        rules = fresh.rules.len(),
                        "registry changed; applying"
                    );
                    let _ = sender.send(fresh);
                }
            }
            Err(e) => {
                warn!(error = %e, "re-reading devices and rules failed; keeping the current ones")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, fleet: Option<&str>, interval: Option<i64>) -> DeviceRecord {
        DeviceRecord {
            device_id: id.to_owned(),
            device_type: "temperature_sensor".to_owned(),
            location: None,
            status: "active".to_owned(),
            fleet: fleet.map(str::to_owned),
            publish_interval_ms: interval,
            offline_after_ms: None,
        }
    }

    #[test]
    fn only_fleet_devices_are_declared_with_defaults_filled() {
        let devices = declared(vec![
            record("b", Some("lab"), Some(1000)),
            record("stray", None, None),
            record("a", Some("lab"), None),
        ]);
        let ids: Vec<&str> = devices.iter().map(|d| d.device_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(devices[0].publish_interval_ms, DEFAULT_INTERVAL_MS);
        assert_eq!(devices[0].offline_after_ms, DEFAULT_OFFLINE_AFTER_MS);
        assert_eq!(devices[1].publish_interval_ms, 1000);
    }
}
