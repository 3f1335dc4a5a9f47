//! The roles that run as their own processes against shared backends (DESIGN §1):
//! `bridge`, `processor`, `api` and `rollup`. Each picks its backends by URL, serves
//! `/metrics` and the probes, waits (bounded) for its backends at start, and stops
//! cleanly in data-flow order on Ctrl-C or SIGTERM.

pub mod api;
pub mod bridge;
pub mod processor;
pub mod rollup;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use sensorfleet_api::StatusProbe;
use sensorfleet_backends::connect::{BackendUrls, ConnectError, Connector};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// What every role shares: its backends and where its metrics and probes listen.
#[derive(Debug, Clone)]
pub struct RoleConfig {
    /// The backends, by URL.
    pub urls: BackendUrls,
    /// `/metrics` and `/health/*` (the API role serves them on its own address).
    pub ops_addr: SocketAddr,
    /// How long to wait for a backend at start before giving up.
    pub connect_timeout: Duration,
}

/// Opens one backend, retrying while it is unreachable (it may still be starting)
/// until `limit`; an error that retrying cannot fix returns at once.
pub async fn open<T, F, Fut>(what: &str, limit: Duration, open: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, ConnectError>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut backoff = Duration::from_millis(200);
    loop {
        match open().await {
            Ok(value) => return Ok(value),
            Err(ConnectError::Backend(e))
                if e.is_transient() && tokio::time::Instant::now() + backoff < deadline =>
            {
                warn!(backend = what, error = %e, retry_in_ms = backoff.as_millis() as u64, "backend not reachable yet; waiting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot open the {what} (waited up to {} s); check the URL and that the service runs",
                        limit.as_secs()
                    )
                });
            }
        }
    }
}

/// A connector for `config`'s URLs, after checking they all parse.
pub fn connector(config: &RoleConfig) -> anyhow::Result<Connector> {
    let connector = Connector::new(config.urls.clone());
    connector.validate()?;
    Ok(connector)
}

/// Binds and serves the ops surface in the background.
pub async fn serve_ops(
    addr: SocketAddr,
    probe: StatusProbe,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = sensorfleet_api::bind(addr).await.with_context(|| {
        format!("cannot serve /metrics and /health on {addr}; pass --metrics-addr with a free port")
    })?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = sensorfleet_api::ops::serve(listener, probe, stop).await {
            warn!(error = %e, "the metrics and health server stopped");
        }
    });
    info!(metrics = %format!("http://{bound}/metrics"), ready = %format!("http://{bound}/health/ready"), "ops endpoints up");
    Ok((bound, task))
}

/// Waits for `worker` to end or `stop` to resolve; on stop, asks the worker to finish
/// (`stopping`) and waits for it. Returns the worker's result.
pub async fn supervise(
    what: &str,
    mut worker: JoinHandle<anyhow::Result<()>>,
    stopping: &watch::Sender<bool>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let result = tokio::select! {
        _ = stop => {
            info!("stopping the {what}: finishing the batch in hand");
            let _ = stopping.send(true);
            (&mut worker).await
        }
        result = &mut worker => {
            let _ = stopping.send(true);
            result
        }
    };
    result.map_err(|e| anyhow::anyhow!("the {what} task failed: {e}"))?
}
