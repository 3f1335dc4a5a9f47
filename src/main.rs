//! `sensorfleet <role>`: one binary, the role chosen by subcommand. This file only parses
//! arguments, sets up logging and dispatches to [`sensorfleet::roles`], where each role
//! keeps its flags beside its code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use sensorfleet::roles::{
    api, apply, backtest, bench, bridge, crdgen, credentials, detect, operator, processor, replay,
    rollup, simulate, up,
};
use sensorfleet_backends::signal::shutdown;

/// SensorFleet: IoT sensor data — MQTT ingestion, stream processing, alerts, history and
/// a live dashboard — in one binary.
///
/// Start here: `sensorfleet up` runs the whole platform on this machine with a simulated
/// fleet, then open http://127.0.0.1:8080/.
#[derive(Parser)]
#[command(name = "sensorfleet", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    logging: LogArgs,
    #[command(subcommand)]
    role: Role,
}

// How every role logs (global flags).
#[derive(clap::Args)]
struct LogArgs {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SENSORFLEET_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `info,sensorfleet_operator=debug` (tracing's EnvFilter
    /// syntax). Default: info, with the MQTT library and sqlx at warn.
    #[arg(long, global = true, env = "SENSORFLEET_LOG")]
    log: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Role {
    /// Run the whole platform in one process: MQTT broker, bridge, processor, store, API,
    /// dashboard and a simulated fleet. Ctrl-C stops it cleanly; history is kept in --data-dir.
    Up(up::UpArgs),
    /// Publish readings from a fleet of simulated devices to an MQTT broker.
    Simulate(simulate::SimulateArgs),
    /// Replay a `timestamp,value` CSV through the processor's anomaly detector and print a
    /// score per row; with --rule, also when an AlertRule would have fired; with --labels,
    /// score the detector against labelled anomaly windows (NAB rules).
    Detect(detect::DetectArgs),
    /// Replay stored history through the processor's engine with AlertRules from manifests
    /// and print when they would have fired and resolved, with counts per rule.
    /// Example: sensorfleet backtest -f rule.yaml -f fleet.yaml --fleet lab-temps --since 7d
    Backtest(backtest::BacktestArgs),
    /// Measure ingest rate, publish→visible latency and memory of an embedded platform.
    Bench(bench::BenchArgs),
    /// Print (or --rotate) the MQTT password of declared devices for `up --device-auth`,
    /// or with --fleet-secret-file the one the operator provisioned: username = device id.
    /// Example: sensorfleet credentials --device lab-temp-1
    Credentials(credentials::CredentialsArgs),
    /// Production role: subscribe to the MQTT broker (shared subscription, QoS 1) and
    /// deliver readings to Kafka, InfluxDB and Redis, acknowledging only what is stored.
    /// Example: sensorfleet bridge --mqtt-url mqtt://127.0.0.1:1883 --kafka-url kafka://127.0.0.1:9092
    /// --influx-url 'influx://127.0.0.1:8086?db=sensors' --redis-url redis://127.0.0.1:6379
    Bridge(bridge::BridgeArgs),
    /// Production role: consume readings from Kafka in a consumer group; windows,
    /// anomalies, health and alerts into Redis, PostgreSQL and the alerts topic.
    Processor(processor::ProcessorArgs),
    /// Reprocess the readings still in Kafka from a time on into fresh processor state,
    /// after a detector upgrade or a fixed rule; with the processors stopped. Resolved
    /// alerts do not fire again. Example: sensorfleet replay --from 2h --kafka-url kafka://…
    /// --postgres-url postgres://…
    Replay(replay::ReplayArgs),
    /// Production role: the REST API, WebSocket feed, dashboard, /metrics and /health
    /// over the shared stores (InfluxDB, PostgreSQL, Redis).
    Api(api::ApiArgs),
    /// Mirror SensorFleet and AlertRule manifests into the registry (what the operator
    /// does in Kubernetes), so separately running processors and the API see them.
    /// Example: sensorfleet apply -f examples/ --postgres-url postgres://…
    Apply(apply::ApplyArgs),
    /// Compute hourly min/mean/max rollups for long-range history in the time-series
    /// store, once (for a CronJob) or --every interval.
    Rollup(rollup::RollupArgs),
    /// Print the CustomResourceDefinitions (Pipeline, SensorFleet, AlertRule) as YAML, or
    /// write crds/<plural>.yaml with --out.
    Crdgen(crdgen::CrdgenArgs),
    /// Run the Kubernetes operator: reconcile Pipelines, SensorFleets and AlertRules.
    Operator(operator::OperatorArgs),
}

fn init_logging(args: &LogArgs) {
    let filter = args
        .log
        .as_deref()
        .and_then(|filter| tracing_subscriber::EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info,rumqttc=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(role: Role) -> anyhow::Result<()> {
    // Every role that serves /metrics shows its own CPU and memory there.
    sensorfleet::process::register();
    match role {
        Role::Up(args) => up::start(args).await?.run_until(shutdown()).await,
        Role::Simulate(args) => simulate::run(args, shutdown()).await,
        Role::Detect(args) => detect::run(args),
        Role::Backtest(args) => backtest::run(args).await,
        Role::Bench(args) => bench::run(args).await,
        Role::Credentials(args) => credentials::run(args),
        Role::Bridge(args) => bridge::run(args, shutdown()).await,
        Role::Processor(args) => processor::run(args, shutdown()).await,
        Role::Api(args) => api::run(args, shutdown()).await,
        Role::Replay(args) => replay::run(args).await,
        Role::Apply(args) => apply::run(args).await,
        Role::Rollup(args) => rollup::run(args, shutdown()).await,
        Role::Crdgen(args) => crdgen::run(args),
        Role::Operator(args) => operator::run(args).await,
    }
}

/// `--help` names the environment variable of every flag but never shows what it holds
/// (URLs carry passwords, tokens are secrets): the same for every role, so a new flag
/// cannot forget it.
fn hide_env_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| arg.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

fn main() -> ExitCode {
    let command = hide_env_values(Cli::command());
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    init_logging(&cli.logging);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.role)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
