//! Status of the custom resources: Kubernetes-style conditions and what each kind reports.
//!
//! Pure: the caller passes the time in, so a status is a plain function of what was
//! applied and can be compared with the one stored to skip a write that changes nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the object is reconciled and everything it declares is in place.
pub const READY: &str = "Ready";
/// Condition type (Pipeline): the Kafka topic exists with the partitions asked for.
pub const TOPIC_READY: &str = "TopicReady";
/// Condition type (Pipeline): something runs, but not everything as declared.
pub const DEGRADED: &str = "Degraded";
/// Condition type (Pipeline): every worker has the replicas it wants ready (from the
/// StatefulSet's and Deployments' own status).
pub const WORKERS_AVAILABLE: &str = "WorkersAvailable";

/// Reason of `Ready=False` when the spec itself is wrong; the message names the fields.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Reason of `Ready=Unknown` while `spec.paused` is true.
pub const REASON_PAUSED: &str = "Paused";
/// Reason of `Ready=True`.
pub const REASON_RECONCILED: &str = "Reconciled";

/// `True`, `False` or `Unknown`, as Kubernetes conditions spell them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet (or not checked, e.g. while paused).
    #[default]
    Unknown,
}

/// One observation about an object, in the shape of `metav1.Condition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What the condition is about: `Ready`, `TopicReady`, `Degraded` or
    /// `WorkersAvailable`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether it holds: `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// One CamelCase word for why, e.g. `InvalidSpec`, `Paused`, `Reconciled`.
    pub reason: String,
    /// What a person needs to know, e.g. which field is wrong and how.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition observed now; `set_condition` keeps the older transition time when
    /// the status did not change.
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
        now: &str,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.into(),
            last_transition_time: now.to_owned(),
            observed_generation: generation,
        }
    }
}

/// Puts `new` into `conditions`, replacing the one of the same type. The transition time
/// moves only when the status changes, so an unchanged object keeps an identical status
/// (and the operator writes nothing).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// The condition of a type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A status with conditions: one way for every kind to set and read its `Ready`.
pub trait HasConditions {
    /// The conditions, in the order first set.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// The conditions, read only.
    fn conditions(&self) -> &[Condition];
    /// The `metadata.generation` the status was computed from.
    fn observed_generation(&self) -> Option<i64>;
    /// Records the `metadata.generation` the status is computed from.
    fn set_observed_generation(&mut self, generation: Option<i64>);

    /// Sets `Ready` for the status's observed generation.
    fn set_ready(
        &mut self,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        now: &str,
    ) {
        let generation = self.observed_generation();
        set_condition(
            self.conditions_mut(),
            Condition::new(READY, status, reason, message, generation, now),
        );
    }

    /// Whether `Ready` is `True`.
    fn is_ready(&self) -> bool {
        find_condition(self.conditions(), READY).is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// Whether `Ready` says the spec is invalid.
    fn is_invalid(&self) -> bool {
        find_condition(self.conditions(), READY).is_some_and(|c| c.reason == REASON_INVALID_SPEC)
    }
}

macro_rules! has_conditions {
    ($($status:ty),*) => {$(
        impl HasConditions for $status {
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
    )*};
}

has_conditions!(SensorFleetStatus, AlertRuleStatus, PipelineStatus);

/// What the operator reports about a SensorFleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensorFleetStatus {
    /// `metadata.generation` of the spec last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Devices the fleet declares (explicit plus generated).
    #[serde(default)]
    pub device_count: u64,
    /// Devices that reported within `offlineAfter`, as last counted.
    #[serde(default)]
    pub online_count: u64,
    /// `Ready`: the devices are mirrored into the pipeline's registry.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// What the operator reports about an AlertRule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleStatus {
    /// `metadata.generation` of the spec last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Alerts of this rule firing now, as last counted.
    #[serde(default)]
    pub firing_count: u64,
    /// When an alert of this rule last fired (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_fired: Option<String>,
    /// `Ready`: the rule is mirrored into the pipeline's registry.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Desired replicas of each worker, as last applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerReplicas {
    /// Bridge (MQTT → Kafka, InfluxDB, Redis) replicas.
    #[serde(default)]
    pub bridge: i32,
    /// Processor replicas: one per partition, at most `spec.processor.maxReplicas`.
    #[serde(default)]
    pub processor: i32,
    /// API replicas.
    #[serde(default)]
    pub api: i32,
}

/// What the operator reports about a Pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// `metadata.generation` of the spec last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Partitions of the readings topic now (they only ever grow).
    #[serde(default)]
    pub partitions: i32,
    /// Partitions the declared devices alone would ask for; below `partitions` after a
    /// fleet shrank, since Kafka partitions are never removed.
    #[serde(default)]
    pub wanted_partitions: i32,
    /// Desired replicas of the workers, as applied.
    #[serde(default)]
    pub replicas: WorkerReplicas,
    /// Devices declared by the SensorFleets of this pipeline, summed.
    #[serde(default)]
    pub declared_devices: u64,
    /// `Ready`, `TopicReady` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut conditions = Vec::new();
        let at = |t: &str, status| Condition::new(READY, status, "R", "m", Some(1), t);
        set_condition(&mut conditions, at("t1", ConditionStatus::False));
        set_condition(&mut conditions, at("t2", ConditionStatus::False));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, "t1");
        set_condition(&mut conditions, at("t3", ConditionStatus::True));
        assert_eq!(conditions[0].last_transition_time, "t3");
        set_condition(
            &mut conditions,
            Condition::new(DEGRADED, ConditionStatus::False, "R", "", None, "t4"),
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(
            find_condition(&conditions, DEGRADED).map(|c| c.last_transition_time.as_str()),
            Some("t4")
        );
    }

    #[test]
    fn ready_is_set_for_the_observed_generation() {
        let mut status = AlertRuleStatus {
            observed_generation: Some(7),
            ..Default::default()
        };
        assert!(!status.is_ready());
        status.set_ready(
            ConditionStatus::False,
            REASON_INVALID_SPEC,
            "spec.min: x",
            "t1",
        );
        assert!(status.is_invalid() && !status.is_ready());
        status.set_ready(ConditionStatus::True, REASON_RECONCILED, "", "t2");
        let ready = find_condition(&status.conditions, READY).expect("Ready");
        assert_eq!(ready.observed_generation, Some(7));
        assert!(status.is_ready() && !status.is_invalid());
    }
}
