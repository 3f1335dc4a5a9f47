//! `sensorfleet <role>`: one binary, the role chosen by subcommand. This file only parses
//! arguments, sets up logging and calls the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sensorfleet::bench::{self, BenchConfig, StackTarget};
use sensorfleet::detect;
use sensorfleet::roles::api::ApiRole;
use sensorfleet::roles::bridge::BridgeRole;
use sensorfleet::roles::processor::ProcessorRole;
use sensorfleet::roles::rollup::RollupRole;
use sensorfleet::roles::{self, RoleConfig};
use sensorfleet::up::{self, UpBackends, UpConfig};
use sensorfleet_backends::connect::BackendUrls;
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
    /// Log filter, e.g. `info` or `info,sensorfleet_operator=debug` (tracing's EnvFilter
    /// syntax). Default: info, with the MQTT libraries and sqlx at warn.
    #[arg(long, global = true, env = "SENSORFLEET_LOG")]
    log: Option<String>,
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
    /// score per row; with --rule, also when an AlertRule would have fired; with --labels,
    /// score the detector against labelled anomaly windows (NAB rules).
    Detect(DetectArgs),
    /// Replay stored history through the processor's engine with AlertRules from manifests
    /// and print when they would have fired and resolved, with counts per rule.
    /// Example: sensorfleet backtest -f rule.yaml -f fleet.yaml --fleet lab-temps --since 7d
    Backtest(sensorfleet::backtest::BacktestArgs),
    /// Measure ingest rate, publish→visible latency and memory of an embedded platform.
    Bench(BenchArgs),
    /// Production role: subscribe to the MQTT broker (shared subscription, QoS 1) and
    /// deliver readings to Kafka, InfluxDB and Redis, acknowledging only what is stored.
    /// Example: sensorfleet bridge --mqtt-url mqtt://127.0.0.1:1883 --kafka-url kafka://127.0.0.1:9092
    /// --influx-url 'influx://127.0.0.1:8086?db=sensors' --redis-url redis://127.0.0.1:6379
    Bridge(BridgeArgs),
    /// Production role: consume readings from Kafka in a consumer group; windows,
    /// anomalies, health and alerts into Redis, PostgreSQL and the alerts topic.
    Processor(ProcessorArgs),
    /// Production role: the REST API, WebSocket feed, dashboard, /metrics and /health
    /// over the shared stores (InfluxDB, PostgreSQL, Redis).
    Api(ApiArgs),
    /// Mirror SensorFleet and AlertRule manifests into the registry (what the operator
    /// does in Kubernetes), so separately running processors and the API see them.
    /// Example: sensorfleet apply -f examples/ --postgres-url postgres://…
    Apply(ApplyArgs),
    /// Compute hourly min/mean/max rollups for long-range history in the time-series
    /// store, once (for a CronJob) or --every interval.
    Rollup(RollupArgs),
    /// Print the CustomResourceDefinitions (Pipeline, SensorFleet, AlertRule) as YAML, or
    /// write crds/<plural>.yaml with --out.
    Crdgen(CrdgenArgs),
    /// Run the Kubernetes operator: reconcile Pipelines, SensorFleets and AlertRules.
    Operator(OperatorArgs),
}

/// Where each backend is: `embedded` or a URL (DESIGN §2).
#[derive(clap::Args)]
struct UrlArgs {
    /// Event log: `embedded` or kafka://host:9092[,host2:9092].
    #[arg(long, default_value = "embedded", env = "SENSORFLEET_KAFKA_URL")]
    kafka_url: String,
    /// Time series: `embedded` (SQLite in --data-dir) or influx://host:8086?db=sensors.
    #[arg(long, default_value = "embedded", env = "SENSORFLEET_INFLUX_URL")]
    influx_url: String,
    /// Latest values and alert feed: `embedded` or redis://host:6379.
    #[arg(long, default_value = "embedded", env = "SENSORFLEET_REDIS_URL")]
    redis_url: String,
    /// Devices, rules and alert history: `embedded` (SQLite in --data-dir) or
    /// postgres://user:password@host:5432/database.
    #[arg(
        long,
        default_value = "embedded",
        env = "SENSORFLEET_POSTGRES_URL",
        hide_env_values = true
    )]
    postgres_url: String,
}

/// The backends of a production role. The roles run as separate processes, so they need
/// a shared event log (Kafka) and cache (Redis); the time series and registry may stay
/// embedded (one SQLite file in --data-dir, shared by processes on one machine).
#[derive(clap::Args)]
struct BackendArgs {
    #[command(flatten)]
    urls: UrlArgs,
    /// Folder of the embedded SQLite file, when a backend is `embedded`.
    #[arg(long, default_value = ".sensorfleet", env = "SENSORFLEET_DATA_DIR")]
    data_dir: PathBuf,
    /// How long to wait for the backends at start (they may still be starting).
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "SENSORFLEET_CONNECT_TIMEOUT")]
    connect_timeout: Duration,
}

impl BackendArgs {
    fn role(self, role: &'static str, ops_addr: SocketAddr) -> RoleConfig {
        RoleConfig {
            urls: BackendUrls {
                event_log: self.urls.kafka_url,
                time_series: self.urls.influx_url,
                cache: self.urls.redis_url,
                registry: self.urls.postgres_url,
                data_dir: self.data_dir,
                role,
                single_process: false,
            },
            ops_addr,
            connect_timeout: self.connect_timeout,
        }
    }
}

#[derive(clap::Args)]
struct BridgeArgs {
    #[command(flatten)]
    backends: BackendArgs,
    /// The broker devices publish to: mqtt://[user:pass@]host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", env = "SENSORFLEET_MQTT_URL", value_parser = MqttEndpoint::parse)]
    mqtt_url: MqttEndpoint,
    /// MQTT client id (connections add -0, -1, …). Keep it stable across restarts of
    /// one replica and different between replicas: the broker keeps a session's
    /// unacknowledged messages for the same id.
    #[arg(
        long,
        default_value = "sensorfleet-bridge",
        env = "SENSORFLEET_BRIDGE_CLIENT_ID"
    )]
    client_id: String,
    /// Shared-subscription group all bridge replicas join ($share/<group>/sensors/+/+).
    #[arg(
        long,
        default_value = "sensorfleet-bridge",
        env = "SENSORFLEET_BRIDGE_GROUP"
    )]
    share_group: String,
    /// MQTT connections of this replica (see `up --help`).
    #[arg(long, default_value_t = 4, env = "SENSORFLEET_BRIDGE_CONNECTIONS")]
    connections: usize,
    /// Largest accepted payload in bytes; larger ones are dead-lettered.
    #[arg(long, default_value_t = 16 * 1024, env = "SENSORFLEET_MAX_PAYLOAD_BYTES")]
    max_payload_bytes: usize,
    /// Oldest accepted reading, by its timestamp: older ones are dead-lettered as
    /// `too_old` (0: no limit but what the stores can hold, 1677-09-21 on).
    #[arg(long, default_value = "7d", value_parser = parse_duration, env = "SENSORFLEET_MAX_AGE")]
    max_age: Duration,
    /// Most devices no fleet declares that this bridge accepts; readings of further
    /// undeclared devices are dead-lettered as `too_many_devices`.
    #[arg(
        long,
        default_value_t = 10_000,
        env = "SENSORFLEET_MAX_UNDECLARED_DEVICES"
    )]
    max_undeclared_devices: usize,
    /// Most distinct locations per device (each is an InfluxDB series); a reading with
    /// a further one is dead-lettered as `too_many_locations`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..), env = "SENSORFLEET_MAX_LOCATIONS_PER_DEVICE")]
    max_locations_per_device: u16,
    /// Most messages written to the sinks in one batch (and acknowledged together).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..=100_000), env = "SENSORFLEET_BRIDGE_BATCH_MAX")]
    batch_max: u32,
    /// Milliseconds a batch waits to fill before it is written anyway.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=60_000), env = "SENSORFLEET_BRIDGE_LINGER_MS")]
    linger_ms: u32,
    /// Address of /metrics, /health/live and /health/ready.
    #[arg(
        long,
        default_value = "127.0.0.1:9101",
        env = "SENSORFLEET_METRICS_ADDR"
    )]
    metrics_addr: SocketAddr,
}

#[derive(clap::Args)]
struct ProcessorArgs {
    #[command(flatten)]
    backends: BackendArgs,
    /// Consumer group every processor replica joins; partitions are shared among them.
    #[arg(
        long,
        default_value = "sensorfleet-processor",
        env = "SENSORFLEET_PROCESSOR_GROUP"
    )]
    group: String,
    /// How often devices and alert rules are re-read from the registry.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "SENSORFLEET_REFRESH")]
    refresh: Duration,
    /// Sliding window of the per-device statistics (min/max/mean, rate of change), e.g.
    /// `5m`; a Pipeline's `processor.window`.
    #[arg(long, default_value = "5m", value_parser = parse_window, env = "SENSORFLEET_WINDOW")]
    window: Duration,
    /// Readings in the moving average; a Pipeline's `processor.movingAverage`.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=10_000), env = "SENSORFLEET_MOVING_AVERAGE")]
    moving_average: u16,
    /// Address of /metrics, /health/live and /health/ready.
    #[arg(
        long,
        default_value = "127.0.0.1:9102",
        env = "SENSORFLEET_METRICS_ADDR"
    )]
    metrics_addr: SocketAddr,
}

#[derive(clap::Args)]
struct ApiArgs {
    #[command(flatten)]
    backends: BackendArgs,
    /// Address of the API, dashboard, /metrics and /health.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SENSORFLEET_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Require `Authorization: Bearer <token>` on POST endpoints.
    #[arg(long, env = "SENSORFLEET_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Requests per second per client IP (0: unlimited).
    #[arg(long, default_value_t = 0.0, env = "SENSORFLEET_RATE_LIMIT")]
    rate_limit: f64,
}

#[derive(clap::Args)]
struct ApplyArgs {
    #[command(flatten)]
    backends: BackendArgs,
    /// SensorFleet/AlertRule manifest files or folders (repeatable). Default: the built-in examples/.
    #[arg(short = 'f', long = "file", value_delimiter = ',')]
    files: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct RollupArgs {
    #[command(flatten)]
    backends: BackendArgs,
    /// Complete hours to (re)compute, ending at the last complete hour.
    #[arg(long, default_value_t = 2)]
    hours: u32,
    /// Keep running and roll up again at this interval (e.g. 10m); default: once.
    #[arg(long, value_parser = parse_duration)]
    every: Option<Duration>,
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
    /// Elect one active replica through a Lease before reconciling (`false`: no Lease;
    /// this replica reconciles at once, so run exactly one).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SENSORFLEET_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the leader-election Lease (default: the operator's own, from its
    /// in-cluster config or kubeconfig context).
    #[arg(long, env = "SENSORFLEET_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        default_value = "sensorfleet-operator",
        env = "SENSORFLEET_LEASE_NAME"
    )]
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
    /// Address of /metrics, /health/live and /health/ready.
    #[arg(
        long,
        default_value = "127.0.0.1:9103",
        env = "SENSORFLEET_METRICS_ADDR"
    )]
    metrics_addr: SocketAddr,
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
    /// Backends: each `embedded` unless given a URL.
    #[command(flatten)]
    backends: UrlArgs,
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
    #[arg(long, required_unless_present = "labels", conflicts_with = "labels")]
    csv: Option<PathBuf>,
    /// An AlertRule manifest to try on the series.
    #[arg(long, requires = "csv")]
    rule: Option<PathBuf>,
    /// Score the detector instead: labelled anomaly windows in NAB's JSON format
    /// (`{"<category>/<file>.csv": [["start", "end"], …]}`) for the CSV files or
    /// directories given after it; prints the benchmark's normalised score per profile,
    /// category and file. Example: sensorfleet detect --labels windows.json data/
    #[arg(long, requires = "paths")]
    labels: Option<PathBuf>,
    /// With --labels: the CSV files, or directories of them, to score.
    #[arg(requires = "labels")]
    paths: Vec<PathBuf>,
    /// Calibrated |z| at or above which a reading is flagged (score 0.5).
    #[arg(long)]
    z_threshold: Option<f64>,
    /// Detector tuning as JSON, any subset of the fields (alpha, warmup, spike_z,
    /// stuck_after, anomaly_weight, short_alpha, season_days, z_threshold), e.g.
    /// '{"season_days": 0}'.
    #[arg(long)]
    detector: Option<String>,
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
    /// Measure a running production stack instead of an embedded platform: its API
    /// address (host:port). Needs --stack-mqtt-url and --stack-influx-url too;
    /// `scripts/bench-stack` starts a stack and passes all three.
    #[arg(long, requires_all = ["stack_mqtt_url", "stack_influx_url"])]
    stack_api: Option<SocketAddr>,
    /// The running stack's MQTT broker.
    #[arg(long, value_parser = MqttEndpoint::parse)]
    stack_mqtt_url: Option<MqttEndpoint>,
    /// The running stack's InfluxDB: influx://host:port?db=NAME.
    #[arg(long)]
    stack_influx_url: Option<String>,
}

/// `influx://host:port?db=NAME` → the HTTP address and the database.
fn influx_target(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("influx://").ok_or_else(|| {
        anyhow::anyhow!("--stack-influx-url {url:?}: expected influx://host:port?db=NAME")
    })?;
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    let db = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("db="))
        .unwrap_or("sensors");
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(|e| anyhow::anyhow!("--stack-influx-url: cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--stack-influx-url: {host:?} has no address"))?;
    Ok((addr, db.to_owned()))
}

/// A window: a duration of at least one second (the window keeps ten buckets).
fn parse_window(text: &str) -> Result<Duration, String> {
    let window = parse_duration(text)?;
    if window < Duration::from_secs(1) {
        return Err(format!("{text}: a window is at least 1s"));
    }
    Ok(window)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_ms(text).map(|ms| Duration::from_millis(ms as u64))
}

fn init_logging(format: LogFormat, log: Option<&str>) {
    // rumqttd logs every connection at info; keep it to warnings unless asked.
    let filter = log
        .and_then(|filter| tracing_subscriber::EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| {
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

/// Resolves on Ctrl-C or SIGTERM.
async fn signalled() {
    tokio::select! {
        _ = ctrl_c() => {}
        _ = terminate() => {}
    }
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
                backends: UpBackends {
                    event_log: args.backends.kafka_url,
                    time_series: args.backends.influx_url,
                    cache: args.backends.redis_url,
                    registry: args.backends.postgres_url,
                },
                ..UpConfig::new()
            };
            let platform = up::start(config).await?;
            platform.run_until(signalled()).await
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
        Role::Backtest(args) => sensorfleet::backtest::run(args).await,
        Role::Detect(args) => {
            let mut detector: DetectorConfig = match &args.detector {
                Some(json) => serde_json::from_str(json)
                    .map_err(|e| anyhow::anyhow!("--detector {json:?}: {e}"))?,
                None => DetectorConfig::default(),
            };
            if let Some(z) = args.z_threshold {
                detector.z_threshold = z;
            }
            let stdout = std::io::stdout();
            if let Some(labels) = &args.labels {
                let (series, skipped) = detect::load_labelled(labels, &args.paths)?;
                for path in skipped {
                    eprintln!("{}: not in {}, skipped", path.display(), labels.display());
                }
                let results = detect::score_labelled(&series, &detector);
                detect::write_scores(&series, &results, &mut stdout.lock())?;
                return Ok(());
            }
            let csv = args
                .csv
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("give --csv FILE or --labels FILE DIR…"))?;
            let points = detect::load_csv(csv)?;
            let rule = args.rule.as_deref().map(detect::load_rule).transpose()?;
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
        Role::Bridge(args) => {
            let config = BridgeRole {
                role: args.backends.role("sensorfleet bridge", args.metrics_addr),
                mqtt: args.mqtt_url,
                client_id: args.client_id,
                share_group: args.share_group,
                connections: args.connections,
                max_payload_bytes: args.max_payload_bytes,
                max_age: args.max_age,
                book: sensorfleet_workers::bridge::book::BookLimits {
                    max_undeclared: args.max_undeclared_devices,
                    max_locations: args.max_locations_per_device.into(),
                },
                batch_max: args.batch_max as usize,
                linger: std::time::Duration::from_millis(args.linger_ms.into()),
            };
            roles::bridge::run(config, signalled()).await
        }
        Role::Processor(args) => {
            let config = ProcessorRole {
                role: args
                    .backends
                    .role("sensorfleet processor", args.metrics_addr),
                group: args.group,
                refresh: args.refresh,
                window: args.window,
                moving_average: args.moving_average.into(),
            };
            roles::processor::run(config, signalled()).await
        }
        Role::Api(args) => {
            let config = ApiRole {
                role: args.backends.role("sensorfleet api", args.http_addr),
                http_addr: args.http_addr,
                token: args.api_token,
                rate_limit: args.rate_limit,
            };
            roles::api::run(config, signalled()).await
        }
        Role::Apply(args) => {
            let set = sensorfleet::manifests::load(&args.files)?;
            let config = args
                .backends
                .role("sensorfleet apply", ([127, 0, 0, 1], 0).into());
            let connector = roles::connector(&config)?;
            let registry =
                roles::open("registry", config.connect_timeout, || connector.registry(2)).await?;
            let declared = sensorfleet::manifests::mirror(registry.as_ref(), &set).await?;
            println!(
                "applied {} fleets ({} devices) and {} alert rules to the {} registry",
                set.fleets.len(),
                declared.devices.len(),
                declared.rules.len(),
                registry.name()
            );
            Ok(())
        }
        Role::Rollup(args) => {
            let config = RollupRole {
                role: args
                    .backends
                    .role("sensorfleet rollup", ([127, 0, 0, 1], 0).into()),
                hours: args.hours,
                every: args.every,
            };
            roles::rollup::run(config, signalled()).await
        }
        Role::Bench(args) => {
            let stack = match (args.stack_api, args.stack_mqtt_url, args.stack_influx_url) {
                (Some(api), Some(mqtt), Some(influx)) => {
                    let (influx, influx_db) = influx_target(&influx)?;
                    Some(StackTarget {
                        mqtt,
                        api,
                        influx,
                        influx_db,
                    })
                }
                _ => None,
            };
            let report = bench::run(BenchConfig {
                devices: args.devices,
                seconds: args.seconds,
                connections: args.connections,
                latency_rate: args.latency_rate,
                latency_seconds: args.latency_seconds,
                bridge_connections: args.bridge_connections,
                stack,
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
                leader_election: args.leader_election,
                lease_namespace: args.lease_namespace,
                lease_name: args.lease_name,
                identity,
                lease_duration: args.lease_duration,
                resync: args.resync,
                metrics_addr: args.metrics_addr,
            })
            .await?;
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.log.as_deref());
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
