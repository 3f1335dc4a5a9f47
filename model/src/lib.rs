//! SensorFleet's shared model: what a reading is, how a payload becomes one, the
//! SensorFleet and AlertRule manifests, and the pure stream algorithms (windows,
//! anomaly detectors, alert lifecycle, health score).
//!
//! Nothing in this crate does I/O or reads a clock: time is always passed in, so every
//! piece is a plain function from input to output and is tested as one.

pub mod alert;
pub mod analytics;
pub mod duration;
pub mod manifest;
pub mod pipeline;
pub mod reading;
pub mod status;

pub use alert::{Alert, AlertAction, AlertCommandRecord, AlertKind, AlertPhase, Severity};
pub use manifest::{
    AlertRule, AlertRuleSpec, Manifest, ManifestError, ManifestSet, SensorFleet, SensorFleetSpec,
};
pub use pipeline::{Pipeline, PipelineSpec};
pub use reading::{Limits, Reading, Reject, RejectReason};
