//! `sensorfleet <role>`: one binary, the role chosen by subcommand. This file only parses
//! arguments, sets up logging and calls the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sensorfleet::bench::{self, BenchConfig};
use sensorfleet::detect;
use sensorfleet::up::{self, UpConfig};
use sensorfleet_model::analytics::DetectorConfig;
use sensorfleet_model::duration::parse_duration_ms;
use sensorfleet_operator::crdgen;
use sensorfleet_operator::run::{self as operator, OperatorConfig};
use sensorfleet_workers::mqtt::MqttEndpoint;
use sensorfleet_workers::simulator::{self, SimDevice, SimulatorConfig, SimulatorStats};
use tokio::sync::watch;

/// SensorFleet: IoT sensor data — MQTT ingestion, stream processing, alerts, history and
/// a live dashboard — in one binary.
///
/// Start here: `sensorfleet up` runs the whole platform on this machine with a simulated
/// fleet, then open http://127.0.0.1:8080/.
#[derive(Parser)]
#[command(name = "sensorfleet", version, propagate_version = true)]
struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SENSORFLEET_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    role: Role,
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
    Up(UpArgs),
    /// Publish readings from a fleet of simulated devices to an MQTT broker.
    Simulate(SimulateArgs),
    /// Replay a `timestamp,value` CSV through the processor's anomaly detector and print a
    /// score per row; with --rule, also when an AlertRule would have fired.
    Detect(DetectArgs),
    /// Measure ingest rate, publish→visible latency and memory of an embedded platform.
    Bench(BenchArgs),
    /// Print the CustomResourceDefinitions (Pipeline, SensorFleet, AlertRule) as YAML, or
    /// write crds/<plural>.yaml with --out.
    Crdgen(CrdgenArgs),
    /// Run the Kubernetes operator: reconcile Pipelines, SensorFleets and AlertRules.
    Operator(OperatorArgs),
}

#[derive(clap::Args)]
struct CrdgenArgs {
    /// Write one file per CRD into this folder instead of printing them.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SENSORFLEET_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace of the leader-election Lease: the operator's own.
    #[arg(long, default_value = "default", env = "POD_NAMESPACE")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "sensorfleet-operator")]
    lease_name: String,
    /// This replica's identity in the Lease and in Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// A leader that has not renewed its Lease for this long is replaced.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How often an unchanged object is checked again to repair drift.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    resync: Duration,
}

#[derive(clap::Args)]
struct UpArgs {
    /// SensorFleet/AlertRule manifest files or folders (repeatable). Default: the built-in examples/.
    #[arg(
        short = 'f',
        long = "file",
        env = "SENSORFLEET_MANIFESTS",
        value_delimiter = ','
    )]
    files: Vec<PathBuf>,
    /// Where history and the registry are kept (SQLite).
    #[arg(long, default_value = ".sensorfleet", env = "SENSORFLEET_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the API, dashboard and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SENSORFLEET_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Address the embedded MQTT broker listens on.
    #[arg(long, default_value = "127.0.0.1:1883", env = "SENSORFLEET_MQTT_ADDR")]
    mqtt_addr: SocketAddr,
    /// Use this external broker (mqtt://[user:pass@]host:port) instead of the embedded one.
    #[arg(long, env = "SENSORFLEET_MQTT_URL", value_parser = MqttEndpoint::parse)]
    mqtt_url: Option<MqttEndpoint>,
    /// Do not simulate the declared devices (real devices publish instead).
    #[arg(long)]
    no_simulator: bool,
    /// Publish interval for every simulated device, overriding the fleets' (e.g. 500ms).
    #[arg(long, value_parser = parse_duration)]
    simulate_interval: Option<Duration>,
    /// Chance per simulated reading of an injected anomaly.
    #[arg(long, default_value_t = 0.0005)]
    anomaly_rate: f64,
    /// Require `Authorization: Bearer <token>` on POST endpoints (acknowledge, clear).
    #[arg(long, env = "SENSORFLEET_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Requests per second per client IP (0: unlimited).
    #[arg(long, default_value_t = 0.0, env = "SENSORFLEET_RATE_LIMIT")]
    rate_limit: f64,
    /// How long raw readings are kept; hourly rollups stay.
    #[arg(long, default_value = "7d", value_parser = parse_duration, env = "SENSORFLEET_RETENTION")]
    retention: Duration,
    /// Largest accepted payload in bytes; larger ones are dead-lettered.
    #[arg(long, default_value_t = 16 * 1024, env = "SENSORFLEET_MAX_PAYLOAD_BYTES")]
    max_payload_bytes: usize,
    /// MQTT connections the bridge spreads a shared subscription over. More connections
    /// mean bigger batches (a broker allows each connection a fixed window of messages
    /// not yet acknowledged, and the bridge acknowledges only stored batches), but the
    /// broker deals messages round-robin, so one device's readings may arrive out of order
    /// by a few milliseconds, and a late reading does not move alert state. 1 keeps strict
    /// per-device order.
    #[arg(long, default_value_t = 8, env = "SENSORFLEET_BRIDGE_CONNECTIONS")]
    bridge_connections: usize,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Broker to publish to.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", env = "SENSORFLEET_MQTT_URL", value_parser = MqttEndpoint::parse)]
    mqtt_url: MqttEndpoint,
    /// SensorFleet manifests whose devices to play. Default: the built-in examples/.
    #[arg(short = 'f', long = "file", value_delimiter = ',')]
    files: Vec<PathBuf>,
    /// Play this many generated devices of --device-type instead of manifests.
    #[arg(long)]
    devices: Option<usize>,
    /// Device type of the generated devices.
    #[arg(long, default_value = "temperature_sensor")]
    device_type: String,
    /// Publish interval for every device (e.g. 1s), overriding the fleets'.
    #[arg(long, value_parser = parse_duration)]
    interval: Option<Duration>,
    /// Total readings per second instead of intervals; 0 = as fast as the broker takes them.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many readings.
    #[arg(long)]
    limit: Option<u64>,
    /// Chance per reading of an injected anomaly.
    #[arg(long, default_value_t = 0.0005)]
    anomaly_rate: f64,
    /// Chance per reading that a device goes silent for a few intervals.
    #[arg(long, default_value_t = 0.0002)]
    dropout_rate: f64,
    /// MQTT connections to spread the fleet over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Random seed: the same seed plays the same fleet.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(clap::Args)]
struct DetectArgs {
    /// The series: a CSV with a `timestamp,value` header (NAB format).
    #[arg(long)]
    csv: PathBuf,
    /// An AlertRule manifest to try on the series.
    #[arg(long)]
    rule: Option<PathBuf>,
    /// |z| at or above which a value is an anomaly.
    #[arg(long)]
    z_threshold: Option<f64>,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Seconds of full-speed ingest.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// MQTT connections of the load generator.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Background rate (readings/s) during the latency phase.
    #[arg(long, default_value_t = 10_000.0)]
    latency_rate: f64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// MQTT connections of the bridge under test (see `up --help`).
    #[arg(long, default_value_t = 8)]
    bridge_connections: usize,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_ms(text).map(|ms| Duration::from_millis(ms as u64))
}

fn init_logging(format: LogFormat) {
    // rumqttd logs every connection at info; keep it to warnings unless asked.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SENSORFLEET_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,rumqttd=warn,rumqttc=warn,sqlx=warn")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn terminate() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await;
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.role {
        Role::Up(args) => {
            let config = UpConfig {
                data_dir: args.data_dir,
                http_addr: args.http_addr,
                mqtt_addr: args.mqtt_addr,
                mqtt_url: args.mqtt_url,
                manifests: args.files,
                simulate: !args.no_simulator,
                simulate_interval: args.simulate_interval,
                anomaly_rate: args.anomaly_rate,
                api_token: args.api_token,
                rate_limit: args.rate_limit,
                retention: args.retention,
                max_payload_bytes: args.max_payload_bytes,
                bridge_connections: args.bridge_connections,
                ..UpConfig::new()
            };
            let platform = up::start(config).await?;
            platform
                .run_until(async {
                    tokio::select! {
                        _ = ctrl_c() => {}
                        _ = terminate() => {}
                    }
                })
                .await
        }
        Role::Simulate(args) => {
            let devices: Vec<SimDevice> = match args.devices {
                Some(n) => (1..=n)
                    .map(|i| SimDevice {
                        device_id: format!("sim-{i:06}"),
                        device_type: args.device_type.clone(),
                        location: Some("Simulated".to_owned()),
                        interval_ms: 10_000,
                    })
                    .collect(),
                None => sensorfleet::manifests::load(&args.files)?
                    .devices()
                    .into_iter()
                    .map(|d| SimDevice {
                        device_id: d.device_id,
                        device_type: d.device_type,
                        location: d.location,
                        interval_ms: d.publish_interval_ms,
                    })
                    .collect(),
            };
            let mut config = SimulatorConfig::new(args.mqtt_url, devices);
            config.interval_ms = args.interval.map(|d| d.as_millis() as i64);
            config.rate = args.rate;
            config.limit = args.limit;
            config.anomaly_rate = args.anomaly_rate;
            config.dropout_rate = args.dropout_rate;
            config.connections = args.connections;
            config.seed = args.seed;
            let (stop, stopped) = watch::channel(false);
            let stats = std::sync::Arc::new(SimulatorStats::default());
            let task = tokio::spawn(simulator::run(config, stats, stopped));
            tokio::select! {
                _ = ctrl_c() => { let _ = stop.send(true); }
                _ = terminate() => { let _ = stop.send(true); }
                _ = async { while !task.is_finished() { tokio::time::sleep(Duration::from_millis(100)).await } } => {}
            }
            let _ = task.await;
            Ok(())
        }
        Role::Detect(args) => {
            let points = detect::load_csv(&args.csv)?;
            let rule = args.rule.as_deref().map(detect::load_rule).transpose()?;
            let mut detector = DetectorConfig::default();
            if let Some(z) = args.z_threshold {
                detector.z_threshold = z;
            }
            let stdout = std::io::stdout();
            let summary = detect::replay(&points, &detector, rule.as_ref(), &mut stdout.lock())?;
            eprintln!(
                "{} rows, {} anomalies{}",
                summary.rows,
                summary.anomalies,
                if rule.is_some() {
                    format!(
                        ", rule fired {} times and resolved {} times",
                        summary.fired, summary.resolved
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Role::Bench(args) => {
            let report = bench::run(BenchConfig {
                devices: args.devices,
                seconds: args.seconds,
                connections: args.connections,
                latency_rate: args.latency_rate,
                latency_seconds: args.latency_seconds,
                bridge_connections: args.bridge_connections,
            })
            .await?;
            bench::print(&report);
            Ok(())
        }
        Role::Crdgen(args) => {
            match args.out {
                Some(dir) => {
                    for path in crdgen::write_dir(&dir)? {
                        eprintln!("wrote {}", path.display());
                    }
                }
                None => print!("{}", crdgen::all_yaml()?),
            }
            Ok(())
        }
        Role::Operator(args) => {
            let identity = args
                .identity
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| format!("sensorfleet-operator-{}", std::process::id()));
            operator::run(OperatorConfig {
                namespace: args.namespace,
                lease_namespace: args.lease_namespace,
                lease_name: args.lease_name,
                identity,
                lease_duration: args.lease_duration,
                resync: args.resync,
            })
            .await?;
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
