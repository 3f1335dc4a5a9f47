//! The pure stream-analytics algorithms the processor runs per device and field, and the
//! benchmark scorer (`score`) that judges the anomaly detector against labelled windows.
//!
//! Everything here is a plain function or a small state struct fed with explicit
//! timestamps (`i64` unix milliseconds): no clock, no I/O, no allocation per reading.
//! The processor keeps one state struct of each kind per (device, field) and persists
//! them (hence `Serialize`/`Deserialize`), so each is kept to a few hundred bytes.
//!
//! Non-finite inputs (NaN, ±∞) are ignored everywhere, and so are magnitudes above
//! [`MAX_MAGNITUDE`]: their squares would overflow and a non-finite number cannot be
//! persisted as JSON.

pub mod alert;
pub mod anomaly;
pub mod csv;
pub mod health;
pub mod moving_average;
pub mod score;
pub mod window;

pub use alert::{
    Condition, Phase, Threshold, Transition, acknowledge, describe_threshold, manual_clear, step,
    threshold_condition,
};
pub use anomaly::{AnomalyKind, Detector, DetectorConfig, Verdict, score_series};
pub use csv::{CsvError, parse_timestamp_value_csv};
pub use health::{HealthInputs, health_score};
pub use moving_average::MovingAverage;
pub use window::{SlidingWindow, WindowStats};

/// Largest magnitude a reading may have to be taken into account.
///
/// Squares and products of values up to this size stay far inside `f64`'s range, so the
/// running statistics can never overflow to infinity (which would then fail to
/// round-trip through JSON). No physical sensor comes near it.
pub const MAX_MAGNITUDE: f64 = 1e100;

/// Whether a reading can take part in the statistics: finite and not absurdly large.
pub(crate) fn usable(value: f64) -> bool {
    value.is_finite() && value.abs() <= MAX_MAGNITUDE
}
