//! SensorFleet's API: the original design's REST endpoints, a WebSocket feed of live
//! readings and alerts, the web dashboard, `/metrics` and `/health/*`, described by an
//! OpenAPI document at `/api/openapi.json`.
//!
//! The API only reads the stores (time series, registry, cache); changing an alert by
//! hand goes through [`AlertControl`]: [`remote::RemoteControl`] sends it to the processors
//! over the event log's commands topic, in `up` as in the separate `api` role.

pub mod auth;
pub mod error;
pub mod guard;
pub mod openapi;
pub mod ops;
pub mod remote;
pub mod routes;
pub mod telemetry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::Router;
use axum::routing::{MethodRouter, get, post};
use sensorfleet_backends::{Cache, Registry, TimeSeries};
use sensorfleet_model::Alert;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{Access, Role};
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

/// Every route with the access it needs; routes are added only through
/// [`Routes::add`], so none can exist without a declared access.
pub struct Routes {
    router: Router<ApiState>,
    /// Access by route pattern.
    pub access: HashMap<&'static str, Access>,
}

impl Routes {
    fn add(mut self, path: &'static str, access: Access, method: MethodRouter<ApiState>) -> Self {
        self.router = self.router.route(path, method);
        self.access.insert(path, access);
        self
    }
}

/// The routes and their access, before state is attached.
pub fn routes() -> Routes {
    use routes::{alerts, assets, dashboard, devices, health, live, metrics};
    const READ: Access = Access::Needs(Role::Viewer);
    const CHANGE: Access = Access::Needs(Role::Operator);
    let open = Access::Public;
    Routes {
        router: Router::new(),
        access: HashMap::new(),
    }
    .add("/api/devices", READ, get(devices::list))
    .add("/api/device/{id}/latest", READ, get(devices::latest))
    .add("/api/device/{id}/history", READ, get(devices::history))
    .add("/api/alerts", READ, get(alerts::list))
    .add("/api/alerts/{id}/ack", CHANGE, post(alerts::acknowledge))
    .add("/api/alerts/{id}/clear", CHANGE, post(alerts::clear))
    .add("/api/dashboard/stats", READ, get(dashboard::stats))
    .add("/api/ws", READ, get(live::upgrade))
    .add("/api/openapi.json", open, get(openapi::serve))
    .add("/health/devices", READ, get(health::devices))
    .add("/health/services", READ, get(health::services))
    .add("/health/system", READ, get(health::system))
    .add("/health/live", open, get(health::live))
    .add("/health/ready", open, get(health::ready))
    .add("/metrics", READ, get(metrics::serve))
    .add("/", open, get(assets::index))
    .add("/app.js", open, get(assets::script))
    .add("/style.css", open, get(assets::style))
}

/// The whole HTTP surface.
pub fn router(state: ApiState) -> Router {
    let Routes { router, access } = routes();
    let gate = guard::Gate {
        state: state.clone(),
        access: Arc::new(access),
    };
    router
        .fallback(routes::assets::not_found)
        .layer(axum::middleware::from_fn_with_state(
            gate,
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
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    serve_app(listener, router(state), shutdown).await
}

/// The API's own ops surface (`sensorfleet api --metrics-addr`): `/metrics` and the
/// probes, open to the kubelet and Prometheus without the API's credentials.
pub fn ops_router(state: ApiState) -> Router {
    use routes::{health, metrics};
    Router::new()
        .route("/metrics", get(metrics::serve))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(state)
}

/// Serves `app` until `shutdown` turns true, then finishes the requests in flight.
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    telemetry::register_all();
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(ServeError::Serve)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::OpenApi;

    use super::*;

    #[test]
    fn every_route_declares_its_access_and_only_the_page_docs_and_probes_are_public() {
        let table = routes().access;
        let public: BTreeSet<&str> = table
            .iter()
            .filter(|(_, a)| **a == Access::Public)
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(
            public,
            BTreeSet::from([
                "/",
                "/app.js",
                "/style.css",
                "/api/openapi.json",
                "/health/live",
                "/health/ready"
            ])
        );
        let changing: BTreeSet<&str> = table
            .iter()
            .filter(|(_, a)| **a == Access::Needs(Role::Operator))
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(
            changing,
            BTreeSet::from(["/api/alerts/{id}/ack", "/api/alerts/{id}/clear"])
        );
        // The document describes every route but the page's files, and no other.
        let documented: BTreeSet<String> =
            openapi::ApiDoc::openapi().paths.paths.into_keys().collect();
        let routed: BTreeSet<String> = table
            .keys()
            .filter(|p| !["/", "/app.js", "/style.css", "/api/openapi.json"].contains(p))
            .map(|p| p.to_string())
            .collect();
        assert_eq!(documented, routed);
    }
}
