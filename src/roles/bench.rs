//! `sensorfleet bench`: starts an `up` instance in this process (no built-in fleet), then
//!
//! 1. drives N simulated devices through MQTT at QoS 1 at full speed for T seconds and
//!    counts what the store holds afterwards: ingest readings/s and readings lost;
//! 2. at a fixed background rate, publishes probe readings and polls
//!    `/api/device/{id}/latest` until each is visible: p50/p99 publish→visible latency;
//! 3. reports peak RSS and the processor's state bytes per device.
//!
//! With [`StackTarget`] it starts nothing and measures a running production stack
//! instead (`scripts/bench-stack` starts one): it publishes to its MQTT broker, counts
//! in its InfluxDB and probes its API.
//!
//! It prints numbers; it asserts nothing. BENCHMARKS.md records them.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use sensorfleet_model::reading::format_ts;
use sensorfleet_workers::clock::now_ms;
use sensorfleet_workers::simulator::{self, SimDevice, SimulatorConfig, SimulatorStats};
use sensorfleet_workers::telemetry;
use serde::Serialize;
use tokio::sync::watch;

use sensorfleet_workers::mqtt::MqttEndpoint;

use super::defaults;
use super::up::{self, UpArgs};
use crate::http::HttpClient;

// The flags of `sensorfleet bench` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// Seconds of full-speed ingest.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// MQTT connections of the load generator.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Background rate (readings/s) during the latency phase.
    #[arg(long, default_value_t = 10_000.0)]
    pub latency_rate: f64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// MQTT connections of the bridge under test (see `up --help`).
    #[arg(long, default_value_t = 8)]
    pub bridge_connections: usize,
    /// Measure a running production stack instead of an embedded platform: its API
    /// address (host:port). Needs --stack-mqtt-url and --stack-influx-url too;
    /// `scripts/bench-stack` starts a stack and passes all three.
    #[arg(long, requires_all = ["stack_mqtt_url", "stack_influx_url"])]
    pub stack_api: Option<SocketAddr>,
    /// The running stack's MQTT broker.
    #[arg(long, value_parser = MqttEndpoint::parse)]
    pub stack_mqtt_url: Option<MqttEndpoint>,
    /// The running stack's InfluxDB: influx://host:port?db=NAME.
    #[arg(long)]
    pub stack_influx_url: Option<String>,
}

impl BenchArgs {
    /// The stack the flags name, if any.
    fn stack(&self) -> anyhow::Result<Option<StackTarget>> {
        let (Some(api), Some(mqtt), Some(influx)) = (
            self.stack_api,
            self.stack_mqtt_url.clone(),
            self.stack_influx_url.as_deref(),
        ) else {
            return Ok(None);
        };
        let (influx, influx_db) = influx_target(influx)?;
        Ok(Some(StackTarget {
            mqtt,
            api,
            influx,
            influx_db,
        }))
    }
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

/// A running production stack: where to publish, count and probe.
#[derive(Debug, Clone)]
pub struct StackTarget {
    /// Its MQTT broker.
    pub mqtt: MqttEndpoint,
    /// Its API.
    pub api: SocketAddr,
    /// Its InfluxDB's HTTP address.
    pub influx: SocketAddr,
    /// The InfluxDB database the bridge writes.
    pub influx_db: String,
}

/// Where readings land and how many there are.
enum Target {
    Embedded(up::Platform),
    Stack(StackTarget, String),
}

impl Target {
    async fn stored(&self) -> anyhow::Result<u64> {
        match self {
            Self::Embedded(platform) => match &platform.store {
                Some(store) => Ok(store.total_readings().await?),
                None => anyhow::bail!("the embedded benchmark needs the embedded store"),
            },
            Self::Stack(stack, prefix) => {
                let query = format!(
                    "SELECT count(temperature_celsius) FROM temperature_sensor WHERE device_id =~ /^{prefix}/"
                );
                let path = format!("/query?db={}&q={}", stack.influx_db, encode(&query));
                let response = HttpClient::new(stack.influx).get(&path).await?;
                anyhow::ensure!(
                    response.status == 200,
                    "InfluxDB answered {} to the count query",
                    response.status
                );
                Ok(response.json()["results"][0]["series"][0]["values"][0][1]
                    .as_u64()
                    .unwrap_or(0))
            }
        }
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the benchmark measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Simulated devices.
    pub devices: usize,
    /// MQTT connections of the bridge.
    pub bridge_connections: usize,
    /// Readings the load generator published (QoS 1).
    pub published: u64,
    /// Of those, acknowledged by the broker.
    pub acknowledged: u64,
    /// Readings the store holds afterwards.
    pub stored: u64,
    /// Acknowledged but not stored.
    pub lost: i64,
    /// Stored readings per second, from the first publish to the last stored reading.
    pub ingest_per_second: f64,
    /// Latency phase: probes measured.
    pub latency_samples: usize,
    /// Publish→visible in `/latest`, median, milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub latency_p99_ms: f64,
    /// Worst, milliseconds.
    pub latency_max_ms: f64,
    /// Background rate actually achieved in the latency phase, readings/s.
    pub latency_background_per_second: f64,
    /// Peak resident memory of this process (embedded: platform, broker and load
    /// generator; stack: the load generator only), MiB.
    pub peak_rss_mib: f64,
    /// Processor state per device, bytes (embedded only).
    pub processor_state_bytes_per_device: Option<f64>,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn fleet(devices: usize, prefix: &str) -> Vec<SimDevice> {
    (0..devices)
        .map(|i| SimDevice {
            device_id: format!("{prefix}{i:06}"),
            device_type: "temperature_sensor".to_owned(),
            location: Some("Bench".to_owned()),
            interval_ms: 1000,
        })
        .collect()
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = measure(args).await?;
    print(&report);
    Ok(())
}

/// Runs the benchmark and returns its report.
pub async fn measure(config: BenchArgs) -> anyhow::Result<BenchReport> {
    let data_dir = tempfile_dir()?;
    let (target, mqtt, http_addr, prefix) = match config.stack()? {
        None => {
            let up_args = UpArgs {
                data_dir: data_dir.clone(),
                http_addr: free_port()?,
                mqtt_addr: free_port()?,
                no_simulator: true,
                log_capacity: 200_000,
                bridge_connections: config.bridge_connections,
                ..defaults()
            };
            let platform = up::start(up_args).await?;
            let (mqtt, http) = (platform.mqtt.clone(), platform.http_addr);
            (Target::Embedded(platform), mqtt, http, "bench-".to_owned())
        }
        Some(stack) => {
            // Devices of this run only: the stack's store may hold earlier runs.
            let prefix = format!("bench{}-", std::process::id());
            let (mqtt, http) = (stack.mqtt.clone(), stack.api);
            (Target::Stack(stack, prefix.clone()), mqtt, http, prefix)
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Phase 1: full speed.
    eprintln!(
        "==> ingest: {} devices, {} connections, QoS 1, full speed for {} s",
        config.devices, config.connections, config.seconds
    );
    let stats = Arc::new(SimulatorStats::default());
    let mut sim = SimulatorConfig::new(mqtt.clone(), fleet(config.devices, &prefix));
    sim.rate = Some(0.0);
    sim.connections = config.connections;
    sim.anomaly_rate = 0.0;
    sim.dropout_rate = 0.0;
    sim.client_prefix = "bench-load".to_owned();
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let load = tokio::spawn(simulator::run(sim, stats.clone(), stopped));
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(config.seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "    {:>4.0} s: published {}, stored {}",
                started.elapsed().as_secs_f64(),
                stats.published.load(Ordering::Relaxed),
                target.stored().await.unwrap_or(0)
            );
        }
    }
    let _ = stop.send(true);
    let _ = load.await;
    // Wait until the store stops growing: everything acknowledged has landed.
    let mut stored = target.stored().await?;
    let mut last_growth = Instant::now();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = target.stored().await?;
        if now != stored {
            stored = now;
            last_growth = Instant::now();
        } else if last_growth.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let ingest_elapsed = last_growth.duration_since(started).as_secs_f64();
    let published = stats.published.load(Ordering::Relaxed);
    let acknowledged = stats.acknowledged.load(Ordering::Relaxed);
    let state_bytes = telemetry::PROCESSOR_STATE_BYTES.get() as f64;
    let state_devices = telemetry::PROCESSOR_DEVICES.get().max(1) as f64;

    // Phase 2: latency at a fixed rate.
    eprintln!(
        "==> latency: background {} readings/s for {} s, probing /latest",
        config.latency_rate, config.latency_seconds
    );
    let stats2 = Arc::new(SimulatorStats::default());
    let mut sim = SimulatorConfig::new(mqtt.clone(), fleet(config.devices, &prefix));
    sim.rate = Some(config.latency_rate);
    sim.connections = config.connections;
    sim.anomaly_rate = 0.0;
    sim.dropout_rate = 0.0;
    sim.client_prefix = "bench-background".to_owned();
    let (stop, stopped) = watch::channel(false);
    let background = tokio::spawn(simulator::run(sim, stats2.clone(), stopped));
    let latency_started = Instant::now();
    let samples = probe_latency(
        &mqtt,
        http_addr,
        Duration::from_secs(config.latency_seconds),
    )
    .await?;
    let background_rate =
        stats2.published.load(Ordering::Relaxed) as f64 / latency_started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = background.await;

    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let report = BenchReport {
        devices: config.devices,
        bridge_connections: config.bridge_connections,
        published,
        acknowledged,
        stored,
        lost: acknowledged as i64 - stored as i64,
        ingest_per_second: (stored as f64 / ingest_elapsed.max(0.001)).round(),
        latency_samples: sorted.len(),
        latency_p50_ms: percentile(&sorted, 50.0),
        latency_p99_ms: percentile(&sorted, 99.0),
        latency_max_ms: sorted.last().copied().unwrap_or(0.0),
        latency_background_per_second: background_rate.round(),
        peak_rss_mib: (peak_rss_mib() * 10.0).round() / 10.0,
        processor_state_bytes_per_device: matches!(target, Target::Embedded(_))
            .then(|| (state_bytes / state_devices).round()),
    };
    if let Target::Embedded(platform) = target {
        platform.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(report)
}

/// Publishes one probe reading at a time and polls `/latest` until it shows up.
async fn probe_latency(
    mqtt: &sensorfleet_workers::mqtt::MqttEndpoint,
    http_addr: SocketAddr,
    duration: Duration,
) -> anyhow::Result<Vec<f64>> {
    let mut options = mqtt.options("bench-probe").map_err(anyhow::Error::msg)?;
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let mut http = HttpClient::new(http_addr);
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let ts = now_ms().max(samples.len() as i64);
        let stamp = format_ts(ts);
        let payload = format!(
            r#"{{"device_id":"bench-probe","temperature_celsius":21.0,"timestamp":"{stamp}"}}"#
        );
        let sent = Instant::now();
        client
            .publish(
                "sensors/temperature_sensor/bench-probe",
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
        let deadline = sent + Duration::from_secs(5);
        loop {
            let response = http.get("/api/device/bench-probe/latest").await?;
            if response.status == 200 && response.json()["timestamp"] == stamp.as_str() {
                samples.push(sent.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                eprintln!("    a probe was not visible within 5 s");
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        // Space the probes so they sample the steady state, not each other.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    driver.abort();
    Ok(samples)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("sensorfleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Prints the report for a person (stderr) and as one JSON line (stdout).
pub fn print(report: &BenchReport) {
    eprintln!();
    eprintln!("  devices                        {}", report.devices);
    eprintln!(
        "  bridge connections             {}",
        report.bridge_connections
    );
    eprintln!("  published (QoS 1)              {}", report.published);
    eprintln!("  acknowledged by broker         {}", report.acknowledged);
    eprintln!("  stored                         {}", report.stored);
    eprintln!("  lost                           {}", report.lost);
    eprintln!(
        "  ingest                         {:.0} readings/s",
        report.ingest_per_second
    );
    eprintln!(
        "  publish -> /latest visible     p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} probes at {:.0} readings/s background)",
        report.latency_p50_ms,
        report.latency_p99_ms,
        report.latency_max_ms,
        report.latency_samples,
        report.latency_background_per_second
    );
    eprintln!(
        "  peak RSS (whole process)       {:.1} MiB",
        report.peak_rss_mib
    );
    if let Some(bytes) = report.processor_state_bytes_per_device {
        eprintln!("  processor state per device     {bytes:.0} bytes");
    }
    println!("{}", serde_json::to_string(report).unwrap_or_default());
}
