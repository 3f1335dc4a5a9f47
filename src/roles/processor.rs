//! `sensorfleet processor`: a consumer in the event log's group → windows, anomalies,
//! health, alerts → registry, cache, alerts topic. Offsets are committed only after
//! the sinks flushed. Devices and rules come from the registry (mirrored there by `up`
//! or the operator) and are re-read every `refresh`, so a changed rule applies without
//! a restart.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sensorfleet_api::ComponentStatus;
use sensorfleet_backends::{BackendError, DeviceRecord, EventLog, Registry, Topic};
use sensorfleet_model::manifest::DeclaredDevice;
use sensorfleet_model::{AlertAction, AlertCommandRecord};
use sensorfleet_workers::clock::now_ms;
use sensorfleet_workers::processor::{
    self, AlertCommand, Declarations, EngineConfig, ProcessorConfig, ProcessorSinks,
};
use sensorfleet_workers::telemetry;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{RoleConfig, connector, open, serve_ops, supervise};

/// Settings of `sensorfleet processor`.
#[derive(Debug, Clone)]
pub struct ProcessorRole {
    /// Backends and ops address.
    pub role: RoleConfig,
    /// Consumer group every processor replica joins.
    pub group: String,
    /// How often devices and rules are re-read from the registry.
    pub refresh: Duration,
    /// Sliding window of the per-device statistics.
    pub window: Duration,
    /// Readings in the moving average.
    pub moving_average: usize,
}

/// Offline threshold of a device the registry has no timing for (DESIGN §4 default).
const DEFAULT_OFFLINE_AFTER_MS: i64 = 300_000;
/// Publish interval assumed for such a device.
const DEFAULT_INTERVAL_MS: i64 = 10_000;

/// The declared devices among registry rows: those a fleet owns (a device that only
/// showed up by publishing is known, not declared).
pub fn declared(records: Vec<DeviceRecord>) -> Vec<DeclaredDevice> {
    let mut devices: Vec<DeclaredDevice> = records
        .into_iter()
        .filter_map(|r| {
            Some(DeclaredDevice {
                fleet: r.fleet?,
                device_id: r.device_id,
                device_type: r.device_type,
                location: r.location,
                publish_interval_ms: r.publish_interval_ms.unwrap_or(DEFAULT_INTERVAL_MS),
                offline_after_ms: r.offline_after_ms.unwrap_or(DEFAULT_OFFLINE_AFTER_MS),
            })
        })
        .collect();
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    devices
}

async fn read_declarations(registry: &dyn Registry) -> Result<Declarations, BackendError> {
    let devices = declared(registry.devices().await?);
    let mut rules = registry.rules().await?;
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Declarations { devices, rules })
}

/// Re-reads the declarations every `every` and publishes them when they changed.
async fn refresh(
    registry: Arc<dyn Registry>,
    every: Duration,
    sender: watch::Sender<Declarations>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match read_declarations(registry.as_ref()).await {
            Ok(fresh) => {
                let changed = {
                    let current = sender.borrow();
                    current.devices != fresh.devices || current.rules != fresh.rules
                };
                if changed {
                    info!(
                        devices = fresh.devices.len(),
                        rules = fresh.rules.len(),
                        "registry changed; applying"
                    );
                    let _ = sender.send(fresh);
                }
            }
            Err(e) => {
                warn!(error = %e, "re-reading devices and rules failed; keeping the current ones")
            }
        }
    }
}

/// This process among the processor replicas: the host name (a pod's name in
/// Kubernetes) and the process id.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Passes acknowledge/clear requests from API processes to the engine. Every processor
/// reads every command (a consumer group of its own); the one holding the alert applies
/// it and records the new state, which is what the API waits for.
async fn relay_commands(
    log: Arc<dyn EventLog>,
    group: String,
    engine: mpsc::Sender<AlertCommand>,
    mut stop: watch::Receiver<bool>,
) {
    let mut consumer = loop {
        match log.subscribe(Topic::Commands, &group).await {
            Ok(consumer) => break consumer,
            Err(e) => {
                warn!(error = %e, "cannot read alert commands yet; retrying in 2 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    };
    loop {
        let polled = tokio::select! {
            polled = consumer.poll(100, 500) => polled,
            _ = stop.wait_for(|s| *s) => return,
        };
        let deliveries = match polled {
            Ok(deliveries) => deliveries,
            Err(e) => {
                warn!(error = %e, "reading alert commands failed; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        for delivery in &deliveries {
            let Ok(command) =
                serde_json::from_slice::<AlertCommandRecord>(&delivery.record.payload)
            else {
                warn!(
                    offset = delivery.offset,
                    "skipping an alert command that does not parse"
                );
                continue;
            };
            let (reply, answer) = oneshot::channel();
            let request = match command.action {
                AlertAction::Acknowledge => {
                    AlertCommand::Acknowledge(command.alert_id.clone(), reply)
                }
                AlertAction::Clear => AlertCommand::Clear(command.alert_id.clone(), reply),
            };
            if engine.send(request).await.is_err() {
                return;
            }
            // Not ours (another replica holds it) or already changed: nothing to do.
            if let Ok(Ok(alert)) = answer.await {
                info!(alert_id = %alert.id, state = alert.state.as_str(), "alert changed by hand");
            }
        }
        if !deliveries.is_empty()
            && let Err(e) = consumer.commit().await
        {
            warn!(error = %e, "committing the alert command position failed");
        }
    }
}

/// Runs the processor until `stop` resolves or it fails.
pub async fn run(config: ProcessorRole, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    telemetry::register_all();
    let connector = connector(&config.role)?;
    let limit = config.role.connect_timeout;
    let log = open("event log", limit, || connector.event_log(0)).await?;
    let registry = open("registry", limit, || connector.registry(4)).await?;
    let cache = open("cache", limit, || connector.cache()).await?;
    let declarations = open("registry", limit, || async {
        Ok(read_declarations(registry.as_ref()).await?)
    })
    .await?;
    info!(
        event_log = log.name(),
        registry = registry.name(),
        cache = cache.name(),
        group = %config.group,
        devices = declarations.devices.len(),
        rules = declarations.rules.len(),
        "processor starting"
    );

    let (stopping, stopped) = watch::channel(false);
    let probe = Arc::new(|| {
        let last_tick = telemetry::PROCESSOR_LAST_TICK.get();
        vec![ComponentStatus {
            name: "processor".to_owned(),
            backend: "loop".to_owned(),
            up: now_ms() / 1000 - last_tick <= 10,
            detail: "the processing loop has not ticked for over 10 s".to_owned(),
        }]
    });
    let (_, ops) = serve_ops(config.role.ops_addr, probe, stopped.clone()).await?;

    let (declarations_tx, declarations_rx) = watch::channel(declarations);
    let refresher = tokio::spawn(refresh(
        registry.clone(),
        config.refresh,
        declarations_tx,
        stopped.clone(),
    ));
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let relay = tokio::spawn(relay_commands(
        log.clone(),
        format!("{}-commands-{}", config.group, instance_id()),
        commands_tx,
        stopped.clone(),
    ));
    let processor_config = ProcessorConfig {
        group: config.group.clone(),
        engine: EngineConfig {
            window_ms: config.window.as_millis().try_into().unwrap_or(i64::MAX),
            moving_average: config.moving_average,
            ..EngineConfig::default()
        },
        ..ProcessorConfig::default()
    };
    let sinks = ProcessorSinks {
        log,
        registry,
        cache,
    };
    let worker = tokio::spawn(async move {
        processor::run(
            processor_config,
            sinks,
            declarations_rx,
            commands_rx,
            stopped,
        )
        .await
        .context("the processor stopped")
    });
    let result = supervise("processor", worker, &stopping, stop).await;
    let _ = refresher.await;
    relay.abort();
    let _ = ops.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, fleet: Option<&str>, interval: Option<i64>) -> DeviceRecord {
        DeviceRecord {
            device_id: id.to_owned(),
            device_type: "temperature_sensor".to_owned(),
            location: None,
            status: "active".to_owned(),
            fleet: fleet.map(str::to_owned),
            publish_interval_ms: interval,
            offline_after_ms: None,
        }
    }

    #[test]
    fn only_fleet_devices_are_declared_with_defaults_filled() {
        let devices = declared(vec![
            record("b", Some("lab"), Some(1000)),
            record("stray", None, None),
            record("a", Some("lab"), None),
        ]);
        let ids: Vec<&str> = devices.iter().map(|d| d.device_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(devices[0].publish_interval_ms, DEFAULT_INTERVAL_MS);
        assert_eq!(devices[0].offline_after_ms, DEFAULT_OFFLINE_AFTER_MS);
        assert_eq!(devices[1].publish_interval_ms, 1000);
    }
}
