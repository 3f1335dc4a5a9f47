//! The connection handler on raw bytes over an in-memory pipe: what it answers, when it
//! acknowledges, and that whatever a client sends ends in a clean close, never a panic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, Packet, PubRel, Publish, Subscribe, SubscribeReasonCode,
    Unsubscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::connection::{self, Closed, Sessions, Shared};
use super::protocol::Violation;
use super::{IngestMessage, IngestSettings, QoS};

const WAIT: Duration = Duration::from_secs(5);

fn shared(settings: IngestSettings) -> Arc<Shared> {
    Arc::new(Shared {
        settings,
        sessions: Sessions::default(),
    })
}

fn settings() -> IngestSettings {
    IngestSettings {
        max_packet_bytes: 1024,
        ..IngestSettings::default()
    }
}

/// One connection: the client's end of the pipe, the pipeline's end of the stream.
struct Client {
    io: DuplexStream,
    read: BytesMut,
    messages: mpsc::Receiver<IngestMessage>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Closed>,
}

impl Client {
    fn start(shared: Arc<Shared>, connection: u64) -> Self {
        let (io, server) = tokio::io::duplex(64 * 1024);
        let (tx, messages) = mpsc::channel(shared.settings.queue);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            connection::serve(server, connection, &shared, tx, stop_rx).await
        });
        Self {
            io,
            read: BytesMut::new(),
            messages,
            stop,
            task,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may have closed already; what it does then is what the test checks.
        let _ = self.io.write_all(bytes).await;
    }

    /// The next packet from the server; `None` once it closed.
    async fn packet(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.read, usize::MAX) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("the server sent a malformed packet: {e}"),
            }
            let n = tokio::time::timeout(WAIT, self.io.read_buf(&mut self.read))
                .await
                .expect("the server neither answered nor closed")
                .unwrap_or(0);
            if n == 0 {
                assert!(self.read.is_empty(), "the server closed mid-packet");
                return None;
            }
        }
    }

    /// Asserts that nothing arrives for a while (no acknowledgement owed yet).
    async fn silent(&mut self) {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(300), self.io.read(&mut byte)).await;
        assert!(read.is_err(), "the server sent something: {read:?}");
    }

    async fn message(&mut self) -> IngestMessage {
        tokio::time::timeout(WAIT, self.messages.recv())
            .await
            .expect("a message for the pipeline")
            .expect("the stream is open")
    }

    /// Reads to the end and returns why the server closed; a panic fails here.
    async fn closed(mut self) -> (Vec<Packet>, Closed) {
        let mut packets = Vec::new();
        while let Some(packet) = self.packet().await {
            packets.push(packet);
        }
        let closed = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the connection ended")
            .expect("no panic");
        (packets, closed)
    }
}

fn bytes(packet: Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.write(&mut out, usize::MAX).expect("encodable");
    out.to_vec()
}

fn connect(client_id: &str, clean_session: bool, keep_alive: u16) -> Vec<u8> {
    let mut connect = Connect::new(client_id);
    connect.clean_session = clean_session;
    connect.keep_alive = keep_alive;
    bytes(Packet::Connect(connect))
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut publish = Publish::new(topic, qos, payload.to_vec());
    publish.pkid = pkid;
    bytes(Packet::Publish(publish))
}

async fn connected(settings: IngestSettings) -> Client {
    let mut client = Client::start(shared(settings), 1);
    client.send(&connect("sensor-1", true, 60)).await;
    match client.packet().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, ConnectReturnCode::Success);
            assert!(!ack.session_present, "clean session: no session");
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client
}

#[tokio::test]
async fn a_qos1_publish_is_acknowledged_only_once_the_pipeline_confirms() {
    let mut client = connected(settings()).await;
    client
        .send(&publish("sensors/t/a", QoS::AtLeastOnce, 7, b"{}"))
        .await;
    let message = client.message().await;
    assert_eq!(
        (message.topic.as_str(), &message.payload[..], message.qos),
        ("sensors/t/a", &b"{}"[..], QoS::AtLeastOnce)
    );
    client.silent().await;
    message.ack.ack();
    match client.packet().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.pkid, 7),
        other => panic!("expected PUBACK 7, got {other:?}"),
    }

    // QoS 0: handed on, nothing owed, nothing answered.
    client
        .send(&publish("sensors/t/a", QoS::AtMostOnce, 0, b"q0"))
        .await;
    let message = client.message().await;
    assert!(!message.ack.is_owed());
    drop(message);
    // QoS 2: PUBREC after the confirmation, PUBCOMP for the PUBREL.
    client
        .send(&publish("sensors/t/a", QoS::ExactlyOnce, 8, b"q2"))
        .await;
    let message = client.message().await;
    client.silent().await;
    message.ack.ack();
    assert!(matches!(client.packet().await, Some(Packet::PubRec(r)) if r.pkid == 8));
    client.send(&bytes(Packet::PubRel(PubRel::new(8)))).await;
    assert!(matches!(client.packet().await, Some(Packet::PubComp(c)) if c.pkid == 8));

    client.send(&bytes(Packet::PingReq)).await;
    assert_eq!(client.packet().await, Some(Packet::PingResp));
    client
        .send(&bytes(Packet::Subscribe(Subscribe::new(
            "sensors/#",
            QoS::AtLeastOnce,
        ))))
        .await;
    match client.packet().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(ack.return_codes, [SubscribeReasonCode::Failure])
        }
        other => panic!("expected a refusing SUBACK, got {other:?}"),
    }
    let mut unsubscribe = Unsubscribe::new("sensors/#");
    unsubscribe.pkid = 3;
    client.send(&bytes(Packet::Unsubscribe(unsubscribe))).await;
    assert!(matches!(client.packet().await, Some(Packet::UnsubAck(u)) if u.pkid == 3));
    client.send(&bytes(Packet::Disconnect)).await;
    let (rest, closed) = client.closed().await;
    assert!(rest.is_empty());
    assert_eq!(closed, Closed::Disconnected);
}

#[tokio::test]
async fn a_full_window_stops_reading_until_an_acknowledgement() {
    let mut client = connected(IngestSettings {
        max_inflight: 2,
        ..settings()
    })
    .await;
    for pkid in 1..=3 {
        client
            .send(&publish("sensors/t/a", QoS::AtLeastOnce, pkid, b"x"))
            .await;
    }
    let first = client.message().await;
    let _second = client.message().await;
    let early = tokio::time::timeout(Duration::from_millis(300), client.messages.recv()).await;
    assert!(early.is_err(), "a third message read past a full window");
    first.ack.ack();
    assert!(matches!(client.packet().await, Some(Packet::PubAck(a)) if a.pkid == 1));
    let third = client.message().await;
    assert_eq!(third.payload, &b"x"[..]);
    third.ack.forget();
}

#[tokio::test]
async fn a_message_dropped_unacknowledged_closes_the_connection_for_a_resend() {
    let mut client = connected(settings()).await;
    client
        .send(&publish("sensors/t/a", QoS::AtLeastOnce, 1, b"x"))
        .await;
    drop(client.message().await);
    let (packets, closed) = client.closed().await;
    assert!(packets.is_empty(), "no PUBACK for it: {packets:?}");
    assert_eq!(closed, Closed::Abandoned);
}

#[tokio::test]
async fn at_shutdown_the_stream_ends_and_held_messages_are_still_acknowledged() {
    let mut client = connected(settings()).await;
    client
        .send(&publish("sensors/t/a", QoS::AtLeastOnce, 5, b"x"))
        .await;
    let message = client.message().await;
    client.stop.send(true).expect("the connection listens");
    let end = tokio::time::timeout(WAIT, client.messages.recv()).await;
    assert!(
        matches!(end, Ok(None)),
        "the stream ends once the endpoint stops"
    );
    message.ack.ack();
    let (packets, closed) = client.closed().await;
    assert!(
        matches!(&packets[..], [Packet::PubAck(a)] if a.pkid == 5),
        "{packets:?}"
    );
    assert_eq!(closed, Closed::Shutdown);
}

#[tokio::test]
async fn a_client_id_reconnecting_takes_its_session_over() {
    let shared = shared(settings());
    let mut old = Client::start(shared.clone(), 1);
    old.send(&connect("device-9", false, 60)).await;
    assert!(matches!(old.packet().await, Some(Packet::ConnAck(a)) if a.session_present));
    let mut new = Client::start(shared, 2);
    new.send(&connect("device-9", false, 60)).await;
    assert!(matches!(new.packet().await, Some(Packet::ConnAck(a)) if a.session_present));
    let (_, closed) = old.closed().await;
    assert_eq!(closed, Closed::TakenOver);
}

/// What the server does with a given first few bytes.
async fn outcome(
    settings: IngestSettings,
    input: &[u8],
    close_after: bool,
) -> (Vec<Packet>, Closed) {
    let mut client = Client::start(shared(settings), 1);
    client.send(input).await;
    if close_after {
        let _ = client.io.shutdown().await;
    }
    client.closed().await
}

#[tokio::test]
async fn malformed_early_oversized_or_truncated_input_ends_in_a_clean_close() {
    // A PUBLISH before CONNECT: closed without a word.
    let (packets, closed) = outcome(
        settings(),
        &publish("sensors/t/a", QoS::AtLeastOnce, 1, b"x"),
        false,
    )
    .await;
    assert!(packets.is_empty());
    assert_eq!(
        closed,
        Closed::Violation(Violation::Unexpected("packet before CONNECT"))
    );
    // Garbage.
    let (packets, closed) = outcome(settings(), &[0xff; 16], false).await;
    assert!(packets.is_empty());
    assert!(matches!(closed, Closed::Violation(Violation::Malformed(_))));
    // Half a CONNECT, then the client goes away.
    let connect = connect("c", true, 60);
    let (packets, closed) = outcome(settings(), &connect[..connect.len() / 2], true).await;
    assert!(packets.is_empty());
    assert_eq!(closed, Closed::Eof { truncated: true });
    // A PUBLISH announcing 1 MiB: refused from its header, the body never awaited.
    let mut input = connect.clone();
    input.extend_from_slice(&[0x32, 0x80, 0x80, 0x40]);
    let (packets, closed) = outcome(settings(), &input, false).await;
    assert!(matches!(&packets[..], [Packet::ConnAck(_)]), "{packets:?}");
    assert_eq!(
        closed,
        Closed::Violation(Violation::TooLarge {
            size: 1 << 20,
            max: 1024
        })
    );
    // A second CONNECT.
    let mut input = connect.clone();
    input.extend_from_slice(&connect);
    let (packets, closed) = outcome(settings(), &input, false).await;
    assert_eq!(packets.len(), 1);
    assert_eq!(
        closed,
        Closed::Violation(Violation::Unexpected("second CONNECT"))
    );
    // A publish to a wildcard topic.
    let mut input = connect.clone();
    input.extend_from_slice(&publish("sensors/+/a", QoS::AtMostOnce, 0, b"x"));
    let (_, closed) = outcome(settings(), &input, false).await;
    assert!(matches!(closed, Closed::Violation(Violation::BadTopic(_))));
    // MQTT 5: CONNACK 0x01 (unacceptable protocol version), then closed.
    let mut v5 = connect.clone();
    v5[8] = 5;
    let (packets, closed) = outcome(settings(), &v5, false).await;
    assert!(
        matches!(&packets[..], [Packet::ConnAck(a)] if a.code == ConnectReturnCode::RefusedProtocolVersion),
        "{packets:?}"
    );
    assert_eq!(closed, Closed::Violation(Violation::UnsupportedProtocol(5)));
    // A persistent session without a client id: CONNACK 0x02.
    let (packets, closed) = outcome(settings(), &self::connect("", false, 60), false).await;
    assert!(
        matches!(&packets[..], [Packet::ConnAck(a)] if a.code == ConnectReturnCode::BadClientId)
    );
    assert_eq!(closed, Closed::IdentifierRejected);
    // Silence: the connect timeout.
    let quick = IngestSettings {
        connect_timeout: Duration::from_millis(100),
        ..settings()
    };
    let (packets, closed) = outcome(quick, &[], false).await;
    assert!(packets.is_empty());
    assert_eq!(closed, Closed::ConnectTimeout);
}

#[tokio::test]
async fn a_silent_client_is_closed_after_one_and_a_half_keep_alives() {
    let mut client = Client::start(shared(settings()), 1);
    client.send(&connect("quiet", true, 1)).await;
    assert!(matches!(client.packet().await, Some(Packet::ConnAck(_))));
    let started = Instant::now();
    let (_, closed) = client.closed().await;
    assert_eq!(closed, Closed::KeepAlive);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A valid session's bytes, to mutate.
fn valid_session() -> Vec<u8> {
    let mut session = connect("fuzz", false, 30);
    session.extend(publish("sensors/t/a", QoS::AtLeastOnce, 1, b"{\"a\":1}"));
    session.extend(publish("sensors/t/b", QoS::AtMostOnce, 0, b"x"));
    session.extend(publish("sensors/t/c", QoS::ExactlyOnce, 2, b"y"));
    session.extend(bytes(Packet::PubRel(PubRel::new(2))));
    session.extend(bytes(Packet::PingReq));
    session.extend(bytes(Packet::Subscribe(Subscribe::new(
        "a/#",
        QoS::AtMostOnce,
    ))));
    session.extend(bytes(Packet::Disconnect));
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_mutated_sessions_end_without_a_panic() {
    let valid = valid_session();
    let mut rng = Rng(0x5eed_f1ee_7000_0001);
    let settings = IngestSettings {
        max_packet_bytes: 256,
        max_inflight: 4,
        connect_timeout: Duration::from_secs(2),
        ..IngestSettings::default()
    };
    for case in 0..3000 {
        let mut input = valid.clone();
        match case % 4 {
            // Flip some bytes.
            0 | 1 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(input.len());
                    input[at] = rng.next() as u8;
                }
            }
            // Cut it short.
            2 => input.truncate(rng.below(input.len())),
            // Random bytes after a valid CONNECT.
            _ => {
                input.truncate(connect("fuzz", false, 30).len());
                input.extend((0..rng.below(300)).map(|_| rng.next() as u8));
            }
        }
        let mut client = Client::start(shared(settings.clone()), case);
        // The pipeline confirms everything it is given, as the bridge would.
        let mut messages = std::mem::replace(&mut client.messages, mpsc::channel(1).1);
        let confirmer = tokio::spawn(async move {
            while let Some(message) = messages.recv().await {
                message.ack.ack();
            }
        });
        client.send(&input).await;
        let _ = client.io.shutdown().await;
        let mut sink = Vec::new();
        let drained = tokio::time::timeout(WAIT, client.io.read_to_end(&mut sink)).await;
        assert!(
            drained.is_ok(),
            "case {case}: the server neither closed nor finished"
        );
        let ended = tokio::time::timeout(WAIT, client.task).await;
        match ended {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("case {case}: {e} on input {input:?}"),
            Err(_) => panic!("case {case}: the connection did not end; input {input:?}"),
        }
        confirmer.abort();
    }
}

/// An endpoint that admits the declared `lab-1` (a temperature sensor) and `gps-1` (a
/// tracker) only, with the credentials of `store`.
fn with_device_auth(store: &super::auth::CredentialStore) -> IngestSettings {
    let declared = [
        ("lab-1".to_owned(), "temperature_sensor".to_owned()),
        ("gps-1".to_owned(), "gps_tracker".to_owned()),
    ];
    let auth = super::auth::DeviceCredentials::open(store.clone(), declared).expect("open");
    IngestSettings {
        auth: Arc::new(auth),
        ..settings()
    }
}

fn connect_as(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut connect = Connect::new(client_id);
    if let Some((username, password)) = login {
        connect.set_login(username, password);
    }
    bytes(Packet::Connect(connect))
}

async fn connack(client: &mut Client) -> ConnectReturnCode {
    match client.packet().await {
        Some(Packet::ConnAck(ack)) => ack.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn with_device_auth_anonymous_and_wrong_passwords_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = super::auth::CredentialStore::new(dir.path());
    let settings = with_device_auth(&store);
    let other = store.password("lab-2").expect("password");
    for (login, code) in [
        (None, ConnectReturnCode::NotAuthorized),
        (
            Some(("lab-1", "guess")),
            ConnectReturnCode::BadUserNamePassword,
        ),
        // Another device's valid password, and an undeclared device with its own.
        (
            Some(("lab-1", other.as_str())),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            Some(("lab-2", other.as_str())),
            ConnectReturnCode::BadUserNamePassword,
        ),
    ] {
        let mut client = Client::start(shared(settings.clone()), 1);
        client.send(&connect_as("c", login)).await;
        assert_eq!(connack(&mut client).await, code, "{login:?}");
        // Nothing it sends after the refusal reaches the pipeline.
        client
            .send(&publish(
                "sensors/temperature_sensor/lab-1",
                QoS::AtLeastOnce,
                1,
                b"{}",
            ))
            .await;
        let (_, closed) = client.closed().await;
        assert_eq!(closed, Closed::NotAuthorized, "{login:?}");
    }
}

#[tokio::test]
async fn with_device_auth_a_device_publishes_to_its_own_topic_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = super::auth::CredentialStore::new(dir.path());
    let password = store.password("lab-1").expect("password");
    let mut client = Client::start(shared(with_device_auth(&store)), 1);
    client
        .send(&connect_as("any-client-id", Some(("lab-1", &password))))
        .await;
    assert_eq!(connack(&mut client).await, ConnectReturnCode::Success);
    client
        .send(&publish(
            "sensors/temperature_sensor/lab-1",
            QoS::AtLeastOnce,
            1,
            b"{}",
        ))
        .await;
    let own = client.message().await;
    assert_eq!(own.topic, "sensors/temperature_sensor/lab-1");
    own.ack.ack();
    assert!(matches!(client.packet().await, Some(Packet::PubAck(a)) if a.pkid == 1));
    // Another device's topic: the connection is closed and the message goes nowhere.
    client
        .send(&publish(
            "sensors/temperature_sensor/lab-9",
            QoS::AtLeastOnce,
            2,
            b"{}",
        ))
        .await;
    let mut messages = std::mem::replace(&mut client.messages, mpsc::channel(1).1);
    let (_, closed) = client.closed().await;
    assert_eq!(closed, Closed::TopicNotAllowed);
    assert!(
        messages.try_recv().is_err(),
        "nothing handed to the pipeline"
    );
}

#[tokio::test]
async fn with_device_auth_one_device_cannot_take_over_anothers_client_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = super::auth::CredentialStore::new(dir.path());
    let password = store.password("lab-1").expect("password");
    let shared = shared(with_device_auth(&store));
    let mut first = Client::start(shared.clone(), 1);
    first
        .send(&connect_as("shared-id", Some(("lab-1", &password))))
        .await;
    assert_eq!(connack(&mut first).await, ConnectReturnCode::Success);
    // An anonymous client (refused) and another device, both under the same client id,
    // leave the first device's session alone.
    let mut intruder = Client::start(shared.clone(), 2);
    intruder.send(&connect_as("shared-id", None)).await;
    assert_eq!(
        connack(&mut intruder).await,
        ConnectReturnCode::NotAuthorized
    );
    let gps = store.password("gps-1").expect("password");
    let mut neighbour = Client::start(shared.clone(), 4);
    neighbour
        .send(&connect_as("shared-id", Some(("gps-1", &gps))))
        .await;
    assert_eq!(connack(&mut neighbour).await, ConnectReturnCode::Success);
    first.silent().await;
    // The device itself reconnecting under that id does take it over.
    let mut again = Client::start(shared, 3);
    again
        .send(&connect_as("shared-id", Some(("lab-1", &password))))
        .await;
    assert_eq!(connack(&mut again).await, ConnectReturnCode::Success);
    let (_, closed) = first.closed().await;
    assert_eq!(closed, Closed::TakenOver);
}
