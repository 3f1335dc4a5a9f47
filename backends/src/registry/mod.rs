//! The registry: devices, alert rules, alert history and the processor's rule state.
//! PostgreSQL in production ([`postgres`]), SQLite embedded (`sqlite.rs`: the
//! [`Registry`] impl of [`SqliteStore`](crate::sqlite::SqliteStore)).

pub mod postgres;
mod sqlite;

use async_trait::async_trait;
use sensorfleet_model::CompiledRule;
use sensorfleet_model::{Alert, AlertPhase};

use crate::BackendError;

/// `online` as the registry stores it.
fn presence_word(online: bool) -> &'static str {
    if online { "online" } else { "offline" }
}

/// An alert from its stored JSON body.
fn alert_from_body(backend: &'static str, body: &str) -> Result<Alert, BackendError> {
    serde_json::from_str(body).map_err(|e| BackendError::Rejected {
        backend,
        detail: format!("stored alert does not parse: {e}"),
    })
}

/// `(id, state)` rows as phases; a state this build does not know is left out (the
/// alert is then written as if new).
fn known_phases(rows: Vec<(String, String)>) -> impl Iterator<Item = (String, AlertPhase)> {
    rows.into_iter()
        .filter_map(|(id, state)| Some((id, AlertPhase::parse(&state)?)))
}

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

/// A rule's alerts in the history: the AlertRule's `firingCount` and `lastFired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleActivity {
    /// Alerts firing now (firing or acknowledged).
    pub firing: u64,
    /// When one last fired (RFC 3339): the firing time of an open alert, the start of a
    /// resolved one (a resolved alert's `timestamp` is when it resolved).
    pub last_fired: Option<String>,
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

    /// The stored phase of each of `ids` that the history holds (one query per chunk):
    /// what the processor compares with before writing an alert, so that reprocessing
    /// old readings never moves an alert back (a resolved alert does not fire again).
    async fn alert_phases(&self, ids: &[String])
    -> Result<Vec<(String, AlertPhase)>, BackendError>;

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

    /// Records devices as online (`true`) or offline, as the processor owning them last
    /// reported; ids not in the registry are skipped, the last of a repeated id wins.
    async fn set_presence(&self, presence: &[(String, bool)]) -> Result<(), BackendError>;

    /// How many devices of `fleet` were last recorded online (one aggregate query).
    async fn online_count(&self, fleet: &str) -> Result<u64, BackendError>;

    /// What the history says of one rule's alerts (one aggregate query).
    async fn rule_activity(&self, rule: &str) -> Result<RuleActivity, BackendError>;

    /// Short name for logs and health.
    fn name(&self) -> &'static str;
}
