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
    /// The backend refused the request itself (authentication, permissions, a missing
    /// database, a malformed request): retrying the same request will not help until
    /// someone fixes the configuration.
    #[error("{backend} rejected the request: {detail}")]
    Rejected {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        detail: String,
    },
    /// The backend refused the request because of the data it carries (a value it cannot
    /// store: a timestamp out of its range, a NUL byte in text, a field type conflict, a
    /// record too large). The same data will never be written, other data will: the
    /// caller isolates the offending items and dead-letters them instead of holding.
    #[error("{backend} refused the data: {detail}")]
    Content {
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

    /// True when the data itself was refused: retrying it will not help, but writing the
    /// rest of a batch without it will. Authentication and configuration refusals are
    /// [`BackendError::Rejected`], not this: they are not the data's fault.
    pub fn is_content(&self) -> bool {
        matches!(self, Self::Content { .. })
    }
}
