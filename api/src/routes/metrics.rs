//! `/metrics`: every registered metric in Prometheus text format.

use axum::http::header;
use axum::response::IntoResponse;
use prometheus::{Encoder, TextEncoder};

/// Prometheus text exposition of the process's metrics.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn serve() -> impl IntoResponse {
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut buffer) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        buffer,
    )
}
