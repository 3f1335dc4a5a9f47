//! The small HTTP surface of a worker role that has no API of its own (`sensorfleet
//! bridge`, `sensorfleet processor`): `/metrics` and the Kubernetes probes.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::routes::{health, metrics};
use crate::{ServeError, StatusProbe};

/// `/metrics`, `/health/live`, and `/health/ready` (200 when every component the probe
/// reports is up, 503 otherwise, with the components in the body either way).
pub fn router(probe: StatusProbe) -> Router {
    Router::new()
        .route("/metrics", get(metrics::serve))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(ready))
        .with_state(probe)
}

async fn ready(State(probe): State<StatusProbe>) -> (StatusCode, Json<serde_json::Value>) {
    let components = probe();
    let ready = components.iter().all(|c| c.up);
    let listed: Vec<serde_json::Value> = components
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "backend": c.backend,
                "status": if c.up { "up" } else { "down" },
                "detail": (!c.up).then_some(&c.detail),
            })
        })
        .collect();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"ready": ready, "components": listed})))
}

/// Serves the ops surface until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    probe: StatusProbe,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    crate::serve_app(listener, router(probe), shutdown).await
}
