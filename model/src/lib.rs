//! SensorFleet's shared model: what a reading is, how a payload becomes one, the
//! custom resources (SensorFleet, AlertRule, Pipeline) and the `up -f` loader, and the
//! pure stream algorithms (windows, anomaly detectors, alert lifecycle, health score).
//!
//! Nothing in this crate does I/O or reads a clock: time is always passed in, so every
//! piece is a plain function from input to output and is tested as one.

pub mod alert;
pub mod analytics;
pub mod crd;
pub mod credentials;
pub mod duration;
pub mod manifest;
pub mod reading;

pub use alert::{Alert, AlertAction, AlertCommandRecord, AlertKind, AlertPhase, Severity};
pub use crd::Problem;
pub use crd::fleet::{SensorFleet, SensorFleetSpec};
pub use crd::pipeline::{Pipeline, PipelineSpec};
pub use crd::rule::{AlertRule, AlertRuleSpec, CompiledRule};
pub use manifest::{DeclaredDevice, Manifest, ManifestError, ManifestSet};
pub use reading::{Limits, Reading, Reject, RejectReason};
