//! One client connection: CONNECT, then PUBLISHes handed to the pipeline, and the
//! acknowledgements written back as the pipeline confirms them.
//!
//! The loop always does the cheap, memory-freeing work first — writing the PUBACKs that
//! arrived — and only then reads more. It stops reading while the connection's window of
//! unacknowledged messages is full, or while the pipeline has no room for the message it
//! holds: the socket's buffers fill and TCP pushes back on the publisher, whose own
//! in-flight window stops it. The keep-alive timer runs only while the endpoint is
//! actually waiting for the client, never while it is the one holding back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};
use tracing::debug;

use super::ack::{Ack, AckQueue};
use super::auth::Refusal;
use super::protocol::{Inbound, Reply, Violation, decode, encode};
use super::{IngestMessage, IngestSettings};
use crate::telemetry;

/// How much a read asks the socket for at least.
const READ_CHUNK: usize = 16 * 1024;

/// Why a connection ended; each is a label of `sensorfleet_ingest_closed_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The client sent DISCONNECT.
    Disconnected,
    /// The client closed the socket (`truncated`: in the middle of a packet).
    Eof { truncated: bool },
    /// No packet within 1.5 × the keep-alive the client asked for.
    KeepAlive,
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// The client did not take our replies within the write timeout.
    WriteTimeout,
    /// A socket error.
    Io,
    /// The client broke the protocol.
    Violation(Violation),
    /// CONNACK 0x02: an empty client id with a persistent session.
    IdentifierRejected,
    /// CONNACK 0x05 or 0x04: no credentials, or wrong ones (`up --device-auth`).
    NotAuthorized,
    /// A PUBLISH to a topic the connection's device may not publish to.
    TopicNotAllowed,
    /// Another connection with the same client id took the session over (MQTT-3.1.4-2).
    TakenOver,
    /// The pipeline dropped one of this connection's messages unacknowledged.
    Abandoned,
    /// The pipeline is gone.
    PipelineGone,
    /// The endpoint is shutting down.
    Shutdown,
}

impl Closed {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Disconnected => "disconnect",
            Self::Eof { truncated: false } => "eof",
            Self::Eof { truncated: true } => "truncated",
            Self::KeepAlive => "keep_alive",
            Self::ConnectTimeout => "connect_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::Io => "io_error",
            Self::Violation(v) => v.label(),
            Self::IdentifierRejected => "identifier_rejected",
            Self::NotAuthorized => "not_authorized",
            Self::TopicNotAllowed => "topic_not_allowed",
            Self::TakenOver => "taken_over",
            Self::Abandoned => "abandoned",
            Self::PipelineGone => "pipeline_gone",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Client ids of the open connections, so a reconnecting client takes its session over
/// from a half-open predecessor. Bounded by the connection limit.
#[derive(Debug, Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, (u64, Arc<Notify>)>>);

impl Sessions {
    fn register(&self, client_id: &str, connection: u64) -> Arc<Notify> {
        let taken_over = Arc::new(Notify::new());
        let previous = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client_id.to_owned(), (connection, taken_over.clone()));
        if let Some((_, previous)) = previous {
            previous.notify_one();
        }
        taken_over
    }

    fn unregister(&self, client_id: &str, connection: u64) {
        let mut sessions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions
            .get(client_id)
            .is_some_and(|(c, _)| *c == connection)
        {
            sessions.remove(client_id);
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: IngestSettings,
    pub(crate) sessions: Sessions,
}

/// Serves one connection until it ends, and says why. Never panics on input.
pub(crate) async fn serve<S>(
    mut stream: S,
    connection: u64,
    shared: &Shared,
    tx: mpsc::Sender<IngestMessage>,
    mut stop: watch::Receiver<bool>,
) -> Closed
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let settings = &shared.settings;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::with_capacity(256);

    let connect = tokio::time::timeout(
        settings.connect_timeout,
        read_connect(&mut stream, &mut buf, settings.max_packet_bytes),
    )
    .await;
    let (client_id, clean_session, keep_alive_secs, login) = match connect {
        Err(_) => return Closed::ConnectTimeout,
        Ok(Ok(connect)) => connect,
        Ok(Err(Closed::Violation(Violation::UnsupportedProtocol(level)))) => {
            // MQTT-3.1.2-2: say so with CONNACK 0x01, then close.
            encode(
                Reply::ConnAck(ConnectReturnCode::RefusedProtocolVersion, false),
                &mut out,
            );
            let _ = write(&mut stream, &mut out, settings.write_timeout).await;
            return Closed::Violation(Violation::UnsupportedProtocol(level));
        }
        Ok(Err(closed)) => return closed,
    };
    if client_id.is_empty() && !clean_session {
        // MQTT-3.1.3-8: a persistent session needs a name.
        encode(
            Reply::ConnAck(ConnectReturnCode::BadClientId, false),
            &mut out,
        );
        let _ = write(&mut stream, &mut out, settings.write_timeout).await;
        return Closed::IdentifierRejected;
    }
    let (username, password) = match &login {
        Some((username, password)) => (Some(username.as_str()), Some(password.as_bytes())),
        None => (None, None),
    };
    let identity = match settings.auth.authenticate(username, password) {
        Ok(identity) => identity,
        Err(refusal) => {
            let code = match refusal {
                Refusal::Anonymous => ConnectReturnCode::NotAuthorized,
                Refusal::BadCredentials => ConnectReturnCode::BadUserNamePassword,
            };
            encode(Reply::ConnAck(code, false), &mut out);
            let _ = write(&mut stream, &mut out, settings.write_timeout).await;
            // Who tried, never with what.
            debug!(
                username = username.unwrap_or_default(),
                ?refusal,
                "ingest connection refused"
            );
            return Closed::NotAuthorized;
        }
    };
    let client_id = if client_id.is_empty() {
        format!("sensorfleet-ingest-{connection}")
    } else {
        client_id
    };
    // A session belongs to its device: with authentication on, one device's client id
    // can never take over another device's connection.
    let session = format!("{identity}\u{0}{client_id}");
    let taken_over = shared.sessions.register(&session, connection);
    let closed = serve_connected(
        &mut stream,
        Connected {
            settings,
            buf,
            out,
            tx: Some(tx),
            taken_over: &taken_over,
            identity: &identity,
            // The endpoint keeps no state for a session beyond what is empty by design
            // (it has no subscriptions and never sends a client a PUBLISH), so a
            // persistent session always "exists": saying so keeps a reconnecting client
            // resending what we did not acknowledge, which is all its session holds.
            session_present: !clean_session,
            idle_limit: (keep_alive_secs > 0)
                .then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500)),
        },
        &mut stop,
    )
    .await;
    shared.sessions.unregister(&session, connection);
    debug!(
        client_id,
        reason = closed.label(),
        "ingest connection closed"
    );
    closed
}

/// Reads until a CONNECT (anything else first is a violation).
async fn read_connect<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<(String, bool, u16, Option<(String, String)>), Closed>
where
    S: AsyncRead + Unpin,
{
    loop {
        match decode(buf, max_packet, false) {
            Ok(Some(Inbound::Connect {
                client_id,
                clean_session,
                keep_alive_secs,
                login,
            })) => return Ok((client_id, clean_session, keep_alive_secs, login)),
            Ok(Some(_)) => {
                return Err(Closed::Violation(Violation::Unexpected(
                    "packet before CONNECT",
                )));
            }
            Ok(None) => {
                buf.reserve(READ_CHUNK);
                match stream.read_buf(buf).await {
                    Ok(0) => {
                        return Err(Closed::Eof {
                            truncated: !buf.is_empty(),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => return Err(Closed::Io),
                }
            }
            Err(violation) => return Err(Closed::Violation(violation)),
        }
    }
}

struct Connected<'a> {
    settings: &'a IngestSettings,
    buf: BytesMut,
    out: BytesMut,
    /// Dropped when the endpoint stops, so the pipeline sees the end of the stream.
    tx: Option<mpsc::Sender<IngestMessage>>,
    taken_over: &'a Notify,
    /// Who the connection publishes as (empty without authentication).
    identity: &'a str,
    session_present: bool,
    idle_limit: Option<Duration>,
}

async fn serve_connected<S>(
    stream: &mut S,
    mut c: Connected<'_>,
    stop: &mut watch::Receiver<bool>,
) -> Closed
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let acks = Arc::new(AckQueue::default());
    let mut replies: Vec<Reply> = Vec::new();
    let mut pending: Option<IngestMessage> = None;
    let mut inflight = 0usize;
    let mut counts = [0u64; 3];
    let mut stopping_since: Option<tokio::time::Instant> = None;
    encode(
        Reply::ConnAck(ConnectReturnCode::Success, c.session_present),
        &mut c.out,
    );
    let closed = loop {
        // Acknowledgements first: they free the window and cost the pipeline nothing.
        if !acks.take(&mut replies) {
            break Closed::Abandoned;
        }
        for reply in replies.drain(..) {
            encode(reply, &mut c.out);
            inflight = inflight.saturating_sub(1);
        }
        if !c.out.is_empty()
            && let Err(closed) = write(stream, &mut c.out, c.settings.write_timeout).await
        {
            break closed;
        }
        // A dropped stop sender means the endpoint is gone: stop too.
        if stopping_since.is_none() && (*stop.borrow() || stop.has_changed().is_err()) {
            stopping_since = Some(tokio::time::Instant::now());
        }
        if let Some(since) = stopping_since {
            // Stopping: read nothing more, hand over nothing more, and give the pipeline
            // a grace period to confirm what it holds; the publisher resends the rest.
            c.tx = None;
            if let Some(message) = pending.take() {
                if message.ack.is_owed() {
                    inflight = inflight.saturating_sub(1);
                }
                message.ack.forget();
            }
            if inflight == 0 {
                break Closed::Shutdown;
            }
            tokio::select! {
                _ = acks.changed() => continue,
                _ = tokio::time::sleep_until(since + c.settings.shutdown_grace) => break Closed::Shutdown,
            }
        }
        if let Some(message) = pending.take() {
            let Some(tx) = &c.tx else {
                break Closed::Shutdown;
            };
            tokio::select! {
                biased;
                _ = c.taken_over.notified() => break Closed::TakenOver,
                _ = stop.changed() => pending = Some(message),
                _ = acks.changed() => pending = Some(message),
                permit = tx.reserve() => match permit {
                    Ok(permit) => permit.send(message),
                    Err(_) => break Closed::PipelineGone,
                },
            }
            continue;
        }
        if inflight >= c.settings.max_inflight {
            tokio::select! {
                _ = c.taken_over.notified() => break Closed::TakenOver,
                _ = stop.changed() => {}
                _ = acks.changed() => {}
            }
            continue;
        }
        match decode(&mut c.buf, c.settings.max_packet_bytes, true) {
            Ok(Some(Inbound::Publish(publish))) => {
                if !c.settings.auth.may_publish(c.identity, &publish.topic) {
                    debug!(identity = c.identity, topic = %publish.topic, "publish to a topic not the device's own; connection closed");
                    break Closed::TopicNotAllowed;
                }
                counts[publish.qos as usize] += 1;
                let ack = Ack::new(&acks, publish.qos, publish.pkid);
                if ack.is_owed() {
                    inflight += 1;
                }
                pending = Some(IngestMessage {
                    topic: publish.topic,
                    payload: publish.payload,
                    qos: publish.qos,
                    ack,
                });
            }
            Ok(Some(Inbound::PingReq)) => encode(Reply::PingResp, &mut c.out),
            Ok(Some(Inbound::PubRel(pkid))) => encode(Reply::PubComp(pkid), &mut c.out),
            Ok(Some(Inbound::Subscribe { pkid, filters })) => {
                // Ingest only: a subscriber here would be promised messages that the
                // pipeline, not this endpoint, is responsible for. Refused, per filter.
                telemetry::INGEST_SUBSCRIBES_REFUSED.inc();
                encode(Reply::SubAckRefused { pkid, filters }, &mut c.out);
            }
            Ok(Some(Inbound::Unsubscribe(pkid))) => encode(Reply::UnsubAck(pkid), &mut c.out),
            Ok(Some(Inbound::Disconnect)) => break Closed::Disconnected,
            Ok(Some(Inbound::Connect { .. })) => {
                break Closed::Violation(Violation::Unexpected("second CONNECT"));
            }
            Ok(None) => {
                count(&mut counts);
                c.buf.reserve(READ_CHUNK);
                let idle_limit = c.idle_limit;
                let buf = &mut c.buf;
                let read = async {
                    match idle_limit {
                        Some(limit) => tokio::time::timeout(limit, stream.read_buf(buf)).await.ok(),
                        None => Some(stream.read_buf(buf).await),
                    }
                };
                let read = tokio::select! {
                    read = read => Some(read),
                    _ = c.taken_over.notified() => break Closed::TakenOver,
                    _ = stop.changed() => None,
                    _ = acks.changed() => None,
                };
                match read {
                    Some(None) => break Closed::KeepAlive,
                    Some(Some(Ok(0))) => {
                        break Closed::Eof {
                            truncated: !c.buf.is_empty(),
                        };
                    }
                    Some(Some(Err(_))) => break Closed::Io,
                    Some(Some(Ok(_))) | None => {}
                }
            }
            Err(violation) => break Closed::Violation(violation),
        }
    };
    count(&mut counts);
    if let Some(message) = pending.take() {
        message.ack.forget();
    }
    closed
}

/// Adds the per-QoS message counts to the metric (per read, not per message).
fn count(counts: &mut [u64; 3]) {
    for (qos, n) in counts.iter_mut().enumerate() {
        if *n > 0 {
            telemetry::INGEST_MESSAGES
                .with_label_values(&[QOS_LABELS[qos]])
                .inc_by(*n);
            *n = 0;
        }
    }
}

const QOS_LABELS: [&str; 3] = ["0", "1", "2"];

/// Compile-time check that the labels line up with the codec's QoS numbering.
const _: () = assert!(QoS::ExactlyOnce as usize == 2);

async fn write<S>(stream: &mut S, out: &mut BytesMut, limit: Duration) -> Result<(), Closed>
where
    S: AsyncWrite + Unpin,
{
    let written = tokio::time::timeout(limit, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await;
    out.clear();
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Closed::Io),
        Err(_) => Err(Closed::WriteTimeout),
    }
}
