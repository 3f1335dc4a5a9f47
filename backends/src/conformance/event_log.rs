//! The event log suite: per-key order, redelivery, groups, dead letters, tails.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::{Assignment, Delivery, EventLog, LogConsumer, Record, Topic, partition_of};

/// How long the event log suite waits for records it expects (a Kafka consumer first has
/// to join its group and be assigned partitions).
const LOG_DEADLINE: Duration = Duration::from_secs(60);
/// How long it keeps polling after the expected records, to catch any that should not
/// have come (a redelivery from another partition arrives at about the same time).
const LOG_SETTLE: Duration = Duration::from_millis(1500);

/// Reading `seq` of device `key`: the payload names both, the headers carry them too.
fn log_record(key: &str, seq: u32) -> Record {
    Record {
        key: key.to_owned(),
        payload: format!("{key}#{seq}").into_bytes(),
        headers: vec![
            ("seq".to_owned(), seq.to_string()),
            ("note".to_owned(), "héllo, wörld".to_owned()),
        ],
    }
}

/// `seq` from..to of every key, interleaved as a bridge batch would be.
fn log_batch(keys: &[String], seqs: std::ops::Range<u32>) -> Vec<Record> {
    seqs.flat_map(|seq| keys.iter().map(move |key| log_record(key, seq)))
        .collect()
}

/// Polls until `want` records arrived, then a little longer; panics on too few or too
/// many, and when offsets go backwards within a partition.
async fn poll_exactly(consumer: &mut dyn LogConsumer, want: usize, what: &str) -> Vec<Delivery> {
    let mut got: Vec<Delivery> = Vec::new();
    let deadline = Instant::now() + LOG_DEADLINE;
    while got.len() < want && Instant::now() < deadline {
        got.extend(consumer.poll(want + 10, 200).await.expect("poll"));
    }
    assert_eq!(
        got.len(),
        want,
        "{what}: expected {want} records within {LOG_DEADLINE:?}"
    );
    let settle = Instant::now() + LOG_SETTLE;
    while Instant::now() < settle {
        let extra = consumer.poll(10, 100).await.expect("poll");
        assert!(
            extra.is_empty(),
            "{what}: expected exactly {want} records, then got {:?}",
            extra
                .iter()
                .map(|d| String::from_utf8_lossy(&d.record.payload).into_owned())
                .collect::<Vec<_>>()
        );
    }
    let mut last_offset: HashMap<u32, u64> = HashMap::new();
    for delivery in &got {
        if let Some(previous) = last_offset.insert(delivery.partition, delivery.offset) {
            assert!(
                delivery.offset > previous,
                "{what}: offsets ascend within partition {}",
                delivery.partition
            );
        }
    }
    got
}

/// Checks that `got` holds exactly `seqs` of every key, each key's in order, with
/// payloads and headers as appended.
fn assert_per_key(got: &[Delivery], keys: &[String], seqs: std::ops::Range<u32>, what: &str) {
    for key in keys {
        let of_key: Vec<&Record> = got
            .iter()
            .map(|d| &d.record)
            .filter(|r| &r.key == key)
            .collect();
        let wanted: Vec<Record> = seqs.clone().map(|seq| log_record(key, seq)).collect();
        assert_eq!(
            of_key.len(),
            wanted.len(),
            "{what}: records of {key}, got {:?}",
            of_key
                .iter()
                .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
                .collect::<Vec<_>>()
        );
        for (got, wanted) in of_key.iter().zip(&wanted) {
            assert_eq!(
                *got, wanted,
                "{what}: one device's records arrive in order, payload and headers intact"
            );
        }
    }
}

/// Append, subscribe, poll and commit: per-key order, headers, redelivery of what a
/// group polled but did not commit, none of what it committed, independent groups, and
/// the dead-letter topic. `log` must be empty for this `run` (fresh, or topics of its
/// own); groups and keys carry `run`.
pub async fn event_log_suite(log: &dyn EventLog, run: &str) {
    let keys: Vec<String> = (0..4).map(|k| format!("{run}-dev-{k}")).collect();
    log.append(Topic::Readings, log_batch(&keys, 0..15))
        .await
        .expect("append");
    log.append(Topic::Readings, log_batch(&keys, 15..25))
        .await
        .expect("append a second batch");
    log.append(Topic::Readings, Vec::new())
        .await
        .expect("append nothing");

    let group = format!("{run}-a");
    let mut first = log
        .subscribe(Topic::Readings, &group)
        .await
        .expect("subscribe");
    let got = poll_exactly(first.as_mut(), 100, "the group's first consumer").await;
    assert_per_key(&got, &keys, 0..25, "the group's first consumer");
    first.commit().await.expect("commit");

    // Polled but not committed: the group's next consumer gets exactly these again.
    log.append(Topic::Readings, log_batch(&keys, 25..30))
        .await
        .expect("append");
    let got = poll_exactly(first.as_mut(), 20, "the first consumer, after its commit").await;
    assert_per_key(&got, &keys, 25..30, "the first consumer, after its commit");
    drop(first);
    let mut second = log
        .subscribe(Topic::Readings, &group)
        .await
        .expect("resubscribe");
    let got = poll_exactly(second.as_mut(), 20, "the group's second consumer").await;
    assert_per_key(
        &got,
        &keys,
        25..30,
        "the group's second consumer: what was polled and not committed, nothing committed",
    );
    second.commit().await.expect("commit");
    second
        .commit()
        .await
        .expect("a commit with nothing new is fine");
    drop(second);

    // Committed: a third consumer sees only what came after.
    let marker = log_record(&keys[0], 30);
    log.append(Topic::Readings, vec![marker.clone()])
        .await
        .expect("append");
    let mut third = log
        .subscribe(Topic::Readings, &group)
        .await
        .expect("resubscribe");
    let got = poll_exactly(third.as_mut(), 1, "the group's third consumer").await;
    assert_eq!(got[0].record, marker, "only what came after the commit");
    drop(third);

    // Another group sees everything, on its own.
    let mut other = log
        .subscribe(Topic::Readings, &format!("{run}-b"))
        .await
        .expect("subscribe another group");
    let got = poll_exactly(other.as_mut(), 121, "another group").await;
    assert_per_key(&got, &keys[1..], 0..30, "another group");
    assert_per_key(&got, &keys[..1], 0..31, "another group");
    // Its only member owns every partition, and each key is where the partitioner says.
    let owned = other
        .assignment()
        .await
        .expect("the assignment")
        .expect("assigned, having polled");
    assert_eq!(
        owned,
        Assignment::whole(owned.partitions),
        "the only member"
    );
    for delivery in &got {
        assert_eq!(
            partition_of(&delivery.record.key, owned.partitions),
            delivery.partition,
            "{} is in the partition partition_of computes",
            delivery.record.key
        );
    }

    // Dead letters carry the reason in a header; alerts are a topic of their own.
    let reject = Record {
        key: format!("{run}-bad"),
        payload: b"{\"device_id\": not json".to_vec(),
        headers: vec![
            ("reason".to_owned(), "unparseable".to_owned()),
            (
                "topic".to_owned(),
                "sensors/temperature_sensor/x".to_owned(),
            ),
        ],
    };
    log.append(Topic::DeadLetter, vec![reject.clone()])
        .await
        .expect("append a dead letter");
    let alert = Record {
        key: keys[0].clone(),
        payload: b"{\"alert\":1}".to_vec(),
        headers: Vec::new(),
    };
    log.append(Topic::Alerts, vec![alert.clone()])
        .await
        .expect("append an alert");
    let mut dead = log
        .subscribe(Topic::DeadLetter, &format!("{run}-dlq"))
        .await
        .expect("subscribe to dead letters");
    let got = poll_exactly(dead.as_mut(), 1, "the dead-letter topic").await;
    assert_eq!(
        got[0].record, reject,
        "a dead letter keeps its reason header"
    );
    let mut alerts = log
        .subscribe(Topic::Alerts, &format!("{run}-alerts"))
        .await
        .expect("subscribe to alerts");
    let got = poll_exactly(alerts.as_mut(), 1, "the alerts topic").await;
    assert_eq!(got[0].record, alert);

    // A tail reads only what comes after it (it may take a moment to find the end:
    // markers are appended until the first arrives), and commits nothing.
    let mut tail = log.tail(Topic::Alerts).await.expect("tail");
    let mut seen = Vec::new();
    let deadline = Instant::now() + LOG_DEADLINE;
    let mut n = 0;
    while seen.is_empty() && Instant::now() < deadline {
        let marker = log_record(&keys[1], 100 + n);
        n += 1;
        log.append(Topic::Alerts, vec![marker])
            .await
            .expect("append a marker");
        seen.extend(tail.poll(10, 500).await.expect("poll the tail"));
    }
    assert!(
        !seen.is_empty(),
        "the tail got nothing within {LOG_DEADLINE:?}"
    );
    assert!(
        seen.iter().all(|d| d.record != alert),
        "a tail does not read what was there before it"
    );
    tail.commit().await.expect("a tail's commit is a no-op");
}
