//! The processor's pure core: per-device state, windows, detectors, alert lifecycle and
//! health, fed with readings and the current time, returning what to write. No I/O and
//! no clock: the loop in `mod.rs` does those, and this is tested on its own.

use std::collections::HashMap;
use std::sync::Arc;

use sensorfleet_model::analytics::{
    self, Condition, DetectorConfig, HealthInputs, Threshold, WindowStats,
};
use sensorfleet_model::{Alert, AlertKind, CompiledRule, DeclaredDevice, Reading};

pub use alerts::{CommandError, describe_rule_alerts};
use alerts::{Source, Step, Tracked};
pub use device::main_field;
use device::{DeviceState, FieldState};

mod alerts;
mod device;
#[cfg(test)]
mod tests;

/// Heap bytes of one window bucket (start, count, mean, M2, min, max).
const BUCKET_BYTES: usize = 48;

/// Tuning of the processor.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sliding window width (default 5 min).
    pub window_ms: i64,
    /// Buckets in the window: its time resolution is `window_ms / buckets`.
    pub window_buckets: u16,
    /// Readings in the moving average (default 10).
    pub moving_average: usize,
    /// Anomaly detector tuning.
    pub detector: DetectorConfig,
    /// Battery percentage below which `low_battery` fires.
    pub low_battery_pct: f64,
    /// Battery percentage at or above which `low_battery` clears (hysteresis).
    pub low_battery_clear_pct: f64,
    /// Offline threshold for devices no fleet declares.
    pub default_offline_after_ms: i64,
    /// Most devices kept; readings of further devices are stored but not analysed.
    pub max_devices: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            window_ms: 5 * 60_000,
            window_buckets: 10,
            moving_average: 10,
            detector: DetectorConfig::default(),
            low_battery_pct: 15.0,
            low_battery_clear_pct: 20.0,
            default_offline_after_ms: 5 * 60_000,
            max_devices: 1_000_000,
        }
    }
}

/// What a device's fleet declares about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// Owning fleet.
    pub fleet: Option<Arc<str>>,
    /// Expected publish interval.
    pub publish_interval_ms: Option<i64>,
    /// Silence after which it is offline.
    pub offline_after_ms: i64,
}

/// Per-device metrics the engine reports.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    /// Device.
    pub device_id: String,
    /// Moving average of the main field.
    pub moving_average: Option<f64>,
    /// Name of the main field.
    pub main_field: Option<String>,
    /// Window statistics of the main field.
    pub window: Option<WindowStats>,
    /// Health score in [0, 1].
    pub health_score: f64,
    /// Whether the device reported within its offline threshold.
    pub online: bool,
}

/// What one step of the engine asks the loop to write.
#[derive(Debug, Default)]
pub struct Output {
    /// Alerts that fired, resolved, or were acknowledged or cleared.
    pub alerts: Vec<Alert>,
    /// Rule state rows to save: `(device, source, state JSON)`, `None` to delete.
    pub state: Vec<(String, String, Option<String>)>,
    /// Devices seen for the first time: `(device_id, device_type, location)`.
    pub new_devices: Vec<(String, String, Option<String>)>,
}

impl Output {
    /// True when nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.state.is_empty() && self.new_devices.is_empty()
    }
}

/// The processor's state for every device.
pub struct Engine {
    cfg: EngineConfig,
    rules: Vec<CompiledRule>,
    declared: HashMap<String, Declared>,
    devices: HashMap<Box<str>, DeviceState>,
    /// Interned device types and field names: thousands of devices share a handful.
    names: HashMap<String, Arc<str>>,
    /// Readings of devices beyond `max_devices`.
    pub skipped_devices: u64,
}

impl Engine {
    /// An engine with no device yet.
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            cfg,
            rules: Vec::new(),
            declared: HashMap::new(),
            devices: HashMap::new(),
            names: HashMap::new(),
            skipped_devices: 0,
        }
    }

    /// Replaces the alert rules; alerts of removed rules (or of rules that no longer apply to
    /// the device) resolve on the device's next reading.
    pub fn set_rules(&mut self, rules: Vec<CompiledRule>) {
        self.rules = rules;
    }

    /// Replaces the declared devices (fleet, interval, offline threshold).
    pub fn set_declared(&mut self, devices: &[DeclaredDevice]) {
        self.declared = devices
            .iter()
            .map(|d| {
                let fleet = Some(self.intern(&d.fleet));
                (
                    d.device_id.clone(),
                    Declared {
                        fleet,
                        publish_interval_ms: Some(d.publish_interval_ms),
                        offline_after_ms: d.offline_after_ms,
                    },
                )
            })
            .collect();
    }

    /// The type a device has in this engine (first seen, or restored), if it has state.
    pub fn device_type(&self, device_id: &str) -> Option<&str> {
        self.devices.get(device_id).map(|d| &*d.device_type)
    }

    /// Number of devices with state.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// The anomaly score of the device's latest reading of its main field, by the same
    /// detector `sensorfleet detect` replays; `None` before the first such reading and
    /// for devices whose type is not checked (motion sensors).
    pub fn anomaly_score(&self, device_id: &str) -> Option<f64> {
        let main = self.devices.get(device_id)?.main.as_ref()?;
        main.detect.then_some(main.score)
    }

    /// Approximate bytes of state: the structs, their heap parts and the map overhead.
    pub fn state_bytes(&self) -> usize {
        let per_device: usize = self
            .devices
            .iter()
            .map(|(id, d)| {
                id.len()
                    + std::mem::size_of::<DeviceState>()
                    + std::mem::size_of::<Box<str>>()
                    + d.alerts.heap_bytes()
                    + d.main.as_ref().map_or(0, |_| {
                        // The window's buckets and the average's ring live on the heap.
                        std::mem::size_of::<FieldState>()
                            + usize::from(self.cfg.window_buckets) * BUCKET_BYTES
                            + self.cfg.moving_average * std::mem::size_of::<f64>()
                    })
                    + 16 // hash map control bytes and padding
            })
            .sum();
        per_device + self.declared.len() * (std::mem::size_of::<Declared>() + 48)
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(name) = self.names.get(name) {
            return Arc::clone(name);
        }
        let shared: Arc<str> = Arc::from(name);
        self.names.insert(name.to_owned(), Arc::clone(&shared));
        shared
    }

    fn offline_after(&self, device_id: &str) -> i64 {
        self.declared
            .get(device_id)
            .map_or(self.cfg.default_offline_after_ms, |d| d.offline_after_ms)
    }

    /// Restores rule state saved by an earlier run: `(device, source, state JSON)`.
    /// Rows that do not parse are skipped; returns how many were restored.
    pub fn restore(&mut self, rows: &[(String, String, String)]) -> usize {
        let mut restored = 0;
        for (device_id, source_key, json) in rows {
            let (Some(source), Ok(mut tracked)) = (
                Source::parse(source_key),
                serde_json::from_str::<Tracked>(json),
            ) else {
                continue;
            };
            tracked.source = source;
            let device_type = self.intern(&tracked.device_type);
            let device = self
                .devices
                .entry(Box::from(device_id.as_str()))
                .or_insert_with(|| DeviceState::new(device_type, 0));
            device.alerts.restore(tracked);
            restored += 1;
        }
        restored
    }

    /// Whether the engine has state for the device.
    pub fn knows(&self, device_id: &str) -> bool {
        self.devices.contains_key(device_id)
    }

    /// Forgets every device `keep` refuses (their partitions moved to another
    /// processor); returns how many. Their alerts and rule state stay in the registry,
    /// where the new owner reads them.
    pub fn forget(&mut self, keep: impl Fn(&str) -> bool) -> usize {
        let before = self.devices.len();
        self.devices.retain(|id, _| keep(id));
        before - self.devices.len()
    }

    /// Starts the silence clock of a device not heard from in this engine at
    /// `last_seen_ms` (the cache's last reading time, written by the bridge), so a device
    /// that never sends again still goes offline. A device with readings processed here
    /// is left alone; one restored from rule state only gets its clock. Readings older
    /// than the clock (a backlog still in the log) drive its alerts as usual; they do not
    /// turn the clock back. Returns whether it was seeded (not at the device cap, not
    /// seeded or heard from already).
    pub fn seed(&mut self, device_id: &str, device_type: &str, last_seen_ms: i64) -> bool {
        if last_seen_ms <= 0 {
            return false;
        }
        if !self.devices.contains_key(device_id) {
            if self.devices.len() >= self.cfg.max_devices {
                return false;
            }
            let device_type = self.intern(device_type);
            let device = DeviceState::new(device_type, 0);
            self.devices.insert(Box::from(device_id), device);
        }
        let Some(device) = self.devices.get_mut(device_id) else {
            return false;
        };
        if device.heard_ms() != 0 {
            return false;
        }
        device.seen_ms = last_seen_ms;
        if device.first_ts_ms == 0 {
            device.first_ts_ms = last_seen_ms;
        }
        device.dirty = true;
        true
    }

    /// Processes one reading.
    pub fn observe(&mut self, reading: &Reading, out: &mut Output) {
        let now = reading.ts_ms;
        if !self.devices.contains_key(reading.device_id.as_str()) {
            if self.devices.len() >= self.cfg.max_devices {
                self.skipped_devices += 1;
                return;
            }
            let device_type = self.intern(&reading.device_type);
            self.devices.insert(
                Box::from(reading.device_id.as_str()),
                DeviceState::new(device_type, now),
            );
            out.new_devices.push((
                reading.device_id.clone(),
                reading.device_type.clone(),
                reading.location.clone(),
            ));
        }
        let main_name = main_field(&reading.device_type, reading);
        // Interned only when the device's field state is created: interning on every
        // reading grew the table by one entry per new field name a device ever sent.
        let needs_main = self
            .devices
            .get(reading.device_id.as_str())
            .is_some_and(|d| d.main.is_none());
        let new_main = main_name.filter(|_| needs_main).map(|n| self.intern(n));
        let fleet = self
            .declared
            .get(&reading.device_id)
            .and_then(|d| d.fleet.clone());
        let rules: Vec<&CompiledRule> = self
            .rules
            .iter()
            .filter(|r| r.applies_to(&reading.device_type, fleet.as_deref()))
            .collect();
        let cfg = &self.cfg;
        let Some(device) = self.devices.get_mut(reading.device_id.as_str()) else {
            return;
        };
        device.dirty = true;
        if now < device.last_ts_ms {
            // Older than a reading already processed (redelivered after a crash, or
            // reordered between broker connections): it counts in the window, but alert
            // state only moves forward in time, so it does not drive the lifecycle.
            if let (Some(main), Some(name)) = (device.main.as_mut(), main_name)
                && let Some(value) = reading.field(name).filter(|_| *main.name == *name)
            {
                main.window.push(now, value);
            }
            return;
        }
        device.last_ts_ms = now;
        if let Some(b) = reading.field("meta_battery_level") {
            device.battery = Some(b as f32);
        }
        if let Some(s) = reading.field("meta_signal_strength") {
            device.signal = Some(s as f32);
        }
        let alerts = &mut device.alerts;
        let mut step = Step {
            device_id: &reading.device_id,
            device_type: &device.device_type,
            now_ms: now,
            cfg,
            out,
        };

        // The device reported: an offline alert clears.
        alerts.advance(&mut step, Source::OFFLINE, Condition::Clear, 0, 0.0);

        // Alerts of rules that no longer exist, or no longer apply to this device, resolve.
        let rule_names: Vec<Arc<str>> = rules.iter().map(|r| Arc::from(r.name.as_str())).collect();
        for source in alerts.stale_rules(&rule_names) {
            alerts.advance(&mut step, source, Condition::Clear, 0, 0.0);
        }

        for (rule, name) in rules.iter().zip(rule_names) {
            let Some(value) = reading.field(&rule.metric) else {
                continue;
            };
            let source = Source::Rule(name);
            let active = alerts.is_active(&source);
            let condition = analytics::threshold_condition(&rule.threshold, value, active);
            alerts.advance(&mut step, source, condition, rule.for_ms, value);
        }

        if let Some(battery) = reading.field("meta_battery_level") {
            let threshold = Threshold {
                min: Some(cfg.low_battery_pct),
                max: None,
                clear_min: Some(cfg.low_battery_clear_pct),
                clear_max: None,
            };
            let source = Source::Check(AlertKind::LowBattery);
            let active = alerts.is_active(&source);
            let condition = analytics::threshold_condition(&threshold, battery, active);
            alerts.advance(&mut step, source, condition, 0, battery);
        }

        let Some(main_name) = main_name else { return };
        let Some(value) = reading.field(main_name) else {
            return;
        };
        let main = device.main.get_or_insert_with(|| {
            let name = new_main.unwrap_or_else(|| Arc::from(main_name));
            FieldState::new(name, &reading.device_type, cfg)
        });
        if *main.name != *main_name {
            return;
        }
        let Some(detected) = main.push(cfg, now, value) else {
            return;
        };
        if detected.flagged {
            device.anomalies.note(now);
        }
        for (kind, condition) in detected.conditions {
            alerts.advance(&mut step, Source::Check(kind), condition, 0, value);
        }
    }

    /// Checks every device for silence at `now_ms`; offline devices raise `offline`.
    pub fn tick(&mut self, now_ms: i64, out: &mut Output) {
        for (device_id, device) in &mut self.devices {
            if device.heard_ms() == 0 {
                continue;
            }
            let offline_after = self
                .declared
                .get(&**device_id)
                .map_or(self.cfg.default_offline_after_ms, |d| d.offline_after_ms);
            let silent_ms = now_ms - device.heard_ms();
            if silent_ms > offline_after {
                if !device.alerts.is_tracked(&Source::OFFLINE) {
                    device.dirty = true;
                }
                let mut step = Step {
                    device_id,
                    device_type: &device.device_type,
                    now_ms,
                    cfg: &self.cfg,
                    out: &mut *out,
                };
                let silent_s = silent_ms as f64 / 1000.0;
                let condition = Condition::Breach;
                device
                    .alerts
                    .advance(&mut step, Source::OFFLINE, condition, 0, silent_s);
            }
        }
    }

    /// Metrics of devices that changed since the last call (all devices when `all`).
    pub fn reports(&mut self, now_ms: i64, all: bool) -> Vec<DeviceReport> {
        let mut reports = Vec::new();
        let ids: Vec<Box<str>> = self
            .devices
            .iter()
            .filter(|(_, d)| (all || d.dirty) && d.heard_ms() > 0)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            reports.push(self.report(&id, now_ms));
            if let Some(device) = self.devices.get_mut(&id) {
                device.dirty = false;
            }
        }
        reports
    }

    fn report(&self, device_id: &str, now_ms: i64) -> DeviceReport {
        let offline_after = self.offline_after(device_id);
        let Some(device) = self.devices.get(device_id) else {
            return DeviceReport {
                device_id: device_id.to_owned(),
                moving_average: None,
                main_field: None,
                window: None,
                health_score: 0.0,
                online: false,
            };
        };
        let window = device.main.as_ref().map(|m| m.window.stats(now_ms));
        let inputs = HealthInputs {
            battery_pct: device.battery.map(f64::from),
            signal_dbm: device.signal.map(f64::from),
            age_ms: (now_ms - device.heard_ms()).max(0),
            expected_interval_ms: self
                .declared
                .get(device_id)
                .and_then(|d| d.publish_interval_ms),
            offline_after_ms: offline_after,
            received_in_window: window.map_or(0, |w| w.count),
            // A device seen for a minute cannot have sent five minutes' worth of readings.
            window_ms: self.cfg.window_ms.min((now_ms - device.first_ts_ms).max(1)),
            recent_anomalies: device.anomalies.recent(now_ms, self.cfg.window_ms),
        };
        DeviceReport {
            device_id: device_id.to_owned(),
            moving_average: device.main.as_ref().and_then(|m| m.average.value()),
            main_field: device.main.as_ref().map(|m| m.name.to_string()),
            window,
            health_score: analytics::health_score(&inputs),
            online: now_ms - device.heard_ms() <= offline_after,
        }
    }

    /// Devices online at `now_ms`, and the mean health score of all devices with a reading.
    pub fn summary(&self, now_ms: i64) -> (u64, f64) {
        let (mut online, mut total, mut health) = (0u64, 0u64, 0.0);
        for (id, device) in &self.devices {
            if device.heard_ms() == 0 {
                continue;
            }
            let report = self.report(id, now_ms);
            online += u64::from(report.online);
            total += 1;
            health += report.health_score;
        }
        (
            online,
            if total == 0 {
                0.0
            } else {
                health / total as f64
            },
        )
    }

    /// Alerts currently firing or acknowledged.
    pub fn active_alerts(&self) -> usize {
        self.devices.values().map(|d| d.alerts.active_count()).sum()
    }

    /// Acknowledges an active alert by id.
    pub fn acknowledge(
        &mut self,
        alert_id: &str,
        now_ms: i64,
        out: &mut Output,
    ) -> Result<(), CommandError> {
        self.command(alert_id, now_ms, out, false)
    }

    /// Clears an active alert by hand: it resolves now and, if its condition persists,
    /// fires again through the normal path.
    pub fn clear(
        &mut self,
        alert_id: &str,
        now_ms: i64,
        out: &mut Output,
    ) -> Result<(), CommandError> {
        self.command(alert_id, now_ms, out, true)
    }

    fn command(
        &mut self,
        alert_id: &str,
        now_ms: i64,
        out: &mut Output,
        clear: bool,
    ) -> Result<(), CommandError> {
        let not_found = || CommandError::NotFound(alert_id.to_owned());
        let mut parts = alert_id.rsplitn(3, '/');
        let (Some(since), Some(source_key), Some(device_id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(not_found());
        };
        let since: i64 = since.parse().map_err(|_| not_found())?;
        let device = self.devices.get_mut(device_id).ok_or_else(not_found)?;
        let mut step = Step {
            device_id,
            device_type: &device.device_type,
            now_ms,
            cfg: &self.cfg,
            out,
        };
        if !device.alerts.command(&mut step, source_key, since, clear) {
            return Err(not_found());
        }
        Ok(())
    }
}
