//! Per-device analytics state: the main field's window, moving average and anomaly
//! detector, the last battery and signal, and the recent anomalies the health score
//! counts. The detector is used here and nowhere else.

use std::sync::Arc;

use sensorfleet_model::analytics::{
    AnomalyKind, Condition, Detector, MovingAverage, SlidingWindow,
};
use sensorfleet_model::{AlertKind, Reading};

use super::EngineConfig;
use super::alerts::Alerts;

/// The analysed main field of a device.
#[derive(Debug, Clone)]
pub(super) struct FieldState {
    pub(super) name: Arc<str>,
    pub(super) window: SlidingWindow,
    pub(super) average: MovingAverage,
    detector: Detector,
    pub(super) detect: bool,
    /// The detector's score of the latest reading (what `sensorfleet detect` prints).
    pub(super) score: f64,
}

/// What the detector made of one value: whether it flagged an anomaly, and the
/// condition of each of its alert kinds.
pub(super) struct Detected {
    pub(super) flagged: bool,
    pub(super) conditions: [(AlertKind, Condition); 3],
}

impl FieldState {
    /// State for the main field `name`; motion sensors (0 or 1 by nature) are windowed
    /// but not watched for anomalies.
    pub(super) fn new(name: Arc<str>, device_type: &str, cfg: &EngineConfig) -> Self {
        Self {
            detect: device_type != "motion_sensor",
            name,
            window: SlidingWindow::new(cfg.window_ms, cfg.window_buckets),
            average: MovingAverage::new(cfg.moving_average),
            detector: Detector::default(),
            score: 0.0,
        }
    }

    /// Takes one value in order: window, average and, where watched, the detector.
    pub(super) fn push(&mut self, cfg: &EngineConfig, now_ms: i64, value: f64) -> Option<Detected> {
        self.window.push(now_ms, value);
        self.average.push(value);
        if !self.detect {
            return None;
        }
        let verdict = self.detector.observe(&cfg.detector, now_ms, value);
        self.score = verdict.score;
        let flagged = verdict.anomaly;
        // Hysteresis for point anomalies: flagged → breach; still half as unusual → hold.
        let half_unusual = verdict.zscore.abs() >= cfg.detector.z_threshold / 2.0;
        let condition_for = |kind: AnomalyKind| match flagged {
            Some(k) if k == kind => Condition::Breach,
            _ if half_unusual && kind == AnomalyKind::Statistical => Condition::Hold,
            _ => Condition::Clear,
        };
        Some(Detected {
            flagged: flagged.is_some(),
            conditions: [
                (AlertKind::Anomaly, condition_for(AnomalyKind::Statistical)),
                (AlertKind::Spike, condition_for(AnomalyKind::Spike)),
                (AlertKind::Stuck, condition_for(AnomalyKind::Stuck)),
            ],
        })
    }
}

/// Times of the last few anomalies of a device, for the health score.
#[derive(Debug, Clone, Default)]
pub(super) struct Anomalies([i64; 5]);

impl Anomalies {
    /// How many fell within `window_ms` before `now_ms`.
    pub(super) fn recent(&self, now_ms: i64, window_ms: i64) -> u32 {
        self.0
            .iter()
            .filter(|&&t| t > 0 && now_ms - t <= window_ms)
            .count() as u32
    }

    /// Remembers one at `ts_ms`, forgetting the oldest.
    pub(super) fn note(&mut self, ts_ms: i64) {
        if let Some(oldest) = self.0.iter_mut().min() {
            *oldest = ts_ms;
        }
    }
}

/// Everything the engine keeps about one device.
#[derive(Debug, Clone)]
pub(super) struct DeviceState {
    pub(super) device_type: Arc<str>,
    /// First reading seen by this engine: completeness is judged over at most this long.
    pub(super) first_ts_ms: i64,
    pub(super) last_ts_ms: i64,
    pub(super) battery: Option<f32>,
    pub(super) signal: Option<f32>,
    pub(super) main: Option<FieldState>,
    pub(super) anomalies: Anomalies,
    pub(super) alerts: Alerts,
    /// Metrics changed since last reported.
    pub(super) dirty: bool,
    /// When the cache last saw the device (the bridge writes it), for a device adopted
    /// from another processor or after an outage; 0 if not. Only the silence clock uses
    /// it: the readings still in the log, older, drive the alerts as they come.
    pub(super) seen_ms: i64,
}

impl DeviceState {
    /// A device first seen at `ts_ms` (0 when restored before any reading).
    pub(super) fn new(device_type: Arc<str>, ts_ms: i64) -> Self {
        Self {
            device_type,
            first_ts_ms: ts_ms,
            last_ts_ms: ts_ms,
            battery: None,
            signal: None,
            main: None,
            anomalies: Anomalies::default(),
            alerts: Alerts::default(),
            dirty: true,
            seen_ms: 0,
        }
    }

    /// The last time the device was heard of: its newest reading processed here, or
    /// the cache's last-seen time if newer. What silence and `online` are measured from.
    pub(super) fn heard_ms(&self) -> i64 {
        self.last_ts_ms.max(self.seen_ms)
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
