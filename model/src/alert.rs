//! The alert record: what the processor emits, the stores keep and the API shows.

use serde::{Deserialize, Serialize};

/// How bad an alert is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, no action needed.
    Info,
    /// Needs attention soon.
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// What raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// An AlertRule's min/max was crossed for its `for` duration.
    Threshold,
    /// A value far outside the device's own history (z-score against an EWMA).
    Anomaly,
    /// A rate of change far outside the device's usual.
    Spike,
    /// The same value over and over from a sensor that used to vary.
    Stuck,
    /// Battery below the low-battery level.
    LowBattery,
    /// No reading for `offlineAfter`.
    Offline,
}

impl AlertKind {
    /// The snake_case name, the API's `alert_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threshold => "threshold",
            Self::Anomaly => "anomaly",
            Self::Spike => "spike",
            Self::Stuck => "stuck",
            Self::LowBattery => "low_battery",
            Self::Offline => "offline",
        }
    }
}

/// Where an alert is in its lifecycle, as the API shows it; ordered along it (an alert
/// only moves to a later phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertPhase {
    /// The condition holds but not yet for the rule's `for` duration.
    Pending,
    /// The condition held long enough; notified once.
    Firing,
    /// A person acknowledged it; it stays until the condition clears.
    Acknowledged,
    /// The condition cleared, or a person cleared it.
    Resolved,
}

impl AlertPhase {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    /// The phase named `name` (as [`AlertPhase::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Firing,
            Self::Acknowledged,
            Self::Resolved,
        ]
        .into_iter()
        .find(|phase| phase.as_str() == name)
    }
}

/// One alert, with the original design's fields (`device_id`, `alert_type`, `value`,
/// `threshold`, `timestamp`) and what a person needs to act on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: `{device_id}/{source}/{fired_ms}` (`source` is `rule:<name>` or the
    /// detector's name), unique per episode; URL-encode it in paths.
    pub id: String,
    /// The device the alert is about.
    pub device_id: String,
    /// What raised it.
    pub alert_type: AlertKind,
    /// The AlertRule name, or the built-in detector's name.
    pub rule: String,
    /// The metric involved, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// How bad it is.
    pub severity: Severity,
    /// Lifecycle state.
    pub state: AlertPhase,
    /// The value that triggered or last updated it.
    pub value: f64,
    /// The limit, e.g. `10-30`, `> 30`, `z >= 4`.
    pub threshold: String,
    /// When it started firing (RFC 3339); for a resolved alert, when it resolved.
    pub timestamp: String,
    /// When the condition first held (RFC 3339).
    pub started_at: String,
    /// One sentence for a person.
    pub message: String,
}

/// A change made to an alert by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    /// Acknowledge: it stays until the condition clears, without notifying again.
    Acknowledge,
    /// Clear: resolve now; it fires again if the condition persists.
    Clear,
}

/// An [`AlertAction`] on its way from an API process to the processors, on the
/// `sensor-alert-commands` topic. Every processor reads every command; the one whose
/// engine holds the alert applies it, the others find no such alert and skip it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCommandRecord {
    /// What to do.
    pub action: AlertAction,
    /// The alert.
    pub alert_id: String,
}
