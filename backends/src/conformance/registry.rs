//! The registry suite: devices, presence, rules, alert history and rule state.

use sensorfleet_model::analytics::alert::Threshold;
use sensorfleet_model::{AlertPhase, CompiledRule, Severity};

use super::alert;
use crate::{DeviceRecord, Registry, RuleActivity};

/// Devices, rules, alert history and rule state round-trip.
pub async fn registry_suite(registry: &dyn Registry, run: &str) {
    let fleet = format!("{run}-fleet");
    let device = |n: u32, location: &str| DeviceRecord {
        device_id: format!("{run}-dev-{n}"),
        device_type: "temperature_sensor".to_owned(),
        location: Some(location.to_owned()),
        status: "active".to_owned(),
        fleet: Some(fleet.clone()),
        publish_interval_ms: Some(10_000),
        offline_after_ms: Some(300_000),
    };
    registry
        .upsert_devices(&[device(1, "A"), device(2, "B"), device(3, "C")])
        .await
        .expect("upsert");
    registry
        .upsert_devices(&[device(2, "B2")])
        .await
        .expect("update");
    let two = registry
        .device(&format!("{run}-dev-2"))
        .await
        .expect("device")
        .expect("present");
    assert_eq!(two.location.as_deref(), Some("B2"), "upsert updates");

    let mut seen = device(1, "elsewhere");
    seen.status = "unregistered".to_owned();
    registry
        .insert_missing_devices(&[seen])
        .await
        .expect("insert missing");
    let one = registry
        .device(&format!("{run}-dev-1"))
        .await
        .expect("device")
        .expect("present");
    assert_eq!(
        one.location.as_deref(),
        Some("A"),
        "insert_missing never overwrites"
    );

    let pruned = registry
        .prune_fleet(&fleet, &[format!("{run}-dev-1"), format!("{run}-dev-2")])
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    let ours: Vec<_> = registry
        .devices()
        .await
        .expect("devices")
        .into_iter()
        .filter(|d| d.fleet.as_deref() == Some(fleet.as_str()))
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ours, [format!("{run}-dev-1"), format!("{run}-dev-2")]);
    assert!(
        registry
            .device("no-such-device")
            .await
            .expect("lookup")
            .is_none()
    );

    let rule = |name: &str, max: f64| CompiledRule {
        name: format!("{run}-{name}"),
        device_type: Some("temperature_sensor".to_owned()),
        fleet: None,
        metric: "temperature_celsius".to_owned(),
        threshold: Threshold {
            min: Some(10.0),
            max: Some(max),
            clear_min: None,
            clear_max: Some(max - 1.0),
        },
        for_ms: 30_000,
        severity: Severity::Critical,
    };
    registry
        .replace_rules(&[rule("a", 30.0), rule("b", 40.0)])
        .await
        .expect("rules");
    registry
        .replace_rules(&[rule("b", 45.0)])
        .await
        .expect("rules again");
    let rules: Vec<_> = registry
        .rules()
        .await
        .expect("rules")
        .into_iter()
        .filter(|r| r.name.starts_with(run))
        .collect();
    assert_eq!(
        rules,
        [rule("b", 45.0)],
        "replace_rules makes the set exactly the given rules"
    );

    let id = format!("{run}-dev-1/too-hot/1");
    // Relative: the registry may be shared with other tests that keep their alerts.
    let active_before = registry.active_alert_count().await.expect("count");
    registry
        .record_alerts(&[alert(
            &id,
            &format!("{run}-dev-1"),
            AlertPhase::Firing,
            "2026-05-29T10:30:00.000Z",
        )])
        .await
        .expect("alert");
    assert_eq!(
        registry.active_alert_count().await.expect("count"),
        active_before + 1,
        "a firing alert is active"
    );
    registry
        .record_alerts(&[alert(
            &id,
            &format!("{run}-dev-1"),
            AlertPhase::Resolved,
            "2026-05-29T10:35:00.000Z",
        )])
        .await
        .expect("alert update");
    assert_eq!(
        registry.active_alert_count().await.expect("count"),
        active_before,
        "a resolved alert is not"
    );
    let stored = registry.alert(&id).await.expect("alert").expect("present");
    assert_eq!(
        stored.state,
        AlertPhase::Resolved,
        "an alert id is one row, updated"
    );
    assert!(
        registry
            .alerts(1000)
            .await
            .expect("alerts")
            .iter()
            .any(|a| a.id == id)
    );
    let unknown = format!("{run}-never/too-hot/1");
    assert_eq!(
        registry
            .alert_phases(&[id.clone(), unknown])
            .await
            .expect("phases"),
        vec![(id.clone(), AlertPhase::Resolved)],
        "the stored phase of each known id; an unknown id is absent"
    );
    assert!(
        registry.alert_phases(&[]).await.expect("no ids").is_empty(),
        "no ids, no query, nothing"
    );

    // Presence: written as changes by the processor, counted per fleet.
    assert_eq!(
        registry.online_count(&fleet).await.expect("online"),
        0,
        "never heard is not online"
    );
    let (one, two) = (format!("{run}-dev-1"), format!("{run}-dev-2"));
    registry
        .set_presence(&[
            (one.clone(), true),
            (two.clone(), false),
            (two.clone(), true),
            ("no-such-device".to_owned(), true),
        ])
        .await
        .expect("presence");
    assert_eq!(
        registry.online_count(&fleet).await.expect("online"),
        2,
        "both online (the last of a repeated id wins; unknown ids are skipped)"
    );
    registry
        .set_presence(&[(two.clone(), false)])
        .await
        .expect("offline");
    assert_eq!(registry.online_count(&fleet).await.expect("online"), 1);
    registry
        .upsert_devices(&[device(1, "A again")])
        .await
        .expect("re-declare");
    assert_eq!(
        registry.online_count(&fleet).await.expect("online"),
        1,
        "declaring a device again keeps its presence"
    );
    assert_eq!(
        registry
            .online_count(&format!("{run}-other"))
            .await
            .expect("online"),
        0
    );

    // A rule's activity: open alerts counted, the newest firing time kept.
    let hot = format!("{run}-hot");
    assert_eq!(
        registry.rule_activity(&hot).await.expect("activity"),
        RuleActivity::default()
    );
    let of_rule = |id: &str, state: AlertPhase, timestamp: &str, started_at: &str| {
        let mut a = alert(&format!("{run}-{id}"), &one, state, timestamp);
        a.rule = hot.clone();
        a.started_at = started_at.to_owned();
        a
    };
    let firing = of_rule(
        "a",
        AlertPhase::Firing,
        "2026-05-29T10:00:00.000Z",
        "2026-05-29T09:59:30.000Z",
    );
    let acked = of_rule(
        "b",
        AlertPhase::Acknowledged,
        "2026-05-29T09:00:00.000Z",
        "2026-05-29T08:59:30.000Z",
    );
    let resolved = of_rule(
        "c",
        AlertPhase::Resolved,
        "2026-05-29T12:00:00.000Z",
        "2026-05-29T11:00:00.000Z",
    );
    let pending = of_rule(
        "d",
        AlertPhase::Pending,
        "2026-05-29T13:00:00.000Z",
        "2026-05-29T13:00:00.000Z",
    );
    registry
        .record_alerts(&[firing, acked, resolved, pending])
        .await
        .expect("alerts of the rule");
    assert_eq!(
        registry.rule_activity(&hot).await.expect("activity"),
        RuleActivity {
            firing: 2,
            last_fired: Some("2026-05-29T11:00:00.000Z".to_owned()),
        },
        "firing and acknowledged count; a resolved alert fired when it started, a pending one has not fired"
    );

    let key = (format!("{run}-dev-1"), "rule:too-hot".to_owned());
    registry
        .save_rule_state(&[(
            key.0.clone(),
            key.1.clone(),
            Some("{\"firing\":1}".to_owned()),
        )])
        .await
        .expect("save state");
    let states = registry.load_rule_state().await.expect("load state");
    assert!(states.contains(&(key.0.clone(), key.1.clone(), "{\"firing\":1}".to_owned())));
    registry
        .save_rule_state(&[(key.0.clone(), key.1.clone(), None)])
        .await
        .expect("delete state");
    let states = registry.load_rule_state().await.expect("load state");
    assert!(
        !states.iter().any(|(d, s, _)| (d, s) == (&key.0, &key.1)),
        "None deletes the row"
    );
}
