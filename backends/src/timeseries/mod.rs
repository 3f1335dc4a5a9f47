//! Time-series storage: InfluxDB in production ([`influx`]), SQLite embedded (`sqlite.rs`:
//! the [`TimeSeries`] impl of [`SqliteStore`](crate::sqlite::SqliteStore)).
//!
//! Writes are idempotent: a reading replayed after a crash overwrites itself (same
//! device, same timestamp), so at-least-once delivery stores nothing twice.

pub mod influx;
mod sqlite;

use async_trait::async_trait;
use sensorfleet_model::Reading;

use crate::BackendError;

/// One stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Reading time (the hour's start for a rollup), unix milliseconds.
    pub ts_ms: i64,
    /// Field name.
    pub field: String,
    /// The value (the hourly mean for a rollup).
    pub value: f64,
}

/// What history to read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    /// The device.
    pub device_id: String,
    /// Inclusive start, unix milliseconds.
    pub since_ms: i64,
    /// Exclusive end, unix milliseconds.
    pub until_ms: i64,
    /// Only this field, when given.
    pub field: Option<String>,
    /// At most this many points; the newest are kept.
    pub limit: usize,
    /// Read hourly rollups instead of raw readings.
    pub rollup: bool,
}

/// An hourly aggregate of one field of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    /// Device.
    pub device_id: String,
    /// Field.
    pub field: String,
    /// Start of the hour, unix milliseconds.
    pub hour_ms: i64,
    /// Number of readings.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Mean value.
    pub mean: f64,
    /// Largest value.
    pub max: f64,
}

/// Stores readings and answers history.
#[async_trait]
pub trait TimeSeries: Send + Sync {
    /// Writes a batch; idempotent by (device, timestamp).
    async fn write(&self, readings: &[Reading]) -> Result<(), BackendError>;

    /// Points of one device in a time range, ascending by time.
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<Point>, BackendError>;

    /// Computes and stores hourly rollups for the hours in `[since_ms, until_ms)`;
    /// returns how many rollup rows were written. Idempotent.
    async fn rollup(&self, since_ms: i64, until_ms: i64) -> Result<u64, BackendError>;

    /// How many readings of one device are stored in a time range (for checks and tests).
    async fn count(
        &self,
        device_id: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<u64, BackendError>;

    /// Short name for logs and health.
    fn name(&self) -> &'static str;
}
