//! The alert lifecycle through the engine: threshold rules, low battery, offline,
//! anomalies, acknowledge and clear, and state restored after a restart.

use super::*;

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
