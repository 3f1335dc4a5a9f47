//! `sensorfleet up`: the whole platform in one process with embedded parts — MQTT
//! ingest endpoint, event log, SQLite store, in-memory cache — plus the simulated fleet the
//! manifests declare, the API and the dashboard.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sensorfleet_api::{AlertControl, ApiState, ComponentStatus, GuardConfig};
use sensorfleet_backends::connect::{BackendUrls, Choice, Concern, Connector, choose};
use sensorfleet_backends::event_log::memory::MemoryLog;
use sensorfleet_backends::sqlite::SqliteStore;
use sensorfleet_backends::{EventLog, TimeSeries};
use sensorfleet_model::Alert;
use sensorfleet_model::reading::Limits;
use sensorfleet_workers::bridge::{self, BridgeConfig, BridgeSinks};
use sensorfleet_workers::clock::now_ms;
use sensorfleet_workers::ingest::{IngestHandle, IngestServer, IngestSettings};
use sensorfleet_workers::mqtt::MqttEndpoint;
use sensorfleet_workers::processor::{self, AlertCommand, ProcessorConfig, ProcessorSinks};
use sensorfleet_workers::simulator::{self, SimDevice, SimulatorConfig, SimulatorStats};
use sensorfleet_workers::telemetry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::manifests;

/// Settings of `sensorfleet up`.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Where the SQLite store lives.
    pub data_dir: PathBuf,
    /// API, dashboard and metrics address.
    pub http_addr: SocketAddr,
    /// Embedded MQTT ingest endpoint's address (ignored with `mqtt_url`).
    pub mqtt_addr: SocketAddr,
    /// An external broker instead of the embedded one.
    pub mqtt_url: Option<MqttEndpoint>,
    /// Manifest files or folders; empty means the built-in examples.
    pub manifests: Vec<PathBuf>,
    /// Whether to simulate the declared devices.
    pub simulate: bool,
    /// Overrides every fleet's publish interval in the simulator.
    pub simulate_interval: Option<Duration>,
    /// Chance per simulated reading of an injected anomaly.
    pub anomaly_rate: f64,
    /// Bearer token for `POST` endpoints.
    pub api_token: Option<String>,
    /// Requests per second per client IP; 0 is unlimited.
    pub rate_limit: f64,
    /// How long raw readings are kept (hourly rollups stay).
    pub retention: Duration,
    /// Readings the event log holds before the bridge waits.
    pub log_capacity: usize,
    /// Largest accepted payload.
    pub max_payload_bytes: usize,
    /// MQTT connections of the bridge (one shared subscription).
    pub bridge_connections: usize,
    /// Backends by URL (DESIGN §2); `embedded` for each by default.
    pub backends: UpBackends,
}

/// The backend URLs `up` may be given; `embedded` picks the in-process one.
#[derive(Debug, Clone)]
pub struct UpBackends {
    /// `embedded` or `kafka://…`.
    pub event_log: String,
    /// `embedded` or `influx://…`.
    pub time_series: String,
    /// `embedded` or `redis://…`.
    pub cache: String,
    /// `embedded` or `postgres://…`.
    pub registry: String,
}

impl Default for UpBackends {
    fn default() -> Self {
        let embedded = || "embedded".to_owned();
        Self {
            event_log: embedded(),
            time_series: embedded(),
            cache: embedded(),
            registry: embedded(),
        }
    }
}

impl UpConfig {
    /// Defaults: `./.sensorfleet`, `127.0.0.1:8080`, embedded broker on `127.0.0.1:1883`.
    pub fn new() -> Self {
        Self {
            data_dir: PathBuf::from(".sensorfleet"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            mqtt_url: None,
            manifests: Vec::new(),
            simulate: true,
            simulate_interval: None,
            anomaly_rate: 0.0005,
            api_token: None,
            rate_limit: 0.0,
            retention: Duration::from_secs(7 * 86_400),
            log_capacity: 100_000,
            max_payload_bytes: Limits::default().max_payload_bytes,
            bridge_connections: 8,
            backends: UpBackends::default(),
        }
    }
}

impl Default for UpConfig {
    fn default() -> Self {
        Self::new()
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
    stop_simulator: watch::Sender<bool>,
    stop_bridge: watch::Sender<bool>,
    stop_processor: watch::Sender<bool>,
    stop_api: watch::Sender<bool>,
    simulator_task: Option<JoinHandle<()>>,
    bridge_task: JoinHandle<anyhow::Result<()>>,
    processor_task: JoinHandle<anyhow::Result<()>>,
    api_task: JoinHandle<anyhow::Result<()>>,
    rollup_task: JoinHandle<()>,
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

struct ProcessorControl(mpsc::Sender<AlertCommand>);

#[async_trait]
impl AlertControl for ProcessorControl {
    async fn acknowledge(&self, id: &str) -> Result<Option<Alert>, String> {
        self.send(|reply| AlertCommand::Acknowledge(id.to_owned(), reply))
            .await
    }

    async fn clear(&self, id: &str) -> Result<Option<Alert>, String> {
        self.send(|reply| AlertCommand::Clear(id.to_owned(), reply))
            .await
    }
}

impl ProcessorControl {
    async fn send(
        &self,
        command: impl FnOnce(
            oneshot::Sender<Result<Alert, processor::engine::CommandError>>,
        ) -> AlertCommand,
    ) -> Result<Option<Alert>, String> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(command(reply))
            .await
            .map_err(|_| "the processor is not running".to_owned())?;
        match answer.await {
            Ok(Ok(alert)) => Ok(Some(alert)),
            Ok(Err(_)) => Ok(None),
            Err(_) => Err("the processor stopped before answering".to_owned()),
        }
    }
}

/// Starts every part; returns once the API listens.
pub async fn start(config: UpConfig) -> anyhow::Result<Platform> {
    telemetry::register_all();
    let set = manifests::load(&config.manifests)?;
    prepare_data_dir(&config.data_dir)?;
    let connector = Connector::new(BackendUrls {
        event_log: config.backends.event_log.clone(),
        time_series: config.backends.time_series.clone(),
        cache: config.backends.cache.clone(),
        registry: config.backends.registry.clone(),
        data_dir: config.data_dir.clone(),
        role: "sensorfleet up",
        single_process: true,
    });
    connector.validate()?;
    let opening = |what: &str| {
        format!(
            "cannot open the {what} (data dir {})",
            config.data_dir.display()
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
    let memory_log = (choose(Concern::EventLog, &config.backends.event_log)? == Choice::Embedded)
        .then(|| Arc::new(MemoryLog::new(config.log_capacity)));
    let log: Arc<dyn EventLog> = match &memory_log {
        Some(memory) => memory.clone(),
        None => connector
            .event_log(config.log_capacity)
            .await
            .with_context(|| opening("event log"))?,
    };
    let store = connector.embedded_store();
    let declarations = manifests::mirror(registry.as_ref(), &set).await?;
    info!(
        fleets = set.fleets.len(),
        devices = declarations.devices.len(),
        rules = declarations.rules.len(),
        data_dir = %config.data_dir.display(),
        "manifests applied"
    );

    // The ingest endpoint (or the external broker) comes first: devices connect to it.
    // The endpoint acknowledges a reading only once the bridge has stored it.
    let (mqtt, ingest) = match &config.mqtt_url {
        Some(url) => (url.clone(), None),
        None => {
            // It takes more than the bridge, so an oversized payload reaches the bridge
            // and is dead-lettered with its reason instead of cutting the connection.
            let settings = IngestSettings {
                max_packet_bytes: config.max_payload_bytes * 4 + 1024,
                ..IngestSettings::default()
            };
            let (handle, messages) = IngestServer::bind(config.mqtt_addr, settings).await?;
            let addr = handle.local_addr();
            let endpoint = MqttEndpoint {
                host: addr.ip().to_string(),
                port: addr.port(),
                username: None,
                password: None,
            };
            (endpoint, Some((handle, messages)))
        }
    };
    let listener = sensorfleet_api::bind(config.http_addr).await?;
    let http_addr = listener.local_addr()?;

    let (stop_simulator, simulator_stop) = watch::channel(false);
    let (stop_bridge, bridge_stop) = watch::channel(false);
    let (stop_processor, processor_stop) = watch::channel(false);
    let (stop_api, api_stop) = watch::channel(false);

    let (_declarations_tx, declarations_rx) = watch::channel(declarations.clone());
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let processor_sinks = ProcessorSinks {
        log: log.clone(),
        registry: registry.clone(),
        cache: cache.clone(),
    };
    let processor_task = tokio::spawn(async move {
        // Keep the sender alive: declarations can change while running.
        let _keep = _declarations_tx;
        processor::run(
            ProcessorConfig::default(),
            processor_sinks,
            declarations_rx,
            commands_rx,
            processor_stop,
        )
        .await
        .context("the processor stopped")
    });

    let mut bridge_config = BridgeConfig::new(mqtt.clone());
    bridge_config.limits.max_payload_bytes = config.max_payload_bytes;
    bridge_config.connections = config.bridge_connections;
    // Declared devices keep their declared type (a reading under another is dead-lettered
    // as type_mismatch), as the bridge role does with the registry's declarations.
    bridge_config.declared = declarations.devices.clone();
    let bridge_sinks = BridgeSinks {
        log: log.clone(),
        series: series.clone(),
        cache: cache.clone(),
    };
    let (ingest, bridge_task) = match ingest {
        Some((handle, messages)) => (
            Some(handle),
            tokio::spawn(async move {
                bridge::run_embedded(bridge_config, bridge_sinks, messages, bridge_stop)
                    .await
                    .context("the bridge stopped")
            }),
        ),
        None => (
            None,
            tokio::spawn(async move {
                bridge::run(bridge_config, bridge_sinks, bridge_stop)
                    .await
                    .context("the bridge stopped")
            }),
        ),
    };

    let mut state = ApiState::new(
        series.clone(),
        registry.clone(),
        cache.clone(),
        GuardConfig {
            token: config.api_token.clone(),
            rate_per_second: config.rate_limit,
        },
    );
    state.control = Some(Arc::new(ProcessorControl(commands_tx)));
    let broker_kind = if config.mqtt_url.is_some() {
        "external"
    } else {
        "embedded"
    };
    let log_name = log.name();
    state.probe = Arc::new(move || {
        let connected = telemetry::BRIDGE_CONNECTED.get() == 1;
        let last_tick = telemetry::PROCESSOR_LAST_TICK.get();
        let processor_fresh = now_ms() / 1000 - last_tick <= 10;
        vec![
            ComponentStatus {
                name: "mqtt".to_owned(),
                backend: broker_kind.to_owned(),
                up: connected,
                detail: "the bridge is not connected to the MQTT broker".to_owned(),
            },
            ComponentStatus {
                name: "event_log".to_owned(),
                backend: log_name.to_owned(),
                up: true,
                detail: memory_log
                    .as_ref()
                    .map(|m| format!("{} readings waiting", m.backlog()))
                    .unwrap_or_default(),
            },
            ComponentStatus {
                name: "processor".to_owned(),
                backend: "embedded".to_owned(),
                up: processor_fresh,
                detail: "the processor has not reported for over 10 s".to_owned(),
            },
        ]
    });
    let api_task = tokio::spawn(async move {
        sensorfleet_api::serve(listener, state, api_stop)
            .await
            .context("the API stopped")
    });
    let rollup_task = tokio::spawn(rollups(series.clone(), store.clone(), config.retention));

    // Nothing is subscribed until the bridge is: readings published before then would
    // reach no one. Wait for it (bounded) before starting the simulator and saying "up".
    let subscribed = wait_for(Duration::from_secs(15), || {
        telemetry::BRIDGE_CONNECTED.get() == 1
    })
    .await;
    if !subscribed {
        warn!(mqtt = %mqtt, "the bridge is not subscribed yet; readings published now may be lost until it is");
    }
    let mut simulator_stats = None;
    let mut simulator_task = None;
    if config.simulate {
        let devices: Vec<SimDevice> = declarations
            .devices
            .iter()
            .map(|d| SimDevice {
                device_id: d.device_id.clone(),
                device_type: d.device_type.clone(),
                location: d.location.clone(),
                interval_ms: d.publish_interval_ms,
            })
            .collect();
        let mut sim = SimulatorConfig::new(mqtt.clone(), devices);
        sim.interval_ms = config.simulate_interval.map(|d| d.as_millis() as i64);
        sim.anomaly_rate = config.anomaly_rate;
        let stats = Arc::new(SimulatorStats::default());
        simulator_stats = Some(stats.clone());
        simulator_task = Some(tokio::spawn(simulator::run(sim, stats, simulator_stop)));
    }
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
        simulator: simulator_stats,
        ingest,
        stop_simulator,
        stop_bridge,
        stop_processor,
        stop_api,
        simulator_task,
        bridge_task,
        processor_task,
        api_task,
        rollup_task,
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
            result = &mut self.bridge_task => Some(flatten(result)),
            result = &mut self.processor_task => Some(flatten(result)),
            result = &mut self.api_task => Some(flatten(result)),
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
    pub async fn shutdown(self) {
        info!("shutting down: simulator, bridge, processor, API");
        let _ = self.stop_simulator.send(true);
        if let Some(task) = self.simulator_task {
            let _ = task.await;
        }
        let mut bridge_task = self.bridge_task;
        if let Some(ingest) = &self.ingest {
            // The endpoint stops reading; the bridge delivers and acknowledges what it was
            // handed, and ends with the stream (bounded: the stop below cuts retries).
            ingest.stop();
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut bridge_task).await;
        }
        let _ = self.stop_bridge.send(true);
        if !bridge_task.is_finished() {
            let _ = bridge_task.await;
        }
        if let Some(ingest) = self.ingest {
            ingest.shutdown().await;
        }
        let _ = self.stop_processor.send(true);
        if !self.processor_task.is_finished() {
            let _ = self.processor_task.await;
        }
        let _ = self.stop_api.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.api_task).await;
        self.rollup_task.abort();
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

/// Hourly: roll up the last complete hours and, embedded, drop raw readings past
/// retention (InfluxDB keeps data by its own retention policy).
async fn rollups(series: Arc<dyn TimeSeries>, store: Option<SqliteStore>, retention: Duration) {
    const HOUR: i64 = 3_600_000;
    let mut ticker = tokio::time::interval(Duration::from_secs(600));
    loop {
        ticker.tick().await;
        let this_hour = now_ms() / HOUR * HOUR;
        match series.rollup(this_hour - 2 * HOUR, this_hour).await {
            Ok(rows) if rows > 0 => info!(rows, "hourly rollups written"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "hourly rollup failed; retrying in 10 min"),
        }
        let Some(store) = &store else { continue };
        let cutoff = now_ms() - retention.as_millis() as i64;
        match store.prune_readings(cutoff).await {
            Ok(n) if n > 0 => info!(deleted = n, "raw readings past retention deleted"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "pruning old readings failed"),
        }
    }
}
