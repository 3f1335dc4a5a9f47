//! `sensorfleet bridge`: device messages from a transport (an MQTT broker's shared
//! subscription, QoS 1, manual acks; in `up`, the embedded ingest endpoint) → event log +
//! time series + latest values. A message is acknowledged only after the batch holding
//! it is durable in every sink, so a bridge killed at any moment loses nothing: the
//! broker (or the publisher) resends what was not acknowledged.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sensorfleet_api::{ComponentStatus, StatusProbe};
use sensorfleet_model::manifest::DeclaredDevice;
use sensorfleet_model::reading::Limits;
use sensorfleet_workers::bridge::book::BookLimits;
use sensorfleet_workers::bridge::{self, BridgeConfig, BridgeSinks};
use sensorfleet_workers::deadletter::SpoolConfig;
use sensorfleet_workers::mqtt::{MqttEndpoint, MqttTransport, Subscription};
use sensorfleet_workers::processor::declarations;
use sensorfleet_workers::telemetry;
use sensorfleet_workers::transport::Transport;
use tokio::sync::watch;
use tracing::info;

use super::{BackendArgs, OpsArgs, Worker, parse_duration, serve};

// The flags of `sensorfleet bridge` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
#[command(mut_arg("metrics_addr", OpsArgs::default_at("127.0.0.1:9101")))]
pub struct BridgeArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
    /// The broker devices publish to: mqtt://[user:pass@]host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", env = "SENSORFLEET_MQTT_URL", hide_env_values = true, value_parser = MqttEndpoint::parse)]
    pub mqtt_url: MqttEndpoint,
    /// MQTT client id (connections add -0, -1, …). Keep it stable across restarts of
    /// one replica and different between replicas: the broker keeps a session's
    /// unacknowledged messages for the same id.
    #[arg(
        long,
        default_value = "sensorfleet-bridge",
        env = "SENSORFLEET_BRIDGE_CLIENT_ID"
    )]
    pub client_id: String,
    /// Shared-subscription group all bridge replicas join ($share/<group>/sensors/+/+).
    #[arg(
        long,
        default_value = "sensorfleet-bridge",
        env = "SENSORFLEET_BRIDGE_GROUP"
    )]
    pub share_group: String,
    /// MQTT connections of this replica (see `up --help`).
    #[arg(long, default_value_t = 4, env = "SENSORFLEET_BRIDGE_CONNECTIONS")]
    pub connections: usize,
    /// Largest accepted payload in bytes; larger ones are dead-lettered.
    #[arg(long, default_value_t = 16 * 1024, env = "SENSORFLEET_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: usize,
    /// Oldest accepted reading, by its timestamp: older ones are dead-lettered as
    /// `too_old` (0: no limit but what the stores can hold, 1677-09-21 on).
    #[arg(long, default_value = "7d", value_parser = parse_duration, env = "SENSORFLEET_MAX_AGE")]
    pub max_age: Duration,
    /// Most devices no fleet declares that this bridge accepts; readings of further
    /// undeclared devices are dead-lettered as `too_many_devices`.
    #[arg(
        long,
        default_value_t = 10_000,
        env = "SENSORFLEET_MAX_UNDECLARED_DEVICES"
    )]
    pub max_undeclared_devices: usize,
    /// Most distinct locations per device (each is an InfluxDB series); a reading with
    /// a further one is dead-lettered as `too_many_locations`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..), env = "SENSORFLEET_MAX_LOCATIONS_PER_DEVICE")]
    pub max_locations_per_device: u16,
    /// Most messages written to the sinks in one batch (and acknowledged together).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..=100_000), env = "SENSORFLEET_BRIDGE_BATCH_MAX")]
    pub batch_max: u32,
    /// Milliseconds a batch waits to fill before it is written anyway.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=60_000), env = "SENSORFLEET_BRIDGE_LINGER_MS")]
    pub linger_ms: u32,
    #[command(flatten)]
    pub ops: OpsArgs,
}

impl BridgeArgs {
    /// The MQTT subscription these flags describe.
    pub fn subscription(&self) -> Subscription {
        Subscription {
            endpoint: self.mqtt_url.clone(),
            client_id: self.client_id.clone(),
            filter: "sensors/+/+".to_owned(),
            share_group: Some(self.share_group.clone()),
            connections: self.connections,
            // Above the payload limit, so an oversized payload reaches the bridge and is
            // dead-lettered with its reason instead of cutting the connection.
            max_packet_bytes: self.max_payload_bytes * 4 + 1024,
            queue: self.batch_max as usize,
        }
    }

    fn config(&self, declared: Vec<DeclaredDevice>) -> BridgeConfig {
        BridgeConfig {
            batch_max: self.batch_max as usize,
            linger: Duration::from_millis(self.linger_ms.into()),
            limits: Limits {
                max_payload_bytes: self.max_payload_bytes,
                max_age_ms: match self.max_age.as_millis() {
                    0 => None,
                    ms => Some(i64::try_from(ms).unwrap_or(i64::MAX)),
                },
                ..Limits::default()
            },
            book: BookLimits {
                max_undeclared: self.max_undeclared_devices,
                max_locations: self.max_locations_per_device.into(),
            },
            declared,
            spool: SpoolConfig::named(&format!("bridge-{}", self.client_id)),
        }
    }
}

/// The `mqtt` entry of `/health/services`: whether the bridge is subscribed (or, on the
/// embedded endpoint, reading it). `backend`: `embedded` or `external`.
pub fn status(backend: &str, broker: &str) -> ComponentStatus {
    ComponentStatus {
        name: "mqtt".to_owned(),
        backend: backend.to_owned(),
        up: telemetry::BRIDGE_CONNECTED.get() == 1,
        detail: format!("the bridge is not subscribed at {broker}"),
    }
}

/// Starts the bridge on `transport` with the devices `declared` (their types are the
/// ones their readings must carry, and they are never capped; a device declared later
/// counts as undeclared until the bridge restarts). It ends when `shutdown` turns true
/// or the transport's stream ends, after acknowledging what it delivered.
pub fn spawn(
    args: &BridgeArgs,
    transport: impl Transport + 'static,
    sinks: BridgeSinks,
    declared: Vec<DeclaredDevice>,
    shutdown: watch::Receiver<bool>,
) -> Worker {
    let config = args.config(declared);
    info!(
        event_log = sinks.log.name(),
        time_series = sinks.series.name(),
        cache = sinks.cache.name(),
        declared = config.declared.len(),
        max_undeclared = config.book.max_undeclared,
        "bridge starting"
    );
    tokio::spawn(async move {
        bridge::run(config, sinks, transport, shutdown)
            .await
            .context("the bridge stopped")
    })
}

/// Runs the bridge against its MQTT broker until `stop` resolves or it fails.
pub async fn run(args: BridgeArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    telemetry::register_all();
    let backends = &args.backends;
    let connector = backends.connector("sensorfleet bridge")?;
    let sinks = BridgeSinks {
        log: backends
            .open("event log", || connector.event_log(0))
            .await?,
        series: backends
            .open("time series", || connector.time_series())
            .await?,
        cache: backends.open("cache", || connector.cache()).await?,
    };
    let registry = backends.open("registry", || connector.registry(1)).await?;
    let declared = backends
        .open("registry", || async {
            Ok(declarations::declared(registry.devices().await?))
        })
        .await?;
    drop(registry);
    let broker = args.mqtt_url.to_string();
    let probe: StatusProbe = Arc::new(move || vec![status("external", &broker)]);
    let transport = MqttTransport::connect(&args.subscription()).map_err(anyhow::Error::msg)?;
    serve(
        "bridge",
        (args.ops.metrics_addr, probe),
        |stopped| spawn(&args, transport, sinks, declared, stopped),
        stop,
    )
    .await
}
