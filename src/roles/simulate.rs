//! `sensorfleet simulate`: a fleet of simulated devices publishing to an MQTT broker —
//! the devices of manifests (what `up` plays), or `--devices N` generated ones.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sensorfleet_model::DeclaredDevice;
use sensorfleet_workers::mqtt::MqttEndpoint;
use sensorfleet_workers::simulator::{self, SimDevice, SimulatorConfig, SimulatorStats};
use tokio::sync::watch;

use super::{Worker, parse_duration, supervise};

// The flags of `sensorfleet simulate` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Broker to publish to.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", env = "SENSORFLEET_MQTT_URL", hide_env_values = true, value_parser = MqttEndpoint::parse)]
    pub mqtt_url: MqttEndpoint,
    /// SensorFleet manifests whose devices to play. Default: the built-in examples/.
    #[arg(short = 'f', long = "file", value_delimiter = ',')]
    pub files: Vec<PathBuf>,
    /// Play this many generated devices of --device-type instead of manifests.
    #[arg(long)]
    pub devices: Option<usize>,
    /// Device type of the generated devices.
    #[arg(long, default_value = "temperature_sensor")]
    pub device_type: String,
    /// Publish interval for every device (e.g. 1s), overriding the fleets'.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Total readings per second instead of intervals; 0 = as fast as the broker takes them.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after this many readings.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Chance per reading of an injected anomaly.
    #[arg(long, default_value_t = 0.0005)]
    pub anomaly_rate: f64,
    /// Chance per reading that a device goes silent for a few intervals.
    #[arg(long, default_value_t = 0.0002)]
    pub dropout_rate: f64,
    /// MQTT connections to spread the fleet over.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Random seed: the same seed plays the same fleet.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The simulated devices of declared ones.
pub fn declared(devices: &[DeclaredDevice]) -> Vec<SimDevice> {
    devices
        .iter()
        .map(|d| SimDevice {
            device_id: d.device_id.clone(),
            device_type: d.device_type.clone(),
            location: d.location.clone(),
            interval_ms: d.publish_interval_ms,
        })
        .collect()
}

/// Starts publishing `devices`' readings to `--mqtt-url`; the worker ends at `--limit`
/// or when `shutdown` turns true.
pub fn spawn(
    args: &SimulateArgs,
    devices: Vec<SimDevice>,
    stats: Arc<SimulatorStats>,
    shutdown: watch::Receiver<bool>,
) -> Worker {
    let mut config = SimulatorConfig::new(args.mqtt_url.clone(), devices);
    config.interval_ms = args.interval.map(|d| d.as_millis() as i64);
    config.rate = args.rate;
    config.limit = args.limit;
    config.anomaly_rate = args.anomaly_rate;
    config.dropout_rate = args.dropout_rate;
    config.connections = args.connections;
    config.seed = args.seed;
    tokio::spawn(async move {
        simulator::run(config, stats, shutdown).await;
        Ok(())
    })
}

/// Publishes until `--limit` or `stop`.
pub async fn run(args: SimulateArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let devices = match args.devices {
        Some(n) => (1..=n)
            .map(|i| SimDevice {
                device_id: format!("sim-{i:06}"),
                device_type: args.device_type.clone(),
                location: Some("Simulated".to_owned()),
                interval_ms: 10_000,
            })
            .collect(),
        None => declared(&crate::manifests::load(&args.files)?.devices()),
    };
    let (stopping, stopped) = watch::channel(false);
    let stats = Arc::new(SimulatorStats::default());
    let worker = spawn(&args, devices, stats, stopped);
    supervise("simulator", worker, &stopping, stop).await
}
