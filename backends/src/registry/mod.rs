//! The registry: devices, alert rules, alert history and the processor's rule state.
//! PostgreSQL in production ([`postgres`]), SQLite embedded (`sqlite.rs`: the
//! [`Registry`] impl of [`SqliteStore`](crate::sqlite::SqliteStore)).

pub mod postgres;
mod sqlite;

use async_trait::async_trait;
use sensorfleet_model::Alert;
use sensorfleet_model::CompiledRule;

use crate::BackendError;

/// A device row (the original design's `devices` table plus fleet and timing).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    /// Device id.
    pub device_id: String,
    /// Device type.
    pub device_type: String,
    /// Location.
    pub location: Option<String>,
    /// `active`, or `unregistered` for a device seen but declared by no fleet.
    pub status: String,
    /// Owning SensorFleet, if declared.
    pub fleet: Option<String>,
    /// Expected publish interval, when declared.
    pub publish_interval_ms: Option<i64>,
    /// Offline threshold, when declared.
    pub offline_after_ms: Option<i64>,
}

/// Device registry, rules, alert history, rule state.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Inserts or updates devices by id.
    async fn upsert_devices(&self, devices: &[DeviceRecord]) -> Result<(), BackendError>;

    /// Inserts devices that are not there yet (seen before declared); never overwrites.
    async fn insert_missing_devices(&self, devices: &[DeviceRecord]) -> Result<(), BackendError>;

    /// Removes the devices of a fleet whose ids are not in `keep`.
    async fn prune_fleet(&self, fleet: &str, keep: &[String]) -> Result<u64, BackendError>;

    /// Every device, by id.
    async fn devices(&self) -> Result<Vec<DeviceRecord>, BackendError>;

    /// One device.
    async fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, BackendError>;

    /// Makes the stored rules exactly `rules` (by name).
    async fn replace_rules(&self, rules: &[CompiledRule]) -> Result<(), BackendError>;

    /// Every rule.
    async fn rules(&self) -> Result<Vec<CompiledRule>, BackendError>;

    /// Inserts or updates alerts by id (the history).
    async fn record_alerts(&self, alerts: &[Alert]) -> Result<(), BackendError>;

    /// The newest `limit` alerts, newest first.
    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, BackendError>;

    /// One alert by id.
    async fn alert(&self, id: &str) -> Result<Option<Alert>, BackendError>;

    /// How many alerts are firing or acknowledged, of every device: the dashboard's
    /// `total_alerts`, whichever processor holds them.
    async fn active_alert_count(&self) -> Result<u64, BackendError>;

    /// Saves rule state rows `(device_id, source, state JSON)`; `None` deletes the row.
    async fn save_rule_state(
        &self,
        rows: &[(String, String, Option<String>)],
    ) -> Result<(), BackendError>;

    /// Every saved rule state row.
    async fn load_rule_state(&self) -> Result<Vec<(String, String, String)>, BackendError>;

    /// Short name for logs and health.
    fn name(&self) -> &'static str;
}
