//! What a simulated device measures: pure functions of its state, the time and a seeded
//! random generator, so a given seed replays the same fleet.

use std::f64::consts::TAU;

use sensorfleet_model::reading::format_ts;

/// One device to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDevice {
    /// Device id.
    pub device_id: String,
    /// `temperature_sensor`, `humidity_sensor`, `motion_sensor`, `gps_tracker`, or any
    /// other type (which publishes a generic `value`).
    pub device_type: String,
    /// Location, sent in every payload.
    pub location: Option<String>,
    /// Publish interval in milliseconds.
    pub interval_ms: i64,
}

/// A small, fast, seeded generator (SplitMix64): reproducible and dependency-free.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}

/// The evolving state of one simulated device.
#[derive(Debug, Clone)]
pub struct DeviceSim {
    rng: Rng,
    /// The device's own normal level (e.g. 21.7 °C).
    base: f64,
    /// Slow random-walk drift added to the level.
    drift: f64,
    /// Where in the day its cycle peaks.
    phase: f64,
    battery: f64,
    signal: f64,
    lat: f64,
    lon: f64,
    speed: f64,
    last_ts_ms: i64,
    silent_until_ms: i64,
}

const DAY_MS: f64 = 86_400_000.0;

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl DeviceSim {
    /// Fresh state for `device`, seeded.
    pub fn new(device: &SimDevice, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let base = match device.device_type.as_str() {
            "temperature_sensor" => rng.range(19.0, 24.0),
            "humidity_sensor" => rng.range(38.0, 55.0),
            _ => rng.range(10.0, 100.0),
        };
        Self {
            base,
            drift: 0.0,
            phase: rng.range(0.0, TAU),
            battery: rng.range(60.0, 100.0),
            signal: rng.range(-80.0, -50.0),
            lat: rng.range(52.3, 52.6),
            lon: rng.range(4.7, 5.0),
            speed: rng.range(0.0, 50.0),
            last_ts_ms: 0,
            silent_until_ms: 0,
            rng,
        }
    }

    /// The JSON payload of the next reading at `now_ms`, or `None` while the device is in
    /// an injected dropout. Timestamps strictly increase per device.
    pub fn next_payload(
        &mut self,
        device: &SimDevice,
        now_ms: i64,
        anomaly_rate: f64,
        dropout_rate: f64,
    ) -> Option<Vec<u8>> {
        if now_ms < self.silent_until_ms {
            return None;
        }
        if self.rng.unit() < dropout_rate {
            self.silent_until_ms = now_ms + device.interval_ms * self.rng.range(3.0, 12.0) as i64;
            return None;
        }
        let ts = now_ms.max(self.last_ts_ms + 1);
        self.last_ts_ms = ts;
        self.step_common();
        let anomaly = self.rng.unit() < anomaly_rate;
        let day = (ts as f64 / DAY_MS) * TAU + self.phase;
        let mut body = serde_json::Map::new();
        body.insert("device_id".into(), device.device_id.clone().into());
        body.insert("device_type".into(), device.device_type.clone().into());
        if let Some(location) = &device.location {
            body.insert("location".into(), location.clone().into());
        }
        body.insert("timestamp".into(), format_ts(ts).into());
        match device.device_type.as_str() {
            "temperature_sensor" => {
                let mut c = self.base + 2.5 * day.sin() + self.drift + 0.15 * self.rng.normal();
                if anomaly {
                    c += self.rng.range(12.0, 20.0);
                }
                body.insert("temperature_celsius".into(), round2(c).into());
                body.insert(
                    "temperature_fahrenheit".into(),
                    round2(c * 9.0 / 5.0 + 32.0).into(),
                );
            }
            "humidity_sensor" => {
                let mut h =
                    self.base + 8.0 * (day + 1.0).sin() + self.drift + 0.5 * self.rng.normal();
                if anomaly {
                    h += self.rng.range(25.0, 40.0);
                }
                let h = h.clamp(0.0, 100.0);
                body.insert("humidity_percent".into(), round2(h).into());
                body.insert(
                    "dew_point".into(),
                    round2(dew_point(21.0 + 2.0 * day.sin(), h)).into(),
                );
            }
            "motion_sensor" => {
                // Busier in the day than at night.
                let busy = 0.15 + 0.35 * (0.5 + 0.5 * day.sin());
                let motion = anomaly || self.rng.unit() < busy;
                body.insert("motion".into(), motion.into());
                body.insert("motion_count".into(), u64::from(motion).into());
            }
            "gps_tracker" => {
                self.speed = (self.speed + 3.0 * self.rng.normal()).clamp(0.0, 90.0);
                if anomaly {
                    self.speed = self.rng.range(150.0, 220.0);
                }
                let heading = self.rng.range(0.0, TAU);
                let step = self.speed / 3600.0 * device.interval_ms as f64 / 1000.0 / 111.0;
                self.lat = (self.lat + step * heading.cos()).clamp(-89.9, 89.9);
                self.lon = (self.lon + step * heading.sin()).clamp(-179.9, 179.9);
                body.insert("latitude".into(), ((self.lat * 1e6).round() / 1e6).into());
                body.insert("longitude".into(), ((self.lon * 1e6).round() / 1e6).into());
                body.insert("speed_kmh".into(), round2(self.speed).into());
                if anomaly {
                    self.speed = 40.0;
                }
            }
            _ => {
                let mut v =
                    self.base + 0.05 * self.base * day.sin() + self.drift + self.rng.normal();
                if anomaly {
                    v += 10.0 * self.base.abs().max(1.0);
                }
                body.insert("value".into(), round2(v).into());
            }
        }
        let meta = serde_json::json!({
            "battery_level": self.battery.round() as i64,
            "signal_strength": self.signal.round() as i64,
        });
        body.insert("meta".into(), meta);
        serde_json::to_vec(&body).ok()
    }

    fn step_common(&mut self) {
        self.drift = (self.drift + 0.01 * self.rng.normal()).clamp(-2.0, 2.0);
        self.battery -= self.rng.range(0.0, 0.01);
        if self.battery < 5.0 {
            self.battery = 100.0; // someone replaced it
        }
        self.signal = (self.signal + 0.8 * self.rng.normal()).clamp(-100.0, -40.0);
    }
}

/// Dew point (°C) from temperature (°C) and relative humidity (%), Magnus formula.
pub fn dew_point(temp_c: f64, humidity_pct: f64) -> f64 {
    let (a, b) = (17.62, 243.12);
    let gamma = (humidity_pct.max(0.1) / 100.0).ln() + a * temp_c / (b + temp_c);
    b * gamma / (a - gamma)
}

#[cfg(test)]
mod tests {
    use sensorfleet_model::reading::{Limits, parse_payload};

    use super::*;

    fn device(device_type: &str) -> SimDevice {
        SimDevice {
            device_id: format!("{device_type}-1"),
            device_type: device_type.to_owned(),
            location: Some("Lab".to_owned()),
            interval_ms: 1000,
        }
    }

    #[test]
    fn every_type_publishes_valid_payloads_with_increasing_timestamps() {
        for kind in [
            "temperature_sensor",
            "humidity_sensor",
            "motion_sensor",
            "gps_tracker",
            "pressure_sensor",
        ] {
            let d = device(kind);
            let mut sim = DeviceSim::new(&d, 7);
            let mut last = 0;
            for i in 0..500 {
                let now = 1_780_000_000_000 + i / 3; // several readings in the same millisecond
                let payload = sim
                    .next_payload(&d, now, 0.01, 0.0)
                    .expect("no dropouts configured");
                let topic = format!("sensors/{kind}/{}", d.device_id);
                let reading = parse_payload(&topic, &payload, now, &Limits::default())
                    .expect("valid payload");
                assert!(
                    reading.ts_ms > last,
                    "{kind}: timestamps must strictly increase"
                );
                last = reading.ts_ms;
                assert!(reading.field("meta_battery_level").is_some());
            }
        }
    }

    #[test]
    fn temperatures_are_realistic_and_anomalies_stand_out() {
        let d = device("temperature_sensor");
        let mut sim = DeviceSim::new(&d, 1);
        let value = |payload: Vec<u8>| {
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            v["temperature_celsius"].as_f64().unwrap()
        };
        for i in 0..1000 {
            let t = value(
                sim.next_payload(&d, 1_780_000_000_000 + i * 1000, 0.0, 0.0)
                    .unwrap(),
            );
            assert!(
                (10.0..35.0).contains(&t),
                "normal reading {t} out of a room's range"
            );
        }
        let spike = value(sim.next_payload(&d, 1_780_001_000_000, 1.0, 0.0).unwrap());
        assert!(
            spike > 30.0,
            "an injected anomaly must stand out, got {spike}"
        );
    }

    #[test]
    fn dropouts_silence_a_device_for_a_while() {
        let d = device("humidity_sensor");
        let mut sim = DeviceSim::new(&d, 3);
        assert!(sim.next_payload(&d, 1_000_000, 0.0, 1.0).is_none());
        assert!(
            sim.next_payload(&d, 1_001_000, 0.0, 0.0).is_none(),
            "still silent"
        );
        assert!(
            sim.next_payload(&d, 1_000_000 + 13_000, 0.0, 0.0).is_some(),
            "back after at most 12 intervals"
        );
    }

    #[test]
    fn same_seed_same_fleet() {
        let d = device("gps_tracker");
        let (mut a, mut b) = (DeviceSim::new(&d, 9), DeviceSim::new(&d, 9));
        for i in 0..50 {
            assert_eq!(
                a.next_payload(&d, i, 0.1, 0.1),
                b.next_payload(&d, i, 0.1, 0.1)
            );
        }
    }

    #[test]
    fn dew_point_is_below_temperature_and_equal_at_saturation() {
        assert!((dew_point(20.0, 100.0) - 20.0).abs() < 0.01);
        assert!(dew_point(25.0, 50.0) < 25.0);
    }
}
