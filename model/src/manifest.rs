//! The `up -f` loader: the same SensorFleet and AlertRule YAML that `kubectl apply` takes,
//! parsed and validated together, and the devices a fleet declares.
//!
//! Parsing and validation are pure: the caller reads the files and passes their text in,
//! and every error names the file, the object, the field and the problem.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crd::fleet::{SensorFleetSpec, validate_fleet};
use crate::crd::rule::{AlertRuleSpec, CompiledRule, compile_rule, validate_rule};
use crate::crd::{API_VERSION, Problem, is_dns_label};

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
            // `up` stops at the first problem; the operator lists them all.
            let first = |problems: Vec<Problem>| match problems.into_iter().next() {
                Some(p) => Err(err(&object, &p.field, p.message)),
                None => Ok(()),
            };
            match kind.as_str() {
                "SensorFleet" => {
                    let spec: SensorFleetSpec = serde_yaml::from_value(spec).map_err(spec_err)?;
                    first(validate_fleet(&spec))?;
                    self.fleets.push(Named { name, spec });
                }
                "AlertRule" => {
                    let spec: AlertRuleSpec = serde_yaml::from_value(spec).map_err(spec_err)?;
                    first(validate_rule(&spec))?;
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
    let publish_interval_ms = spec.publish_interval_ms();
    let offline_after_ms = spec.offline_after_ms();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;
    use crate::crd::fleet::GenerateSpec;

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
