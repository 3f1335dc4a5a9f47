//! Unit tests of the processor's pure core: readings and times are built by hand, no
//! clock, no I/O.

use std::collections::BTreeMap;

use sensorfleet_model::crd::rule::compile_rule;
use sensorfleet_model::reading::format_ts;
use sensorfleet_model::{AlertPhase, AlertRuleSpec, Severity};

use super::*;

/// A time aligned to the 30 s window buckets, so window edges are easy to reason about.
const T0: i64 = 1_700_000_010_000;
const SEC: i64 = 1_000;
const MIN: i64 = 60_000;
const TEMP: &str = "temperature_sensor";
const TEMP_FIELD: &str = "temperature_celsius";

fn reading(device: &str, device_type: &str, ts_ms: i64, fields: &[(&str, f64)]) -> Reading {
    Reading {
        device_id: device.to_owned(),
        device_type: device_type.to_owned(),
        location: None,
        ts_ms,
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn temp(device: &str, ts_ms: i64, celsius: f64) -> Reading {
    reading(device, TEMP, ts_ms, &[(TEMP_FIELD, celsius)])
}

fn battery(device: &str, ts_ms: i64, pct: f64) -> Reading {
    reading(
        device,
        TEMP,
        ts_ms,
        &[(TEMP_FIELD, 20.0), ("meta_battery_level", pct)],
    )
}

/// min 10 / max 30, clears at ≤ 29, after 30 s of continuous breach.
fn hot_rule() -> CompiledRule {
    compile_rule(
        "too-hot",
        &AlertRuleSpec {
            device_type: Some(TEMP.to_owned()),
            metric: TEMP_FIELD.to_owned(),
            min: Some(10.0),
            max: Some(30.0),
            clear_max: Some(29.0),
            for_duration: Some("30s".to_owned()),
            severity: Severity::Critical,
            ..AlertRuleSpec::default()
        },
    )
    .expect("a valid rule")
}

/// Fires on the first reading above 30.
fn instant_rule(name: &str, device_type: Option<&str>, fleet: Option<&str>) -> CompiledRule {
    CompiledRule {
        name: name.to_owned(),
        device_type: device_type.map(str::to_owned),
        fleet: fleet.map(str::to_owned),
        metric: TEMP_FIELD.to_owned(),
        threshold: Threshold {
            max: Some(30.0),
            ..Threshold::default()
        },
        for_ms: 0,
        severity: Severity::Warning,
    }
}

fn engine_with(rules: Vec<CompiledRule>) -> Engine {
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_rules(rules);
    engine
}

/// Observes one reading and returns what it produced.
fn step(engine: &mut Engine, r: &Reading) -> Output {
    let mut out = Output::default();
    engine.observe(r, &mut out);
    out
}

fn tick(engine: &mut Engine, now_ms: i64) -> Output {
    let mut out = Output::default();
    engine.tick(now_ms, &mut out);
    out
}

fn declared(device: &str, fleet: &str, offline_after_ms: i64) -> DeclaredDevice {
    DeclaredDevice {
        device_id: device.to_owned(),
        device_type: TEMP.to_owned(),
        location: None,
        fleet: fleet.to_owned(),
        publish_interval_ms: 10 * SEC,
        offline_after_ms,
    }
}

/// `(id, state)` of each alert, for compact assertions.
fn ids(out: &Output) -> Vec<(String, AlertPhase)> {
    out.alerts.iter().map(|a| (a.id.clone(), a.state)).collect()
}

/// Applies state rows the way the registry does (upsert, `None` deletes) and returns
/// what a restarted processor would load.
fn store(rows: &[(String, String, Option<String>)]) -> Vec<(String, String, String)> {
    let mut table: BTreeMap<(String, String), String> = BTreeMap::new();
    for (device, source, json) in rows {
        let key = (device.clone(), source.clone());
        match json {
            Some(json) => table.insert(key, json.clone()),
            None => table.remove(&key),
        };
    }
    table.into_iter().map(|((d, s), j)| (d, s, j)).collect()
}

/// Deterministic noise, uniform in [-1, 1).
fn noise(i: u64) -> f64 {
    let mut x = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Feeds `n` normal readings (20 ± 0.5, every 10 s from `T0`); returns the next free time.
fn warm_up(engine: &mut Engine, device: &str, n: u64) -> (i64, Output) {
    let mut out = Output::default();
    for i in 0..n {
        engine.observe(
            &temp(device, T0 + i as i64 * 10 * SEC, 20.0 + 0.5 * noise(i)),
            &mut out,
        );
    }
    (T0 + n as i64 * 10 * SEC, out)
}

mod alerts;
mod ownership;

// ---------------------------------------------------------------------------------------
// Devices, reports, memory

#[test]
fn new_devices_are_listed_once_on_their_first_reading() {
    let mut engine = engine_with(Vec::new());
    let mut first = temp("a", T0, 20.0);
    first.location = Some("lab".to_owned());
    assert_eq!(
        step(&mut engine, &first).new_devices,
        vec![("a".to_owned(), TEMP.to_owned(), Some("lab".to_owned()))]
    );
    assert!(
        step(&mut engine, &temp("a", T0 + SEC, 21.0))
            .new_devices
            .is_empty()
    );
    let out = step(
        &mut engine,
        &reading("b", "humidity_sensor", T0, &[("humidity_percent", 40.0)]),
    );
    assert_eq!(
        out.new_devices,
        vec![("b".to_owned(), "humidity_sensor".to_owned(), None)]
    );
    assert_eq!(engine.device_count(), 2);
}

#[test]
fn max_devices_caps_the_map_and_counts_skipped_readings() {
    let cfg = EngineConfig {
        max_devices: 2,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(cfg);
    engine.set_rules(vec![instant_rule("hot", Some(TEMP), None)]);
    let mut out = Output::default();
    for device in ["a", "b", "c", "c", "d"] {
        engine.observe(&temp(device, T0, 50.0), &mut out);
    }
    assert_eq!(engine.device_count(), 2);
    assert_eq!(engine.skipped_devices, 3);
    let new: Vec<&str> = out.new_devices.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(new, ["a", "b"]);
    let alerted: Vec<&str> = out.alerts.iter().map(|a| a.device_id.as_str()).collect();
    assert_eq!(alerted, ["a", "b"]);
    // Known devices are still analysed once the map is full.
    let out = step(&mut engine, &temp("a", T0 + SEC, 20.0));
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(engine.skipped_devices, 3);
}

#[test]
fn reports_main_field_statistics_and_online_state() {
    let mut engine = engine_with(Vec::new());
    // 1..=12 °C, one a second, inside one 30 s bucket; humidity must not be the main field.
    for i in 0..12 {
        let r = reading(
            "t1",
            TEMP,
            T0 + i * SEC,
            &[(TEMP_FIELD, (i + 1) as f64), ("humidity_percent", 50.0)],
        );
        step(&mut engine, &r);
    }
    let last = T0 + 11 * SEC;
    let reports = engine.reports(last, false);
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report.device_id, "t1");
    assert_eq!(report.main_field.as_deref(), Some(TEMP_FIELD));
    // The moving average holds the last 10: 3..=12.
    assert_eq!(report.moving_average, Some(7.5));
    let window = report.window.expect("window stats");
    assert_eq!(window.count, 12);
    assert!((window.mean - 6.5).abs() < 1e-12, "{window:?}");
    assert_eq!((window.min, window.max), (1.0, 12.0));
    assert!(
        (window.stddev - (143.0f64 / 12.0).sqrt()).abs() < 1e-9,
        "{window:?}"
    );
    assert!((0.0..=1.0).contains(&report.health_score));
    assert!(report.online);

    // Online until offlineAfter (default 5 min) has passed, then not.
    let at = |engine: &mut Engine, now| engine.reports(now, true).remove(0);
    let just_in_time = at(&mut engine, last + 5 * MIN);
    let too_late = at(&mut engine, last + 5 * MIN + 1);
    assert!(just_in_time.online && !too_late.online);
    assert!((0.0..=1.0).contains(&too_late.health_score));
    assert!(too_late.health_score < report.health_score);
    // The window empties as time moves on without readings.
    assert_eq!(too_late.window.map(|w| w.count), Some(0));
}

#[test]
fn reports_only_dirty_devices_unless_all() {
    let mut engine = engine_with(Vec::new());
    step(&mut engine, &temp("a", T0, 20.0));
    step(&mut engine, &temp("b", T0, 20.0));
    assert_eq!(engine.reports(T0, false).len(), 2);
    assert!(
        engine.reports(T0, false).is_empty(),
        "nothing changed since"
    );
    assert_eq!(engine.reports(T0, true).len(), 2);
    assert!(
        engine.reports(T0, false).is_empty(),
        "`all` also marks them clean"
    );

    step(&mut engine, &temp("b", T0 + SEC, 21.0));
    let names: Vec<String> = engine
        .reports(T0 + SEC, false)
        .into_iter()
        .map(|r| r.device_id)
        .collect();
    assert_eq!(names, ["b"]);

    // A device going offline is a change worth reporting.
    tick(&mut engine, T0 + 5 * MIN + 500);
    let names: Vec<String> = engine
        .reports(T0 + 5 * MIN + 500, false)
        .into_iter()
        .map(|r| r.device_id)
        .collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn health_score_uses_battery_and_signal() {
    let mut engine = engine_with(Vec::new());
    let fields = |pct, dbm| {
        [
            (TEMP_FIELD, 20.0),
            ("meta_battery_level", pct),
            ("meta_signal_strength", dbm),
        ]
    };
    step(
        &mut engine,
        &reading("strong", TEMP, T0, &fields(100.0, -40.0)),
    );
    step(
        &mut engine,
        &reading("weak", TEMP, T0, &fields(10.0, -95.0)),
    );
    let reports = engine.reports(T0, true);
    let health = |id: &str| {
        reports
            .iter()
            .find(|r| r.device_id == id)
            .map(|r| r.health_score)
    };
    // Fresh, complete and calm (0.5) plus battery 0.3·b and signal 0.2·s.
    assert_eq!(health("strong"), Some(1.0));
    assert_eq!(health("weak"), Some(0.55));
    let (online, mean) = engine.summary(T0);
    assert_eq!(online, 2);
    assert!((mean - 0.775).abs() < 1e-9, "{mean}");
}

#[test]
fn state_stays_under_4_kib_per_device_for_10k_devices() {
    let mut engine = engine_with(vec![hot_rule()]);
    let mut out = Output::default();
    for d in 0..10_000 {
        let id = format!("dev-{d:05}");
        for i in 0..3 {
            // Every tenth device breaches, so some devices carry alert state too.
            let value = if d % 10 == 0 { 35.0 } else { 20.0 + i as f64 };
            let r = reading(
                &id,
                TEMP,
                T0 + i * 10 * SEC,
                &[(TEMP_FIELD, value), ("meta_battery_level", 80.0)],
            );
            engine.observe(&r, &mut out);
            out.alerts.clear();
            out.state.clear();
            out.new_devices.clear();
        }
    }
    assert_eq!(engine.device_count(), 10_000);
    let per_device = engine.state_bytes() / engine.device_count();
    println!(
        "engine state: {per_device} bytes/device over {} devices",
        engine.device_count()
    );
    assert!(per_device < 4096, "{per_device} bytes/device");
    // Not vacuous: it counts at least the window and moving average.
    assert!(
        per_device > 10 * BUCKET_BYTES + 10 * 8,
        "{per_device} bytes/device"
    );
}

/// `(device type, fields, expected main field)`.
type Case = (
    &'static str,
    &'static [(&'static str, f64)],
    Option<&'static str>,
);

#[test]
fn main_field_prefers_the_types_measurement_then_the_first_non_meta_field() {
    let cases: [Case; 8] = [
        (
            TEMP,
            &[("humidity_percent", 1.0), (TEMP_FIELD, 2.0)],
            Some(TEMP_FIELD),
        ),
        (
            "humidity_sensor",
            &[("air_quality", 1.0), ("humidity_percent", 2.0)],
            Some("humidity_percent"),
        ),
        (
            "gps_tracker",
            &[("latitude", 1.0), ("speed_kmh", 2.0)],
            Some("speed_kmh"),
        ),
        (
            "motion_sensor",
            &[("battery", 1.0), ("motion", 0.0)],
            Some("motion"),
        ),
        (
            "pressure_sensor",
            &[
                ("meta_battery_level", 1.0),
                ("pressure_hpa", 2.0),
                ("zeta", 3.0),
            ],
            Some("pressure_hpa"),
        ),
        // The type's measurement missing: the first non-meta field.
        (
            TEMP,
            &[("meta_signal_strength", 1.0), ("humidity_percent", 2.0)],
            Some("humidity_percent"),
        ),
        (TEMP, &[("meta_battery_level", 1.0)], None),
        ("anything", &[], None),
    ];
    for (device_type, fields, expected) in cases {
        let r = reading("x", device_type, T0, fields);
        assert_eq!(
            main_field(device_type, &r),
            expected,
            "{device_type} {fields:?}"
        );
    }
}

#[test]
fn a_rule_that_stops_applying_to_a_device_resolves_its_alert() {
    let mut engine = engine_with(vec![instant_rule(
        "greenhouse-hot",
        None,
        Some("greenhouse"),
    )]);
    engine.set_declared(&[declared("d1", "greenhouse", 5 * MIN)]);
    let id = step(&mut engine, &temp("d1", T0, 50.0)).alerts[0]
        .id
        .clone();
    // The device moves to another fleet: the rule no longer covers it.
    engine.set_declared(&[declared("d1", "warehouse", 5 * MIN)]);
    let out = step(&mut engine, &temp("d1", T0 + SEC, 50.0));
    assert_eq!(ids(&out), vec![(id, AlertPhase::Resolved)]);
    assert_eq!(engine.active_alerts(), 0);
}

#[test]
fn a_reading_without_the_rules_metric_does_not_resolve_its_alert() {
    let mut engine = engine_with(vec![instant_rule("hot", Some(TEMP), None)]);
    step(&mut engine, &temp("t1", T0, 50.0));
    let partial = reading("t1", TEMP, T0 + SEC, &[("humidity_percent", 40.0)]);
    assert!(step(&mut engine, &partial).alerts.is_empty());
    assert_eq!(engine.active_alerts(), 1);
}

#[test]
fn varying_field_names_do_not_grow_the_name_table() {
    let mut engine = engine_with(Vec::new());
    for i in 0..1_000 {
        let field = format!("field_{i:04}");
        step(
            &mut engine,
            &reading(
                "odd",
                "custom_sensor",
                T0 + i * SEC,
                &[(field.as_str(), 1.0)],
            ),
        );
    }
    // The device type and the first main field name; not one per reading.
    assert!(
        engine.names.len() <= 2,
        "{} interned names",
        engine.names.len()
    );
}
