//! The embedded cache: maps behind locks, expiry checked on read, a broadcast channel
//! for the live feed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use sensorfleet_model::{Alert, Reading};
use tokio::sync::broadcast;

use super::{
    ALERT_LIST_CAP, Cache, DASHBOARD_TTL_MS, DEVICE_METRICS_TTL_MS, DashboardCounters,
    DeviceMetrics, LiveEvent,
};
use crate::BackendError;

/// How many live events a slow WebSocket client may fall behind before it skips.
const LIVE_BUFFER: usize = 4096;

/// The embedded cache.
pub struct MemoryCache {
    latest: RwLock<HashMap<String, Arc<Reading>>>,
    metrics: RwLock<HashMap<String, (DeviceMetrics, i64)>>,
    /// When expired metrics were last swept out, unix milliseconds.
    metrics_swept_ms: AtomicI64,
    alerts: RwLock<VecDeque<Alert>>,
    dashboard: RwLock<Option<(DashboardCounters, i64)>>,
    live: broadcast::Sender<LiveEvent>,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self {
            latest: RwLock::default(),
            metrics: RwLock::default(),
            metrics_swept_ms: AtomicI64::new(0),
            alerts: RwLock::default(),
            dashboard: RwLock::default(),
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Cache for MemoryCache {
    async fn put_latest(&self, readings: &[Reading]) -> Result<(), BackendError> {
        let mut latest = write(&self.latest);
        for reading in readings {
            let reading = Arc::new(reading.clone());
            let newer = latest
                .get(&reading.device_id)
                .is_none_or(|stored| stored.ts_ms <= reading.ts_ms);
            if newer {
                latest.insert(reading.device_id.clone(), Arc::clone(&reading));
            }
            // No receiver is fine: nobody is watching.
            let _ = self.live.send(LiveEvent::Reading(reading));
        }
        Ok(())
    }

    async fn latest(&self, device_id: &str) -> Result<Option<Reading>, BackendError> {
        Ok(read(&self.latest).get(device_id).map(|r| (**r).clone()))
    }

    async fn last_seen(&self) -> Result<Vec<(String, i64)>, BackendError> {
        Ok(read(&self.latest)
            .iter()
            .map(|(id, r)| (id.clone(), r.ts_ms))
            .collect())
    }

    async fn put_metrics(
        &self,
        metrics: &[DeviceMetrics],
        now_ms: i64,
    ) -> Result<(), BackendError> {
        let mut stored = write(&self.metrics);
        for m in metrics {
            stored.insert(
                m.device_id.clone(),
                (m.clone(), now_ms + DEVICE_METRICS_TTL_MS),
            );
        }
        // Expired entries would otherwise stay forever for devices that went away; one
        // sweep per TTL bounds the map to the devices seen within two TTLs.
        if now_ms - self.metrics_swept_ms.load(Ordering::Relaxed) >= DEVICE_METRICS_TTL_MS {
            stored.retain(|_, (_, expires)| *expires > now_ms);
            self.metrics_swept_ms.store(now_ms, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn metrics(
        &self,
        device_id: &str,
        now_ms: i64,
    ) -> Result<Option<DeviceMetrics>, BackendError> {
        Ok(read(&self.metrics)
            .get(device_id)
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(m, _)| m.clone()))
    }

    async fn all_metrics(&self, now_ms: i64) -> Result<Vec<DeviceMetrics>, BackendError> {
        Ok(read(&self.metrics)
            .values()
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(m, _)| m.clone())
            .collect())
    }

    async fn push_alerts(&self, alerts: &[Alert]) -> Result<(), BackendError> {
        let mut list = write(&self.alerts);
        for alert in alerts {
            // One entry per alert id: an update replaces the older state.
            list.retain(|a| a.id != alert.id);
            list.push_front(alert.clone());
            list.truncate(ALERT_LIST_CAP);
            let _ = self.live.send(LiveEvent::Alert(Arc::new(alert.clone())));
        }
        Ok(())
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, BackendError> {
        Ok(read(&self.alerts).iter().take(limit).cloned().collect())
    }

    async fn put_dashboard(
        &self,
        counters: DashboardCounters,
        now_ms: i64,
    ) -> Result<(), BackendError> {
        *write(&self.dashboard) = Some((counters, now_ms + DASHBOARD_TTL_MS));
        Ok(())
    }

    async fn dashboard(&self, now_ms: i64) -> Result<Option<DashboardCounters>, BackendError> {
        Ok(read(&self.dashboard)
            .filter(|(_, expires)| *expires > now_ms)
            .map(|(c, _)| c))
    }

    fn live(&self) -> broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
