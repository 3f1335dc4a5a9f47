//! The cache: latest reading per device, device metrics (moving average, health score),
//! the capped alert list, dashboard counters, and the live event feed the WebSocket
//! serves. Redis in production, in-memory embedded.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use sensorfleet_model::analytics::WindowStats;
use sensorfleet_model::{Alert, Reading};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::BackendError;

/// How long device metrics live (the original design's TTL).
pub const DEVICE_METRICS_TTL_MS: i64 = 300_000;
/// How long dashboard counters live.
pub const DASHBOARD_TTL_MS: i64 = 60_000;
/// How many alerts the `alerts` list keeps.
pub const ALERT_LIST_CAP: usize = 1000;

/// Per-device metrics the processor computes: the moving average and window statistics
/// of the device's main field, and its health (also the original design's
/// `device:{id}:avg_temp`, `:humidity` and `:health_score`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceMetrics {
    /// Device.
    pub device_id: String,
    /// Moving average of `temperature_celsius`, for temperature sensors.
    pub avg_temp: Option<f64>,
    /// Moving average of `humidity_percent`, for humidity sensors.
    pub humidity: Option<f64>,
    /// The field the moving average and the window follow (its type's main field).
    #[serde(default)]
    pub main_field: Option<String>,
    /// Moving average of the main field, whatever the device type.
    #[serde(default)]
    pub moving_average: Option<f64>,
    /// Sliding-window statistics of the main field.
    #[serde(default)]
    pub window: Option<WindowStats>,
    /// Health score in [0, 1].
    pub health_score: f64,
    /// `online` or `offline`.
    pub status: String,
}

/// `dashboard:active_devices` and `dashboard:total_alerts`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DashboardCounters {
    /// Devices that reported within their offline threshold.
    pub active_devices: u64,
    /// Alerts currently firing or acknowledged.
    pub total_alerts: u64,
    /// Mean health score of known devices.
    pub average_health_score: f64,
}

/// What the live feed carries.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// A reading as it arrived.
    Reading(std::sync::Arc<Reading>),
    /// An alert as it changed.
    Alert(std::sync::Arc<Alert>),
}

/// The cache concern.
#[async_trait]
pub trait Cache: Send + Sync {
    /// Stores the latest reading per device (older than what is stored: ignored) and
    /// publishes each on the live feed.
    async fn put_latest(&self, readings: &[Reading]) -> Result<(), BackendError>;

    /// The latest reading of a device.
    async fn latest(&self, device_id: &str) -> Result<Option<Reading>, BackendError>;

    /// Last-seen time of every device with a latest reading, unix milliseconds.
    async fn last_seen(&self) -> Result<Vec<(String, i64)>, BackendError>;

    /// Stores device metrics with the metrics TTL.
    async fn put_metrics(&self, metrics: &[DeviceMetrics], now_ms: i64)
    -> Result<(), BackendError>;

    /// Metrics of one device, unless expired.
    async fn metrics(
        &self,
        device_id: &str,
        now_ms: i64,
    ) -> Result<Option<DeviceMetrics>, BackendError>;

    /// Metrics of every device, unless expired.
    async fn all_metrics(&self, now_ms: i64) -> Result<Vec<DeviceMetrics>, BackendError>;

    /// Pushes alerts onto the capped list (newest first) and the live feed.
    async fn push_alerts(&self, alerts: &[Alert]) -> Result<(), BackendError>;

    /// The newest `limit` alerts from the list.
    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, BackendError>;

    /// Stores the dashboard counters with the dashboard TTL.
    async fn put_dashboard(
        &self,
        counters: DashboardCounters,
        now_ms: i64,
    ) -> Result<(), BackendError>;

    /// The dashboard counters, unless expired.
    async fn dashboard(&self, now_ms: i64) -> Result<Option<DashboardCounters>, BackendError>;

    /// A receiver of the live feed; a slow receiver skips what it missed.
    fn live(&self) -> broadcast::Receiver<LiveEvent>;

    /// Short name for logs and health.
    fn name(&self) -> &'static str;
}
