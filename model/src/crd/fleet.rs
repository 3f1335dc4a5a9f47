//! The `SensorFleet` custom resource: a group of devices of one type, listed one by one
//! and/or generated as a numbered range, and the checks its schema cannot express.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problem;
use super::status::SensorFleetStatus;
use crate::duration::{DURATION_PATTERN, parse_duration_ms};
use crate::reading::{is_valid_device_id, is_valid_device_type};

/// Largest generated fleet; keeps a typo from declaring a billion devices.
pub const MAX_GENERATED: u32 = 1_000_000;
const DEFAULT_OFFLINE_AFTER_MS: i64 = 5 * 60 * 1000;
const DEFAULT_PUBLISH_INTERVAL_MS: i64 = 10_000;

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

impl SensorFleetSpec {
    /// `publishInterval` in milliseconds, or its default (10 s) when absent or invalid.
    pub fn publish_interval_ms(&self) -> i64 {
        duration_or(
            self.publish_interval.as_deref(),
            DEFAULT_PUBLISH_INTERVAL_MS,
        )
    }

    /// `offlineAfter` in milliseconds, or its default (5 min) when absent or invalid.
    pub fn offline_after_ms(&self) -> i64 {
        duration_or(self.offline_after.as_deref(), DEFAULT_OFFLINE_AFTER_MS)
    }
}

fn duration_or(text: Option<&str>, default_ms: i64) -> i64 {
    text.and_then(|d| parse_duration_ms(d).ok())
        .unwrap_or(default_ms)
}

/// Every problem of a SensorFleet spec, with its field path.
pub fn validate_fleet(spec: &SensorFleetSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !is_valid_device_type(&spec.device_type) {
        problems.push(Problem::new(
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
                Ok(_) => problems.push(Problem::new(field, "must be more than 0")),
                Err(e) => problems.push(Problem::new(field, e)),
            }
        }
    }
    if spec.devices.is_empty() && spec.generate.is_none() {
        problems.push(Problem::new(
            "spec",
            "declares no device: give spec.devices and/or spec.generate",
        ));
    }
    for (i, device) in spec.devices.iter().enumerate() {
        if !is_valid_device_id(&device.id) {
            problems.push(Problem::new(
                &format!("spec.devices[{i}].id"),
                format!("{:?} must be 1-128 of [A-Za-z0-9._:-]", device.id),
            ));
        }
    }
    if let Some(generate) = &spec.generate {
        if generate.count == 0 || generate.count > MAX_GENERATED {
            problems.push(Problem::new(
                "spec.generate.count",
                format!("{} must be between 1 and {MAX_GENERATED}", generate.count),
            ));
        }
        let longest = format!("{}{}", generate.id_prefix, generate.count);
        if !is_valid_device_id(&longest) {
            problems.push(Problem::new(
                "spec.generate.idPrefix",
                format!(
                    "{:?} makes ids that are not 1-128 of [A-Za-z0-9._:-]",
                    generate.id_prefix
                ),
            ));
        }
    }
    problems
}
