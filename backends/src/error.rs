//! The one error type every backend returns.

/// What went wrong talking to a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached or failed transiently: retry later.
    #[error("{backend} is unavailable: {detail}")]
    Unavailable {
        /// Which backend, e.g. `sqlite`.
        backend: &'static str,
        /// What the client library said.
        detail: String,
    },
    /// The backend refused the request itself: retrying the same request will not help.
    #[error("{backend} rejected the request: {detail}")]
    Rejected {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        detail: String,
    },
    /// The backend was shut down.
    #[error("{0} is closed")]
    Closed(&'static str),
}

impl BackendError {
    /// True when retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
