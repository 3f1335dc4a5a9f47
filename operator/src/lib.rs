//! SensorFleet's Kubernetes operator: it turns `Pipeline`, `SensorFleet` and `AlertRule`
//! objects into running workers, a grown Kafka topic and mirror rows in PostgreSQL.
//!
//! Each reconcile is split the way Stackable's operators split it, so that everything
//! but the I/O is a plain function tested from YAML fixtures:
//!
//! 1. *dereference* — async reads: the object's Pipeline, its Secret, its fleets;
//! 2. *validate* — pure: every problem with its field path ([`validate`]);
//! 3. *build* — pure: the desired Kubernetes objects ([`build`]) and partition plan
//!    ([`partitions`]);
//! 4. *apply* — server-side apply with the field manager [`FIELD_MANAGER`];
//! 5. *status* — pure: conditions from what was applied, written only when they changed.
//!
//! The side effects outside Kubernetes sit behind traits so the controllers do not care
//! which backend they drive: [`topic::TopicAdmin`] (Kafka partitions) and
//! [`mirror::RegistryConnector`] (the PostgreSQL registry, through the backends crate's
//! `Registry`). [`identity`] provisions the devices' identities at the MQTT broker.
//! [`crdgen`] prints the CRDs; [`leader`] keeps two replicas from both acting;
//! [`ops`] serves `/metrics` ([`metrics`]) and the probes.

pub mod build;
pub mod controller;
pub mod crdgen;
pub mod error;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod mirror;
pub mod ops;
pub mod partitions;
pub mod run;
pub mod topic;
pub mod validate;

pub use error::Error;

/// The field manager of every server-side apply and status patch.
pub const FIELD_MANAGER: &str = "sensorfleet-operator";

/// The finalizer that keeps a SensorFleet or AlertRule until its mirror rows are gone.
pub const FINALIZER: &str = "iot.sensorfleet.dev/mirror";
