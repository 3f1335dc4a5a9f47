//! `sensorfleet up`: the whole platform in one process — embedded backends (event log,
//! SQLite store, in-memory cache), the embedded MQTT ingest endpoint (or an external
//! broker), and the same bridge, processor, API, rollup and simulator the separate roles
//! spawn, the simulator playing the fleet the manifests declare.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use sensorfleet_api::{ComponentStatus, StatusProbe};
use sensorfleet_backends::EventLog;
use sensorfleet_backends::connect::{Choice, Concern, choose};
use sensorfleet_backends::event_log::memory::MemoryLog;
use sensorfleet_backends::sqlite::SqliteStore;
use sensorfleet_workers::bridge::BridgeSinks;
use sensorfleet_workers::ingest::auth::{CredentialStore, DeviceCredentials};
use sensorfleet_workers::ingest::{IngestHandle, IngestServer, IngestSettings, IngestTransport};
use sensorfleet_workers::mqtt::{MqttEndpoint, MqttTransport};
use sensorfleet_workers::processor::ProcessorSinks;
use sensorfleet_workers::simulator::SimulatorStats;
use sensorfleet_workers::telemetry;
use tokio::sync::watch;
use tracing::{info, warn};

use super::api::{self, ApiArgs, ApiBackends};
use super::bridge::{self, BridgeArgs};
use super::processor::{self, ProcessorArgs};
use super::rollup::{self, Prune, RollupArgs};
use super::simulate::{self, SimulateArgs};
use super::{UrlArgs, Worker, defaults, parse_duration};
use crate::manifests;

// The flags of `sensorfleet up` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
pub struct UpArgs {
    /// SensorFleet/AlertRule manifest files or folders (repeatable). Default: the built-in examples/.
    #[arg(
        short = 'f',
        long = "file",
        env = "SENSORFLEET_MANIFESTS",
        value_delimiter = ','
    )]
    pub files: Vec<PathBuf>,
    /// Where history and the registry are kept (SQLite).
    #[arg(long, default_value = ".sensorfleet", env = "SENSORFLEET_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address of the API, dashboard and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SENSORFLEET_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// Address the embedded MQTT broker listens on.
    #[arg(long, default_value = "127.0.0.1:1883", env = "SENSORFLEET_MQTT_ADDR")]
    pub mqtt_addr: SocketAddr,
    /// Use this external broker (mqtt://[user:pass@]host:port) instead of the embedded one.
    #[arg(long, env = "SENSORFLEET_MQTT_URL", hide_env_values = true, value_parser = MqttEndpoint::parse)]
    pub mqtt_url: Option<MqttEndpoint>,
    /// Do not simulate the declared devices (real devices publish instead).
    #[arg(long)]
    pub no_simulator: bool,
    /// Admit only declared devices, each with its own password (`sensorfleet credentials`
    /// prints it), each publishing only to sensors/<its type>/<its id>. Anonymous clients
    /// are refused. Turns off the built-in simulator, which would publish for every
    /// device over a few connections.
    #[arg(long, conflicts_with = "mqtt_url", env = "SENSORFLEET_DEVICE_AUTH")]
    pub device_auth: bool,
    /// Publish interval for every simulated device, overriding the fleets' (e.g. 500ms).
    #[arg(long, value_parser = parse_duration)]
    pub simulate_interval: Option<Duration>,
    /// Chance per simulated reading of an injected anomaly.
    #[arg(long, default_value_t = 0.0005)]
    pub anomaly_rate: f64,
    #[command(flatten)]
    pub access: api::AccessArgs,
    /// How long raw readings are kept; hourly rollups stay.
    #[arg(long, default_value = "7d", value_parser = parse_duration, env = "SENSORFLEET_RETENTION")]
    pub retention: Duration,
    /// Largest accepted payload in bytes; larger ones are dead-lettered.
    #[arg(long, default_value_t = 16 * 1024, env = "SENSORFLEET_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: usize,
    /// MQTT connections the bridge spreads a shared subscription over. More connections
    /// mean bigger batches (a broker allows each connection a fixed window of messages
    /// not yet acknowledged, and the bridge acknowledges only stored batches), but the
    /// broker deals messages round-robin, so one device's readings may arrive out of order
    /// by a few milliseconds, and a late reading does not move alert state. 1 keeps strict
    /// per-device order.
    #[arg(long, default_value_t = 8, env = "SENSORFLEET_BRIDGE_CONNECTIONS")]
    pub bridge_connections: usize,
    /// Backends: each `embedded` unless given a URL.
    #[command(flatten)]
    pub backends: UrlArgs,
    /// Readings the embedded event log holds before the bridge waits.
    #[arg(skip = 100_000_usize)]
    pub log_capacity: usize,
}

/// A started worker and the switch that stops it.
struct Running {
    stop: watch::Sender<bool>,
    worker: Worker,
}

impl Running {
    fn start(spawn: impl FnOnce(watch::Receiver<bool>) -> Worker) -> Self {
        let (stop, stopped) = watch::channel(false);
        Self {
            worker: spawn(stopped),
            stop,
        }
    }

    /// Asks the worker to finish and waits for it.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if !self.worker.is_finished() {
            let _ = (&mut self.worker).await;
        }
    }
}

/// A running platform.
pub struct Platform {
    /// Where the API listens.
    pub http_addr: SocketAddr,
    /// Where devices publish.
    pub mqtt: MqttEndpoint,
    /// The embedded store, when a concern uses it (for counting what was ingested).
    pub store: Option<SqliteStore>,
    /// The simulator's counts, when it runs.
    pub simulator: Option<Arc<SimulatorStats>>,
    ingest: Option<IngestHandle>,
    simulating: Option<Running>,
    bridge: Running,
    processor: Running,
    api: Running,
    rollup: Running,
}

/// Checks the data dir exists (creating it) and is writable, with an error that says what to do.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the data dir {}; pass --data-dir with a writable folder",
            dir.display()
        )
    })?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").with_context(|| {
        format!(
            "the data dir {} is not writable; pass --data-dir with a writable folder",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Starts every part; returns once the API listens.
pub async fn start(args: UpArgs) -> anyhow::Result<Platform> {
    telemetry::register_all();
    let set = manifests::load(&args.files)?;
    prepare_data_dir(&args.data_dir)?;
    let connector = args
        .backends
        .connector(args.data_dir.clone(), "sensorfleet up", true)?;
    let opening = |what: &str| {
        format!(
            "cannot open the {what} (data dir {})",
            args.data_dir.display()
        )
    };
    let series = connector
        .time_series()
        .await
        .with_context(|| opening("time series"))?;
    let registry = connector
        .registry(8)
        .await
        .with_context(|| opening("registry"))?;
    let cache = connector.cache().await.with_context(|| opening("cache"))?;
    // The embedded log is kept concrete: its backlog shows in /health/services.
    let memory_log = (choose(Concern::EventLog, &args.backends.kafka_url)? == Choice::Embedded)
        .then(|| Arc::new(MemoryLog::new(args.log_capacity)));
    let log: Arc<dyn EventLog> = match &memory_log {
        Some(memory) => memory.clone(),
        None => connector
            .event_log(args.log_capacity)
            .await
            .with_context(|| opening("event log"))?,
    };
    let store = connector.embedded_store();
    let declarations = manifests::mirror(registry.as_ref(), &set).await?;
    info!(
        fleets = set.fleets.len(),
        devices = declarations.devices.len(),
        rules = declarations.rules.len(),
        data_dir = %args.data_dir.display(),
        "manifests applied"
    );

    // The ingest endpoint (or the external broker) comes first: devices connect to it.
    // The endpoint acknowledges a reading only once the bridge has stored it.
    let mut bridge_args: BridgeArgs = defaults();
    bridge_args.connections = args.bridge_connections;
    bridge_args.max_payload_bytes = args.max_payload_bytes;
    if let Some(url) = &args.mqtt_url {
        bridge_args.mqtt_url = url.clone();
    }
    let (mqtt, ingest) = match &args.mqtt_url {
        Some(url) => (url.clone(), None),
        None => {
            // It takes more than the bridge, so an oversized payload reaches the bridge
            // and is dead-lettered with its reason instead of cutting the connection.
            let mut settings = IngestSettings {
                max_packet_bytes: bridge_args.subscription().max_packet_bytes,
                ..IngestSettings::default()
            };
            if args.device_auth {
                let store = CredentialStore::new(&args.data_dir);
                let declared = declarations
                    .devices
                    .iter()
                    .map(|d| (d.device_id.clone(), d.device_type.clone()));
                let credentials = DeviceCredentials::open(store, declared).with_context(|| {
                    format!(
                        "cannot read the device secret in {}",
                        args.data_dir.display()
                    )
                })?;
                info!(
                    devices = declarations.devices.len(),
                    "device authentication on: `sensorfleet credentials --device <id>` prints a device's password"
                );
                settings.auth = Arc::new(credentials);
            }
            let (handle, messages) = IngestServer::bind(args.mqtt_addr, settings).await?;
            let addr = handle.local_addr();
            let endpoint = MqttEndpoint {
                host: addr.ip().to_string(),
                port: addr.port(),
                username: None,
                password: None,
                tls: false,
            };
            (endpoint, Some((handle, messages)))
        }
    };

    let broker_kind = if ingest.is_some() {
        "embedded"
    } else {
        "external"
    };
    let broker = mqtt.to_string();
    let log_name = log.name();
    let probe: StatusProbe = Arc::new(move || {
        vec![
            bridge::status(broker_kind, &broker),
            ComponentStatus {
                name: "event_log".to_owned(),
                backend: log_name.to_owned(),
                up: true,
                detail: memory_log
                    .as_ref()
                    .map(|m| format!("{} readings waiting", m.backlog()))
                    .unwrap_or_default(),
            },
            processor::status("embedded"),
        ]
    });
    let api_args = ApiArgs {
        http_addr: args.http_addr,
        access: args.access.clone(),
        ..defaults()
    };
    let api_backends = ApiBackends {
        log: log.clone(),
        series: series.clone(),
        registry: registry.clone(),
        cache: cache.clone(),
    };
    let (api_stop, api_stopped) = watch::channel(false);
    let (http_addr, api_worker) =
        api::spawn(&api_args, api_backends, Some(probe), None, api_stopped).await?;
    let api = Running {
        stop: api_stop,
        worker: api_worker,
    };

    let processor_sinks = ProcessorSinks {
        log: log.clone(),
        registry,
        cache: cache.clone(),
    };
    let processor = Running::start(|stopped| {
        processor::spawn(&defaults::<ProcessorArgs>(), processor_sinks, stopped)
    });
    let bridge_sinks = BridgeSinks {
        log,
        series: series.clone(),
        cache,
    };
    let declared = declarations.devices.clone();
    let (ingest, bridge) = match ingest {
        Some((handle, messages)) => {
            let transport = IngestTransport::new(messages);
            let bridge = Running::start(|stopped| {
                bridge::spawn(&bridge_args, transport, bridge_sinks, declared, stopped)
            });
            (Some(handle), bridge)
        }
        None => {
            let transport =
                MqttTransport::connect(&bridge_args.subscription()).map_err(anyhow::Error::msg)?;
            let bridge = Running::start(|stopped| {
                bridge::spawn(&bridge_args, transport, bridge_sinks, declared, stopped)
            });
            (None, bridge)
        }
    };
    let rollup_args = RollupArgs {
        every: Some(Duration::from_secs(600)),
        ..defaults()
    };
    let prune = store.clone().map(|store| Prune {
        store,
        retention: args.retention,
    });
    let rollup = Running::start(|stopped| rollup::spawn(&rollup_args, series, prune, stopped));

    // Nothing is subscribed until the bridge is: readings published before then would
    // reach no one. Wait for it (bounded) before starting the simulator and saying "up".
    let subscribed = wait_for(Duration::from_secs(15), || {
        telemetry::BRIDGE_CONNECTED.get() == 1
    })
    .await;
    if !subscribed {
        warn!(mqtt = %mqtt, "the bridge is not subscribed yet; readings published now may be lost until it is");
    }
    let (simulator, simulating) = if args.no_simulator || args.device_auth {
        (None, None)
    } else {
        let simulate_args = SimulateArgs {
            mqtt_url: mqtt.clone(),
            interval: args.simulate_interval,
            anomaly_rate: args.anomaly_rate,
            ..defaults()
        };
        let stats = Arc::new(SimulatorStats::default());
        let devices = simulate::declared(&declarations.devices);
        let running = Running::start(|stopped| {
            simulate::spawn(&simulate_args, devices, stats.clone(), stopped)
        });
        (Some(stats), Some(running))
    };
    info!(
        dashboard = %format!("http://{http_addr}/"),
        mqtt = %mqtt,
        broker = broker_kind,
        "SensorFleet is up: open the dashboard, publish to sensors/{{device_type}}/{{device_id}}"
    );
    Ok(Platform {
        http_addr,
        mqtt,
        store,
        simulator,
        ingest,
        simulating,
        bridge,
        processor,
        api,
        rollup,
    })
}

impl Platform {
    /// Waits until a part fails or `stop` resolves; then shuts down in data-flow order:
    /// simulator, bridge (flushes and acknowledges), processor (drains and commits), API.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let failure = tokio::select! {
            _ = stop => None,
            result = &mut self.bridge.worker => Some(flatten(result)),
            result = &mut self.processor.worker => Some(flatten(result)),
            result = &mut self.api.worker => Some(flatten(result)),
        };
        if let Some(Err(e)) = &failure {
            warn!(error = %format!("{e:#}"), "a part of the platform failed; shutting down");
        }
        self.shutdown().await;
        match failure {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops everything in data-flow order, flushing on the way.
    pub async fn shutdown(mut self) {
        info!("shutting down: simulator, bridge, processor, API");
        if let Some(simulating) = self.simulating {
            simulating.stop().await;
        }
        if let Some(ingest) = &self.ingest {
            // The endpoint stops reading; the bridge delivers and acknowledges what it was
            // handed, and ends with the stream (bounded: the stop below cuts retries).
            ingest.stop();
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.bridge.worker).await;
        }
        self.bridge.stop().await;
        if let Some(ingest) = self.ingest {
            ingest.shutdown().await;
        }
        self.processor.stop().await;
        let _ = self.api.stop.send(true);
        if !self.api.worker.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.api.worker).await;
        }
        self.rollup.worker.abort();
        if let Some(stats) = &self.simulator {
            info!(
                published = stats.published.load(Ordering::Relaxed),
                "simulator totals"
            );
        }
        info!("SensorFleet stopped cleanly");
    }
}

/// Polls `ready` every 10 ms until it holds (true) or `limit` passes (false).
async fn wait_for(limit: Duration, ready: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !ready() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn flatten(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.map_err(|e| anyhow::anyhow!("task failed: {e}"))?
}
