//! The `SensorFleet` and `AlertRule` manifests (group `iot.sensorfleet.dev`, version
//! `v1alpha1`): the same YAML that `kubectl apply` takes is what `sensorfleet up -f` reads.
//!
//! Parsing and validation are pure: the caller reads the files and passes their text in,
//! and every error names the file, the object, the field and the problem.

use std::collections::HashMap;
use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Severity;
use crate::analytics::alert::Threshold;
use crate::duration::parse_duration_ms;
use crate::pipeline::is_dns_label;
use crate::reading::{is_valid_device_id, is_valid_device_type, is_valid_name};
use crate::status::{AlertRuleStatus, SensorFleetStatus};

/// The API group and version every manifest must carry.
pub const API_VERSION: &str = "iot.sensorfleet.dev/v1alpha1";
/// Largest generated fleet; keeps a typo from declaring a billion devices.
pub const MAX_GENERATED: u32 = 1_000_000;
const DEFAULT_OFFLINE_AFTER_MS: i64 = 5 * 60 * 1000;
const DEFAULT_PUBLISH_INTERVAL_MS: i64 = 10_000;

/// The pattern of a duration field, the language of [`parse_duration_ms`]: `500ms`,
/// `30s`, `5m`, `1h30m`, `2d` or `0`. The API server checks it, `up` and the operator
/// check it again with a message naming the field.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(ms|s|m|h|d))+)$";

/// A group of devices of one type in one pipeline.
#[allow(clippy::duplicated_attributes)] // each printcolumn(...) repeats type_ by design
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[kube(
    group = "iot.sensorfleet.dev",
    version = "v1alpha1",
    kind = "SensorFleet",
    namespaced,
    status = "SensorFleetStatus",
    shortname = "sf",
    category = "sensorfleet",
    derive = "PartialEq",
    doc = "A group of devices of one type in one Pipeline: an explicit list and/or a generated range. Mirrored into the pipeline's device registry.",
    printcolumn(name = "Pipeline", type_ = "string", json_path = ".spec.pipeline"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.deviceType"),
    printcolumn(name = "Devices", type_ = "integer", json_path = ".status.deviceCount"),
    printcolumn(name = "Online", type_ = "integer", json_path = ".status.onlineCount"),
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
pub struct SensorFleetSpec {
    /// Name of the Pipeline (same namespace) whose workers serve this fleet; may be left
    /// out when the namespace has exactly one. Ignored by `sensorfleet up`, which runs one
    /// embedded pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Device type of every device in the fleet: 1-64 of `[A-Za-z0-9_]`, e.g.
    /// `temperature_sensor`. It is also the InfluxDB measurement and the MQTT topic level.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_]+$"))]
    pub device_type: String,
    /// Location of devices that name none, e.g. `Server Room`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// How often a device publishes, e.g. `10s` (default `10s`): drives the health
    /// score's completeness and freshness and the simulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub publish_interval: Option<String>,
    /// How long without a reading before a device counts as offline and the `offline`
    /// alert fires, e.g. `5m` (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub offline_after: Option<String>,
    /// Devices listed one by one. For large fleets use `generate`: the API server limits
    /// an object to about 1.5 MB.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSpec>,
    /// A generated range of devices (`idPrefix` + a zero-padded number), so a fleet of
    /// 100,000 devices stays a small object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateSpec>,
    /// While true the operator leaves this object (and what it mirrors) as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// One explicitly declared device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceSpec {
    /// Device id: 1-128 characters of `[A-Za-z0-9._:-]` (UUIDs, serials, MAC
    /// addresses); the id in the MQTT topic and the payload.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._:-]+$"))]
    pub id: String,
    /// Location of this device, overriding the fleet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// A generated range of devices: ids `{idPrefix}{n}` for n in 1..=count, zero-padded to
/// at least four digits (`srv-temp-0001`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateSpec {
    /// How many devices, 1 to 1,000,000.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub count: u32,
    /// Prefix of every generated id, e.g. `srv-temp-` for `srv-temp-0001`.
    pub id_prefix: String,
}

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

/// Object metadata: just what the manifests need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Object name, a DNS-1123 label.
    pub name: String,
    /// Namespace, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One parsed manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// A `SensorFleet`.
    SensorFleet(Named<SensorFleetSpec>),
    /// An `AlertRule`.
    AlertRule(Named<AlertRuleSpec>),
}

/// A spec with its object name.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<T> {
    /// `metadata.name`.
    pub name: String,
    /// `spec`.
    pub spec: T,
}

/// What went wrong in a manifest: file, object, field, problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ManifestError {
    /// File name as given.
    pub file: String,
    /// `Kind/name`, or the document number when the object has no name yet.
    pub object: String,
    /// Dotted path of the field, e.g. `spec.generate.count`.
    pub field: String,
    /// The problem, with what was expected.
    pub problem: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.object)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// A device as declared by a fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredDevice {
    /// Device id.
    pub device_id: String,
    /// Device type.
    pub device_type: String,
    /// Location (the device's, else the fleet's).
    pub location: Option<String>,
    /// Owning fleet.
    pub fleet: String,
    /// Expected publish interval, milliseconds.
    pub publish_interval_ms: i64,
    /// Silence after which the device counts as offline, milliseconds.
    pub offline_after_ms: i64,
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

/// Every manifest read, validated together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestSet {
    /// The SensorFleets, in the order read.
    pub fleets: Vec<Named<SensorFleetSpec>>,
    /// The AlertRules, in the order read.
    pub rules: Vec<Named<AlertRuleSpec>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<ObjectMeta>,
    spec: Option<serde_yaml::Value>,
}

impl ManifestSet {
    /// Parses one file's text (one or more YAML documents) and adds its objects.
    ///
    /// Objects of other groups (a ConfigMap in the same file) are an error: `up` would
    /// otherwise silently ignore what the user meant to declare.
    pub fn add_file(&mut self, file: &str, text: &str) -> Result<(), ManifestError> {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let at = format!("document {}", index + 1);
            let err = |object: &str, field: &str, problem: String| ManifestError {
                file: file.to_owned(),
                object: object.to_owned(),
                field: field.to_owned(),
                problem,
            };
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|e| err(&at, "", format!("not valid YAML: {e}")))?;
            if value.is_null() {
                continue;
            }
            let envelope: Envelope = serde_yaml::from_value(value)
                .map_err(|e| err(&at, "", format!("not a Kubernetes object: {e}")))?;
            let kind = envelope
                .kind
                .ok_or_else(|| err(&at, "kind", "missing: SensorFleet or AlertRule".into()))?;
            let name = envelope.metadata.map(|m| m.name).unwrap_or_default();
            let object = if name.is_empty() {
                format!("{kind} ({at})")
            } else {
                format!("{kind}/{name}")
            };
            if envelope.api_version.as_deref() != Some(API_VERSION) {
                return Err(err(
                    &object,
                    "apiVersion",
                    format!(
                        "must be {API_VERSION}, got {:?}",
                        envelope.api_version.unwrap_or_default()
                    ),
                ));
            }
            if !is_dns_label(&name) {
                return Err(err(
                    &object,
                    "metadata.name",
                    format!(
                        "{name:?} must be a DNS-1123 label: lowercase letters, digits and '-', at most 63"
                    ),
                ));
            }
            let spec = envelope
                .spec
                .ok_or_else(|| err(&object, "spec", "missing".into()))?;
            let spec_err = |e: serde_yaml::Error| err(&object, "spec", e.to_string());
            match kind.as_str() {
                "SensorFleet" => {
                    let spec: SensorFleetSpec = serde_yaml::from_value(spec).map_err(spec_err)?;
                    validate_fleet(&spec)
                        .map_err(|(field, problem)| err(&object, &field, problem))?;
                    self.fleets.push(Named { name, spec });
                }
                "AlertRule" => {
                    let spec: AlertRuleSpec = serde_yaml::from_value(spec).map_err(spec_err)?;
                    validate_rule(&spec)
                        .map_err(|(field, problem)| err(&object, &field, problem))?;
                    self.rules.push(Named { name, spec });
                }
                // `up` runs its one embedded pipeline: a Pipeline in the same folder
                // (the one a cluster would get) has nothing to say to it.
                "Pipeline" => {}
                other => {
                    return Err(err(
                        &object,
                        "kind",
                        format!(
                            "{other:?} is not one `up` reads: SensorFleet or AlertRule (Pipeline is skipped)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks what only the whole set can show: duplicate names, a device declared twice,
    /// a rule naming a fleet that does not exist.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let err = |object: String, field: &str, problem: String| ManifestError {
            file: "(all manifests)".to_owned(),
            object,
            field: field.to_owned(),
            problem,
        };
        let mut fleet_names = HashMap::new();
        for fleet in &self.fleets {
            if fleet_names.insert(fleet.name.as_str(), ()).is_some() {
                return Err(err(
                    format!("SensorFleet/{}", fleet.name),
                    "metadata.name",
                    "declared twice".into(),
                ));
            }
        }
        let mut rule_names = HashMap::new();
        for rule in &self.rules {
            let object = format!("AlertRule/{}", rule.name);
            if rule_names.insert(rule.name.as_str(), ()).is_some() {
                return Err(err(object, "metadata.name", "declared twice".into()));
            }
            if let Some(fleet) = &rule.spec.fleet
                && !fleet_names.contains_key(fleet.as_str())
            {
                return Err(err(
                    object,
                    "spec.fleet",
                    format!("no SensorFleet named {fleet:?}"),
                ));
            }
        }
        let mut owners: HashMap<String, &str> = HashMap::new();
        for fleet in &self.fleets {
            for device in declared_devices(&fleet.name, &fleet.spec) {
                if let Some(other) = owners.insert(device.device_id.clone(), &fleet.name) {
                    return Err(err(
                        format!("SensorFleet/{}", fleet.name),
                        "spec.devices",
                        format!(
                            "device {:?} is already declared by SensorFleet/{other}",
                            device.device_id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every declared device of every fleet.
    pub fn devices(&self) -> Vec<DeclaredDevice> {
        self.fleets
            .iter()
            .flat_map(|f| declared_devices(&f.name, &f.spec))
            .collect()
    }

    /// Every rule, compiled; the set must have been validated.
    pub fn compiled_rules(&self) -> Vec<CompiledRule> {
        self.rules
            .iter()
            .filter_map(|r| compile_rule(&r.name, &r.spec).ok())
            .collect()
    }
}

/// The devices a fleet declares: the explicit list, then the generated range.
pub fn declared_devices(fleet: &str, spec: &SensorFleetSpec) -> Vec<DeclaredDevice> {
    let publish_interval_ms = spec
        .publish_interval
        .as_deref()
        .and_then(|d| parse_duration_ms(d).ok())
        .unwrap_or(DEFAULT_PUBLISH_INTERVAL_MS);
    let offline_after_ms = spec
        .offline_after
        .as_deref()
        .and_then(|d| parse_duration_ms(d).ok())
        .unwrap_or(DEFAULT_OFFLINE_AFTER_MS);
    let make = |device_id: String, location: Option<String>| DeclaredDevice {
        device_id,
        device_type: spec.device_type.clone(),
        location: location.or_else(|| spec.location.clone()),
        fleet: fleet.to_owned(),
        publish_interval_ms,
        offline_after_ms,
    };
    let explicit = spec
        .devices
        .iter()
        .map(|d| make(d.id.clone(), d.location.clone()));
    let generated = spec.generate.iter().flat_map(|g| {
        let width = g.count.to_string().len().max(4);
        (1..=g.count).map(move |n| format!("{}{n:0width$}", g.id_prefix))
    });
    explicit.chain(generated.map(|id| make(id, None))).collect()
}

/// How many devices a fleet declares, without building them.
pub fn declared_count(spec: &SensorFleetSpec) -> u64 {
    spec.devices.len() as u64 + spec.generate.as_ref().map_or(0, |g| u64::from(g.count))
}

type FieldProblem = (String, String);

fn problem(field: &str, text: impl Into<String>) -> FieldProblem {
    (field.to_owned(), text.into())
}

/// Validates a SensorFleet spec; the error is `(field path, problem)`.
pub fn validate_fleet(spec: &SensorFleetSpec) -> Result<(), FieldProblem> {
    if !is_valid_device_type(&spec.device_type) {
        return Err(problem(
            "spec.deviceType",
            format!(
                "{:?} must be 1-64 of [A-Za-z0-9_], e.g. temperature_sensor",
                spec.device_type
            ),
        ));
    }
    for (field, value) in [
        ("spec.publishInterval", &spec.publish_interval),
        ("spec.offlineAfter", &spec.offline_after),
    ] {
        if let Some(text) = value {
            match parse_duration_ms(text) {
                Ok(ms) if ms > 0 => {}
                Ok(_) => return Err(problem(field, "must be more than 0")),
                Err(e) => return Err(problem(field, e)),
            }
        }
    }
    if spec.devices.is_empty() && spec.generate.is_none() {
        return Err(problem(
            "spec",
            "declares no device: give spec.devices and/or spec.generate",
        ));
    }
    for (i, device) in spec.devices.iter().enumerate() {
        if !is_valid_device_id(&device.id) {
            return Err(problem(
                &format!("spec.devices[{i}].id"),
                format!("{:?} must be 1-128 of [A-Za-z0-9._:-]", device.id),
            ));
        }
    }
    if let Some(generate) = &spec.generate {
        if generate.count == 0 || generate.count > MAX_GENERATED {
            return Err(problem(
                "spec.generate.count",
                format!("{} must be between 1 and {MAX_GENERATED}", generate.count),
            ));
        }
        let longest = format!("{}{}", generate.id_prefix, generate.count);
        if !is_valid_device_id(&longest) {
            return Err(problem(
                "spec.generate.idPrefix",
                format!(
                    "{:?} makes ids that are not 1-128 of [A-Za-z0-9._:-]",
                    generate.id_prefix
                ),
            ));
        }
    }
    Ok(())
}

/// Validates an AlertRule spec; the error is `(field path, problem)`.
pub fn validate_rule(spec: &AlertRuleSpec) -> Result<(), FieldProblem> {
    compile_rule("", spec).map(|_| ())
}

/// Validates and compiles one AlertRule.
pub fn compile_rule(name: &str, spec: &AlertRuleSpec) -> Result<CompiledRule, FieldProblem> {
    if spec.device_type.is_none() && spec.fleet.is_none() {
        return Err(problem(
            "spec",
            "give spec.deviceType and/or spec.fleet to say which devices",
        ));
    }
    if let Some(t) = &spec.device_type
        && !is_valid_device_type(t)
    {
        return Err(problem(
            "spec.deviceType",
            format!("{t:?} must be 1-64 of [A-Za-z0-9_]"),
        ));
    }
    if !is_valid_name(&spec.metric, 64) {
        return Err(problem(
            "spec.metric",
            format!(
                "{:?} must be a field name of [A-Za-z0-9_], e.g. temperature_celsius",
                spec.metric
            ),
        ));
    }
    for (field, value) in [
        ("spec.min", spec.min),
        ("spec.max", spec.max),
        ("spec.clearMin", spec.clear_min),
        ("spec.clearMax", spec.clear_max),
    ] {
        if value.is_some_and(|v| !v.is_finite()) {
            return Err(problem(field, "must be a finite number"));
        }
    }
    if spec.min.is_none() && spec.max.is_none() {
        return Err(problem("spec", "give spec.min and/or spec.max"));
    }
    if let (Some(min), Some(max)) = (spec.min, spec.max)
        && min > max
    {
        return Err(problem(
            "spec.min",
            format!("{min} is above spec.max {max}"),
        ));
    }
    match (spec.min, spec.clear_min) {
        (None, Some(_)) => return Err(problem("spec.clearMin", "needs spec.min")),
        (Some(min), Some(clear)) if clear < min => {
            return Err(problem(
                "spec.clearMin",
                format!("{clear} must be at or above spec.min {min}"),
            ));
        }
        _ => {}
    }
    match (spec.max, spec.clear_max) {
        (None, Some(_)) => return Err(problem("spec.clearMax", "needs spec.max")),
        (Some(max), Some(clear)) if clear > max => {
            return Err(problem(
                "spec.clearMax",
                format!("{clear} must be at or below spec.max {max}"),
            ));
        }
        _ => {}
    }
    if let (Some(lo), Some(hi)) = (spec.clear_min.or(spec.min), spec.clear_max.or(spec.max))
        && lo > hi
    {
        return Err(problem(
            "spec.clearMin",
            format!("the clear band [{lo}, {hi}] is empty"),
        ));
    }
    let for_ms = match &spec.for_duration {
        None => 0,
        Some(text) => parse_duration_ms(text).map_err(|e| problem("spec.for", e))?,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = r#"
apiVersion: iot.sensorfleet.dev/v1alpha1
kind: SensorFleet
metadata: {name: server-room-temps}
spec:
  pipeline: main
  deviceType: temperature_sensor
  location: Server Room
  publishInterval: 10s
  offlineAfter: 5m
  devices:
    - {id: 7d9c2f1e-4b1a-4c3e-9f2d-0a1b2c3d4e5f, location: Rack 4}
  generate: {count: 12, idPrefix: srv-temp-}
---
apiVersion: iot.sensorfleet.dev/v1alpha1
kind: AlertRule
metadata: {name: server-room-too-hot}
spec:
  deviceType: temperature_sensor
  fleet: server-room-temps
  metric: temperature_celsius
  min: 10
  max: 30
  clearMin: 11
  clearMax: 29
  for: 30s
  severity: critical
"#;

    fn parse(text: &str) -> Result<ManifestSet, ManifestError> {
        let mut set = ManifestSet::default();
        set.add_file("test.yaml", text)?;
        set.validate()?;
        Ok(set)
    }

    fn error_of(text: &str) -> ManifestError {
        parse(text).expect_err("should be invalid")
    }

    #[test]
    fn reads_the_design_sketch() {
        let set = parse(FLEET).expect("valid");
        assert_eq!(set.fleets.len(), 1);
        let devices = set.devices();
        assert_eq!(devices.len(), 13);
        assert_eq!(devices[0].location.as_deref(), Some("Rack 4"));
        assert_eq!(devices[1].device_id, "srv-temp-0001");
        assert_eq!(devices[12].device_id, "srv-temp-0012");
        assert_eq!(devices[12].location.as_deref(), Some("Server Room"));
        assert_eq!(devices[12].publish_interval_ms, 10_000);
        assert_eq!(devices[12].offline_after_ms, 300_000);
        let rules = set.compiled_rules();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].for_ms, 30_000);
        assert_eq!(rules[0].severity, Severity::Critical);
        assert_eq!(rules[0].threshold.clear_max, Some(29.0));
        assert!(rules[0].applies_to("temperature_sensor", Some("server-room-temps")));
        assert!(!rules[0].applies_to("temperature_sensor", Some("other")));
        assert!(!rules[0].applies_to("humidity_sensor", Some("server-room-temps")));
    }

    #[test]
    fn generated_ids_widen_past_four_digits() {
        let spec = SensorFleetSpec {
            device_type: "t".into(),
            generate: Some(GenerateSpec {
                count: 100_000,
                id_prefix: "d-".into(),
            }),
            ..Default::default()
        };
        let devices = declared_devices("f", &spec);
        assert_eq!(devices[0].device_id, "d-000001");
        assert_eq!(devices[99_999].device_id, "d-100000");
        assert_eq!(declared_count(&spec), 100_000);
    }

    #[test]
    fn errors_name_file_object_field_and_problem() {
        let e = error_of(&FLEET.replace("count: 12", "count: 0"));
        assert_eq!(e.file, "test.yaml");
        assert_eq!(e.object, "SensorFleet/server-room-temps");
        assert_eq!(e.field, "spec.generate.count");
        assert!(e.problem.contains("between 1 and"), "{e}");
        assert!(
            e.to_string()
                .starts_with("test.yaml: SensorFleet/server-room-temps: spec.generate.count: ")
        );
    }

    #[test]
    fn typos_and_bad_values_are_caught() {
        let cases = [
            (FLEET.replace("publishInterval", "publishIntervall"), "spec"),
            (
                FLEET.replace("publishInterval: 10s", "publishInterval: soon"),
                "spec.publishInterval",
            ),
            (
                FLEET.replace(
                    "deviceType: temperature_sensor\n  location",
                    "deviceType: temp sensor\n  location",
                ),
                "spec.deviceType",
            ),
            (
                FLEET.replace("7d9c2f1e-4b1a-4c3e-9f2d-0a1b2c3d4e5f", "'a/b'"),
                "spec.devices[0].id",
            ),
            (
                FLEET.replace("clearMax: 29", "clearMax: 31"),
                "spec.clearMax",
            ),
            (FLEET.replace("min: 10", "min: 40"), "spec.min"),
            (FLEET.replace("for: 30s", "for: 30"), "spec"),
            (FLEET.replace("for: 30s", "for: 30 s"), "spec.for"),
            (
                FLEET.replace("severity: critical", "severity: panic"),
                "spec",
            ),
            (
                FLEET.replace("v1alpha1\nkind: AlertRule", "v1\nkind: AlertRule"),
                "apiVersion",
            ),
            (FLEET.replace("kind: AlertRule", "kind: ConfigMap"), "kind"),
            (
                FLEET.replace("{name: server-room-too-hot}", "{name: Too_Hot}"),
                "metadata.name",
            ),
            (
                FLEET.replace("fleet: server-room-temps", "fleet: nope"),
                "spec.fleet",
            ),
            (
                FLEET.replace("metric: temperature_celsius", "metric: temp-c"),
                "spec.metric",
            ),
        ];
        for (text, field) in cases {
            let e = error_of(&text);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn a_device_declared_twice_is_an_error() {
        let two = format!(
            "{FLEET}\n---\n{}",
            FLEET
                .split("---")
                .next()
                .unwrap()
                .replace("server-room-temps", "second")
        );
        let e = error_of(&two);
        assert!(e.problem.contains("already declared"), "{e}");
    }

    #[test]
    fn a_pipeline_beside_the_fleets_is_skipped() {
        let with_pipeline = format!(
            "{FLEET}---\napiVersion: iot.sensorfleet.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: main}}\nspec: {{image: sensorfleet:0.1.0}}\n"
        );
        let set = parse(&with_pipeline).expect("a Pipeline is not an error for up");
        assert_eq!((set.fleets.len(), set.rules.len()), (1, 1));
    }

    #[test]
    fn broken_yaml_says_so() {
        let e = error_of("kind: [unclosed");
        assert!(e.problem.contains("not valid YAML"), "{e}");
    }
}
