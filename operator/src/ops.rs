//! The operator's HTTP surface, on `--metrics-addr` (the chart's port 9090, which its
//! probes and ServiceMonitor use): `/metrics` (Prometheus text, [`crate::metrics`]),
//! `/health/live` (the process answers) and `/health/ready` (200 while this replica leads
//! and its watches have synced, or stands by for the leader; 503 otherwise).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::leader::Standing;
use crate::metrics::{self, Watches};

/// What the probes look at.
#[derive(Debug, Clone)]
pub struct Health {
    /// Where this replica stands in the election.
    pub standing: watch::Receiver<Standing>,
    /// The controllers' caches.
    pub watches: Arc<Watches>,
}

/// Readiness as a pure function of the election and the watches: `(ready, role)`.
pub fn readiness(standing: Standing, watches_synced: bool) -> (bool, &'static str) {
    match standing {
        Standing::Candidate => (false, "candidate"),
        Standing::Standby => (true, "standby"),
        Standing::Leading => (watches_synced, "leader"),
    }
}

/// `/metrics`, `/health/live` and `/health/ready`.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(health)
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

async fn ready(State(health): State<Health>) -> (StatusCode, Json<serde_json::Value>) {
    let standing = *health.standing.borrow();
    let synced = health.watches.synced();
    let (ready, role) = readiness(standing, synced);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"ready": ready, "role": role, "watchesSynced": synced})),
    )
}

async fn serve_metrics(State(health): State<Health>) -> impl IntoResponse {
    health.watches.observe();
    let leading = *health.standing.borrow() == Standing::Leading;
    metrics::LEADER.set(i64::from(leading));
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

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    metrics::register_all();
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_ready_a_leader_only_once_synced() {
        assert_eq!(readiness(Standing::Candidate, true), (false, "candidate"));
        assert_eq!(readiness(Standing::Standby, false), (true, "standby"));
        assert_eq!(readiness(Standing::Leading, false), (false, "leader"));
        assert_eq!(readiness(Standing::Leading, true), (true, "leader"));
    }
}
