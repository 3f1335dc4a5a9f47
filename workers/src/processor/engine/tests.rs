//! Unit tests of the processor's pure core: readings and times are built by hand, no
//! clock, no I/O.

use std::collections::BTreeMap;

use sensorfleet_model::manifest::{AlertRuleSpec, compile_rule};

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

// ---------------------------------------------------------------------------------------
// Threshold rules

#[test]
fn threshold_fires_once_only_after_for_of_continuous_breach() {
    let mut engine = engine_with(vec![hot_rule()]);
    let mut fired = Vec::new();
    for i in 0..=40 {
        let ts = T0 + i * 5 * SEC;
        let out = step(&mut engine, &temp("t1", ts, 35.0 + i as f64 * 0.1));
        if ts < T0 + 30 * SEC {
            assert!(
                out.alerts.is_empty(),
                "fired after only {} s",
                (ts - T0) / SEC
            );
        }
        fired.extend(out.alerts);
    }
    assert_eq!(
        fired.len(),
        1,
        "one alert across 41 breaching readings: {fired:?}"
    );
    let alert = &fired[0];
    let fire_ts = T0 + 30 * SEC;
    assert_eq!(alert.id, format!("t1/rule:too-hot/{fire_ts}"));
    assert_eq!(alert.state, AlertPhase::Firing);
    assert_eq!(alert.alert_type, AlertKind::Threshold);
    assert_eq!(alert.rule, "too-hot");
    assert_eq!(alert.device_id, "t1");
    assert_eq!(alert.value, 35.0 + 6.0 * 0.1);
    assert_eq!(
        alert.started_at,
        format_ts(T0),
        "started when the breach began"
    );
    assert_eq!(alert.timestamp, format_ts(fire_ts));
    assert_eq!(engine.active_alerts(), 1);
}

#[test]
fn threshold_below_min_fires_too() {
    let mut engine = engine_with(vec![hot_rule()]);
    assert!(step(&mut engine, &temp("t1", T0, 5.0)).alerts.is_empty());
    let out = step(&mut engine, &temp("t1", T0 + 30 * SEC, 4.0));
    assert_eq!(
        ids(&out),
        vec![(
            format!("t1/rule:too-hot/{}", T0 + 30 * SEC),
            AlertPhase::Firing
        )]
    );
}

#[test]
fn threshold_dip_inside_band_resets_pending() {
    let mut engine = engine_with(vec![hot_rule()]);
    let mut alerts = Vec::new();
    for (offset, value) in [
        (0, 35.0),
        (20, 35.0),
        (25, 25.0),
        (30, 35.0),
        (45, 35.0),
        (55, 35.0),
    ] {
        alerts.extend(step(&mut engine, &temp("t1", T0 + offset * SEC, value)).alerts);
    }
    assert!(
        alerts.is_empty(),
        "the dip at 25 s restarted the 30 s: {alerts:?}"
    );
    assert_eq!(engine.active_alerts(), 0);
    // 30 s after the breach resumed (at 30 s), it fires.
    let out = step(&mut engine, &temp("t1", T0 + 60 * SEC, 35.0));
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(
        out.alerts[0].id,
        format!("t1/rule:too-hot/{}", T0 + 60 * SEC)
    );
    assert_eq!(out.alerts[0].started_at, format_ts(T0 + 30 * SEC));
}

#[test]
fn threshold_resolves_once_with_hysteresis_and_same_id() {
    let mut engine = engine_with(vec![hot_rule()]);
    step(&mut engine, &temp("t1", T0, 35.0));
    let fired = step(&mut engine, &temp("t1", T0 + 30 * SEC, 35.0));
    assert_eq!(fired.alerts.len(), 1);
    let id = fired.alerts[0].id.clone();

    // Hovering between the clear limit (29) and the limit (30): neither resolves nor
    // refires; going back above 30 does not refire either.
    let mut ts = T0 + 30 * SEC;
    for value in [29.5, 29.9, 30.0, 29.1, 30.5, 29.01, 29.6] {
        ts += 5 * SEC;
        let out = step(&mut engine, &temp("t1", ts, value));
        assert!(
            out.alerts.is_empty(),
            "{value} changed the alert: {:?}",
            out.alerts
        );
        assert_eq!(engine.active_alerts(), 1, "{value} dropped the alert");
    }

    ts += 5 * SEC;
    let out = step(&mut engine, &temp("t1", ts, 29.0));
    assert_eq!(ids(&out), vec![(id.clone(), AlertPhase::Resolved)]);
    assert_eq!(out.alerts[0].value, 29.0);
    assert_eq!(out.alerts[0].timestamp, format_ts(ts));
    assert_eq!(
        out.state,
        vec![("t1".to_owned(), "rule:too-hot".to_owned(), None)]
    );
    assert_eq!(engine.active_alerts(), 0);

    // Once resolved, in-band values (even 29.5, which held before) change nothing.
    for value in [28.0, 29.5, 25.0] {
        ts += 5 * SEC;
        assert!(step(&mut engine, &temp("t1", ts, value)).is_empty());
    }
}

#[test]
fn describe_rule_alerts_fills_in_the_rule() {
    let rules = vec![hot_rule()];
    let mut engine = engine_with(rules.clone());
    let mut out = Output::default();
    engine.observe(&temp("t1", T0, 35.0), &mut out);
    engine.observe(&temp("t1", T0 + 30 * SEC, 36.0), &mut out);
    engine.observe(&temp("t1", T0 + 40 * SEC, 20.0), &mut out);
    engine.observe(&battery("t1", T0 + 50 * SEC, 5.0), &mut out);
    assert_eq!(out.alerts.len(), 3);
    // Before: the engine only knows the rule's name.
    assert_eq!(out.alerts[0].metric, None);
    assert_eq!(out.alerts[0].threshold, "");

    describe_rule_alerts(&mut out.alerts, &rules);
    let (fired, resolved, low) = (&out.alerts[0], &out.alerts[1], &out.alerts[2]);
    for alert in [fired, resolved] {
        assert_eq!(alert.metric.as_deref(), Some(TEMP_FIELD));
        assert_eq!(alert.severity, Severity::Critical);
        assert_eq!(alert.threshold, "10-30");
        assert!(
            alert.message.starts_with("t1: temperature_celsius "),
            "{}",
            alert.message
        );
    }
    assert!(
        fired.message.contains("outside 10-30 for 30s"),
        "{}",
        fired.message
    );
    assert!(
        resolved.message.contains("back to 20 (limits 10-30)"),
        "{}",
        resolved.message
    );
    assert!(
        fired.message.contains("36") && fired.message.ends_with("(firing)"),
        "{}",
        fired.message
    );
    assert!(
        resolved.message.ends_with("; resolved"),
        "{}",
        resolved.message
    );
    // Other kinds are left as the engine made them.
    assert_eq!(low.alert_type, AlertKind::LowBattery);
    assert_eq!(low.threshold, "< 15%");
    assert_eq!(low.severity, Severity::Warning);
}

#[test]
fn rule_narrowed_by_device_type_applies_only_to_that_type() {
    let mut engine = engine_with(vec![instant_rule("hot", Some(TEMP), None)]);
    let other = reading(
        "g1",
        "gps_tracker",
        T0,
        &[(TEMP_FIELD, 50.0), ("speed_kmh", 3.0)],
    );
    assert!(step(&mut engine, &other).alerts.is_empty());
    let out = step(&mut engine, &temp("t1", T0, 50.0));
    assert_eq!(
        ids(&out),
        vec![(format!("t1/rule:hot/{T0}"), AlertPhase::Firing)]
    );
}

#[test]
fn rule_narrowed_by_fleet_applies_only_to_its_declared_devices() {
    let mut engine = engine_with(vec![instant_rule(
        "greenhouse-hot",
        None,
        Some("greenhouse"),
    )]);
    engine.set_declared(&[
        declared("in", "greenhouse", 5 * MIN),
        declared("out", "warehouse", 5 * MIN),
    ]);
    assert!(step(&mut engine, &temp("out", T0, 50.0)).alerts.is_empty());
    assert!(
        step(&mut engine, &temp("undeclared", T0, 50.0))
            .alerts
            .is_empty()
    );
    let out = step(&mut engine, &temp("in", T0, 50.0));
    assert_eq!(
        ids(&out),
        vec![(format!("in/rule:greenhouse-hot/{T0}"), AlertPhase::Firing)]
    );

    // Membership is whatever `set_declared` last said.
    engine.set_declared(&[declared("out", "greenhouse", 5 * MIN)]);
    let out = step(&mut engine, &temp("out", T0 + SEC, 50.0));
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].device_id, "out");
}

#[test]
fn removed_rule_resolves_on_the_next_reading() {
    let mut engine = engine_with(vec![hot_rule(), instant_rule("other", Some(TEMP), None)]);
    step(&mut engine, &temp("t1", T0, 35.0));
    let fired = step(&mut engine, &temp("t1", T0 + 30 * SEC, 35.0));
    let hot_id = format!("t1/rule:too-hot/{}", T0 + 30 * SEC);
    assert!(
        fired
            .alerts
            .iter()
            .any(|a| a.id == hot_id && a.state == AlertPhase::Firing)
    );

    engine.set_rules(vec![instant_rule("other", Some(TEMP), None)]);
    assert!(
        tick(&mut engine, T0 + 31 * SEC).alerts.is_empty(),
        "a tick is not a reading"
    );
    // Still breaching, but the rule is gone: it resolves, with the id it fired with.
    let out = step(&mut engine, &temp("t1", T0 + 40 * SEC, 35.0));
    assert_eq!(ids(&out), vec![(hot_id, AlertPhase::Resolved)]);
    assert_eq!(out.alerts[0].rule, "too-hot");
    assert!(
        out.state
            .contains(&("t1".to_owned(), "rule:too-hot".to_owned(), None))
    );
    assert_eq!(engine.active_alerts(), 1, "only `other` is left");
    assert!(
        step(&mut engine, &temp("t1", T0 + 50 * SEC, 35.0))
            .alerts
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------
// Built-in detectors

#[test]
fn low_battery_fires_below_15_and_clears_at_20() {
    let mut engine = engine_with(Vec::new());
    let mut ts = T0;
    let mut next = |engine: &mut Engine, pct: f64| {
        ts += 10 * SEC;
        (ts, step(engine, &battery("b1", ts, pct)))
    };
    for pct in [80.0, 15.0] {
        assert!(
            next(&mut engine, pct).1.alerts.is_empty(),
            "{pct}% is not low"
        );
    }
    let (fire_ts, out) = next(&mut engine, 14.9);
    let id = format!("b1/low_battery/{fire_ts}");
    assert_eq!(ids(&out), vec![(id.clone(), AlertPhase::Firing)]);
    assert_eq!(out.alerts[0].alert_type, AlertKind::LowBattery);
    assert_eq!(out.alerts[0].metric.as_deref(), Some("meta_battery_level"));
    assert_eq!(out.alerts[0].value, 14.9);
    for pct in [12.0, 17.0, 19.9, 14.0] {
        assert!(
            next(&mut engine, pct).1.alerts.is_empty(),
            "{pct}% changed the alert"
        );
    }
    let (_, out) = next(&mut engine, 20.0);
    assert_eq!(ids(&out), vec![(id.clone(), AlertPhase::Resolved)]);
    assert!(
        next(&mut engine, 17.0).1.alerts.is_empty(),
        "17% does not fire a new one"
    );
    let (again_ts, out) = next(&mut engine, 10.0);
    assert_eq!(
        ids(&out),
        vec![(format!("b1/low_battery/{again_ts}"), AlertPhase::Firing)]
    );
}

#[test]
fn offline_after_the_default_five_minutes_fires_once_and_resolves_on_a_reading() {
    let mut engine = engine_with(Vec::new());
    step(&mut engine, &temp("d1", T0, 20.0));
    assert!(
        tick(&mut engine, T0 + 5 * MIN).alerts.is_empty(),
        "exactly 5 min is not offline yet"
    );
    let fire_ts = T0 + 5 * MIN + 1;
    let out = tick(&mut engine, fire_ts);
    let id = format!("d1/offline/{fire_ts}");
    assert_eq!(ids(&out), vec![(id.clone(), AlertPhase::Firing)]);
    assert_eq!(out.alerts[0].alert_type, AlertKind::Offline);
    assert_eq!(out.alerts[0].severity, Severity::Critical);
    assert_eq!(out.state.len(), 1);
    for later in [6 * MIN, 10 * MIN, 60 * MIN] {
        let out = tick(&mut engine, T0 + later);
        assert!(
            out.alerts.is_empty() && out.state.is_empty(),
            "refired at +{later} ms"
        );
    }
    let back = T0 + 61 * MIN;
    let out = step(&mut engine, &temp("d1", back, 20.0));
    assert_eq!(ids(&out), vec![(id, AlertPhase::Resolved)]);
    assert_eq!(out.alerts[0].timestamp, format_ts(back));
    assert!(tick(&mut engine, back + MIN).alerts.is_empty());
    assert_eq!(engine.active_alerts(), 0);
}

#[test]
fn offline_uses_the_declared_threshold() {
    let mut engine = engine_with(Vec::new());
    engine.set_declared(&[declared("fast", "f", MIN)]);
    step(&mut engine, &temp("fast", T0, 20.0));
    step(&mut engine, &temp("default", T0, 20.0));
    assert!(tick(&mut engine, T0 + MIN).alerts.is_empty());
    let out = tick(&mut engine, T0 + MIN + SEC);
    assert_eq!(
        ids(&out),
        vec![(
            format!("fast/offline/{}", T0 + MIN + SEC),
            AlertPhase::Firing
        )]
    );
}

#[test]
fn statistical_anomaly_fires_on_an_outlier_and_resolves_when_back_to_normal() {
    let mut engine = engine_with(Vec::new());
    let (mut ts, out) = warm_up(&mut engine, "a1", 120);
    assert!(
        out.alerts.is_empty(),
        "normal noise raised {:?}",
        out.alerts
    );

    // About 7 standard deviations above the level, but not a faster change than usual
    // enough to count as a spike.
    let out = step(&mut engine, &temp("a1", ts, 22.0));
    assert_eq!(
        ids(&out),
        vec![(format!("a1/anomaly/{ts}"), AlertPhase::Firing)]
    );
    let alert = &out.alerts[0];
    assert_eq!(alert.alert_type, AlertKind::Anomaly);
    assert_eq!(alert.value, 22.0);
    assert_eq!(alert.threshold, "|z| >= 2.9");
    let id = alert.id.clone();

    let mut resolved = Vec::new();
    for i in 0..5 {
        ts += 10 * SEC;
        resolved.extend(step(&mut engine, &temp("a1", ts, 20.0 + 0.5 * noise(500 + i))).alerts);
    }
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(
        (resolved[0].id.clone(), resolved[0].state),
        (id, AlertPhase::Resolved)
    );
    assert_eq!(engine.active_alerts(), 0);
}

#[test]
fn a_sudden_huge_jump_raises_a_spike() {
    let mut engine = engine_with(Vec::new());
    let (ts, _) = warm_up(&mut engine, "a1", 120);
    let out = step(&mut engine, &temp("a1", ts, 60.0));
    assert!(
        out.alerts
            .iter()
            .any(|a| a.alert_type == AlertKind::Spike && a.id == format!("a1/spike/{ts}")),
        "{:?}",
        out.alerts
    );
}

#[test]
fn anomalies_lower_the_health_score() {
    let mut engine = engine_with(Vec::new());
    let (ts, _) = warm_up(&mut engine, "calm", 120);
    warm_up(&mut engine, "jumpy", 120);
    step(&mut engine, &temp("calm", ts, 20.0));
    step(&mut engine, &temp("jumpy", ts, 22.0));
    let reports = engine.reports(ts, true);
    let health = |id: &str| {
        reports
            .iter()
            .find(|r| r.device_id == id)
            .map(|r| r.health_score)
    };
    // One recent anomaly costs a fifth of the 0.15 "calm" weight.
    let (calm, jumpy) = (
        health("calm").expect("calm"),
        health("jumpy").expect("jumpy"),
    );
    assert!(
        (calm - jumpy - 0.03).abs() < 1e-9,
        "calm {calm}, jumpy {jumpy}"
    );
}

#[test]
fn motion_sensors_are_not_checked_for_anomalies() {
    let flip = |engine: &mut Engine, device_type: &str| {
        let mut out = Output::default();
        for i in 0..100 {
            let motion = if i < 99 { 0.0 } else { 1.0 };
            engine.observe(
                &reading("m1", device_type, T0 + i * 10 * SEC, &[("motion", motion)]),
                &mut out,
            );
        }
        out.alerts
    };
    assert!(flip(&mut engine_with(Vec::new()), "motion_sensor").is_empty());
    // The control: the same series from another type is flagged.
    assert!(!flip(&mut engine_with(Vec::new()), "vibration_sensor").is_empty());
}

// ---------------------------------------------------------------------------------------
// Acknowledge, clear, restore

#[test]
fn acknowledge_keeps_the_id_and_does_not_refire() {
    let mut engine = engine_with(vec![hot_rule()]);
    step(&mut engine, &temp("t1", T0, 35.0));
    let id = step(&mut engine, &temp("t1", T0 + 30 * SEC, 35.0)).alerts[0]
        .id
        .clone();

    let mut out = Output::default();
    engine
        .acknowledge(&id, T0 + 35 * SEC, &mut out)
        .expect("the alert is active");
    assert_eq!(ids(&out), vec![(id.clone(), AlertPhase::Acknowledged)]);
    assert_eq!(out.alerts[0].timestamp, format_ts(T0 + 35 * SEC));
    assert_eq!(out.state.len(), 1);
    assert!(
        out.state[0]
            .2
            .as_deref()
            .is_some_and(|j| j.contains("acknowledged")),
        "{:?}",
        out.state
    );
    assert_eq!(engine.active_alerts(), 1, "acknowledged is still active");

    for i in 1..=20 {
        let out = step(&mut engine, &temp("t1", T0 + (35 + i * 5) * SEC, 40.0));
        assert!(out.alerts.is_empty(), "refired: {:?}", out.alerts);
    }
    let out = step(&mut engine, &temp("t1", T0 + 10 * MIN, 20.0));
    assert_eq!(ids(&out), vec![(id.clone(), AlertPhase::Resolved)]);
    let again = engine.acknowledge(&id, T0 + 11 * MIN, &mut Output::default());
    assert_eq!(again, Err(CommandError::NotFound(id)));
}

#[test]
fn clear_resolves_and_a_persisting_condition_fires_again_with_a_new_id() {
    let mut engine = engine_with(vec![instant_rule("hot", Some(TEMP), None)]);
    let first = step(&mut engine, &temp("t1", T0, 35.0)).alerts[0]
        .id
        .clone();

    let mut out = Output::default();
    engine
        .clear(&first, T0 + 5 * SEC, &mut out)
        .expect("the alert is active");
    assert_eq!(ids(&out), vec![(first.clone(), AlertPhase::Resolved)]);
    assert_eq!(
        out.state,
        vec![("t1".to_owned(), "rule:hot".to_owned(), None)]
    );
    assert_eq!(engine.active_alerts(), 0);

    let out = step(&mut engine, &temp("t1", T0 + 10 * SEC, 35.0));
    let second = format!("t1/rule:hot/{}", T0 + 10 * SEC);
    assert_ne!(first, second);
    assert_eq!(ids(&out), vec![(second, AlertPhase::Firing)]);
    assert_eq!(
        engine.clear(&first, T0 + 11 * SEC, &mut Output::default()),
        Err(CommandError::NotFound(first))
    );
}

#[test]
fn clear_of_a_rule_with_for_goes_through_pending_again() {
    let mut engine = engine_with(vec![hot_rule()]);
    step(&mut engine, &temp("t1", T0, 35.0));
    let first = step(&mut engine, &temp("t1", T0 + 30 * SEC, 35.0)).alerts[0]
        .id
        .clone();
    engine
        .clear(&first, T0 + 31 * SEC, &mut Output::default())
        .expect("active");
    assert!(
        step(&mut engine, &temp("t1", T0 + 40 * SEC, 35.0))
            .alerts
            .is_empty()
    );
    let out = step(&mut engine, &temp("t1", T0 + 70 * SEC, 35.0));
    assert_eq!(
        ids(&out),
        vec![(
            format!("t1/rule:too-hot/{}", T0 + 70 * SEC),
            AlertPhase::Firing
        )]
    );
}

#[test]
fn unknown_alert_ids_are_not_found() {
    let mut engine = engine_with(vec![hot_rule()]);
    step(&mut engine, &temp("t1", T0, 35.0));
    step(&mut engine, &temp("t1", T0 + 30 * SEC, 35.0));
    // A pending one, which cannot be acknowledged or cleared either.
    step(&mut engine, &temp("t2", T0, 35.0));
    let real = format!("t1/rule:too-hot/{}", T0 + 30 * SEC);
    let unknown = [
        "nope".to_owned(),
        "t1/rule:too-hot".to_owned(),
        "t1/rule:too-hot/not-a-number".to_owned(),
        format!("t1/rule:too-hot/{T0}"),
        format!("ghost/rule:too-hot/{}", T0 + 30 * SEC),
        format!("t1/rule:other/{}", T0 + 30 * SEC),
        format!("t1/offline/{}", T0 + 30 * SEC),
        format!("t2/rule:too-hot/{T0}"),
        String::new(),
    ];
    for id in &unknown {
        let mut out = Output::default();
        let not_found = Err(CommandError::NotFound(id.clone()));
        assert_eq!(
            engine.acknowledge(id, T0 + MIN, &mut out),
            not_found,
            "acknowledge {id:?}"
        );
        assert_eq!(
            engine.clear(id, T0 + MIN, &mut out),
            not_found,
            "clear {id:?}"
        );
        assert!(out.is_empty(), "{id:?} wrote {out:?}");
    }
    assert_eq!(engine.active_alerts(), 1);
    // The control: the real id is found.
    assert_eq!(
        engine.acknowledge(&real, T0 + MIN, &mut Output::default()),
        Ok(())
    );
}

#[test]
fn restore_keeps_a_firing_alert_across_a_restart() {
    let rules = vec![hot_rule()];
    let mut before = engine_with(rules.clone());
    let mut rows = Vec::new();
    rows.extend(step(&mut before, &temp("t1", T0, 35.0)).state);
    let fired = step(&mut before, &temp("t1", T0 + 30 * SEC, 35.0));
    rows.extend(fired.state);
    let id = fired.alerts[0].id.clone();
    let saved = store(&rows);
    assert_eq!(saved.len(), 1);
    assert_eq!(
        (saved[0].0.as_str(), saved[0].1.as_str()),
        ("t1", "rule:too-hot")
    );

    let mut after = engine_with(rules);
    assert_eq!(after.restore(&saved), 1);
    assert_eq!(after.active_alerts(), 1);
    // Still breaching: no second alert.
    assert!(
        step(&mut after, &temp("t1", T0 + 60 * SEC, 36.0))
            .alerts
            .is_empty()
    );
    // Hysteresis survives too: 29.5 holds.
    assert!(
        step(&mut after, &temp("t1", T0 + 70 * SEC, 29.5))
            .alerts
            .is_empty()
    );
    let out = step(&mut after, &temp("t1", T0 + 80 * SEC, 20.0));
    assert_eq!(ids(&out), vec![(id, AlertPhase::Resolved)]);
    assert_eq!(out.alerts[0].started_at, format_ts(T0));
}

#[test]
fn restore_keeps_pending_acknowledged_and_offline_state() {
    let mut before = engine_with(vec![hot_rule()]);
    let mut rows = Vec::new();
    // p1: pending since T0. a1: firing, then acknowledged. o1: offline.
    rows.extend(step(&mut before, &temp("p1", T0, 35.0)).state);
    rows.extend(step(&mut before, &temp("a1", T0, 35.0)).state);
    let fired = step(&mut before, &temp("a1", T0 + 30 * SEC, 35.0));
    rows.extend(fired.state);
    let ack_id = fired.alerts[0].id.clone();
    let mut out = Output::default();
    before
        .acknowledge(&ack_id, T0 + 31 * SEC, &mut out)
        .expect("active");
    rows.extend(out.state);
    before.set_declared(&[declared("o1", "f", MIN)]);
    rows.extend(step(&mut before, &temp("o1", T0, 20.0)).state);
    let offline = tick(&mut before, T0 + 2 * MIN);
    rows.extend(offline.state.clone());
    let o1_id = format!("o1/offline/{}", T0 + 2 * MIN);
    assert_eq!(ids(&offline), vec![(o1_id.clone(), AlertPhase::Firing)]);

    let saved = store(&rows);
    let mut after = engine_with(vec![hot_rule()]);
    // Garbage rows are skipped, not fatal.
    let mut with_garbage = saved.clone();
    with_garbage.push((
        "x".to_owned(),
        "rule:too-hot".to_owned(),
        "{not json".to_owned(),
    ));
    with_garbage.push(("x".to_owned(), "bogus".to_owned(), saved[0].2.clone()));
    assert_eq!(after.restore(&with_garbage), saved.len());

    // Pending since T0 survived: 30 s after T0 it fires without starting over.
    let out = step(&mut after, &temp("p1", T0 + 30 * SEC, 35.0));
    assert_eq!(
        ids(&out),
        vec![(
            format!("p1/rule:too-hot/{}", T0 + 30 * SEC),
            AlertPhase::Firing
        )]
    );
    // Acknowledged survived: no refire, resolves with its id.
    assert!(
        step(&mut after, &temp("a1", 7 * MIN + T0, 40.0))
            .alerts
            .is_empty()
    );
    let out = step(&mut after, &temp("a1", 8 * MIN + T0, 20.0));
    assert_eq!(ids(&out), vec![(ack_id, AlertPhase::Resolved)]);
    // Offline survived: the next reading resolves it with its id.
    let out = step(&mut after, &temp("o1", T0 + 9 * MIN, 20.0));
    assert_eq!(ids(&out), vec![(o1_id, AlertPhase::Resolved)]);
}

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
