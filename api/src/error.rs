//! API errors: JSON `{"error": "...", "code": "..."}` with the right status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sensorfleet_backends::BackendError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do, for a person.
    pub error: String,
    /// A stable machine-readable code: `bad_parameter`, `not_found`, `unauthorized`,
    /// `forbidden`, `rate_limited`, `not_a_websocket`, `backend_unavailable`, `internal`.
    pub code: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// 400: a parameter is malformed or out of range.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
    }

    /// 404: no such device or alert.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: credentials are required.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the credentials given are not accepted.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 429: too many requests from this client.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }

    /// 400 or 426: a request to the live feed that is not a WebSocket handshake.
    pub fn not_a_websocket(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "not_a_websocket", message)
    }

    /// 503: the feature needs a component this process does not run.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        tracing::warn!(error = %e, "backend error answering a request");
        // The request's data was refused (e.g. text the store cannot hold): the caller's
        // to fix, and the service carries on.
        if e.is_content() {
            return Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused",
                format!("{e}; change the request"),
            );
        }
        let status = if e.is_transient() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let code = if e.is_transient() {
            "backend_unavailable"
        } else {
            "internal"
        };
        Self::new(status, code, format!("{e}; try again shortly"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
        };
        (self.status, Json(body)).into_response()
    }
}
