//! Every subcommand of the `sensorfleet` binary, one module each: its clap `Args` beside
//! the code that runs it. `main.rs` only parses and dispatches.
//!
//! The workers' roles (`bridge`, `processor`, `api`, `rollup`, `simulate`) each have a
//! `spawn(args, backends, shutdown)` that starts the worker on backends already open, and
//! a `run(args, stop)` for its own process: open the backends by URL (waiting, bounded,
//! for them at start), serve `/metrics` and the probes, spawn, and stop cleanly in
//! data-flow order on Ctrl-C or SIGTERM. `up` opens embedded backends and calls the same
//! spawns (DESIGN §1).

pub mod api;
pub mod apply;
pub mod backtest;
pub mod bench;
pub mod bridge;
pub mod crdgen;
pub mod credentials;
pub mod detect;
pub mod operator;
pub mod processor;
pub mod replay;
pub mod rollup;
pub mod simulate;
pub mod up;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sensorfleet_api::StatusProbe;
use sensorfleet_backends::backoff::Backoff;
use sensorfleet_backends::connect::{BackendUrls, ConnectError, Connector};
use sensorfleet_model::duration::parse_duration_ms;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A worker started by a role's `spawn`: it ends with `Ok` once told to stop.
pub type Worker = JoinHandle<anyhow::Result<()>>;

/// Where each backend is: `embedded` or a URL (DESIGN §2).
#[derive(clap::Args)]
pub struct UrlArgs {
    /// Event log: `embedded` or kafka://host:9092[,host2:9092].
    #[arg(
        long,
        default_value = "embedded",
        env = "SENSORFLEET_KAFKA_URL",
        hide_env_values = true
    )]
    pub kafka_url: String,
    /// Time series: `embedded` (SQLite in --data-dir), influx://host:8086?db=sensors, or
    /// influxs://… over TLS (verified against the system's CAs, or the bundle
    /// SSL_CERT_FILE names).
    #[arg(
        long,
        default_value = "embedded",
        env = "SENSORFLEET_INFLUX_URL",
        hide_env_values = true
    )]
    pub influx_url: String,
    /// The time series' token, sent as `Authorization: Token <token>` (InfluxDB 1.8+:
    /// `user:password`; 2.x: an API token).
    #[arg(long, env = "SENSORFLEET_INFLUX_TOKEN", hide_env_values = true)]
    pub influx_token: Option<String>,
    /// Latest values and alert feed: `embedded` or redis://[:password@]host:6379.
    #[arg(
        long,
        default_value = "embedded",
        env = "SENSORFLEET_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Devices, rules and alert history: `embedded` (SQLite in --data-dir) or
    /// postgres://user:password@host:5432/database.
    #[arg(
        long,
        default_value = "embedded",
        env = "SENSORFLEET_POSTGRES_URL",
        hide_env_values = true
    )]
    pub postgres_url: String,
}

impl UrlArgs {
    /// A connector for these URLs, after checking they all parse. `single_process`:
    /// whether in-process backends are acceptable (only `up`).
    pub fn connector(
        &self,
        data_dir: PathBuf,
        role: &'static str,
        single_process: bool,
    ) -> anyhow::Result<Connector> {
        let connector = Connector::new(BackendUrls {
            event_log: self.kafka_url.clone(),
            time_series: self.influx_url.clone(),
            cache: self.redis_url.clone(),
            registry: self.postgres_url.clone(),
            influx_token: self.influx_token.clone(),
            data_dir,
            role,
            single_process,
        });
        connector.validate()?;
        Ok(connector)
    }
}

// The ops surface of a long-running role in its own process (flattened into its flags).
// Each role sets its own default port with `#[command(mut_arg("metrics_addr", ...))]`:
// a default in the derive itself would be one for every role.
#[derive(clap::Args)]
pub struct OpsArgs {
    /// Address of /metrics, /health/live and /health/ready.
    #[arg(long, env = "SENSORFLEET_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
}

impl OpsArgs {
    /// A role's own default address, for its
    /// `#[command(mut_arg("metrics_addr", OpsArgs::default_at("127.0.0.1:9101")))]`:
    /// clap's derive makes the field required (it has no default of its own), so this
    /// sets the default and lifts that.
    pub fn default_at(addr: &'static str) -> impl FnOnce(clap::Arg) -> clap::Arg {
        move |arg| arg.default_value(addr).required(false)
    }
}

/// The backends of a role in its own process. The roles run as separate processes, so
/// they need a shared event log (Kafka) and cache (Redis); the time series and registry
/// may stay embedded (one SQLite file in --data-dir, shared by processes on one machine).
#[derive(clap::Args)]
pub struct BackendArgs {
    #[command(flatten)]
    pub urls: UrlArgs,
    /// Folder of the embedded SQLite file, when a backend is `embedded`.
    #[arg(long, default_value = ".sensorfleet", env = "SENSORFLEET_DATA_DIR")]
    pub data_dir: PathBuf,
    /// How long to wait for the backends at start (they may still be starting).
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "SENSORFLEET_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,
}

impl BackendArgs {
    /// A connector for `role`'s backends, after checking the URLs parse.
    pub fn connector(&self, role: &'static str) -> anyhow::Result<Connector> {
        self.urls.connector(self.data_dir.clone(), role, false)
    }

    /// Opens one backend, retrying while it is unreachable (it may still be starting)
    /// until the connect timeout; an error that retrying cannot fix returns at once.
    pub async fn open<T, F, Fut>(&self, what: &str, open: F) -> anyhow::Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ConnectError>>,
    {
        let limit = self.connect_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let error = match open().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let delay = backoff.next_delay();
            match error {
                ConnectError::Backend(e)
                    if e.is_transient() && tokio::time::Instant::now() + delay < deadline =>
                {
                    warn!(backend = what, error = %e, retry_in_ms = delay.as_millis() as u64, "backend not reachable yet; waiting");
                    tokio::time::sleep(delay).await;
                }
                e => {
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
}

/// A role in its own process: serves the ops surface on `ops` and [`supervise`]s the
/// worker `spawn` starts with a shutdown of its own.
pub async fn serve(
    what: &str,
    ops: (SocketAddr, StatusProbe),
    spawn: impl FnOnce(watch::Receiver<bool>) -> Worker,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stopping, stopped) = watch::channel(false);
    let ops = serve_ops(ops.0, ops.1, stopped.clone()).await?;
    let result = supervise(what, spawn(stopped), &stopping, stop).await;
    let _ = ops.await;
    result
}

/// Waits for `worker` to end or `stop` to resolve; on stop, asks the worker to finish
/// the batch in hand (`stopping`) and waits for it. Returns the worker's result.
pub async fn supervise(
    what: &str,
    mut worker: Worker,
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

/// Binds and serves the ops surface in the background.
async fn serve_ops(
    addr: SocketAddr,
    probe: StatusProbe,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
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
    Ok(task)
}

/// A role's arguments with every flag at its default, environment variables ignored:
/// what `up` and `bench` start from before setting their own.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|a| a.env(None::<&str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .unwrap_or_else(|e| unreachable!("every flag of a spawned role has a default: {e}"));
    T::from_arg_matches(&matches).unwrap_or_else(|e| unreachable!("defaults parse: {e}"))
}

/// A duration flag: `500ms`, `10s`, `5m`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_ms(text).map(|ms| Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spawned_role_starts_from_its_flag_defaults() {
        let bridge: bridge::BridgeArgs = defaults();
        assert_eq!(
            bridge.ops.metrics_addr,
            SocketAddr::from(([127, 0, 0, 1], 9101))
        );
        assert_eq!((bridge.connections, bridge.batch_max), (4, 4000));
        assert_eq!(bridge.max_age, Duration::from_secs(7 * 86_400));
        let processor: processor::ProcessorArgs = defaults();
        assert_eq!(processor.ops.metrics_addr.port(), 9102);
        assert_eq!(processor.window, Duration::from_secs(300));
        let operator: operator::OperatorArgs = defaults();
        assert_eq!(operator.ops.metrics_addr.port(), 9103);
        let up: up::UpArgs = defaults();
        assert_eq!((up.bridge_connections, up.log_capacity), (8, 100_000));
        assert_eq!(up.backends.kafka_url, "embedded");
        let api: api::ApiArgs = defaults();
        assert_eq!(api.http_addr.port(), 8080);
        let rollup: rollup::RollupArgs = defaults();
        assert_eq!((rollup.hours, rollup.every), (2, None));
        let simulate: simulate::SimulateArgs = defaults();
        assert_eq!((simulate.connections, simulate.seed), (2, 42));
    }

    #[test]
    fn each_role_shows_its_own_metrics_port_in_its_help() {
        fn help<T: clap::Args>() -> String {
            T::augment_args(clap::Command::new("role"))
                .render_help()
                .to_string()
        }
        assert!(help::<bridge::BridgeArgs>().contains("[default: 127.0.0.1:9101]"));
        assert!(help::<processor::ProcessorArgs>().contains("[default: 127.0.0.1:9102]"));
        assert!(help::<operator::OperatorArgs>().contains("[default: 127.0.0.1:9103]"));
    }
}
