//! `sensorfleet bridge`: MQTT (shared subscription, QoS 1, manual acks) → event log +
//! time series + latest values. A message is acknowledged to the broker only after the
//! batch holding it is durable in every sink, so a bridge killed at any moment loses
//! nothing: the broker redelivers what was not acknowledged.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use sensorfleet_api::ComponentStatus;
use sensorfleet_workers::bridge::book::BookLimits;
use sensorfleet_workers::bridge::{self, BridgeConfig, BridgeSinks};
use sensorfleet_workers::mqtt::MqttEndpoint;
use sensorfleet_workers::telemetry;
use tokio::sync::watch;
use tracing::info;

use super::{RoleConfig, connector, open, serve_ops, supervise};

/// Settings of `sensorfleet bridge`.
#[derive(Debug, Clone)]
pub struct BridgeRole {
    /// Backends and ops address.
    pub role: RoleConfig,
    /// The broker devices publish to.
    pub mqtt: MqttEndpoint,
    /// MQTT client id prefix; keep it stable per replica so the broker keeps the session.
    pub client_id: String,
    /// Shared-subscription group every replica joins.
    pub share_group: String,
    /// MQTT connections of this replica.
    pub connections: usize,
    /// Largest accepted payload.
    pub max_payload_bytes: usize,
    /// Oldest accepted reading (zero: no limit but the stores' range).
    pub max_age: std::time::Duration,
    /// Caps on undeclared devices and locations per device.
    pub book: BookLimits,
    /// Most messages per batch.
    pub batch_max: usize,
    /// How long a batch waits to fill.
    pub linger: std::time::Duration,
}

/// Runs the bridge until `stop` resolves or it fails.
pub async fn run(config: BridgeRole, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    telemetry::register_all();
    let connector = connector(&config.role)?;
    let limit = config.role.connect_timeout;
    let log = open("event log", limit, || connector.event_log(0)).await?;
    let series = open("time series", limit, || connector.time_series()).await?;
    let cache = open("cache", limit, || connector.cache()).await?;
    // The declared devices, once at start: their types are the ones their readings must
    // carry, and they are never capped. A device declared later counts as undeclared
    // (first seen) until the bridge restarts.
    let registry = open("registry", limit, || connector.registry(1)).await?;
    let declared = open("registry", limit, || async {
        Ok(super::processor::declared(registry.devices().await?))
    })
    .await?;
    drop(registry);

    let (stopping, stopped) = watch::channel(false);
    let mqtt_shown = config.mqtt.to_string();
    let probe = Arc::new(move || {
        vec![ComponentStatus {
            name: "mqtt".to_owned(),
            backend: "external".to_owned(),
            up: telemetry::BRIDGE_CONNECTED.get() == 1,
            detail: format!("not subscribed at {mqtt_shown}"),
        }]
    });
    let (_, ops) = serve_ops(config.role.ops_addr, probe, stopped.clone()).await?;

    let mut bridge_config = BridgeConfig::new(config.mqtt.clone());
    bridge_config.client_id = config.client_id.clone();
    bridge_config.share_group = Some(config.share_group.clone());
    bridge_config.connections = config.connections;
    bridge_config.limits.max_payload_bytes = config.max_payload_bytes;
    bridge_config.limits.max_age_ms = match config.max_age.as_millis() {
        0 => None,
        ms => Some(i64::try_from(ms).unwrap_or(i64::MAX)),
    };
    bridge_config.book = config.book;
    bridge_config.declared = declared;
    bridge_config.batch_max = config.batch_max;
    bridge_config.linger = config.linger;
    info!(
        mqtt = %config.mqtt,
        event_log = log.name(),
        time_series = series.name(),
        cache = cache.name(),
        declared = bridge_config.declared.len(),
        max_undeclared = config.book.max_undeclared,
        group = %config.share_group,
        "bridge starting"
    );
    let sinks = BridgeSinks { log, series, cache };
    let worker = tokio::spawn(async move {
        bridge::run(bridge_config, sinks, stopped)
            .await
            .context("the bridge stopped")
    });
    let result = supervise("bridge", worker, &stopping, stop).await;
    let _ = ops.await;
    result
}
