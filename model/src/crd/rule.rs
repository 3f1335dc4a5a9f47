//! The `AlertRule` custom resource: a threshold on one metric of a device type or fleet,
//! and its compiled form, the one the processor evaluates.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problem;
use super::status::AlertRuleStatus;
use crate::alert::Severity;
use crate::analytics::alert::Threshold;
use crate::duration::{DURATION_PATTERN, parse_duration_ms};
use crate::reading::{is_valid_device_type, is_valid_name};

/// A threshold rule on one metric of a device type or fleet.
#[allow(clippy::duplicated_attributes)] // each printcolumn(...) repeats type_ by design
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[kube(
    group = "iot.sensorfleet.dev",
    version = "v1alpha1",
    kind = "AlertRule",
    namespaced,
    status = "AlertRuleStatus",
    shortname = "ar",
    category = "sensorfleet",
    derive = "PartialEq",
    doc = "A threshold rule on one metric of a device type and/or fleet, with a `for` duration, hysteresis and a severity. Mirrored into the pipeline's alert_rules; running processors pick changes up without a restart.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.deviceType"),
    printcolumn(
        name = "Fleet",
        type_ = "string",
        json_path = ".spec.fleet",
        priority = 1
    ),
    printcolumn(name = "Metric", type_ = "string", json_path = ".spec.metric"),
    printcolumn(name = "Severity", type_ = "string", json_path = ".spec.severity"),
    printcolumn(name = "Firing", type_ = "integer", json_path = ".status.firingCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct AlertRuleSpec {
    /// Name of the Pipeline (same namespace) whose registry holds the rule. Default: the
    /// pipeline of `fleet`, else the namespace's only Pipeline. Ignored by `sensorfleet up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Device type the rule applies to, e.g. `temperature_sensor`; give `deviceType`
    /// and/or `fleet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Narrows the rule to the devices of one SensorFleet (its `metadata.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// Field of the reading the rule watches, e.g. `temperature_celsius` or
    /// `meta_battery_level`.
    pub metric: String,
    /// Lower limit: a value below it breaches. Give `min` and/or `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Upper limit: a value above it breaches. Give `min` and/or `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Hysteresis: a firing alert clears only once the value is back at or above this
    /// (at or above `min`; default `min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_min: Option<f64>,
    /// Hysteresis: a firing alert clears only once the value is back at or below this
    /// (at or below `max`; default `max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_max: Option<f64>,
    /// How long the breach must last before the alert fires, e.g. `30s` (default `0`:
    /// at once).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub for_duration: Option<String>,
    /// Severity of the alerts it raises: `info`, `warning` (default) or `critical`.
    #[serde(default)]
    pub severity: Severity,
    /// While true the operator leaves this object (and what it mirrors) as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// An alert rule, validated and ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    /// `metadata.name` of the AlertRule.
    pub name: String,
    /// Device type it applies to, if narrowed.
    pub device_type: Option<String>,
    /// Fleet it applies to, if narrowed.
    pub fleet: Option<String>,
    /// Field it watches.
    pub metric: String,
    /// Limits and clear limits.
    pub threshold: Threshold,
    /// `for`, milliseconds.
    pub for_ms: i64,
    /// Severity of what it raises.
    pub severity: Severity,
}

impl CompiledRule {
    /// Whether the rule applies to a device of this type in this fleet.
    pub fn applies_to(&self, device_type: &str, fleet: Option<&str>) -> bool {
        self.device_type.as_deref().is_none_or(|t| t == device_type)
            && self.fleet.as_deref().is_none_or(|f| Some(f) == fleet)
    }
}

/// Every problem of an AlertRule spec, with its field path.
pub fn validate_rule(spec: &AlertRuleSpec) -> Vec<Problem> {
    compile_rule("", spec).err().unwrap_or_default()
}

/// Validates and compiles one AlertRule; the error is every problem of its spec.
pub fn compile_rule(name: &str, spec: &AlertRuleSpec) -> Result<CompiledRule, Vec<Problem>> {
    let mut problems = Vec::new();
    if spec.device_type.is_none() && spec.fleet.is_none() {
        problems.push(Problem::new(
            "spec",
            "give spec.deviceType and/or spec.fleet to say which devices",
        ));
    }
    if let Some(t) = &spec.device_type
        && !is_valid_device_type(t)
    {
        problems.push(Problem::new(
            "spec.deviceType",
            format!("{t:?} must be 1-64 of [A-Za-z0-9_]"),
        ));
    }
    if !is_valid_name(&spec.metric, 64) {
        problems.push(Problem::new(
            "spec.metric",
            format!(
                "{:?} must be a field name of [A-Za-z0-9_], e.g. temperature_celsius",
                spec.metric
            ),
        ));
    }
    let limits_before = problems.len();
    check_limits(spec, &mut problems);
    // An empty clear band follows from the limits' own problems when there are any; it
    // is a problem of its own only between limits that are right one by one.
    if problems.len() == limits_before
        && let (Some(lo), Some(hi)) = (spec.clear_min.or(spec.min), spec.clear_max.or(spec.max))
        && lo > hi
    {
        problems.push(Problem::new(
            "spec.clearMin",
            format!("the clear band [{lo}, {hi}] is empty"),
        ));
    }
    let for_ms = match spec.for_duration.as_deref().map(parse_duration_ms) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            problems.push(Problem::new("spec.for", e));
            0
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CompiledRule {
        name: name.to_owned(),
        device_type: spec.device_type.clone(),
        fleet: spec.fleet.clone(),
        metric: spec.metric.clone(),
        threshold: Threshold {
            min: spec.min,
            max: spec.max,
            clear_min: spec.clear_min,
            clear_max: spec.clear_max,
        },
        for_ms,
        severity: spec.severity,
    })
}

/// The limits one by one: finite, at least one given, min ≤ max, clear limits inside.
fn check_limits(spec: &AlertRuleSpec, problems: &mut Vec<Problem>) {
    for (field, value) in [
        ("spec.min", spec.min),
        ("spec.max", spec.max),
        ("spec.clearMin", spec.clear_min),
        ("spec.clearMax", spec.clear_max),
    ] {
        if value.is_some_and(|v| !v.is_finite()) {
            problems.push(Problem::new(field, "must be a finite number"));
        }
    }
    if spec.min.is_none() && spec.max.is_none() {
        problems.push(Problem::new("spec", "give spec.min and/or spec.max"));
    }
    if let (Some(min), Some(max)) = (spec.min, spec.max)
        && min > max
    {
        problems.push(Problem::new(
            "spec.min",
            format!("{min} is above spec.max {max}"),
        ));
    }
    match (spec.min, spec.clear_min) {
        (None, Some(_)) => problems.push(Problem::new("spec.clearMin", "needs spec.min")),
        (Some(min), Some(clear)) if clear < min => problems.push(Problem::new(
            "spec.clearMin",
            format!("{clear} must be at or above spec.min {min}"),
        )),
        _ => {}
    }
    match (spec.max, spec.clear_max) {
        (None, Some(_)) => problems.push(Problem::new("spec.clearMax", "needs spec.max")),
        (Some(max), Some(clear)) if clear > max => problems.push(Problem::new(
            "spec.clearMax",
            format!("{clear} must be at or below spec.max {max}"),
        )),
        _ => {}
    }
}
