//! `sensorfleet api`: REST, WebSocket, dashboard, `/metrics` and `/health/*` over the
//! shared stores. Several replicas can run behind one Service: they keep no state.
//! Acknowledge and clear travel to the processors over the event log.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sensorfleet_api::remote::RemoteControl;
use sensorfleet_api::{ApiState, GuardConfig};
use tokio::sync::watch;
use tracing::info;

use super::{RoleConfig, connector, open, supervise};

/// Settings of `sensorfleet api`.
#[derive(Debug, Clone)]
pub struct ApiRole {
    /// Backends (the ops address is unused: the API serves its own probes).
    pub role: RoleConfig,
    /// Where the API, dashboard and probes listen.
    pub http_addr: SocketAddr,
    /// Bearer token for `POST` endpoints.
    pub token: Option<String>,
    /// Requests per second per client IP; 0 is unlimited.
    pub rate_limit: f64,
}

/// Serves until `stop` resolves.
pub async fn run(config: ApiRole, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let connector = connector(&config.role)?;
    let limit = config.role.connect_timeout;
    let log = open("event log", limit, || connector.event_log(0)).await?;
    let series = open("time series", limit, || connector.time_series()).await?;
    let registry = open("registry", limit, || connector.registry(8)).await?;
    let cache = open("cache", limit, || connector.cache()).await?;
    let listener = sensorfleet_api::bind(config.http_addr).await?;
    let bound = listener.local_addr()?;
    info!(
        api = %format!("http://{bound}/"),
        time_series = series.name(),
        registry = registry.name(),
        cache = cache.name(),
        "API serving"
    );
    let mut state = ApiState::new(
        series,
        registry.clone(),
        cache,
        GuardConfig {
            token: config.token,
            rate_per_second: config.rate_limit,
        },
    );
    state.control = Some(Arc::new(RemoteControl {
        log,
        registry,
        wait: Duration::from_secs(5),
    }));
    let (stopping, stopped) = watch::channel(false);
    let worker = tokio::spawn(async move {
        sensorfleet_api::serve(listener, state, stopped)
            .await
            .context("the API stopped")
    });
    supervise("API", worker, &stopping, stop).await
}
