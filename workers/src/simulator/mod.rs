//! The device simulator: a fleet of temperature, humidity, motion and GPS devices
//! publishing realistic readings over MQTT at QoS 1 — daily cycles, noise, slow drift,
//! batteries that drain, signal that wanders, and a configurable rate of injected
//! anomalies and dropouts.

pub mod signal;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use sensorfleet_backends::backoff::Backoff;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::clock::now_ms;
use crate::mqtt::MqttEndpoint;
use crate::telemetry;
pub use signal::{DeviceSim, SimDevice};

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// The broker.
    pub mqtt: MqttEndpoint,
    /// The devices to play.
    pub devices: Vec<SimDevice>,
    /// Overrides every device's publish interval.
    pub interval_ms: Option<i64>,
    /// Total readings per second for the whole fleet instead of the intervals; `0`
    /// publishes as fast as the broker takes them.
    pub rate: Option<f64>,
    /// Chance per reading of an injected anomaly (a spike far off the normal value).
    pub anomaly_rate: f64,
    /// Chance per reading that the device goes silent for a few intervals.
    pub dropout_rate: f64,
    /// MQTT connections to spread the fleet over.
    pub connections: usize,
    /// Stop after this many readings in all (for benchmarks and tests).
    pub limit: Option<u64>,
    /// Random seed: the same seed plays the same fleet.
    pub seed: u64,
    /// Client id prefix (one client per connection).
    pub client_prefix: String,
}

impl SimulatorConfig {
    /// Defaults for `devices` publishing to `mqtt`.
    pub fn new(mqtt: MqttEndpoint, devices: Vec<SimDevice>) -> Self {
        Self {
            mqtt,
            devices,
            interval_ms: None,
            rate: None,
            anomaly_rate: 0.0005,
            dropout_rate: 0.0002,
            connections: 2,
            limit: None,
            seed: 42,
            client_prefix: "sensorfleet-sim".to_owned(),
        }
    }
}

/// Counts shared with whoever started the simulator.
#[derive(Debug, Default)]
pub struct SimulatorStats {
    /// Readings handed to the MQTT client.
    pub published: AtomicU64,
    /// Readings the broker acknowledged (QoS 1 PUBACK).
    pub acknowledged: AtomicU64,
}

const TICK: Duration = Duration::from_millis(10);

/// Runs the simulator until `shutdown` or its limit; waits (bounded) for the broker to
/// acknowledge what was published before returning.
pub async fn run(
    config: SimulatorConfig,
    stats: Arc<SimulatorStats>,
    shutdown: watch::Receiver<bool>,
) {
    let connections = config
        .connections
        .clamp(1, 64)
        .min(config.devices.len().max(1));
    info!(
        devices = config.devices.len(),
        connections,
        broker = %config.mqtt,
        "simulator started"
    );
    let per_connection_limit = config.limit.map(|l| l.div_ceil(connections as u64));
    let mut tasks = Vec::new();
    for shard in 0..connections {
        let devices: Vec<SimDevice> = config
            .devices
            .iter()
            .skip(shard)
            .step_by(connections)
            .cloned()
            .collect();
        let limit = per_connection_limit.map(|l| {
            // The last connections take fewer so the total is exact.
            let total = config.limit.unwrap_or(0);
            l.min(total.saturating_sub(l * shard as u64))
        });
        tasks.push(tokio::spawn(run_connection(
            config.clone(),
            shard,
            devices,
            limit,
            Arc::clone(&stats),
            shutdown.clone(),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
    info!(
        published = stats.published.load(Ordering::Relaxed),
        acknowledged = stats.acknowledged.load(Ordering::Relaxed),
        "simulator stopped"
    );
}

async fn run_connection(
    config: SimulatorConfig,
    shard: usize,
    devices: Vec<SimDevice>,
    limit: Option<u64>,
    stats: Arc<SimulatorStats>,
    shutdown: watch::Receiver<bool>,
) {
    if devices.is_empty() || limit == Some(0) {
        return;
    }
    let client_id = format!("{}-{}-{shard}", config.client_prefix, std::process::id());
    let mut options = match config.mqtt.options(client_id) {
        Ok(options) => options,
        Err(e) => {
            error!(error = %e, "the simulator cannot connect");
            return;
        }
    };
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(500)
        .set_request_channel_capacity(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let acked_here = Arc::new(AtomicU64::new(0));
    let driver = {
        let stats = Arc::clone(&stats);
        let acked_here = Arc::clone(&acked_here);
        tokio::spawn(async move {
            let mut backoff = Backoff::service();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                        acked_here.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => backoff.reset(),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "simulator lost the MQTT broker; reconnecting");
                        backoff.wait().await;
                    }
                }
            }
        })
    };

    let mut sims: Vec<DeviceSim> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| DeviceSim::new(d, config.seed ^ ((shard as u64) << 32) ^ i as u64))
        .collect();
    let connections = config.connections.clamp(1, 64) as f64;
    // Readings per tick for this connection: from the rate, or from the intervals.
    let per_tick = match config.rate {
        Some(rate) if rate > 0.0 => rate / connections * TICK.as_secs_f64(),
        Some(_) => f64::INFINITY,
        None => devices
            .iter()
            .map(|d| {
                TICK.as_millis() as f64 / config.interval_ms.unwrap_or(d.interval_ms).max(1) as f64
            })
            .sum(),
    };
    let mut published_here: u64 = 0;
    let mut credit = 0.0;
    let mut next = 0usize;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'outer: loop {
        if per_tick.is_finite() {
            ticker.tick().await;
            credit += per_tick;
        } else {
            credit = 1000.0;
        }
        if *shutdown.borrow() {
            break;
        }
        let mut sent_this_tick = 0u64;
        while credit >= 1.0 {
            credit -= 1.0;
            if limit.is_some_and(|l| published_here >= l) {
                break 'outer;
            }
            let now = now_ms();
            let index = next;
            next = (next + 1) % sims.len();
            let (sim, device) = (&mut sims[index], &devices[index]);
            let Some(payload) =
                sim.next_payload(device, now, config.anomaly_rate, config.dropout_rate)
            else {
                continue;
            };
            let topic = format!("sensors/{}/{}", device.device_type, device.device_id);
            if client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break 'outer;
            }
            published_here += 1;
            sent_this_tick += 1;
        }
        if sent_this_tick > 0 {
            stats.published.fetch_add(sent_this_tick, Ordering::Relaxed);
            telemetry::SIMULATOR_PUBLISHED.inc_by(sent_this_tick);
        }
        if !per_tick.is_finite() {
            tokio::task::yield_now().await;
        }
    }
    // Wait (bounded) for the broker to acknowledge everything this connection sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while acked_here.load(Ordering::Relaxed) < published_here
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), driver).await;
}
