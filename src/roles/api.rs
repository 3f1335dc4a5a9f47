//! `sensorfleet api`: REST, WebSocket, dashboard, `/metrics` and `/health/*` over the
//! shared stores. Several replicas can run behind one Service: they keep no state.
//! Acknowledge and clear travel to the processors over the event log's commands topic.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sensorfleet_api::remote::RemoteControl;
use sensorfleet_api::{ApiState, GuardConfig, StatusProbe};
use sensorfleet_backends::{Cache, EventLog, Registry, TimeSeries};
use tokio::sync::watch;
use tracing::info;

use super::{BackendArgs, Worker, supervise};

// The flags of `sensorfleet api` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
    /// Address of the API, dashboard, /metrics and /health.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SENSORFLEET_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// Require `Authorization: Bearer <token>` on POST endpoints.
    #[arg(long, env = "SENSORFLEET_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Requests per second per client IP (0: unlimited).
    #[arg(long, default_value_t = 0.0, env = "SENSORFLEET_RATE_LIMIT")]
    pub rate_limit: f64,
}

/// What the API reads and where it sends commands.
#[derive(Clone)]
pub struct ApiBackends {
    /// Where acknowledge and clear go (the commands topic).
    pub log: Arc<dyn EventLog>,
    /// History.
    pub series: Arc<dyn TimeSeries>,
    /// Devices, rules, alert history.
    pub registry: Arc<dyn Registry>,
    /// Latest values, metrics, alerts, live feed.
    pub cache: Arc<dyn Cache>,
}

/// Binds `--http-addr` and starts serving; returns the bound address (port 0 picks one).
/// `probe` adds entries to `/health/services`.
pub async fn spawn(
    args: &ApiArgs,
    backends: ApiBackends,
    probe: Option<StatusProbe>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, Worker)> {
    let listener = sensorfleet_api::bind(args.http_addr).await?;
    let bound = listener.local_addr()?;
    info!(
        api = %format!("http://{bound}/"),
        time_series = backends.series.name(),
        registry = backends.registry.name(),
        cache = backends.cache.name(),
        "API serving"
    );
    let mut state = ApiState::new(
        backends.series,
        backends.registry.clone(),
        backends.cache,
        GuardConfig {
            token: args.api_token.clone(),
            rate_per_second: args.rate_limit,
        },
    );
    state.control = Some(Arc::new(RemoteControl {
        log: backends.log,
        registry: backends.registry,
        wait: Duration::from_secs(5),
    }));
    if let Some(probe) = probe {
        state.probe = probe;
    }
    let worker = tokio::spawn(async move {
        sensorfleet_api::serve(listener, state, shutdown)
            .await
            .context("the API stopped")
    });
    Ok((bound, worker))
}

/// Serves until `stop` resolves.
pub async fn run(args: ApiArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let b = &args.backends;
    let connector = b.connector("sensorfleet api")?;
    let backends = ApiBackends {
        log: b.open("event log", || connector.event_log(0)).await?,
        series: b.open("time series", || connector.time_series()).await?,
        registry: b.open("registry", || connector.registry(8)).await?,
        cache: b.open("cache", || connector.cache()).await?,
    };
    let (stopping, stopped) = watch::channel(false);
    let (_, worker) = spawn(&args, backends, None, stopped).await?;
    supervise("API", worker, &stopping, stop).await
}
