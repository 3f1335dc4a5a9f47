//! The embedded ingest endpoint against a client this project did not write: Debian's
//! `mosquitto_pub`, at QoS 1, and the simulator's rumqttc. The test plays the pipeline and
//! holds the acknowledgement: the publisher must not hear a PUBACK before the test
//! confirms, one the pipeline lets go of unconfirmed is never acknowledged, and a client
//! with a persistent session sends it again.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sensorfleet_workers::ingest::{IngestMessage, IngestServer, IngestSettings, QoS};
use tokio::sync::mpsc;

/// True when `mosquitto_pub` is on PATH; under `CI` its absence fails the test.
fn have_mosquitto_pub() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v mosquitto_pub"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let message = "mosquitto_pub is not installed (Debian package mosquitto-clients)";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("SKIPPED: {message}");
    }
    found
}

async fn next(messages: &mut mpsc::Receiver<IngestMessage>) -> IngestMessage {
    tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
}

/// Waits up to `limit` for the child to exit.
fn exited(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for mosquitto_pub") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mosquitto_pub(port: &str, client_id: &str) -> Child {
    // -d prints every packet it sends and receives.
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", port, "-q", "1", "-d"])
        .args(["-i", client_id, "-t", "sensors/temperature_sensor/t-1"])
        .args(["-m", r#"{"device_id":"t-1","temperature_celsius":21.5}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto_pub")
}

/// Waits for the child to exit (killing it after `limit`) and returns its status (None
/// when killed) and output.
fn finish(mut child: Child, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    let status = exited(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut output);
    }
    (status, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_gets_its_puback_only_after_the_pipeline_confirms() {
    if !have_mosquitto_pub() {
        return;
    }
    let (endpoint, mut messages) = IngestServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        IngestSettings::default(),
    )
    .await
    .expect("bind");
    let port = endpoint.local_addr().port().to_string();

    let mut child = mosquitto_pub(&port, "held");
    let held = next(&mut messages).await;
    assert_eq!(held.topic, "sensors/temperature_sensor/t-1");
    assert_eq!(held.qos, QoS::AtLeastOnce);
    // Unconfirmed: mosquitto_pub -m waits for its PUBACK before it exits.
    assert!(
        exited(&mut child, Duration::from_secs(2)).is_none(),
        "mosquitto_pub finished without a PUBACK"
    );
    held.ack.ack();
    let (status, output) = finish(child, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "mosquitto_pub exits once acknowledged: {output}"
    );
    assert_eq!(output.matches("received PUBACK").count(), 1, "{output}");

    // A message the pipeline lets go of unconfirmed is never acknowledged: the connection
    // closes and the publisher knows its message was not taken.
    let child = mosquitto_pub(&port, "dropped");
    drop(next(&mut messages).await);
    let (status, output) = finish(child, Duration::from_secs(10));
    assert!(
        !output.contains("received PUBACK"),
        "no PUBACK for a dropped message: {output}"
    );
    assert!(
        !status.is_some_and(|s| s.success()),
        "mosquitto_pub reports the failure: {output}"
    );
    endpoint.shutdown().await;
}

/// The simulator's client library (rumqttc) with a persistent session: a message the
/// endpoint closed on unacknowledged comes back, marked DUP, on the next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_resends_what_was_not_acknowledged() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};

    let (endpoint, mut messages) = IngestServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        IngestSettings::default(),
    )
    .await
    .expect("bind");
    let mut options = MqttOptions::new("resender", "127.0.0.1", endpoint.local_addr().port());
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let (acked_tx, mut acked) = mpsc::channel(4);
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let _ = acked_tx.send(ack.pkid).await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    client
        .publish(
            "sensors/temperature_sensor/t-3",
            rumqttc::QoS::AtLeastOnce,
            false,
            "r1",
        )
        .await
        .expect("queue the publish");
    let first = next(&mut messages).await;
    assert_eq!(&first.payload[..], b"r1");
    drop(first);
    let again = next(&mut messages).await;
    assert_eq!(&again.payload[..], b"r1", "resent on the next connection");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), acked.recv())
            .await
            .is_err(),
        "no PUBACK before the confirmation"
    );
    again.ack.ack();
    let pkid = tokio::time::timeout(Duration::from_secs(5), acked.recv())
        .await
        .expect("a PUBACK after the confirmation");
    assert!(pkid.is_some());
    driver.abort();
    endpoint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pipeline_slows_the_publisher_and_loses_nothing() {
    if !have_mosquitto_pub() {
        return;
    }
    let settings = IngestSettings {
        max_inflight: 10,
        queue: 10,
        ..IngestSettings::default()
    };
    let (endpoint, mut messages) =
        IngestServer::bind("127.0.0.1:0".parse().expect("addr"), settings)
            .await
            .expect("bind");
    let port = endpoint.local_addr().port().to_string();
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-l"])
        .args(["-t", "sensors/temperature_sensor/t-2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto_pub -l");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for i in 0..500 {
            writeln!(stdin, "reading {i}").expect("write to mosquitto_pub");
        }
    });
    // Confirm in small batches, slowly, the way a slow sink would; never more than the
    // window can be outstanding.
    let mut seen = Vec::new();
    while seen.len() < 500 {
        let mut batch = Vec::new();
        batch.push(next(&mut messages).await);
        while let Ok(message) = messages.try_recv() {
            batch.push(message);
        }
        assert!(batch.len() <= 10, "more than the window outstanding");
        tokio::time::sleep(Duration::from_millis(5)).await;
        for message in batch {
            seen.push(String::from_utf8_lossy(&message.payload).into_owned());
            message.ack.ack();
        }
    }
    writer.join().expect("writer");
    let status = exited(&mut child, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "mosquitto_pub done");
    let expected: Vec<String> = (0..500).map(|i| format!("reading {i}")).collect();
    assert_eq!(seen, expected, "every line, in order, once");
    endpoint.shutdown().await;
}
