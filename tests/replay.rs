//! `sensorfleet replay` against the real stack (issue 14): the readings still in Kafka
//! are reprocessed into fresh processor state after a rule is fixed, an alert the new
//! rule finds in old readings fires and resolves, and no alert moves back — a resolved
//! one does not fire again, an acknowledged one is not re-notified. Replay is refused
//! while a processor of the group runs, and stores no reading twice.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use support::fleet::{acknowledge, base_ts_ms, fleet, hot_rule, influx_count, reading};
use support::stack::Stack;
use support::{Publish, eventually};

const RULE: &str = "replay-hot";

fn replay(stack: &Stack, from: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sensorfleet"))
        .args(["replay", "--from", from])
        .envs(stack.env())
        .output()
        .expect("run sensorfleet replay")
}

/// The run's alerts in the registry: id → state.
fn registry_alerts(stack: &Stack) -> BTreeMap<String, String> {
    stack
        .registry_rows("SELECT id, state FROM alerts WHERE body->>'rule' = 'replay-hot'")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, state)| (id.to_owned(), state.to_owned()))
        .collect()
}

/// Every `(id, state)` the alerts topic carried for the rule, in order.
fn published(stack: &Stack) -> Vec<(String, String)> {
    stack
        .kafka_records("sensor-alerts")
        .into_iter()
        .filter_map(|(_, _, value)| {
            let alert: serde_json::Value = serde_json::from_str(&value).ok()?;
            (alert["rule"] == RULE).then(|| {
                (
                    alert["id"].as_str().unwrap_or_default().to_owned(),
                    alert["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect()
}

fn id_of(alerts: &BTreeMap<String, String>, device: &str) -> Option<String> {
    alerts
        .keys()
        .find(|id| id.starts_with(&format!("{device}/")))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reprocesses_the_log_with_a_fixed_rule_and_moves_no_alert_back() {
    let Some(stack) = Stack::start("replay") else {
        return;
    };
    let run = &stack.run;
    // d1 runs hot and cools down (resolved), d2 stays under 30 but over 27, d3 stays hot
    // and is acknowledged.
    let [d1, d2, d3] = ["d1", "d2", "d3"].map(|d| format!("{run}-{d}"));
    let ids = [d1.clone(), d2.clone(), d3.clone()];
    let fleet_file = stack.manifest("fleet.yaml", &fleet("replay", &ids));
    let loose = stack.manifest("rule.yaml", &hot_rule(RULE, "replay", 30.0));
    stack.apply(&[&fleet_file, &loose]);
    let mut processor = stack.role("processor", &[]);
    let bridge = stack.role("bridge", &["--connections", "1"]);
    let api = stack.role("api", &[]);
    processor.ready(60).await;
    bridge.ready(60).await;
    api.ready(60).await;

    // Whole seconds before anything is appended: --from takes the log's record times.
    let from = chrono::Utc::now()
        .checked_sub_signed(chrono::TimeDelta::seconds(1))
        .expect("a time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let base = base_ts_ms();
    let series: [(&str, &[f64]); 3] = [
        (&d1, &[25.0, 35.0, 35.0, 25.0]),
        (&d2, &[25.0, 28.0, 28.0, 25.0]),
        (&d3, &[25.0, 35.0, 36.0]),
    ];
    let mut sent = 0u64;
    for (device, values) in series {
        for (i, value) in values.iter().enumerate() {
            let topic = format!("sensors/temperature_sensor/{device}");
            stack
                .broker
                .publish(&topic, &reading(device, base + i as i64 * 1000, *value));
            sent += 1;
        }
    }
    let before = eventually(60, "d1's alert resolved and d3's firing", || {
        let alerts = registry_alerts(&stack);
        let (d1, d3) = (id_of(&alerts, &d1), id_of(&alerts, &d3));
        async move {
            let (d1, d3) = (d1?, d3?);
            (alerts[&d1] == "resolved" && alerts[&d3] == "firing").then_some(alerts)
        }
    })
    .await;
    assert_eq!(
        before.len(),
        2,
        "under max 30 only d1 and d3 alert: {before:?}"
    );
    let (resolved, acked) = (
        id_of(&before, &d1).expect("d1"),
        id_of(&before, &d3).expect("d3"),
    );
    acknowledge(&api, &acked).await;
    eventually(30, "d3's acknowledgement in the registry", || {
        let alerts = registry_alerts(&stack);
        let acked = acked.clone();
        async move { (alerts[&acked] == "acknowledged").then_some(()) }
    })
    .await;
    let ours = format!("^{run}-");
    eventually(30, "every reading stored once", || {
        let (stack, ours) = (&stack, &ours);
        async move { (influx_count(stack, ours).await == sent).then_some(()) }
    })
    .await;

    // While a processor of the group runs, replay refuses and says what to do.
    let refused = replay(&stack, &from);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "replay with a running processor: {stderr}"
    );
    assert!(
        stderr.contains("running member") && stderr.contains(&format!("{run}-processor")),
        "the refusal names the group and its members: {stderr}"
    );

    // The fix: the rule was meant to be max 27. Stop the processors, replay, start them.
    processor.stop();
    let strict = stack.manifest("rule.yaml", &hot_rule(RULE, "replay", 27.0));
    stack.apply(&[&fleet_file, &strict]);
    // Kafka keeps no order across partitions: counted, not sliced.
    let firings = |records: &[(String, String)], id: &str| {
        records
            .iter()
            .filter(|(i, state)| i == id && state == "firing")
            .count()
    };
    let earlier = eventually(30, "the acknowledgement on the alerts topic", || {
        let records = published(&stack);
        let acked = (acked.clone(), "acknowledged".to_owned());
        async move { records.contains(&acked).then_some(records) }
    })
    .await;
    let done = replay(&stack, &from);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "replay: {stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        stdout.contains(&format!("{sent} readings in")),
        "every reading appended since --from is read again: {stdout}"
    );
    assert!(
        stdout.contains("cleared 1 saved rule state rows"),
        "d3's state: {stdout}"
    );
    processor.restart();
    processor.ready(60).await;

    // Under max 27, d2's old readings alert: fired and resolved, as the readings say.
    let after = eventually(
        60,
        "d2's alert from the replayed readings, resolved",
        || {
            let alerts = registry_alerts(&stack);
            let d2 = id_of(&alerts, &d2);
            async move { (alerts[&d2?] == "resolved").then_some(alerts) }
        },
    )
    .await;
    let new = id_of(&after, &d2).expect("d2");
    assert_eq!(after[&resolved], "resolved", "{after:?}");
    assert_eq!(after[&acked], "acknowledged", "{after:?}");
    assert_eq!(after.len(), 3, "the same ids again, one new: {after:?}");

    let records =
        eventually(
            30,
            "the new alert's firing and resolution published",
            || {
                let records = published(&stack);
                let (fired, resolved) = (
                    (new.clone(), "firing".to_owned()),
                    (new.clone(), "resolved".to_owned()),
                );
                async move {
                    (records.contains(&fired) && records.contains(&resolved)).then_some(records)
                }
            },
        )
        .await;
    for id in [&resolved, &acked] {
        assert_eq!(
            firings(&records, id),
            firings(&earlier, id),
            "replay published {id} as firing again: {records:?}"
        );
    }
    assert_eq!(
        influx_count(&stack, &ours).await,
        sent,
        "the replay stored no reading again"
    );
    assert!(
        processor.log_text().contains("not written again"),
        "the processor said it kept the later phases"
    );
}
