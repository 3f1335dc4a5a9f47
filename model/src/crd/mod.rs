//! The custom resources of group `iot.sensorfleet.dev`, version `v1alpha1`: their specs
//! ([`fleet`], [`rule`], [`pipeline`]), their status ([`status`]) and the checks a
//! schema cannot express. `sensorfleet crdgen` prints the CRDs from these types.
//!
//! Validation is one shape for every kind: a function from a spec to every [`Problem`]
//! with its field path, so one edit can fix them all. A caller that reports a single
//! problem (`up -f`) takes the first.

pub mod fleet;
pub mod pipeline;
pub mod rule;
pub mod status;

use std::fmt;

/// The API group and version every manifest must carry.
pub const API_VERSION: &str = "iot.sensorfleet.dev/v1alpha1";

/// One thing wrong with a spec: the dotted field path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `spec.kafka.minPartitions`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl Problem {
    /// A problem of `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A DNS-1123 label: what Kubernetes allows as most object names.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
