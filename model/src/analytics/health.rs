//! A device's health score in [0, 1].
//!
//! A weighted sum of five components, each in [0, 1], rounded to 3 decimals:
//!
//! | component | weight | value |
//! | --- | --- | --- |
//! | battery | 0.30 | `battery_pct / 100`, clamped to [0, 1]; unknown → 1 |
//! | signal | 0.20 | `(signal_dbm + 100) / 50`, clamped: −100 dBm → 0, −50 dBm or better → 1; unknown → 1 |
//! | freshness | 0.25 | 1 while `age ≤ 2 × expected_interval`, then falling linearly to 0 at `offline_after`; 0 when offline (`age ≥ offline_after`). With no known interval it falls linearly from age 0. |
//! | completeness | 0.10 | `received_in_window / (window / expected_interval)`, clamped to [0, 1]; 1 when the interval is unknown |
//! | calm | 0.15 | `1 − recent_anomalies / 5`, floored at 0 |
//!
//! `health = 0.30·battery + 0.20·signal + 0.25·freshness + 0.10·completeness + 0.15·calm`
//!
//! An unknown battery or signal counts as perfect: many devices are mains-powered or
//! wired, and a score should not punish them for what they cannot report. A non-finite
//! battery or signal reading counts as unknown.

use serde::{Deserialize, Serialize};

/// Weight of the battery level.
pub const W_BATTERY: f64 = 0.30;
/// Weight of the radio signal strength.
pub const W_SIGNAL: f64 = 0.20;
/// Weight of how recent the last reading is.
pub const W_FRESHNESS: f64 = 0.25;
/// Weight of the share of expected readings actually received.
pub const W_COMPLETENESS: f64 = 0.10;
/// Weight of the absence of recent anomalies.
pub const W_CALM: f64 = 0.15;
/// Number of recent anomalies at which the calm component reaches 0.
pub const CALM_ANOMALIES: f64 = 5.0;

/// What the health score is computed from; the caller gathers it from device state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthInputs {
    /// Last reported battery level in percent, if the device reports one.
    pub battery_pct: Option<f64>,
    /// Last reported signal strength in dBm, if the device reports one.
    pub signal_dbm: Option<f64>,
    /// Milliseconds since the last reading (negative, from clock skew, counts as 0).
    pub age_ms: i64,
    /// How often the device is expected to report, if known (from its manifest).
    pub expected_interval_ms: Option<i64>,
    /// Age at which the device counts as offline.
    pub offline_after_ms: i64,
    /// Readings received in the last `window_ms`.
    pub received_in_window: u64,
    /// Length of the window `received_in_window` was counted over.
    pub window_ms: i64,
    /// Anomalies detected recently (the caller's choice of "recent", e.g. the window).
    pub recent_anomalies: u32,
}

/// The health score in [0, 1], rounded to 3 decimals; see the module documentation for
/// the formula.
pub fn health_score(i: &HealthInputs) -> f64 {
    let score = W_BATTERY * battery(i.battery_pct)
        + W_SIGNAL * signal(i.signal_dbm)
        + W_FRESHNESS * freshness(i.age_ms, i.expected_interval_ms, i.offline_after_ms)
        + W_COMPLETENESS * completeness(i.received_in_window, i.window_ms, i.expected_interval_ms)
        + W_CALM * calm(i.recent_anomalies);
    ((score * 1000.0).round() / 1000.0).clamp(0.0, 1.0)
}

fn battery(pct: Option<f64>) -> f64 {
    match pct {
        Some(p) if p.is_finite() => (p / 100.0).clamp(0.0, 1.0),
        _ => 1.0,
    }
}

fn signal(dbm: Option<f64>) -> f64 {
    match dbm {
        Some(d) if d.is_finite() => ((d + 100.0) / 50.0).clamp(0.0, 1.0),
        _ => 1.0,
    }
}

fn freshness(age_ms: i64, expected_interval_ms: Option<i64>, offline_after_ms: i64) -> f64 {
    let age = age_ms.max(0) as f64;
    let offline = offline_after_ms as f64;
    if age >= offline {
        return 0.0;
    }
    // Up to two intervals late is normal jitter (one reading may be lost or delayed).
    let grace = expected_interval_ms
        .filter(|ms| *ms > 0)
        .map_or(0.0, |ms| 2.0 * ms as f64)
        .min(offline);
    if age <= grace {
        return 1.0;
    }
    ((offline - age) / (offline - grace)).clamp(0.0, 1.0)
}

fn completeness(received: u64, window_ms: i64, expected_interval_ms: Option<i64>) -> f64 {
    match expected_interval_ms {
        Some(interval) if interval > 0 && window_ms > 0 => {
            let expected = window_ms as f64 / interval as f64;
            (received as f64 / expected).clamp(0.0, 1.0)
        }
        _ => 1.0,
    }
}

fn calm(recent_anomalies: u32) -> f64 {
    (1.0 - f64::from(recent_anomalies) / CALM_ANOMALIES).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// A perfectly healthy device reporting every minute.
    fn healthy() -> HealthInputs {
        HealthInputs {
            battery_pct: Some(100.0),
            signal_dbm: Some(-40.0),
            age_ms: 10_000,
            expected_interval_ms: Some(MIN),
            offline_after_ms: 5 * MIN,
            received_in_window: 5,
            window_ms: 5 * MIN,
            recent_anomalies: 0,
        }
    }

    #[test]
    fn weights_sum_to_one() {
        let sum = W_BATTERY + W_SIGNAL + W_FRESHNESS + W_COMPLETENESS + W_CALM;
        assert!((sum - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bounds() {
        assert_eq!(health_score(&healthy()), 1.0);
        let worst = HealthInputs {
            battery_pct: Some(0.0),
            signal_dbm: Some(-120.0),
            age_ms: 10 * MIN,
            received_in_window: 0,
            recent_anomalies: 99,
            ..healthy()
        };
        assert_eq!(health_score(&worst), 0.0);
        let absurd = HealthInputs {
            battery_pct: Some(500.0),
            signal_dbm: Some(30.0),
            age_ms: i64::MIN,
            received_in_window: u64::MAX,
            ..healthy()
        };
        assert_eq!(health_score(&absurd), 1.0);
    }

    #[test]
    fn battery_component() {
        assert_eq!(battery(Some(50.0)), 0.5);
        assert_eq!(battery(Some(-5.0)), 0.0);
        assert_eq!(battery(None), 1.0);
        assert_eq!(battery(Some(f64::NAN)), 1.0);
        let half = HealthInputs {
            battery_pct: Some(50.0),
            ..healthy()
        };
        assert_eq!(health_score(&half), 0.85);
    }

    #[test]
    fn signal_component() {
        assert_eq!(signal(Some(-100.0)), 0.0);
        assert_eq!(signal(Some(-75.0)), 0.5);
        assert_eq!(signal(Some(-50.0)), 1.0);
        assert_eq!(signal(Some(-20.0)), 1.0);
        assert_eq!(signal(None), 1.0);
        assert_eq!(signal(Some(f64::INFINITY)), 1.0);
        let weak = HealthInputs {
            signal_dbm: Some(-100.0),
            ..healthy()
        };
        assert_eq!(health_score(&weak), 0.8);
    }

    #[test]
    fn freshness_component() {
        // Within two intervals: fresh.
        assert_eq!(freshness(2 * MIN, Some(MIN), 5 * MIN), 1.0);
        // Halfway between 2 min and 5 min.
        assert!((freshness(3 * MIN + MIN / 2, Some(MIN), 5 * MIN) - 0.5).abs() < 1e-12);
        // Offline.
        assert_eq!(freshness(5 * MIN, Some(MIN), 5 * MIN), 0.0);
        assert_eq!(freshness(i64::MAX, Some(MIN), 5 * MIN), 0.0);
        // Unknown interval: linear from age 0.
        assert!((freshness(MIN, None, 4 * MIN) - 0.75).abs() < 1e-12);
        // Expected interval longer than the offline limit: fresh until offline.
        assert_eq!(freshness(4 * MIN, Some(10 * MIN), 5 * MIN), 1.0);
        assert_eq!(freshness(5 * MIN, Some(10 * MIN), 5 * MIN), 0.0);
        // Clock skew.
        assert_eq!(freshness(-MIN, Some(MIN), 5 * MIN), 1.0);
        // Nonsense offline limit: offline.
        assert_eq!(freshness(0, Some(MIN), 0), 0.0);
        let offline = HealthInputs {
            age_ms: 6 * MIN,
            ..healthy()
        };
        assert_eq!(health_score(&offline), 0.75);
    }

    #[test]
    fn completeness_component() {
        assert_eq!(completeness(5, 5 * MIN, Some(MIN)), 1.0);
        assert_eq!(completeness(2, 4 * MIN, Some(MIN)), 0.5);
        assert_eq!(completeness(0, 4 * MIN, Some(MIN)), 0.0);
        assert_eq!(completeness(0, 4 * MIN, None), 1.0);
        assert_eq!(completeness(0, 0, Some(MIN)), 1.0);
        assert_eq!(completeness(0, 4 * MIN, Some(0)), 1.0);
        let gappy = HealthInputs {
            received_in_window: 0,
            ..healthy()
        };
        assert_eq!(health_score(&gappy), 0.9);
    }

    #[test]
    fn calm_component() {
        assert_eq!(calm(0), 1.0);
        assert!((calm(1) - 0.8).abs() < 1e-12);
        assert_eq!(calm(5), 0.0);
        assert_eq!(calm(u32::MAX), 0.0);
        let noisy = HealthInputs {
            recent_anomalies: 5,
            ..healthy()
        };
        assert_eq!(health_score(&noisy), 0.85);
    }

    #[test]
    fn unknown_battery_and_signal_are_not_penalised() {
        let wired = HealthInputs {
            battery_pct: None,
            signal_dbm: None,
            ..healthy()
        };
        assert_eq!(health_score(&wired), 1.0);
    }

    #[test]
    fn rounded_to_three_decimals() {
        let i = HealthInputs {
            battery_pct: Some(33.3333),
            ..healthy()
        };
        let s = health_score(&i);
        assert_eq!(s, 0.8);
        let i = HealthInputs {
            battery_pct: Some(12.345),
            ..healthy()
        };
        assert_eq!(health_score(&i), 0.737);
    }
}
