//! The processor's pure core: per-device state, windows, detectors, alert lifecycle and
//! health, fed with readings and the current time, returning what to write. No I/O and
//! no clock: the loop in `mod.rs` does those, and this is tested on its own.

use std::collections::HashMap;
use std::sync::Arc;

use sensorfleet_model::analytics::{
    self, Condition, Detector, DetectorConfig, HealthInputs, MovingAverage, Phase, SlidingWindow,
    Threshold, Transition, WindowStats,
};
use sensorfleet_model::duration::format_duration_ms;
use sensorfleet_model::manifest::{CompiledRule, DeclaredDevice};
use sensorfleet_model::reading::format_ts;
use sensorfleet_model::{Alert, AlertKind, AlertPhase, Reading, Severity};
use serde::{Deserialize, Serialize};

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

/// Where an alert comes from, per device; part of the alert id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Rule(Arc<str>),
    Anomaly,
    Spike,
    Stuck,
    LowBattery,
    Offline,
}

impl Source {
    fn key(&self) -> String {
        match self {
            Self::Rule(name) => format!("rule:{name}"),
            other => other.kind().as_str().to_owned(),
        }
    }

    fn parse(key: &str) -> Option<Self> {
        Some(match key {
            "anomaly" => Self::Anomaly,
            "spike" => Self::Spike,
            "stuck" => Self::Stuck,
            "low_battery" => Self::LowBattery,
            "offline" => Self::Offline,
            _ => Self::Rule(Arc::from(key.strip_prefix("rule:")?)),
        })
    }

    fn kind(&self) -> AlertKind {
        match self {
            Self::Rule(_) => AlertKind::Threshold,
            Self::Anomaly => AlertKind::Anomaly,
            Self::Spike => AlertKind::Spike,
            Self::Stuck => AlertKind::Stuck,
            Self::LowBattery => AlertKind::LowBattery,
            Self::Offline => AlertKind::Offline,
        }
    }
}

/// One alert source's lifecycle on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tracked {
    #[serde(skip, default = "no_source")]
    source: Source,
    phase: Phase,
    /// When the condition first held in this episode.
    started_ms: i64,
    value: f64,
    #[serde(default)]
    device_type: String,
}

fn no_source() -> Source {
    Source::Anomaly
}

/// The analysed main field of a device.
#[derive(Debug, Clone)]
struct FieldState {
    name: Arc<str>,
    window: SlidingWindow,
    average: MovingAverage,
    detector: Detector,
    detect: bool,
    /// The detector's score of the latest reading (what `sensorfleet detect` prints).
    score: f64,
}

#[derive(Debug, Clone)]
struct DeviceState {
    device_type: Arc<str>,
    /// First reading seen by this engine: completeness is judged over at most this long.
    first_ts_ms: i64,
    last_ts_ms: i64,
    battery: Option<f32>,
    signal: Option<f32>,
    main: Option<FieldState>,
    /// Times of the last few anomalies, for the health score.
    anomalies: [i64; 5],
    alerts: Vec<Tracked>,
    /// Metrics changed since last reported.
    dirty: bool,
}

impl DeviceState {
    fn recent_anomalies(&self, now_ms: i64, window_ms: i64) -> u32 {
        self.anomalies
            .iter()
            .filter(|&&t| t > 0 && now_ms - t <= window_ms)
            .count() as u32
    }

    fn note_anomaly(&mut self, ts_ms: i64) {
        if let Some(oldest) = self.anomalies.iter_mut().min() {
            *oldest = ts_ms;
        }
    }
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

/// Why an acknowledge or clear did not apply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// No active alert has this id.
    #[error("no active alert {0:?}")]
    NotFound(String),
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

    /// Number of devices with state.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// The anomaly score of the device's latest reading of its main field, by the same
    /// [`Detector`] `sensorfleet detect` replays; `None` before the first such reading and
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
                    + d.alerts.capacity() * std::mem::size_of::<Tracked>()
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
                .or_insert_with(|| new_device(device_type, 0));
            device.alerts.retain(|t| t.source != tracked.source);
            device.alerts.push(tracked);
            restored += 1;
        }
        restored
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
                new_device(device_type, now),
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
        let applicable: Vec<(Arc<str>, f64, CompiledRule)> = self
            .rules
            .iter()
            .filter(|r| r.applies_to(&reading.device_type, fleet.as_deref()))
            .filter_map(|r| {
                reading
                    .field(&r.metric)
                    .map(|v| (Arc::from(r.name.as_str()), v, r.clone()))
            })
            .collect();
        // Rules that still cover this device: an alert of any other rule would never clear.
        let rule_names: Vec<Arc<str>> = self
            .rules
            .iter()
            .filter(|r| r.applies_to(&reading.device_type, fleet.as_deref()))
            .map(|r| Arc::from(r.name.as_str()))
            .collect();
        let cfg = self.cfg.clone();
        let Some(device) = self.devices.get_mut(reading.device_id.as_str()) else {
            return;
        };
        let device_id = reading.device_id.as_str();
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

        // The device reported: an offline alert clears.
        advance(
            device,
            device_id,
            Source::Offline,
            Condition::Clear,
            0,
            now,
            0.0,
            &cfg,
            out,
        );

        // Alerts of rules that no longer exist, or no longer apply to this device, resolve.
        let stale: Vec<Source> = device
            .alerts
            .iter()
            .filter(|t| matches!(&t.source, Source::Rule(name) if !rule_names.contains(name)))
            .map(|t| t.source.clone())
            .collect();
        for source in stale {
            advance(
                device,
                device_id,
                source,
                Condition::Clear,
                0,
                now,
                0.0,
                &cfg,
                out,
            );
        }

        for (name, value, rule) in applicable {
            let source = Source::Rule(name);
            let active = device
                .alerts
                .iter()
                .any(|t| t.source == source && t.phase.is_active());
            let condition = analytics::threshold_condition(&rule.threshold, value, active);
            advance(
                device,
                device_id,
                source,
                condition,
                rule.for_ms,
                now,
                value,
                &cfg,
                out,
            );
        }

        if let Some(battery) = reading.field("meta_battery_level") {
            let threshold = Threshold {
                min: Some(cfg.low_battery_pct),
                max: None,
                clear_min: Some(cfg.low_battery_clear_pct),
                clear_max: None,
            };
            let active = device
                .alerts
                .iter()
                .any(|t| t.source == Source::LowBattery && t.phase.is_active());
            let condition = analytics::threshold_condition(&threshold, battery, active);
            advance(
                device,
                device_id,
                Source::LowBattery,
                condition,
                0,
                now,
                battery,
                &cfg,
                out,
            );
        }

        let Some(main_name) = main_name else { return };
        let Some(value) = reading.field(main_name) else {
            return;
        };
        let main = device.main.get_or_insert_with(|| FieldState {
            detect: reading.device_type != "motion_sensor",
            name: new_main.unwrap_or_else(|| Arc::from(main_name)),
            window: SlidingWindow::new(cfg.window_ms, cfg.window_buckets),
            average: MovingAverage::new(cfg.moving_average),
            detector: Detector::default(),
            score: 0.0,
        });
        if *main.name != *main_name {
            return;
        }
        main.window.push(now, value);
        main.average.push(value);
        if !main.detect {
            return;
        }
        let verdict = main.detector.observe(&cfg.detector, now, value);
        main.score = verdict.score;
        let flagged = verdict.anomaly;
        // Hysteresis for point anomalies: flagged → breach; still half as unusual → hold.
        let half_unusual = verdict.zscore.abs() >= cfg.detector.z_threshold / 2.0;
        let condition_for = |kind: analytics::AnomalyKind| match flagged {
            Some(k) if k == kind => Condition::Breach,
            _ if half_unusual && kind == analytics::AnomalyKind::Statistical => Condition::Hold,
            _ => Condition::Clear,
        };
        if flagged.is_some() {
            device.note_anomaly(now);
        }
        for (source, kind) in [
            (Source::Anomaly, analytics::AnomalyKind::Statistical),
            (Source::Spike, analytics::AnomalyKind::Spike),
            (Source::Stuck, analytics::AnomalyKind::Stuck),
        ] {
            advance(
                device,
                device_id,
                source,
                condition_for(kind),
                0,
                now,
                value,
                &cfg,
                out,
            );
        }
    }

    /// Checks every device for silence at `now_ms`; offline devices raise `offline`.
    pub fn tick(&mut self, now_ms: i64, out: &mut Output) {
        let cfg = self.cfg.clone();
        let declared = &self.declared;
        for (device_id, device) in &mut self.devices {
            if device.last_ts_ms == 0 {
                continue;
            }
            let offline_after = declared
                .get(&**device_id)
                .map_or(cfg.default_offline_after_ms, |d| d.offline_after_ms);
            let silent_ms = now_ms - device.last_ts_ms;
            if silent_ms > offline_after {
                let already = device.alerts.iter().any(|t| t.source == Source::Offline);
                if !already {
                    device.dirty = true;
                }
                advance(
                    device,
                    device_id,
                    Source::Offline,
                    Condition::Breach,
                    0,
                    now_ms,
                    silent_ms as f64 / 1000.0,
                    &cfg,
                    out,
                );
            }
        }
    }

    /// Metrics of devices that changed since the last call (all devices when `all`).
    pub fn reports(&mut self, now_ms: i64, all: bool) -> Vec<DeviceReport> {
        let mut reports = Vec::new();
        let ids: Vec<Box<str>> = self
            .devices
            .iter()
            .filter(|(_, d)| (all || d.dirty) && d.last_ts_ms > 0)
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
            age_ms: (now_ms - device.last_ts_ms).max(0),
            expected_interval_ms: self
                .declared
                .get(device_id)
                .and_then(|d| d.publish_interval_ms),
            offline_after_ms: offline_after,
            received_in_window: window.map_or(0, |w| w.count),
            // A device seen for a minute cannot have sent five minutes' worth of readings.
            window_ms: self.cfg.window_ms.min((now_ms - device.first_ts_ms).max(1)),
            recent_anomalies: device.recent_anomalies(now_ms, self.cfg.window_ms),
        };
        DeviceReport {
            device_id: device_id.to_owned(),
            moving_average: device.main.as_ref().and_then(|m| m.average.value()),
            main_field: device.main.as_ref().map(|m| m.name.to_string()),
            window,
            health_score: analytics::health_score(&inputs),
            online: now_ms - device.last_ts_ms <= offline_after,
        }
    }

    /// Devices online at `now_ms`, and the mean health score of all devices with a reading.
    pub fn summary(&self, now_ms: i64) -> (u64, f64) {
        let (mut online, mut total, mut health) = (0u64, 0u64, 0.0);
        for (id, device) in &self.devices {
            if device.last_ts_ms == 0 {
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
        self.devices
            .values()
            .map(|d| d.alerts.iter().filter(|t| t.phase.is_active()).count())
            .sum()
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
        let tracked = device
            .alerts
            .iter_mut()
            .find(|t| {
                t.source.key() == source_key && t.phase.is_active() && phase_since(t.phase) == since
            })
            .ok_or_else(not_found)?;
        let (phase, state) = if clear {
            (analytics::manual_clear(tracked.phase), AlertPhase::Resolved)
        } else {
            (
                analytics::acknowledge(tracked.phase),
                AlertPhase::Acknowledged,
            )
        };
        let alert = build_alert(device_id, tracked, since, state, now_ms, &self.cfg, None);
        tracked.phase = phase;
        out.alerts.push(alert);
        out.state.push(state_row(device_id, tracked));
        if clear {
            device.alerts.retain(|t| t.phase != Phase::Inactive);
        }
        Ok(())
    }
}

fn new_device(device_type: Arc<str>, ts_ms: i64) -> DeviceState {
    DeviceState {
        device_type,
        first_ts_ms: ts_ms,
        last_ts_ms: ts_ms,
        battery: None,
        signal: None,
        main: None,
        anomalies: [0; 5],
        alerts: Vec::new(),
        dirty: true,
    }
}

/// The field the processor windows and watches for anomalies: the type's main
/// measurement when the reading has it, else its first field that is not metadata.
pub fn main_field<'r>(device_type: &str, reading: &'r Reading) -> Option<&'r str> {
    let preferred = match device_type {
        "temperature_sensor" => "temperature_celsius",
        "humidity_sensor" => "humidity_percent",
        "gps_tracker" => "speed_kmh",
        "motion_sensor" => "motion",
        _ => "",
    };
    reading
        .fields
        .get_key_value(preferred)
        .map(|(k, _)| k.as_str())
        .or_else(|| {
            reading
                .fields
                .keys()
                .find(|k| !k.starts_with("meta_"))
                .map(String::as_str)
        })
}

fn phase_since(phase: Phase) -> i64 {
    match phase {
        Phase::Inactive => 0,
        Phase::Pending { since_ms }
        | Phase::Firing { since_ms }
        | Phase::Acknowledged { since_ms } => since_ms,
    }
}

fn state_row(device_id: &str, tracked: &Tracked) -> (String, String, Option<String>) {
    let json = (tracked.phase != Phase::Inactive)
        .then(|| serde_json::to_string(tracked).unwrap_or_default());
    (device_id.to_owned(), tracked.source.key(), json)
}

/// Steps one alert source of a device and records what changed.
#[allow(clippy::too_many_arguments)]
fn advance(
    device: &mut DeviceState,
    device_id: &str,
    source: Source,
    condition: Condition,
    for_ms: i64,
    now_ms: i64,
    value: f64,
    cfg: &EngineConfig,
    out: &mut Output,
) {
    let index = device.alerts.iter().position(|t| t.source == source);
    let before = index.map_or(Phase::Inactive, |i| device.alerts[i].phase);
    if before == Phase::Inactive && condition != Condition::Breach {
        return; // the common case: nothing tracked, nothing to track
    }
    let (after, transition) = analytics::step(before, condition, for_ms, now_ms);
    let index = match index {
        Some(i) => i,
        None => {
            device.alerts.push(Tracked {
                source,
                phase: Phase::Inactive,
                started_ms: now_ms,
                value,
                device_type: device.device_type.to_string(),
            });
            device.alerts.len() - 1
        }
    };
    let tracked = &mut device.alerts[index];
    if before == Phase::Inactive {
        tracked.started_ms = now_ms;
    }
    if condition == Condition::Breach {
        tracked.value = value;
    }
    match transition {
        Some(Transition::Fired) => {
            tracked.phase = after;
            let alert = build_alert(
                device_id,
                tracked,
                phase_since(after),
                AlertPhase::Firing,
                now_ms,
                cfg,
                None,
            );
            out.alerts.push(alert);
        }
        Some(Transition::Resolved) => {
            let since = phase_since(before);
            let alert = build_alert(
                device_id,
                tracked,
                since,
                AlertPhase::Resolved,
                now_ms,
                cfg,
                Some(value),
            );
            tracked.phase = after;
            out.alerts.push(alert);
        }
        None => tracked.phase = after,
    }
    if before != after {
        out.state.push(state_row(device_id, tracked));
    }
    if after == Phase::Inactive {
        device.alerts.remove(index);
    }
}

fn severity_of(source: &Source) -> Severity {
    match source {
        Source::Offline => Severity::Critical,
        _ => Severity::Warning,
    }
}

fn build_alert(
    device_id: &str,
    tracked: &Tracked,
    since_ms: i64,
    state: AlertPhase,
    now_ms: i64,
    cfg: &EngineConfig,
    resolved_value: Option<f64>,
) -> Alert {
    let (rule, metric, threshold, message_subject) = match &tracked.source {
        Source::Rule(name) => (
            name.to_string(),
            None,
            String::new(),
            format!("rule {name}"),
        ),
        Source::Anomaly => (
            "anomaly".to_owned(),
            None,
            format!("|z| >= {}", cfg.detector.z_threshold),
            "value far outside its own history".to_owned(),
        ),
        Source::Spike => (
            "spike".to_owned(),
            None,
            format!("rate z >= {}", cfg.detector.spike_z),
            "value changing far faster than usual".to_owned(),
        ),
        Source::Stuck => (
            "stuck".to_owned(),
            None,
            format!("{} identical readings", cfg.detector.stuck_after),
            "sensor reports the same value over and over".to_owned(),
        ),
        Source::LowBattery => (
            "low_battery".to_owned(),
            Some("meta_battery_level".to_owned()),
            format!("< {}%", cfg.low_battery_pct),
            "battery low".to_owned(),
        ),
        Source::Offline => (
            "offline".to_owned(),
            None,
            "no reading".to_owned(),
            "device silent".to_owned(),
        ),
    };
    let value = resolved_value.unwrap_or(tracked.value);
    let verb = match state {
        AlertPhase::Firing | AlertPhase::Pending => "firing",
        AlertPhase::Acknowledged => "acknowledged",
        AlertPhase::Resolved => "resolved",
    };
    Alert {
        id: format!("{device_id}/{}/{since_ms}", tracked.source.key()),
        device_id: device_id.to_owned(),
        alert_type: tracked.source.kind(),
        rule,
        metric,
        severity: severity_of(&tracked.source),
        state,
        value,
        threshold,
        timestamp: format_ts(now_ms),
        started_at: format_ts(tracked.started_ms),
        message: format!("{device_id}: {message_subject} ({verb}, value {value})"),
    }
}

/// Fills in what only the rule knows (metric, limits, severity, wording) on alerts of
/// threshold rules; the engine keeps only the rule name per device to stay small.
pub fn describe_rule_alerts(alerts: &mut [Alert], rules: &[CompiledRule]) {
    for alert in alerts
        .iter_mut()
        .filter(|a| a.alert_type == AlertKind::Threshold)
    {
        let Some(rule) = rules.iter().find(|r| r.name == alert.rule) else {
            continue;
        };
        alert.metric = Some(rule.metric.clone());
        alert.severity = rule.severity;
        alert.threshold = analytics::describe_threshold(&rule.threshold);
        let for_text = if rule.for_ms > 0 {
            format!(" for {}", format_duration_ms(rule.for_ms))
        } else {
            String::new()
        };
        alert.message = match alert.state {
            AlertPhase::Resolved => format!(
                "{}: {} back to {} (limits {}); resolved",
                alert.device_id, rule.metric, alert.value, alert.threshold
            ),
            state => format!(
                "{}: {} {} outside {}{for_text} ({})",
                alert.device_id,
                rule.metric,
                alert.value,
                alert.threshold,
                state.as_str()
            ),
        };
    }
}

#[cfg(test)]
mod tests;
