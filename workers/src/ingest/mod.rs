//! The embedded MQTT ingest endpoint: an MQTT 3.1.1 server, owned by the bridge, that
//! acknowledges a message only once the pipeline says it is safe.
//!
//! [`IngestServer::bind`] listens and yields a bounded stream of [`IngestMessage`]s; each
//! QoS 1 (or 2) message carries an [`Ack`] that writes its PUBACK (PUBREC) on its
//! connection when called — after the bridge has written the batch to the event log and
//! the stores, never before. A broker that acknowledges on receipt must keep what it
//! acknowledged until a subscriber has taken it, and an in-memory one cannot promise
//! that; this endpoint makes no promise of its own: it passes the pipeline's on.
//!
//! Back-pressure: a connection stops reading while its window of unacknowledged messages
//! ([`IngestSettings::max_inflight`]) is full, or while the pipeline's queue
//! ([`IngestSettings::queue`]) is; the publisher's in-flight window then stops it.
//!
//! What it speaks (MQTT 3.1.1, framing by rumqttc's own v4 codec):
//! - CONNECT/CONNACK (anonymous by default; with [`auth::DeviceCredentials`] only declared
//!   devices with their password, each publishing to its own topic), PINGREQ/PINGRESP,
//!   DISCONNECT, keep-alive (closed after 1.5 × the client's keep-alive of silence).
//! - PUBLISH QoS 0 (best effort by definition: handed on, counted, never acknowledged),
//!   QoS 1 (PUBACK after delivery), QoS 2 (PUBREC after delivery, PUBCOMP on PUBREL: a
//!   QoS 2 message resent before its PUBREC can reach the pipeline twice, which the
//!   idempotent stores absorb). Retain flags and wills are ignored: there is no one to
//!   retain for.
//! - SUBSCRIBE is refused (SUBACK 0x80 per filter): this is an ingest endpoint, and a
//!   subscriber could only be served messages the pipeline has not yet made safe.
//! - Other levels (MQTT 3.1, 5.0) get CONNACK 0x01 and are closed. So is anything
//!   malformed, out of order or larger than [`IngestSettings::max_packet_bytes`] (refused
//!   from its header, before its body is read); a client id in use takes the session over.
//! - Persistent sessions: nothing to keep (no subscriptions, nothing queued towards a
//!   client), so CONNACK says `session present` to a clean-session=false client and it
//!   resends, with DUP, whatever it had not had acknowledged.
//!
//! Metrics: `sensorfleet_ingest_connections`, `sensorfleet_ingest_messages_total{qos}`,
//! `sensorfleet_ingest_closed_total{reason}`, `sensorfleet_ingest_subscribes_refused_total`.

mod ack;
pub mod auth;
mod connection;
mod protocol;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use ack::Ack;
pub use rumqttc::mqttbytes::QoS;

use crate::telemetry;
use crate::transport::{Message, Transport};
use connection::{Sessions, Shared};

/// Limits of the endpoint.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Open connections at most; one more is closed at once (and counted).
    pub max_connections: usize,
    /// Largest packet accepted (its remaining length); a larger one closes the
    /// connection. Keep it above the bridge's payload limit, so an oversized payload
    /// reaches the bridge and is dead-lettered with its reason.
    pub max_packet_bytes: usize,
    /// Unacknowledged QoS 1/2 messages per connection before it stops reading.
    pub max_inflight: usize,
    /// Messages waiting for the pipeline, across connections.
    pub queue: usize,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// How long a client may take to accept our replies.
    pub write_timeout: Duration,
    /// At shutdown, how long connections wait for the pipeline to confirm what it holds.
    pub shutdown_grace: Duration,
    /// Who may connect and publish where ([`auth::Anonymous`] unless `--device-auth`).
    pub auth: Arc<dyn auth::DeviceAuth>,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_packet_bytes: 256 * 1024,
            max_inflight: 1000,
            queue: 8192,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            auth: Arc::new(auth::Anonymous),
        }
    }
}

/// One received PUBLISH.
#[derive(Debug)]
pub struct IngestMessage {
    /// Its topic (a valid topic name: no wildcard, not empty).
    pub topic: String,
    /// Its payload, as sent.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Its acknowledgement: call [`Ack::ack`] once the message is durable.
    pub ack: Ack,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The listen address is taken or not ours.
    #[error(
        "cannot listen for MQTT on {addr}: {source}; is another broker running? pass --mqtt-addr with a free port, or --mqtt-url to use an external broker"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The embedded MQTT ingest endpoint.
pub struct IngestServer;

impl IngestServer {
    /// Listens on `addr` and serves until the handle is shut down or dropped, or the
    /// receiver is dropped. The receiver ends once every connection has stopped.
    pub async fn bind(
        addr: SocketAddr,
        settings: IngestSettings,
    ) -> Result<(IngestHandle, mpsc::Receiver<IngestMessage>), IngestError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| IngestError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| IngestError::Bind { addr, source })?;
        let settings = IngestSettings {
            max_connections: settings.max_connections.clamp(1, 1 << 20),
            max_inflight: settings.max_inflight.max(1),
            queue: settings.queue.max(1),
            ..settings
        };
        let (tx, rx) = mpsc::channel(settings.queue);
        let (stop, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(settings.max_connections));
        let max_connections = settings.max_connections;
        let shared = Arc::new(Shared {
            settings,
            sessions: Sessions::default(),
        });
        let accept = tokio::spawn(accept(listener, shared, tx, stop_rx, permits.clone()));
        info!(addr = %local_addr, "embedded MQTT ingest endpoint listening");
        let handle = IngestHandle {
            local_addr,
            stop,
            permits,
            max_connections,
            accept,
        };
        Ok((handle, rx))
    }
}

/// Controls a running endpoint. Dropping it stops the endpoint as [`IngestHandle::stop`]
/// does.
pub struct IngestHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    max_connections: usize,
    accept: JoinHandle<()>,
}

impl IngestHandle {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.max_connections - self.permits.available_permits()
    }

    /// Stops accepting and reading; each connection still writes the acknowledgements
    /// the pipeline gives within [`IngestSettings::shutdown_grace`], then closes. The
    /// message stream ends once all have.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// [`IngestHandle::stop`], then waits until every connection is closed.
    pub async fn shutdown(self) {
        self.stop();
        let _ = self.accept.await;
        let _ = self.permits.acquire_many(self.max_connections as u32).await;
    }
}

/// The bridge's [`Transport`] over the endpoint's stream: an acknowledgement writes the
/// publisher's PUBACK (PUBREC). The stream ends once the endpoint has stopped.
pub struct IngestTransport {
    messages: mpsc::Receiver<IngestMessage>,
    taken: Vec<IngestMessage>,
}

impl IngestTransport {
    /// The transport over `messages`, [`IngestServer::bind`]'s stream. Nothing to connect
    /// to: the endpoint is ours and its stream is the subscription, so it counts as
    /// connected at once.
    pub fn new(messages: mpsc::Receiver<IngestMessage>) -> Self {
        telemetry::BRIDGE_CONNECTED.set(1);
        info!("bridge reading the embedded ingest endpoint");
        Self {
            messages,
            taken: Vec::new(),
        }
    }
}

impl Transport for IngestTransport {
    type Ack = Ack;

    async fn recv_many(&mut self, into: &mut Vec<Message<Ack>>, max: usize) -> usize {
        let received = self.messages.recv_many(&mut self.taken, max).await;
        into.extend(self.taken.drain(..).map(|m| Message {
            topic: m.topic,
            payload: m.payload,
            ack: m.ack,
        }));
        received
    }

    fn acknowledge(&mut self, acks: impl IntoIterator<Item = Ack>) {
        for ack in acks {
            ack.ack();
        }
    }

    async fn close(self) {}
}

async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    tx: mpsc::Sender<IngestMessage>,
    mut stop: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
) {
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
            _ = tx.closed() => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(error = %e, "accepting an MQTT connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            telemetry::INGEST_CLOSED
                .with_label_values(&["connection_limit"])
                .inc();
            debug!(%peer, "connection limit reached; connection closed");
            continue;
        };
        let _ = socket.set_nodelay(true);
        next_id += 1;
        let (shared, tx, stop) = (shared.clone(), tx.clone(), stop.clone());
        tokio::spawn(async move {
            telemetry::INGEST_CONNECTIONS.inc();
            let closed = connection::serve(socket, next_id, &shared, tx, stop).await;
            telemetry::INGEST_CONNECTIONS.dec();
            telemetry::INGEST_CLOSED
                .with_label_values(&[closed.label()])
                .inc();
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests;
