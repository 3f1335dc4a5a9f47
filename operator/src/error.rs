//! The reconcilers' error: what failed, and a category that names it in logs and Events.

use sensorfleet_backends::BackendError;

use crate::topic::TopicError;

/// Why a reconcile failed. Every variant is retried with per-object exponential backoff;
/// an invalid spec is not an error (it becomes a condition and waits for an edit).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer, or the wrapped reconcile, failed.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The registry mirror (PostgreSQL) failed.
    #[error("registry: {0}")]
    Registry(#[from] BackendError),
    /// The Kafka topic could not be created or grown.
    #[error("Kafka topic: {0}")]
    Topic(#[from] TopicError),
    /// An object the reconcile needs is missing or unusable, e.g. the Pipeline's Secret.
    #[error("{what}: {problem}")]
    Dependency {
        /// e.g. `Secret/pg`.
        what: String,
        /// What is wrong with it and what to do.
        problem: String,
    },
    /// The MQTT broker's dynamic-security API refused or could not be reached.
    #[error("MQTT broker: {0}")]
    Broker(String),
    /// The object lacks what every stored object has (name, namespace, uid).
    #[error("object without {0}: was it read from the API server?")]
    MissingObjectKey(&'static str),
    /// Serialising a status or patch failed (a bug).
    #[error("cannot serialise: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// A short CamelCase category: the Event reason and the log field.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApiError",
            Self::Finalizer(_) => "FinalizerError",
            Self::Registry(_) => "RegistryError",
            Self::Topic(_) => "TopicError",
            Self::Dependency { .. } => "DependencyMissing",
            Self::Broker(_) => "BrokerError",
            Self::MissingObjectKey(_) => "MissingObjectKey",
            Self::Serialize(_) => "SerializeError",
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        Self::Finalizer(Box::new(e))
    }
}
