//! The production cache: Redis 7 through `fred`.
//!
//! Keys (DESIGN §3, the original design's names, all under an optional prefix):
//!
//! | key | type | what | TTL |
//! | --- | --- | --- | --- |
//! | `device:{id}:avg_temp`, `device:{id}:humidity`, `device:{id}:health_score` | string | one metric each, for other readers of the original design | 300 s |
//! | `device:{id}:metrics` | string (JSON) | [`DeviceMetrics`] (health, and the moving average and window statistics of the main field, for every device type) plus `expires_ms`; what [`Cache::metrics`] reads | 300 s |
//! | `devices:metrics` | set | ids with metrics, so [`Cache::all_metrics`] needs no `SCAN`; ids whose metrics expired are removed when read | — |
//! | `device:{id}:latest` | string (JSON) | latest [`Reading`] | — |
//! | `devices:last_seen` | hash | id → reading time (unix ms) of `device:{id}:latest` | — |
//! | `alerts` | list (JSON) | newest first, at most [`ALERT_LIST_CAP`], one entry per alert id | — |
//! | `alerts:by_id` | hash | alert id → its JSON in `alerts`, to remove the older state of an id | — |
//! | `dashboard:active_devices`, `dashboard:total_alerts`, `dashboard:average_health_score` | string | the counters, for other readers | 60 s |
//! | `dashboard:counters` | string (JSON) | [`DashboardCounters`] plus `expires_ms`; what [`Cache::dashboard`] reads | 60 s |
//!
//! Live feed: channel `sensorfleet:live` (prefixed too), messages
//! `{"type":"reading","data":…}` and `{"type":"alert","data":…}`.
//!
//! Time: expiry is a Redis TTL (`PX`), counted by the server's clock from the write. The
//! trait's `now_ms` arguments are the caller's clock, which Redis does not know; so the
//! JSON values also carry `expires_ms = now_ms + TTL` and reads drop what has expired by
//! the caller's `now_ms`. Both hold: a key disappears 300 s (60 s) after it was written,
//! and a caller asking "as of `now_ms`" never sees what had expired by then (the suite
//! asks far in the future).
//!
//! "Only replace the latest reading when newer" and "one alert entry per id" are
//! read-compare-write steps; each is one small Lua script (`EVAL`), so it is atomic
//! against other writers (several processors, a bridge) without `WATCH` retries, and
//! still travels in the same pipeline as the rest of the batch: one round trip per call.
//! The scripts name every key they touch in `KEYS`, but one script spans several devices'
//! keys, so this backend targets a single Redis server (or a primary with replicas), not
//! Redis Cluster.
//!
//! No TLS: the `fred` dependency is built without its TLS features to keep the tree lean.
//! `fred` would then connect to a `rediss://` URL in plain text, so [`RedisCache::connect`]
//! refuses every scheme but `redis://` (and `valkey://`). Redis is expected on a trusted
//! network (same pod network, or a TLS-terminating sidecar).

mod live;
mod scripts;

use std::time::Duration;

use fred::clients::{Pipeline, SubscriberClient};
use fred::prelude::{
    Builder, Client, ClientLike, Config, ErrorKind, EventInterface, Expiration, HashesInterface,
    KeysInterface, ListInterface, PubsubInterface, ReconnectPolicy, SetsInterface, Value,
};

use sensorfleet_model::{Alert, Reading};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use self::live::{WireEvent, forward_live};
use self::scripts::{PRUNE_METRICS_SCRIPT, PUSH_ALERTS_SCRIPT, PUT_LATEST_SCRIPT, queue_eval};
use super::{
    ALERT_LIST_CAP, Cache, DASHBOARD_TTL_MS, DEVICE_METRICS_TTL_MS, DashboardCounters,
    DeviceMetrics, LiveEvent,
};
use crate::BackendError;
use crate::url::mask;

const BACKEND: &str = "redis";
/// How many live events a slow WebSocket client may fall behind before it skips; also the
/// buffer between the subscriber connection and the forwarding task.
const LIVE_BUFFER: usize = 4096;
/// The live feed's channel (after the prefix).
const LIVE_CHANNEL: &str = "sensorfleet:live";
/// Readings (alerts, metric ids) per `EVAL`: keeps one script run short so it does not
/// stall the server for other clients; a batch is still one round trip.
const SCRIPT_CHUNK: usize = 256;
/// A command (or a whole pipeline) that takes longer fails as `Unavailable`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `device:{id}:metrics`: the metrics with the caller's expiry time.
#[derive(Serialize, Deserialize)]
struct StoredMetrics {
    #[serde(flatten)]
    metrics: DeviceMetrics,
    expires_ms: i64,
}

/// `dashboard:counters`: the counters with the caller's expiry time.
#[derive(Serialize, Deserialize)]
struct StoredCounters {
    #[serde(flatten)]
    counters: DashboardCounters,
    expires_ms: i64,
}

/// The Redis cache. One command connection (pipelined writes) and one subscriber
/// connection that feeds [`Cache::live`]; both reconnect by themselves.
pub struct RedisCache {
    client: Client,
    subscriber: SubscriberClient,
    prefix: String,
    channel: String,
    live: broadcast::Sender<LiveEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisCache {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`), subscribes to the live
    /// channel and starts the task that forwards it. Fails with
    /// [`BackendError::Unavailable`] (naming the URL, password masked) when Redis cannot be
    /// reached, and with [`BackendError::Rejected`] for a URL that is not a plain-TCP
    /// Redis URL (`rediss://` included: this build has no TLS) or bad credentials.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        Self::connect_with_prefix(url, "").await
    }

    /// Like [`RedisCache::connect`], with every key and the live channel under `prefix`
    /// (e.g. `staging:`), so several fleets or test runs can share one Redis.
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<Self, BackendError> {
        let shown = mask(url);
        let at = |e: fred::error::Error| connect_error(&shown, url, e);
        // fred without a TLS feature would connect to a `rediss://` URL in plain text
        // (it only logs a warning), sending the password in the clear: refuse instead.
        // Cluster, sentinel and unix-socket schemes are not built in either.
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("redis" | "valkey")) {
            return Err(BackendError::Rejected {
                backend: BACKEND,
                detail: format!(
                    "cannot connect to {shown}: only plain-TCP redis:// URLs are supported \
                     (this build has no TLS, cluster or sentinel support)"
                ),
            });
        }
        let config = Config::from_url(url).map_err(at)?;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = CONNECT_TIMEOUT;
                c.internal_command_timeout = CONNECT_TIMEOUT;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
                // fred's own broadcast of pub/sub messages: 32 by default, which a burst
                // of one batch overruns before the forwarding task runs.
                p.broadcast_channel_capacity = LIVE_BUFFER;
            })
            // After the first connection (which fails fast): retry forever, 100 ms
            // doubling to 5 s. Commands meanwhile time out as `Unavailable`.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));

        let client = builder.build().map_err(at)?;
        client.init().await.map_err(at)?;
        let subscriber = match builder.build_subscriber_client() {
            Ok(subscriber) => subscriber,
            Err(e) => {
                let _ = client.quit().await;
                return Err(at(e));
            }
        };
        if let Err(e) = subscriber.init().await {
            let _ = client.quit().await;
            return Err(at(e));
        }

        let channel = format!("{prefix}{LIVE_CHANNEL}");
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let messages = subscriber.message_rx();
        let resubscribe = subscriber.manage_subscriptions();
        let forward = tokio::spawn(forward_live(messages, channel.clone(), live.clone()));
        let cache = Self {
            client,
            subscriber,
            prefix: prefix.to_owned(),
            channel,
            live,
            tasks: vec![forward, resubscribe],
        };
        // Subscribed before `connect` returns: a receiver taken right after sees every
        // event published after it.
        cache
            .subscriber
            .subscribe(cache.channel.as_str())
            .await
            .map_err(at)?;
        tracing::info!(url = %shown, prefix, "redis cache connected");
        Ok(cache)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn device_key(&self, device_id: &str, what: &str) -> String {
        format!("{}device:{device_id}:{what}", self.prefix)
    }
}

impl Drop for RedisCache {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Close both connections (their tasks would otherwise keep reconnecting).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let subscriber = self.subscriber.clone();
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
                let _ = client.quit().await;
            });
        }
    }
}

fn is_transient(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Routing
            | ErrorKind::Backpressure
            | ErrorKind::Cluster
    )
}

/// Connection/IO/timeouts: `Unavailable` (retry later); anything else: `Rejected`.
fn map_error(e: fred::error::Error) -> BackendError {
    let detail = e.to_string();
    if is_transient(e.kind()) {
        BackendError::Unavailable {
            backend: BACKEND,
            detail,
        }
    } else {
        BackendError::Rejected {
            backend: BACKEND,
            detail,
        }
    }
}

/// A failure while connecting: always names the (masked) URL. An unreachable server or a
/// failed handshake is `Unavailable`; a malformed URL or bad credentials are `Rejected`,
/// since retrying will not fix them.
fn connect_error(shown: &str, url: &str, e: fred::error::Error) -> BackendError {
    let mut said = e.details().to_owned();
    // The client library may echo the URL it was given.
    if url != shown && !url.is_empty() {
        said = said.replace(url, shown);
    }
    let detail = format!("cannot connect to {shown}: {said}");
    match e.kind() {
        ErrorKind::Url | ErrorKind::Config | ErrorKind::Auth => BackendError::Rejected {
            backend: BACKEND,
            detail,
        },
        _ => BackendError::Unavailable {
            backend: BACKEND,
            detail,
        },
    }
}

/// Queues the live events after a batch's writes, then sends the whole pipeline: one
/// round trip per call.
async fn publish_and_send(
    pipeline: &Pipeline<Client>,
    channel: &str,
    events: Vec<String>,
) -> Result<(), BackendError> {
    for event in events {
        let _: () = pipeline.publish(channel, event).await.map_err(map_error)?;
    }
    let _: Value = pipeline.all().await.map_err(map_error)?;
    Ok(())
}

fn decode_error(key: &str, e: &serde_json::Error) -> BackendError {
    BackendError::Rejected {
        backend: BACKEND,
        detail: format!("{key} holds a value this version cannot read: {e}"),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<String, BackendError> {
    serde_json::to_string(value).map_err(|e| BackendError::Rejected {
        backend: BACKEND,
        detail: format!("cannot encode as JSON: {e}"),
    })
}

#[async_trait::async_trait]
impl Cache for RedisCache {
    async fn put_latest(&self, readings: &[Reading]) -> Result<(), BackendError> {
        if readings.is_empty() {
            return Ok(());
        }
        let last_seen = self.key("devices:last_seen");
        let pipeline = self.client.pipeline();
        let mut events = Vec::with_capacity(readings.len());
        for chunk in readings.chunks(SCRIPT_CHUNK) {
            let mut keys = Vec::with_capacity(chunk.len() + 1);
            let mut args = Vec::with_capacity(chunk.len() * 3);
            keys.push(last_seen.clone());
            for reading in chunk {
                keys.push(self.device_key(&reading.device_id, "latest"));
                args.push(reading.device_id.clone());
                args.push(reading.ts_ms.to_string());
                args.push(encode(reading)?);
                events.push(encode(&WireEvent::Reading(reading))?);
            }
            queue_eval(&pipeline, PUT_LATEST_SCRIPT, keys, args).await?;
        }
        // After the writes: a live client that reacts by reading `latest` sees it.
        publish_and_send(&pipeline, &self.channel, events).await
    }

    async fn latest(&self, device_id: &str) -> Result<Option<Reading>, BackendError> {
        let key = self.device_key(device_id, "latest");
        let json: Option<String> = self.client.get(&key).await.map_err(map_error)?;
        json.map(|json| serde_json::from_str(&json).map_err(|e| decode_error(&key, &e)))
            .transpose()
    }

    async fn last_seen(&self) -> Result<Vec<(String, i64)>, BackendError> {
        let key = self.key("devices:last_seen");
        let seen: Vec<(String, String)> = self
            .client
            .hgetall::<std::collections::HashMap<String, String>, _>(&key)
            .await
            .map_err(map_error)?
            .into_iter()
            .collect();
        let mut out = Vec::with_capacity(seen.len());
        for (id, ts) in seen {
            match ts.parse::<i64>() {
                Ok(ts) => out.push((id, ts)),
                Err(_) => tracing::warn!(key, id, ts, "not a time in milliseconds, skipped"),
            }
        }
        Ok(out)
    }

    async fn put_metrics(
        &self,
        metrics: &[DeviceMetrics],
        now_ms: i64,
    ) -> Result<(), BackendError> {
        if metrics.is_empty() {
            return Ok(());
        }
        let ttl = Some(Expiration::PX(DEVICE_METRICS_TTL_MS));
        let pipeline = self.client.pipeline();
        for m in metrics {
            let id = &m.device_id;
            for (what, value) in [("avg_temp", m.avg_temp), ("humidity", m.humidity)] {
                let key = self.device_key(id, what);
                let _: () = match value {
                    Some(v) => {
                        pipeline
                            .set(key, v.to_string(), ttl.clone(), None, false)
                            .await
                    }
                    // Not measured (any more): no stale value from an earlier type.
                    None => pipeline.del(key).await,
                }
                .map_err(map_error)?;
            }
            let _: () = pipeline
                .set(
                    self.device_key(id, "health_score"),
                    m.health_score.to_string(),
                    ttl.clone(),
                    None,
                    false,
                )
                .await
                .map_err(map_error)?;
            let stored = StoredMetrics {
                metrics: m.clone(),
                expires_ms: now_ms + DEVICE_METRICS_TTL_MS,
            };
            let _: () = pipeline
                .set(
                    self.device_key(id, "metrics"),
                    encode(&stored)?,
                    ttl.clone(),
                    None,
                    false,
                )
                .await
                .map_err(map_error)?;
        }
        let ids: Vec<String> = metrics.iter().map(|m| m.device_id.clone()).collect();
        let _: () = pipeline
            .sadd(self.key("devices:metrics"), ids)
            .await
            .map_err(map_error)?;
        let _: Value = pipeline.all().await.map_err(map_error)?;
        Ok(())
    }

    async fn metrics(
        &self,
        device_id: &str,
        now_ms: i64,
    ) -> Result<Option<DeviceMetrics>, BackendError> {
        let key = self.device_key(device_id, "metrics");
        let json: Option<String> = self.client.get(&key).await.map_err(map_error)?;
        let Some(json) = json else {
            return Ok(None);
        };
        let stored: StoredMetrics =
            serde_json::from_str(&json).map_err(|e| decode_error(&key, &e))?;
        Ok((stored.expires_ms > now_ms).then_some(stored.metrics))
    }

    async fn all_metrics(&self, now_ms: i64) -> Result<Vec<DeviceMetrics>, BackendError> {
        let set = self.key("devices:metrics");
        let ids: Vec<String> = self.client.smembers(&set).await.map_err(map_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.client.pipeline();
        for chunk in ids.chunks(SCRIPT_CHUNK) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|id| self.device_key(id, "metrics"))
                .collect();
            let _: () = pipeline.mget(keys).await.map_err(map_error)?;
        }
        let mut values = Vec::with_capacity(ids.len());
        for reply in pipeline.try_all::<Vec<Option<String>>>().await {
            values.extend(reply.map_err(map_error)?);
        }
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, json) in ids.iter().zip(values) {
            let Some(json) = json else {
                gone.push(id.clone());
                continue;
            };
            match serde_json::from_str::<StoredMetrics>(&json) {
                Ok(stored) if stored.expires_ms > now_ms => out.push(stored.metrics),
                Ok(_) => {}
                Err(e) => tracing::warn!(device_id = id, error = %e, "unreadable metrics skipped"),
            }
        }
        if !gone.is_empty() {
            let pipeline = self.client.pipeline();
            for chunk in gone.chunks(SCRIPT_CHUNK) {
                let mut keys = vec![set.clone()];
                keys.extend(chunk.iter().map(|id| self.device_key(id, "metrics")));
                queue_eval(&pipeline, PRUNE_METRICS_SCRIPT, keys, chunk.to_vec()).await?;
            }
            let _: Value = pipeline.all().await.map_err(map_error)?;
        }
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(out)
    }

    async fn push_alerts(&self, alerts: &[Alert]) -> Result<(), BackendError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let keys = vec![self.key("alerts"), self.key("alerts:by_id")];
        let pipeline = self.client.pipeline();
        let mut events = Vec::with_capacity(alerts.len());
        for chunk in alerts.chunks(SCRIPT_CHUNK) {
            let mut args = Vec::with_capacity(chunk.len() * 2 + 1);
            args.push(ALERT_LIST_CAP.to_string());
            for alert in chunk {
                args.push(alert.id.clone());
                args.push(encode(alert)?);
                events.push(encode(&WireEvent::Alert(alert))?);
            }
            queue_eval(&pipeline, PUSH_ALERTS_SCRIPT, keys.clone(), args).await?;
        }
        publish_and_send(&pipeline, &self.channel, events).await
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, BackendError> {
        let limit = limit.min(ALERT_LIST_CAP);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.key("alerts");
        let entries: Vec<String> = self
            .client
            .lrange(&key, 0, limit as i64 - 1)
            .await
            .map_err(map_error)?;
        Ok(entries
            .iter()
            .filter_map(|json| match serde_json::from_str::<Alert>(json) {
                Ok(alert) => Some(alert),
                Err(e) => {
                    tracing::warn!(key, error = %e, "unreadable alert skipped");
                    None
                }
            })
            .collect())
    }

    async fn put_dashboard(
        &self,
        counters: DashboardCounters,
        now_ms: i64,
    ) -> Result<(), BackendError> {
        let ttl = Some(Expiration::PX(DASHBOARD_TTL_MS));
        let stored = StoredCounters {
            counters,
            expires_ms: now_ms + DASHBOARD_TTL_MS,
        };
        let pipeline = self.client.pipeline();
        for (name, value) in [
            (
                "dashboard:active_devices",
                counters.active_devices.to_string(),
            ),
            ("dashboard:total_alerts", counters.total_alerts.to_string()),
            (
                "dashboard:average_health_score",
                counters.average_health_score.to_string(),
            ),
            ("dashboard:counters", encode(&stored)?),
        ] {
            let _: () = pipeline
                .set(self.key(name), value, ttl.clone(), None, false)
                .await
                .map_err(map_error)?;
        }
        let _: Value = pipeline.all().await.map_err(map_error)?;
        Ok(())
    }

    async fn dashboard(&self, now_ms: i64) -> Result<Option<DashboardCounters>, BackendError> {
        let key = self.key("dashboard:counters");
        let json: Option<String> = self.client.get(&key).await.map_err(map_error)?;
        let Some(json) = json else {
            return Ok(None);
        };
        let stored: StoredCounters =
            serde_json::from_str(&json).map_err(|e| decode_error(&key, &e))?;
        Ok((stored.expires_ms > now_ms).then_some(stored.counters))
    }

    fn live(&self) -> broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }

    fn name(&self) -> &'static str {
        BACKEND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tls_urls_are_refused_not_downgraded() {
        let Err(e) = RedisCache::connect("rediss://:s3cret@127.0.0.1:6379").await else {
            panic!("connected over plain text to a rediss:// URL");
        };
        let text = e.to_string();
        assert!(matches!(e, BackendError::Rejected { .. }), "{text}");
        assert!(text.contains("TLS") && !text.contains("s3cret"), "{text}");
    }

    #[test]
    fn stored_metrics_are_the_metrics_plus_an_expiry() {
        let stored = StoredMetrics {
            metrics: DeviceMetrics {
                device_id: "d1".to_owned(),
                avg_temp: Some(21.5),
                humidity: None,
                health_score: 0.9,
                status: "online".to_owned(),
                ..DeviceMetrics::default()
            },
            expires_ms: 5,
        };
        let json: serde_json::Value =
            serde_json::from_str(&encode(&stored).expect("encode")).expect("json");
        assert_eq!(json["device_id"], "d1");
        assert_eq!(json["health_score"], 0.9);
        assert_eq!(json["expires_ms"], 5);
    }
}
