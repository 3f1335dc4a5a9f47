//! `sensorfleet processor`: a consumer in the event log's group → windows, anomalies,
//! health, alerts → registry, cache, alerts topic. Offsets are committed only after the
//! sinks flushed. Devices and rules come from the registry (mirrored there by `up`,
//! `apply` or the operator) and are re-read every `--refresh`; acknowledge and clear
//! arrive on the event log's commands topic.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sensorfleet_api::{ComponentStatus, StatusProbe};
use sensorfleet_workers::clock::now_ms;
use sensorfleet_workers::processor::{self, EngineConfig, ProcessorConfig, ProcessorSinks};
use sensorfleet_workers::telemetry;
use tokio::sync::watch;
use tracing::info;

use super::{BackendArgs, OpsArgs, Worker, parse_duration, serve};

// The flags of `sensorfleet processor` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
#[command(mut_arg("metrics_addr", OpsArgs::default_at("127.0.0.1:9102")))]
pub struct ProcessorArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
    /// Consumer group every processor replica joins; partitions are shared among them.
    #[arg(
        long,
        default_value = "sensorfleet-processor",
        env = "SENSORFLEET_PROCESSOR_GROUP"
    )]
    pub group: String,
    /// How often devices and alert rules are re-read from the registry.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "SENSORFLEET_REFRESH")]
    pub refresh: Duration,
    /// Sliding window of the per-device statistics (min/max/mean, rate of change), e.g.
    /// `5m`; a Pipeline's `processor.window`.
    #[arg(long, default_value = "5m", value_parser = parse_window, env = "SENSORFLEET_WINDOW")]
    pub window: Duration,
    /// Readings in the moving average; a Pipeline's `processor.movingAverage`.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=10_000), env = "SENSORFLEET_MOVING_AVERAGE")]
    pub moving_average: u16,
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// A window: a duration of at least one second (the window keeps ten buckets).
fn parse_window(text: &str) -> Result<Duration, String> {
    let window = parse_duration(text)?;
    if window < Duration::from_secs(1) {
        return Err(format!("{text}: a window is at least 1s"));
    }
    Ok(window)
}

/// The `processor` entry of `/health/services`: whether the loop ticked lately.
pub fn status(backend: &str) -> ComponentStatus {
    let last_tick = telemetry::PROCESSOR_LAST_TICK.get();
    ComponentStatus {
        name: "processor".to_owned(),
        backend: backend.to_owned(),
        up: now_ms() / 1000 - last_tick <= 10,
        detail: "the processing loop has not ticked for over 10 s".to_owned(),
    }
}

/// Starts the processor; it drains, flushes and commits once `shutdown` turns true.
pub fn spawn(
    args: &ProcessorArgs,
    sinks: ProcessorSinks,
    shutdown: watch::Receiver<bool>,
) -> Worker {
    let config = ProcessorConfig {
        group: args.group.clone(),
        refresh: args.refresh,
        engine: EngineConfig {
            window_ms: args.window.as_millis().try_into().unwrap_or(i64::MAX),
            moving_average: args.moving_average.into(),
            ..EngineConfig::default()
        },
        ..ProcessorConfig::default()
    };
    info!(
        event_log = sinks.log.name(),
        registry = sinks.registry.name(),
        cache = sinks.cache.name(),
        group = %config.group,
        "processor starting"
    );
    tokio::spawn(async move {
        processor::run(config, sinks, shutdown)
            .await
            .context("the processor stopped")
    })
}

/// Runs the processor until `stop` resolves or it fails.
pub async fn run(args: ProcessorArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    telemetry::register_all();
    let backends = &args.backends;
    let connector = backends.connector("sensorfleet processor")?;
    let sinks = ProcessorSinks {
        log: backends
            .open("event log", || connector.event_log(0))
            .await?,
        registry: backends.open("registry", || connector.registry(4)).await?,
        cache: backends.open("cache", || connector.cache()).await?,
    };
    let probe: StatusProbe = Arc::new(|| vec![status("loop")]);
    serve(
        "processor",
        (args.ops.metrics_addr, probe),
        |stopped| spawn(&args, sinks, stopped),
        stop,
    )
    .await
}
