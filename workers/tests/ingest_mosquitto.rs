//! The embedded ingest endpoint against a client this project did not write: Debian's
//! `mosquitto_pub`, at QoS 1. The test plays the pipeline and holds the acknowledgement;
//! the publisher must not hear a PUBACK before the test confirms, and a message the
//! pipeline lets go of unconfirmed must come back from the publisher.

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
    // A persistent session (-c -i): the client resends what was not acknowledged when it
    // reconnects. -d prints every packet it receives.
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-d", "-c"])
        .args(["-i", "ingest-test", "-t", "sensors/temperature_sensor/t-1"])
        .args(["-m", r#"{"device_id":"t-1","temperature_celsius":21.5}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto_pub");

    let first = next(&mut messages).await;
    assert_eq!(first.topic, "sensors/temperature_sensor/t-1");
    assert_eq!(first.qos, QoS::AtLeastOnce);
    // Unconfirmed: mosquitto_pub -m waits for its PUBACK before it exits.
    assert!(
        exited(&mut child, Duration::from_secs(2)).is_none(),
        "mosquitto_pub finished without a PUBACK"
    );
    // The pipeline lets go of it unconfirmed: the connection closes and the publisher,
    // reconnecting, sends the same message again.
    drop(first);
    let again = next(&mut messages).await;
    assert_eq!(
        &again.payload[..],
        br#"{"device_id":"t-1","temperature_celsius":21.5}"#
    );
    assert!(
        exited(&mut child, Duration::from_secs(1)).is_none(),
        "mosquitto_pub finished before the resent message was confirmed"
    );
    again.ack.ack();
    let status = exited(&mut child, Duration::from_secs(10));
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut output);
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "mosquitto_pub exits once acknowledged: {output}"
    );
    assert_eq!(
        output.matches("received PUBACK").count(),
        1,
        "one PUBACK, for the confirmed message: {output}"
    );
    assert!(
        output.contains("sending PUBLISH (d1"),
        "the second send was marked as a duplicate: {output}"
    );
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
