//! SensorFleet's API: the original design's REST endpoints, a WebSocket feed of live
//! readings and alerts, the web dashboard, `/metrics` and `/health/*`, described by an
//! OpenAPI document at `/api/openapi.json`.
//!
//! The API only reads the stores (time series, registry, cache); changing an alert by
//! hand goes through [`AlertControl`]: [`remote::RemoteControl`] sends it to the processors
//! over the event log's commands topic, in `up` as in the separate `api` role.

pub mod error;
pub mod guard;
pub mod openapi;
pub mod ops;
pub mod remote;
pub mod routes;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::Router;
use axum::routing::{get, post};
use sensorfleet_backends::{Cache, Registry, TimeSeries};
use sensorfleet_model::Alert;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApiError;
pub use guard::GuardConfig;

/// Acknowledging and clearing alerts: answered by the processor.
#[async_trait]
pub trait AlertControl: Send + Sync {
    /// Acknowledges an active alert; `Ok(None)` when no active alert has this id.
    async fn acknowledge(&self, id: &str) -> Result<Option<Alert>, String>;
    /// Clears an active alert by hand; `Ok(None)` when no active alert has this id.
    async fn clear(&self, id: &str) -> Result<Option<Alert>, String>;
}

/// The status of a component that is not a store, e.g. the MQTT connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentStatus {
    /// Component name, e.g. `mqtt`.
    pub name: String,
    /// What implements it, e.g. `embedded` or `mosquitto`.
    pub backend: String,
    /// Whether it works.
    pub up: bool,
    /// A sentence.
    pub detail: String,
}

/// Reports extra components for `/health/services`.
pub type StatusProbe = Arc<dyn Fn() -> Vec<ComponentStatus> + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Time series.
    pub series: Arc<dyn TimeSeries>,
    /// Registry.
    pub registry: Arc<dyn Registry>,
    /// Cache and live feed.
    pub cache: Arc<dyn Cache>,
    /// Alert acknowledge/clear; none: those endpoints answer 503.
    pub control: Option<Arc<dyn AlertControl>>,
    /// Extra component status.
    pub probe: StatusProbe,
    /// Auth and rate limiting.
    pub guard: Arc<guard::Guard>,
    /// When the process started.
    pub started: Instant,
}

impl ApiState {
    /// State over the given stores, with no control, no extra probe, and `guard`.
    pub fn new(
        series: Arc<dyn TimeSeries>,
        registry: Arc<dyn Registry>,
        cache: Arc<dyn Cache>,
        guard: GuardConfig,
    ) -> Self {
        Self {
            series,
            registry,
            cache,
            control: None,
            probe: Arc::new(Vec::new),
            guard: Arc::new(guard::Guard::new(guard)),
            started: Instant::now(),
        }
    }
}

/// The whole HTTP surface.
pub fn router(state: ApiState) -> Router {
    use routes::{alerts, assets, dashboard, devices, health, live, metrics};
    let api = Router::new()
        .route("/api/devices", get(devices::list))
        .route("/api/device/{id}/latest", get(devices::latest))
        .route("/api/device/{id}/history", get(devices::history))
        .route("/api/alerts", get(alerts::list))
        .route("/api/alerts/{id}/ack", post(alerts::acknowledge))
        .route("/api/alerts/{id}/clear", post(alerts::clear))
        .route("/api/dashboard/stats", get(dashboard::stats))
        .route("/api/ws", get(live::upgrade))
        .route("/api/openapi.json", get(openapi::serve))
        .route("/health/devices", get(health::devices))
        .route("/health/services", get(health::services))
        .route("/health/system", get(health::system))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::serve))
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .fallback(assets::not_found);
    api.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        guard::middleware,
    ))
    .with_state(state)
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours.
    #[error(
        "cannot listen for HTTP on {addr}: {source}; is another instance running? pass --http-addr with a free port"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Binds `addr` (fails fast with a clear error when taken).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves until `shutdown` turns true, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    telemetry::register_all();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(ServeError::Serve)
}
