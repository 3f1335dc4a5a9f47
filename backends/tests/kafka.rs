//! The Kafka event log against a real broker: the shared event log suite, plus what only
//! this backend has (topic creation and growth, dead letters on the wire, an unreachable
//! broker), and an ignored throughput measurement.
//!
//! Reads `SENSORFLEET_TEST_KAFKA_URL` (`scripts/testenv up kafka`, then
//! `eval "$(scripts/testenv env)"`). Unset: skipped with a message, or a failure when
//! `CI` is set. Every test uses topics and groups of its own (a unique prefix) and
//! deletes its topics at the end, so runs can share one broker.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use sensorfleet_backends::event_log::kafka::{KafkaAdmin, KafkaLog, KafkaOptions};
use sensorfleet_backends::{BackendError, EventLog, Record, Topic, conformance};

const URL_VAR: &str = "SENSORFLEET_TEST_KAFKA_URL";

/// The broker's URL, or `None` (after saying so) when the test should be skipped.
fn broker_url() -> Option<String> {
    conformance::service_url(URL_VAR, "kafka")
}

/// A prefix no earlier run used, legal in topic and group names.
fn unique_run(tag: &str) -> String {
    conformance::unique_name("t_", tag)
}

/// `url` with parameters added (the test URL may already carry some).
fn with_params(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

/// A log on topics of its own: `{run}-sensor-readings`, … with `partitions` each.
async fn connect(url: &str, run: &str, partitions: u32) -> KafkaLog {
    let url = with_params(url, &format!("topic_prefix={run}-&partitions={partitions}"));
    KafkaLog::connect(&url, KafkaOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connecting to the test Kafka: {e}"))
}

async fn delete_topics(log: &KafkaLog) {
    let topics = log.topics();
    let names = [
        topics.readings.as_str(),
        topics.alerts.as_str(),
        topics.dead_letter.as_str(),
    ];
    if let Err(e) = log.admin().delete_topics(&names).await {
        eprintln!("could not delete the test topics {names:?}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_passes_the_event_log_suite() {
    let Some(url) = broker_url() else { return };
    let run = unique_run("suite");
    let log = connect(&url, &run, 3).await;
    assert_eq!(log.name(), "kafka");
    conformance::event_log_suite(&log, &run).await;
    delete_topics(&log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_creates_the_topics_with_the_partitions_asked_for() {
    let Some(url) = broker_url() else { return };
    let run = unique_run("create");
    let log = connect(&url, &run, 4).await;
    for topic in [Topic::Readings, Topic::Alerts, Topic::DeadLetter] {
        let name = log.topics().name(topic);
        assert!(name.starts_with(&run) && name.ends_with(topic.default_name()));
        assert_eq!(
            log.admin().partitions(name).await.expect("metadata"),
            Some(4),
            "{name}"
        );
    }
    // Connecting again leaves the existing topics as they are.
    let again = connect(&url, &run, 2).await;
    assert_eq!(
        again
            .admin()
            .partitions(&again.topics().readings)
            .await
            .expect("metadata"),
        Some(4)
    );
    delete_topics(&log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_partitions_creates_grows_and_never_shrinks() {
    let Some(url) = broker_url() else { return };
    let admin = KafkaAdmin::connect(&url, &KafkaOptions::default()).expect("admin client");
    let topic = format!("{}-grow", unique_run("grow"));
    assert_eq!(admin.partitions(&topic).await.expect("metadata"), None);

    let created = admin.ensure_partitions(&topic, 2).await.expect("create");
    assert!(created.created(), "{created}");
    assert_eq!(created.partitions, 2);

    let grown = admin.ensure_partitions(&topic, 5).await.expect("grow");
    assert!(grown.grown(), "{grown}");
    assert_eq!((grown.previous, grown.partitions), (Some(2), 5));
    assert_eq!(
        grown.to_string(),
        format!("grew {topic} from 2 to 5 partitions")
    );
    assert_eq!(admin.partitions(&topic).await.expect("metadata"), Some(5));

    let kept = admin.ensure_partitions(&topic, 3).await.expect("no shrink");
    assert!(kept.kept_more() && !kept.grown(), "{kept}");
    assert_eq!((kept.requested, kept.partitions), (3, 5));
    assert_eq!(
        kept.to_string(),
        format!("kept 5 partitions of {topic}, 3 requested (partitions only grow)")
    );
    assert_eq!(admin.partitions(&topic).await.expect("metadata"), Some(5));

    let same = admin.ensure_partitions(&topic, 5).await.expect("as asked");
    assert!(
        !same.created() && !same.grown() && !same.kept_more(),
        "{same}"
    );

    let zero = admin.ensure_partitions(&topic, 0).await;
    assert!(
        matches!(zero, Err(BackendError::Rejected { .. })),
        "{zero:?}"
    );
    admin.delete_topics(&[&topic]).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_comes_back_with_its_reason() {
    let Some(url) = broker_url() else { return };
    let run = unique_run("dlq");
    let log = connect(&url, &run, 1).await;
    let reject = Record {
        key: "sensor-7".to_owned(),
        payload: b"\xff not even utf-8".to_vec(),
        headers: vec![
            ("reason".to_owned(), "payload_too_large".to_owned()),
            (
                "topic".to_owned(),
                "sensors/temperature_sensor/sensor-7".to_owned(),
            ),
        ],
    };
    log.append(Topic::DeadLetter, vec![reject.clone()])
        .await
        .expect("append");
    let mut consumer = log
        .subscribe(Topic::DeadLetter, &format!("{run}-g"))
        .await
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        got = consumer.poll(10, 500).await.expect("poll");
    }
    assert_eq!(got.len(), 1, "the dead letter");
    let reason = got[0]
        .record
        .headers
        .iter()
        .find(|(key, _)| key == "reason")
        .map(|(_, value)| value.as_str());
    assert_eq!(reason, Some("payload_too_large"));
    assert_eq!(got[0].record, reject, "payload bytes kept as they came");
    consumer.commit().await.expect("commit");
    delete_topics(&log).await;
}

/// Polls `consumer` (up to 60 s) until `done` says it has enough.
async fn poll_until(
    consumer: &mut dyn sensorfleet_backends::LogConsumer,
    got: &mut Vec<sensorfleet_backends::Delivery>,
    done: impl Fn(&[sensorfleet_backends::Delivery]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(got) && Instant::now() < deadline {
        got.extend(consumer.poll(100, 200).await.expect("poll"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_never_commits_a_partition_it_lost() {
    let Some(url) = broker_url() else { return };
    let run = unique_run("rebalance");
    let log = connect(&url, &run, 2).await;
    let group = format!("{run}-g");
    // Twenty devices: both partitions get some (all in one would be a 1 in 2^19 chance).
    let records: Vec<Record> = (0..20)
        .map(|i| Record {
            key: format!("dev-{i}"),
            payload: format!("{i}").into_bytes(),
            headers: Vec::new(),
        })
        .collect();
    log.append(Topic::Readings, records).await.expect("append");

    let mut first = log
        .subscribe(Topic::Readings, &group)
        .await
        .expect("subscribe");
    let mut polled = Vec::new();
    poll_until(first.as_mut(), &mut polled, |got| got.len() >= 20).await;
    assert_eq!(polled.len(), 20, "the only consumer gets everything");

    // A second consumer joins: the first loses a partition (and, eagerly, gets the other
    // back). Both poll so the rebalance is served on each.
    let mut second = log
        .subscribe(Topic::Readings, &group)
        .await
        .expect("subscribe");
    let mut taken_over = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while taken_over.is_empty() && Instant::now() < deadline {
        first.poll(100, 100).await.expect("poll");
        taken_over.extend(second.poll(100, 100).await.expect("poll"));
    }
    assert!(
        !taken_over.is_empty(),
        "the second consumer got a partition"
    );
    let lost = taken_over[0].partition;
    assert!(taken_over.iter().all(|d| d.partition == lost));

    // The first consumer commits what it polled: never the partition it lost.
    first.commit().await.expect("commit");
    drop(first);
    drop(second);

    // Nobody committed the lost partition, so a new consumer gets all of it again.
    let mut third = log
        .subscribe(Topic::Readings, &group)
        .await
        .expect("subscribe");
    let want: Vec<u64> = polled
        .iter()
        .filter(|d| d.partition == lost)
        .map(|d| d.offset)
        .collect();
    let mut again = Vec::new();
    poll_until(third.as_mut(), &mut again, |got| {
        got.iter().filter(|d| d.partition == lost).count() >= want.len()
    })
    .await;
    let redelivered: Vec<u64> = again
        .iter()
        .filter(|d| d.partition == lost)
        .map(|d| d.offset)
        .collect();
    assert_eq!(
        redelivered, want,
        "partition {lost}: what the first consumer polled before losing it is delivered again"
    );
    delete_topics(&log).await;
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_unavailable_within_the_timeout() {
    // Needs no broker: it is about the lack of one.
    let url = format!(
        "kafka://127.0.0.1:{}?create_topics=false&delivery_timeout_ms=2000&request_timeout_ms=2000",
        closed_port()
    );
    let log = KafkaLog::connect(&url, KafkaOptions::default())
        .await
        .expect("connecting is lazy");
    let started = Instant::now();
    let record = Record {
        key: "d".to_owned(),
        payload: b"{}".to_vec(),
        headers: Vec::new(),
    };
    let appended = tokio::time::timeout(
        Duration::from_secs(30),
        log.append(Topic::Readings, vec![record.clone(), record]),
    )
    .await
    .expect("append must not hang");
    let elapsed = started.elapsed();
    match appended {
        Err(error @ BackendError::Unavailable { .. }) => {
            println!("append failed after {elapsed:?}: {error}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "delivery_timeout_ms=2000 bounds the wait, took {elapsed:?}"
    );

    // A poll waits its wait_ms, then says what is wrong or returns nothing; it never hangs.
    let mut consumer = log
        .subscribe(Topic::Readings, "g")
        .await
        .expect("subscribe");
    let started = Instant::now();
    let polled = tokio::time::timeout(Duration::from_secs(30), consumer.poll(10, 500))
        .await
        .expect("poll must not hang");
    match polled {
        Ok(batch) => assert!(batch.is_empty()),
        Err(error) => assert!(error.is_transient(), "{error}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // With librdkafka reporting the brokers down, a later poll surfaces it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let polled = consumer.poll(10, 200).await;
    assert!(
        matches!(polled, Err(BackendError::Unavailable { .. })),
        "{polled:?}"
    );
}

/// Append and poll+commit throughput on the test broker. Prints; asserts only that
/// everything arrived. Run it with
/// `cargo test --release -p sensorfleet-backends --test kafka -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run with --ignored --nocapture"]
async fn measure_throughput() {
    let Some(url) = broker_url() else { return };
    let run = unique_run("bench");
    let log = connect(&url, &run, 3).await;
    const BATCHES: usize = 200;
    const BATCH: usize = 1000;
    let payload = |i: usize| {
        // About 300 bytes, like a normalised reading.
        let mut text = format!(
            "{{\"device_id\":\"dev-{:05}\",\"device_type\":\"temperature_sensor\",\
             \"location\":\"Server Room\",\"ts_ms\":{},\"fields\":{{\"temperature_celsius\":22.5,\
             \"temperature_fahrenheit\":72.5,\"meta_battery_level\":87,\"meta_signal_strength\":-61}}",
            i % 10_000,
            1_780_000_000_000u64 + i as u64
        );
        while text.len() < 299 {
            text.push(' ');
        }
        text.push('}');
        text.into_bytes()
    };
    let batches: Vec<Vec<Record>> = (0..BATCHES)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    let n = b * BATCH + i;
                    Record {
                        key: format!("dev-{:05}", n % 10_000),
                        payload: payload(n),
                        headers: Vec::new(),
                    }
                })
                .collect()
        })
        .collect();
    let total = BATCHES * BATCH;
    let bytes: usize = batches[0].iter().map(|r| r.payload.len()).sum::<usize>() / BATCH;

    // One appender, a batch at a time (each waits for its acks), then four at once (the
    // bridge runs several flushes concurrently).
    let (sequential, concurrent) = batches.split_at(BATCHES / 2);
    let started = Instant::now();
    for batch in sequential {
        log.append(Topic::Readings, batch.clone())
            .await
            .expect("append");
    }
    let append = started.elapsed();
    let log = std::sync::Arc::new(log);
    let started = Instant::now();
    let appenders: Vec<_> = concurrent
        .chunks(concurrent.len() / 4)
        .map(|chunk| {
            let (log, chunk) = (std::sync::Arc::clone(&log), chunk.to_vec());
            tokio::spawn(async move {
                for batch in chunk {
                    log.append(Topic::Readings, batch).await.expect("append");
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.await.expect("appender");
    }
    let append_concurrent = started.elapsed();

    let mut consumer = log
        .subscribe(Topic::Readings, &format!("{run}-g"))
        .await
        .expect("subscribe");
    // Joining the group is not throughput: wait for the first record before timing.
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received == 0 && Instant::now() < deadline {
        received += consumer.poll(1, 500).await.expect("poll").len();
    }
    let started = Instant::now();
    while received < total && Instant::now() < deadline + Duration::from_secs(120) {
        received += consumer.poll(BATCH, 500).await.expect("poll").len();
        consumer.commit().await.expect("commit");
    }
    let consume = started.elapsed();
    assert_eq!(received, total);
    let half = total / 2;
    println!(
        "kafka append, one appender: {half} records of {bytes} B in batches of {BATCH}: \
         {:.0} records/s ({append:.2?})",
        half as f64 / append.as_secs_f64()
    );
    println!(
        "kafka append, four appenders: {half} records of {bytes} B in batches of {BATCH}: \
         {:.0} records/s ({append_concurrent:.2?})",
        half as f64 / append_concurrent.as_secs_f64()
    );
    println!(
        "kafka poll+commit (batches of up to {BATCH}, commit after each): {:.0} records/s \
         ({consume:.2?})",
        (total - 1) as f64 / consume.as_secs_f64()
    );
    delete_topics(&log).await;
}
