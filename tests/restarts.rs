//! The restart matrix: one fault in the middle of a steady stream of 3,000 readings/s,
//! and afterwards every reading is in the time series exactly once, every device's latest
//! value is its last reading, and every alert exists once, in its right state.
//!
//! The faults: kill -9 of the API (a new API process serves the same), and a restart of
//! each backend — Mosquitto, Redis, InfluxDB, PostgreSQL, Kafka. A backend under test is
//! a private instance (`support::services`) on a free port with its own data dir; only
//! that URL of the run's [`Stack`] points at it, the other backends stay the shared
//! servers of `scripts/testenv`, which are never stopped. Each fault prints
//! `fault=… published=… stored=… duplicated=… seconds=…` (run with `--nocapture`;
//! BENCHMARKS.md, "Fault suite").
//!
//! Needs `scripts/testenv up` and `eval "$(scripts/testenv env)"` (make test does both).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use support::eventually;
use support::fleet::{acknowledge, base_ts_ms, fleet, reading, too_hot_rule};
use support::services::{Kind, Service};
use support::stack::{RoleProcess, Stack};

/// Devices, readings each, 10 ms apart in device time and sent at that pace: 3,000
/// readings/s for 8 s.
const DEVICES: usize = 30;
const PER_DEVICE: usize = 800;
const STEP: Duration = Duration::from_millis(10);
const RULE: &str = "restart-hot";

/// What happens mid-stream.
#[derive(Clone, Copy)]
enum Fault {
    /// kill -9 of the `sensorfleet api` process, then a new one.
    Api,
    /// The private instance of this backend goes down and comes back on its data dir.
    Backend(Kind),
}

impl Fault {
    fn name(self) -> String {
        match self {
            Fault::Api => "api-kill9".to_owned(),
            Fault::Backend(kind) => format!("{}-{}", kind.name(), stop_of(kind)),
        }
    }
}

/// How each backend goes down: SIGKILL where its durability is meant to survive a
/// crash; Mosquitto saves its sessions only on a clean stop (SIGTERM); PostgreSQL's
/// immediate shutdown (SIGQUIT) is a crash to its data (no checkpoint, WAL replay at
/// start) without orphaning its backends as a SIGKILL of the postmaster would. Redis
/// runs without persistence, as in `scripts/testenv`: the kill empties the cache.
fn stop_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Mosquitto => "term",
        Kind::Postgres => "quit",
        Kind::Redis | Kind::Influx | Kind::Kafka => "kill9",
    }
}

/// The temperature device `d` sends as its reading `i`. Device 0 runs hot for readings
/// 50..150 only (its alert fires and resolves before the fault), device 1 from 50 on (its
/// alert is acknowledged before the fault and must stay so), device 2 for the last 200
/// (its alert fires after the fault). Every other value is normal.
fn celsius(d: usize, i: usize) -> f64 {
    let hot = match d {
        0 => (50..150).contains(&i),
        1 => i >= 50,
        2 => i >= PER_DEVICE - 200,
        _ => false,
    };
    if hot {
        40.0
    } else {
        20.0 + (i % 7) as f64 * 0.1
    }
}

fn ts_ms(base: i64, i: usize) -> i64 {
    base + (i as u64 * STEP.as_millis() as u64) as i64
}

/// What a device's connection has seen: PUBACKs, and CONNACKs without a session.
#[derive(Clone, Copy, Default)]
struct Seen {
    acked: u64,
    fresh_sessions: u64,
}

/// One device as a careful QoS 1 client: its own connection with a persistent session
/// (clean session off), one reading every `STEP`, each sent again until the broker
/// acknowledges it. rumqttc resends an unacknowledged publish itself when the broker
/// resumes the session; when the broker comes back without it (CONNACK session present
/// 0, as Mosquitto answers a client that had no subscription), MQTT has the client drop
/// its in-flight state, so the device publishes the reading again. Returns (readings,
/// readings acknowledged); gives up on a reading after 120 s.
async fn device_connection(
    port: u16,
    client_id: String,
    d: usize,
    device: String,
    base: i64,
) -> (u64, u64) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(5))
        .set_inflight(1);
    let (client, mut eventloop) = AsyncClient::new(options, 1);
    let (seen_tx, mut seen) = tokio::sync::watch::channel(Seen::default());
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => seen_tx.send_modify(|s| s.acked += 1),
                Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                    seen_tx.send_modify(|s| s.fresh_sessions += 1)
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    // Connected first, so the first session is not taken for a lost one.
    let _ = seen.wait_for(|s| s.fresh_sessions > 0).await;
    let topic = format!("sensors/temperature_sensor/{device}");
    let mut ticker = tokio::time::interval(STEP);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acknowledged = 0u64;
    for i in 0..PER_DEVICE {
        ticker.tick().await;
        let payload = reading(&device, ts_ms(base, i), celsius(d, i));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let before = *seen.borrow_and_update();
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("the MQTT client's queue");
            let outcome = tokio::time::timeout_at(
                deadline,
                seen.wait_for(|s| {
                    s.acked > before.acked || s.fresh_sessions > before.fresh_sessions
                }),
            )
            .await;
            match outcome {
                Ok(Ok(now)) if now.acked > before.acked => {
                    acknowledged += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                _ => break,
            }
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    (PER_DEVICE as u64, acknowledged)
}

/// Stored points per device of this run, from one InfluxQL query.
async fn counts_by_device(stack: &Stack) -> BTreeMap<String, u64> {
    let json = stack
        .influx_query(&format!(
            "SELECT count(temperature_celsius) FROM temperature_sensor \
             WHERE device_id =~ /^{}-d/ GROUP BY device_id",
            stack.run
        ))
        .await;
    let Some(series) = json["results"][0]["series"].as_array() else {
        return BTreeMap::new();
    };
    series
        .iter()
        .filter_map(|s| {
            let device = s["tags"]["device_id"].as_str()?.to_owned();
            Some((device, s["values"][0][1].as_u64()?))
        })
        .collect()
}

/// The API's alerts of `RULE` for this run's devices, by device; `None` while the API
/// does not answer.
async fn rule_alerts(api: &RoleProcess, run: &str) -> Option<BTreeMap<String, Vec<String>>> {
    let json = api
        .client()
        .get("/api/alerts?limit=1000")
        .await
        .ok()?
        .json();
    let mut by_device: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for alert in json["alerts"].as_array()? {
        let device = alert["device_id"].as_str().unwrap_or_default();
        if alert["rule"] == RULE && device.starts_with(run) {
            let state = alert["state"].as_str().unwrap_or_default().to_owned();
            by_device.entry(device.to_owned()).or_default().push(state);
        }
    }
    Some(by_device)
}

/// Applies the fault to whichever process it names; returns when that process serves
/// again.
async fn inject(fault: Fault, api: &mut RoleProcess, service: Option<&mut Service>) {
    match (fault, service) {
        (Fault::Api, _) => {
            api.kill9();
            tokio::time::sleep(Duration::from_secs(1)).await;
            api.restart();
            api.ready(60).await;
        }
        (Fault::Backend(kind), Some(service)) => {
            tokio::task::block_in_place(|| {
                match stop_of(kind) {
                    "kill9" => service.kill9(),
                    "term" => service.signal("TERM"),
                    _ => service.signal("QUIT"),
                }
                std::thread::sleep(Duration::from_secs(2));
                service.restart();
            });
        }
        (Fault::Backend(kind), None) => unreachable!("no private {}", kind.name()),
    }
}

async fn survive(fault: Fault) {
    let tag = match fault {
        Fault::Api => "rsapi".to_owned(),
        Fault::Backend(kind) => format!("rs{}", &kind.name()[..3]),
    };
    let Some(mut stack) = Stack::start(&tag) else {
        return;
    };
    let mut service = match fault {
        Fault::Api => None,
        Fault::Backend(kind) => {
            let Some(service) = tokio::task::block_in_place(|| Service::start(kind)) else {
                return;
            };
            stack.use_service(&service);
            Some(service)
        }
    };
    let base = base_ts_ms();
    let devices: Vec<String> = (0..DEVICES)
        .map(|d| format!("{}-d{d:02}", stack.run))
        .collect();
    let manifest = stack.manifest(
        "fleet.yaml",
        &format!(
            "{}---\n{}",
            fleet("restarts", &devices),
            too_hot_rule(RULE, "restarts")
        ),
    );
    stack.apply(&[&manifest]);
    let mut processor = stack.role("processor", &[]);
    let mut bridge = stack.role("bridge", &["--connections", "2"]);
    let mut api = stack.role("api", &[]);
    processor.ready(60).await;
    bridge.ready(60).await;
    api.ready(60).await;

    let publishers: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(d, device)| {
            let client_id = format!("{device}-device");
            tokio::spawn(device_connection(
                stack.mqtt_port,
                client_id,
                d,
                device.clone(),
                base,
            ))
        })
        .collect();
    let stream_started = Instant::now();

    // Before the fault: device 1's alert fires and is acknowledged through the API.
    let (api_ref, run) = (&api, stack.run.as_str());
    let acked_device = devices[1].clone();
    let alert_id = eventually(60, "device 1's alert firing", || {
        let acked_device = acked_device.clone();
        async move {
            let json = api_ref
                .client()
                .get("/api/alerts?limit=1000")
                .await
                .ok()?
                .json();
            json["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["device_id"] == acked_device.as_str() && a["rule"] == RULE)
                .and_then(|a| a["id"].as_str().map(str::to_owned))
        }
    })
    .await;
    acknowledge(&api, &alert_id).await;

    let fault_at = Instant::now();
    eprintln!(
        "{}: the fault at {:?} into a stream of {:?}",
        fault.name(),
        fault_at - stream_started,
        STEP * PER_DEVICE as u32
    );
    inject(fault, &mut api, service.as_mut()).await;

    let (mut published, mut acknowledged) = (0, 0);
    for publisher in publishers {
        let (sent, acked) = publisher.await.expect("a publisher");
        published += sent;
        acknowledged += acked;
    }
    assert_eq!(published, (DEVICES * PER_DEVICE) as u64);
    eprintln!(
        "{}: {published} readings published in {:?}",
        fault.name(),
        stream_started.elapsed()
    );

    // Until every reading is in, or the count has not moved for 30 s (then the test
    // reports what is missing rather than only that it timed out).
    let (mut stored, mut moved) = (0, Instant::now());
    while stored < published && moved.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n: u64 = counts_by_device(&stack).await.values().sum();
        if n != stored {
            (stored, moved) = (n, Instant::now());
        }
    }
    let seconds = fault_at.elapsed().as_secs_f64();
    // Late extras would come within the bridge's batching; count once more after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = counts_by_device(&stack).await;
    let stored = stored.max(counts.values().sum());
    let duplicated: u64 = counts
        .values()
        .map(|n| n.saturating_sub(PER_DEVICE as u64))
        .sum();
    println!(
        "fault={} published={published} stored={stored} duplicated={duplicated} seconds={seconds:.1}",
        fault.name()
    );
    assert_eq!(
        acknowledged, published,
        "the broker acknowledged every reading"
    );
    for device in &devices {
        assert_eq!(
            counts.get(device).copied(),
            Some(PER_DEVICE as u64),
            "{device}: one point per reading"
        );
    }

    // Every device's latest value is its last reading.
    let api_ref = &api;
    let last_ts = ts_ms(base, PER_DEVICE - 1);
    for (d, device) in devices.iter().enumerate() {
        let path = format!("/api/device/{device}/latest");
        let latest = eventually(60, "the last reading served as latest", || {
            let path = path.clone();
            async move {
                let json = api_ref.client().get(&path).await.ok()?.json();
                let ts = chrono::DateTime::parse_from_rfc3339(json["timestamp"].as_str()?).ok()?;
                (ts.timestamp_millis() == last_ts).then_some(json)
            }
        })
        .await;
        assert_eq!(
            latest["temperature_celsius"].as_f64(),
            Some(celsius(d, PER_DEVICE - 1)),
            "{device}: {latest}"
        );
    }

    // Every alert once, in its state: device 0's resolved, device 1's still acknowledged,
    // device 2's (fired after the fault) firing, no other device's. Polled until they are
    // so: the devices' partitions catch up after the fault in any order, and device 0's
    // resolving readings may come after the fault (it can hit 1 s into the stream).
    let expected: BTreeMap<String, Vec<String>> = [
        (&devices[0], "resolved"),
        (&devices[1], "acknowledged"),
        (&devices[2], "firing"),
    ]
    .into_iter()
    .map(|(d, s)| (d.clone(), vec![s.to_owned()]))
    .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let alerts = loop {
        let alerts = rule_alerts(api_ref, run).await.unwrap_or_default();
        if alerts == expected || Instant::now() > deadline {
            break alerts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alerts, expected, "each alert once, in its state");

    // The roles rode it out: the same processes (the API only where it was the fault).
    assert!(processor.running(), "{}", processor.log_text());
    assert!(bridge.running(), "{}", bridge.log_text());
    assert!(api.running(), "{}", api.log_text());
    assert_eq!(
        processor.log_text().matches("processor starting").count(),
        1
    );
    assert_eq!(bridge.log_text().matches("bridge starting").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_api_mid_stream() {
    survive(Fault::Api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_restart_mid_stream() {
    survive(Fault::Backend(Kind::Mosquitto)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_stream() {
    survive(Fault::Backend(Kind::Redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_restart_mid_stream() {
    survive(Fault::Backend(Kind::Influx)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream() {
    survive(Fault::Backend(Kind::Postgres)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_restart_mid_stream() {
    survive(Fault::Backend(Kind::Kafka)).await;
}
