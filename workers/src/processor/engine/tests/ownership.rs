//! Devices that change processor: forgetting the ones whose partitions moved away, and
//! seeding the silence clock of the ones that arrived (or outlived a full outage).

use super::*;

#[test]
fn a_forgotten_device_raises_nothing_and_reports_nothing() {
    let mut engine = engine_with(vec![]);
    engine.set_declared(&[declared("kept", "f", MIN), declared("moved", "f", MIN)]);
    step(&mut engine, &temp("kept", T0, 20.0));
    step(&mut engine, &temp("moved", T0, 20.0));
    assert_eq!(engine.forget(|id| id != "moved"), 1);
    assert!(!engine.knows("moved") && engine.knows("kept"));
    let out = tick(&mut engine, T0 + 2 * MIN);
    let offline: Vec<&str> = out.alerts.iter().map(|a| a.device_id.as_str()).collect();
    assert_eq!(
        offline,
        ["kept"],
        "no phantom offline for the device that moved"
    );
    let reported: Vec<String> = engine
        .reports(T0 + 2 * MIN, true)
        .into_iter()
        .map(|r| r.device_id)
        .collect();
    assert_eq!(reported, ["kept"], "no stale metrics for it either");
    assert_eq!(engine.forget(|_| true), 0);
}

#[test]
fn a_seeded_device_that_never_sends_again_goes_offline_once() {
    let mut engine = engine_with(vec![]);
    engine.set_declared(&[declared("silent", "f", MIN)]);
    assert!(engine.seed("silent", TEMP, T0));
    assert!(!engine.seed("silent", TEMP, T0 + SEC), "seeded once");
    assert!(tick(&mut engine, T0 + MIN).alerts.is_empty(), "not yet");
    let out = tick(&mut engine, T0 + MIN + SEC);
    assert_eq!(
        ids(&out),
        vec![(
            format!("silent/offline/{}", T0 + MIN + SEC),
            AlertPhase::Firing
        )]
    );
    assert!(tick(&mut engine, T0 + 3 * MIN).alerts.is_empty(), "once");
    let report = engine.reports(T0 + 3 * MIN, true);
    assert_eq!(report.len(), 1);
    assert!(!report[0].online, "its metrics say offline");
    assert!(!engine.seed("never", TEMP, 0), "no last-seen, no clock");
}

#[test]
fn seeding_leaves_a_device_with_readings_alone_and_a_backlog_still_counts() {
    let mut engine = engine_with(vec![hot_rule_now()]);
    step(&mut engine, &temp("live", T0 + MIN, 20.0));
    assert!(
        !engine.seed("live", TEMP, T0),
        "readings processed here win"
    );
    // The cache saw a reading the log still holds: the backlog, older than the seed,
    // still drives the alert lifecycle.
    assert!(engine.seed("behind", TEMP, T0 + MIN));
    let out = step(&mut engine, &temp("behind", T0 + 10 * SEC, 35.0));
    assert_eq!(
        out.alerts.len(),
        1,
        "the older reading fired: {:?}",
        ids(&out)
    );
    assert_eq!(out.alerts[0].state, AlertPhase::Firing);
    // …and does not turn the silence clock back to its own time: 5 min 20 s after the
    // reading but 4 min 30 s after the cache saw the device, it is not offline.
    let out = tick(&mut engine, T0 + 5 * MIN + 30 * SEC);
    assert!(
        out.alerts.iter().all(|a| a.device_id != "behind"),
        "{:?}",
        ids(&out)
    );
    assert!(
        engine
            .reports(T0 + 5 * MIN + 30 * SEC, true)
            .iter()
            .any(|r| r.device_id == "behind" && r.online)
    );
}

#[test]
fn a_restored_device_keeps_its_offline_alert_when_seeded() {
    let mut before = engine_with(vec![]);
    before.set_declared(&[declared("o1", "f", MIN)]);
    let mut rows = step(&mut before, &temp("o1", T0, 20.0)).state;
    let offline = tick(&mut before, T0 + 2 * MIN);
    rows.extend(offline.state);
    // The new owner: rule state from the registry, then the clock from the cache.
    let mut after = engine_with(vec![]);
    after.set_declared(&[declared("o1", "f", MIN)]);
    after.restore(&store(&rows));
    assert!(
        after.seed("o1", TEMP, T0),
        "restored without a reading: seeded"
    );
    assert!(
        tick(&mut after, T0 + 3 * MIN).alerts.is_empty(),
        "the offline alert the old owner raised is not raised again"
    );
    let out = step(&mut after, &temp("o1", T0 + 4 * MIN, 20.0));
    assert_eq!(
        ids(&out),
        vec![(format!("o1/offline/{}", T0 + 2 * MIN), AlertPhase::Resolved)]
    );
}

/// Fires at once above 30 °C.
fn hot_rule_now() -> CompiledRule {
    instant_rule("hot-now", Some(TEMP), None)
}
