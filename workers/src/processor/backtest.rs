//! Backtest: stored readings replayed through the processor's own [`Engine`] with a set of
//! alert rules, to see when they would have fired and resolved before applying them.
//!
//! The same engine as the running processor, so the answer has the full lifecycle (`for`,
//! hysteresis, refire after a clear, the built-in detectors, offline gaps), not a
//! threshold test on its own. Time is the readings' time: between two readings the
//! engine is ticked at the processor's cadence, so a silence longer than the device's
//! `offlineAfter` raises `offline` where the processor would have.

use std::collections::BTreeMap;

use sensorfleet_backends::timeseries::Point;
use sensorfleet_model::reading::parse_ts;
use sensorfleet_model::{Alert, AlertPhase, CompiledRule, DeclaredDevice, Reading};

use super::engine::{Engine, EngineConfig, Output};

/// Rebuilds one device's readings from stored points (one point per field and instant),
/// oldest first.
pub fn readings_from_points(device_id: &str, device_type: &str, points: &[Point]) -> Vec<Reading> {
    let mut by_instant: BTreeMap<i64, BTreeMap<String, f64>> = BTreeMap::new();
    for point in points {
        by_instant
            .entry(point.ts_ms)
            .or_default()
            .insert(point.field.clone(), point.value);
    }
    by_instant
        .into_iter()
        .map(|(ts_ms, fields)| Reading {
            device_id: device_id.to_owned(),
            device_type: device_type.to_owned(),
            location: None,
            ts_ms,
            fields,
        })
        .collect()
}

/// Every alert transition (fired, resolved) the engine makes over `readings`, which must
/// be oldest first; `tick_ms` is the processor's tick (offline detection).
pub fn replay(
    cfg: EngineConfig,
    rules: Vec<CompiledRule>,
    declared: &[DeclaredDevice],
    readings: &[Reading],
    tick_ms: i64,
) -> Vec<Alert> {
    let mut engine = Engine::new(cfg);
    engine.set_rules(rules);
    engine.set_declared(declared);
    let tick_ms = tick_ms.max(1);
    let mut out = Output::default();
    let mut alerts = Vec::new();
    let mut next_tick: Option<i64> = None;
    for reading in readings {
        while let Some(at) = next_tick.filter(|&at| at < reading.ts_ms) {
            engine.tick(at, &mut out);
            next_tick = Some(at + tick_ms);
        }
        engine.observe(reading, &mut out);
        next_tick.get_or_insert(reading.ts_ms + tick_ms);
        alerts.append(&mut out.alerts);
        out = Output::default();
    }
    alerts
}

/// What one rule (or built-in detector) did over the replay.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RuleSummary {
    /// Episodes that fired.
    pub fired: usize,
    /// Episodes that resolved.
    pub resolved: usize,
    /// Milliseconds spent firing, over the episodes that resolved.
    pub firing_ms: i64,
    /// Devices still firing when the readings end.
    pub firing_at_end: usize,
}

/// Counts per rule name, from [`replay`]'s transitions.
pub fn summarize(alerts: &[Alert]) -> BTreeMap<String, RuleSummary> {
    let mut summaries: BTreeMap<String, RuleSummary> = BTreeMap::new();
    let mut open: BTreeMap<(String, String), i64> = BTreeMap::new();
    for alert in alerts {
        let summary = summaries.entry(alert.rule.clone()).or_default();
        let key = (alert.rule.clone(), alert.device_id.clone());
        let at = parse_ts(&alert.timestamp).unwrap_or_default();
        match alert.state {
            AlertPhase::Firing => {
                summary.fired += 1;
                open.insert(key, at);
            }
            AlertPhase::Resolved => {
                summary.resolved += 1;
                if let Some(since) = open.remove(&key) {
                    summary.firing_ms += at - since;
                }
            }
            AlertPhase::Pending | AlertPhase::Acknowledged => {}
        }
    }
    for (rule, _) in open.keys() {
        if let Some(summary) = summaries.get_mut(rule) {
            summary.firing_at_end += 1;
        }
    }
    summaries
}

#[cfg(test)]
mod tests {
    use sensorfleet_model::ManifestSet;

    use super::*;

    const FLEET: &str = "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\n\
        metadata: {name: lab}\nspec:\n  deviceType: temperature_sensor\n  publishInterval: 1s\n  \
        offlineAfter: 30s\n  devices:\n    - {id: t1}\n---\n\
        apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: hot}\n\
        spec:\n  fleet: lab\n  metric: temperature_celsius\n  max: 30\n  clearMax: 29\n  \
        for: 2s\n  severity: critical\n";

    fn manifests() -> (Vec<CompiledRule>, Vec<DeclaredDevice>) {
        let mut set = ManifestSet::default();
        set.add_file("lab.yaml", FLEET).expect("valid manifests");
        (set.compiled_rules(), set.devices())
    }

    fn points(values: &[(i64, f64)]) -> Vec<Point> {
        values
            .iter()
            .map(|&(s, v)| Point {
                ts_ms: 1_780_000_000_000 + s * 1000,
                field: "temperature_celsius".to_owned(),
                value: v,
            })
            .collect()
    }

    fn run(values: &[(i64, f64)]) -> BTreeMap<String, RuleSummary> {
        let (rules, declared) = manifests();
        let readings = readings_from_points("t1", "temperature_sensor", &points(values));
        let config = EngineConfig::default();
        summarize(&replay(config, rules, &declared, &readings, 1000))
    }

    #[test]
    fn points_of_one_instant_are_one_reading() {
        let mut stored = points(&[(0, 20.0), (1, 21.0)]);
        stored.push(Point {
            ts_ms: stored[0].ts_ms,
            field: "meta_battery_level".to_owned(),
            value: 80.0,
        });
        let readings = readings_from_points("t1", "temperature_sensor", &stored);
        assert_eq!(readings.len(), 2);
        assert_eq!(readings[0].fields.len(), 2);
        assert!(readings[0].ts_ms < readings[1].ts_ms);
    }

    #[test]
    fn a_breach_longer_than_for_fires_once_and_resolves_below_the_clear_limit() {
        let values: Vec<(i64, f64)> = (0..20)
            .map(|s| (s, if (5..12).contains(&s) { 31.0 } else { 25.0 }))
            .collect();
        let hot = &run(&values)["hot"];
        assert_eq!((hot.fired, hot.resolved, hot.firing_at_end), (1, 1, 0));
        // Pending from 5 s, firing at 7 s (for: 2s), resolved at 12 s.
        assert_eq!(hot.firing_ms, 5_000);
    }

    #[test]
    fn a_breach_shorter_than_for_never_fires() {
        let values: Vec<(i64, f64)> = (0..10)
            .map(|s| (s, if s == 4 { 31.0 } else { 25.0 }))
            .collect();
        assert!(!run(&values).contains_key("hot"));
    }

    #[test]
    fn hysteresis_keeps_it_firing_between_the_limits_and_the_end_is_reported() {
        let values = [
            (0, 25.0),
            (1, 31.0),
            (2, 31.0),
            (3, 31.0),
            (4, 29.5),
            (5, 29.5),
        ];
        let hot = &run(&values)["hot"];
        assert_eq!((hot.fired, hot.resolved, hot.firing_at_end), (1, 0, 1));
    }

    #[test]
    fn a_silence_longer_than_offline_after_raises_offline() {
        let values = [(0, 25.0), (1, 25.0), (120, 25.0)];
        let summaries = run(&values);
        let offline = summaries
            .iter()
            .find(|(name, _)| name.contains("offline"))
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no offline alert: {summaries:?}"));
        assert_eq!((offline.fired, offline.resolved), (1, 1));
    }
}
