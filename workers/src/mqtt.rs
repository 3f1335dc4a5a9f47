//! MQTT: endpoints as URLs (`mqtt://[user:password@]host[:port]`, `mqtts://` for TLS)
//! and the bridge's [`Transport`] over an external broker.
//!
//! [`MqttTransport`] subscribes at QoS 1 with manual acknowledgements and a persistent
//! session: a message is acknowledged to the broker only when the bridge says its batch
//! is durable, so a bridge crash makes the broker redeliver instead of losing. The
//! broker's in-flight window is the bound on what the bridge holds, and the
//! back-pressure when a sink is slow.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration};
use sensorfleet_backends::backoff::Backoff;
use sensorfleet_backends::tls::client_config;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::telemetry;
use crate::transport::{Message, Transport};

/// The largest MQTT packet the bridge reads, at least. Above the broker's own limits
/// (Mosquitto: `max_packet_size 98304`, `message_size_limit 65536` in the test
/// environment and `deploy/kind`): a packet the broker forwards is always readable, so
/// an oversized one never drops the connection and comes back with the session.
pub const MIN_INCOMING_PACKET: usize = 128 * 1024;

/// Where an MQTT broker is.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    /// Host name or address.
    pub host: String,
    /// Port (default 1883).
    pub port: u16,
    /// User name, when the broker wants one.
    pub username: Option<String>,
    /// Password, when the broker wants one.
    pub password: Option<String>,
    /// TLS (`mqtts://`), verified against the system's CA bundle or `SSL_CERT_FILE`.
    pub tls: bool,
}

impl fmt::Debug for MqttEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Shown with the password masked, so it can go in logs.
impl fmt::Display for MqttEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => {
                write!(f, "{scheme}://{user}:****@{}:{}", self.host, self.port)
            }
            (Some(user), None) => write!(f, "{scheme}://{user}@{}:{}", self.host, self.port),
            _ => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl MqttEndpoint {
    /// Parses `mqtt://[user[:password]@]host[:port]` (`tcp://` too), or `mqtts://` for
    /// TLS (default port 8883), which needs a CA bundle to verify the broker with. Errors
    /// never repeat the password.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            let rest = url
                .strip_prefix("mqtt://")
                .or_else(|| url.strip_prefix("tcp://"))
                .ok_or_else(|| {
                    format!(
                        "{:?} is not an MQTT URL like mqtt://127.0.0.1:1883 or mqtts://broker:8883",
                        sensorfleet_backends::url::mask(url)
                    )
                })?;
            (false, rest)
        };
        let url = sensorfleet_backends::url::mask(url);
        let url = url.as_str();
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, rest),
        };
        let (username, password) = match credentials {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
                None => (Some(c.to_owned()), None),
            },
            None => (None, None),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || address.starts_with('[') => {
                let port = port.parse().map_err(|_| {
                    format!("{url:?}: port {port:?} is not a number from 1 to 65535")
                })?;
                (
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port,
                )
            }
            _ => (address.to_owned(), if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        if tls {
            client_config(true).map_err(|e| format!("{url}: {e}"))?;
        }
        Ok(Self {
            host,
            port,
            username,
            password,
            tls,
        })
    }

    /// The client options of a connection to this broker as `client_id`: its address,
    /// credentials and, for `mqtts://`, TLS. Never a plaintext connection for `mqtts://`.
    pub fn options(&self, client_id: impl Into<String>) -> Result<MqttOptions, String> {
        let mut options = MqttOptions::new(client_id, &self.host, self.port);
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            options.set_credentials(user, password);
        }
        if self.tls {
            let config = client_config(true).map_err(|e| format!("{self}: {e}"))?;
            options.set_transport(rumqttc::Transport::tls_with_config(
                TlsConfiguration::Rustls(Arc::new(config)),
            ));
        }
        Ok(options)
    }
}

/// How the bridge subscribes.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The broker.
    pub endpoint: MqttEndpoint,
    /// Client id (connections add `-0`, `-1`, …); fixed so the broker keeps the session
    /// (and unacknowledged messages) across a restart.
    pub client_id: String,
    /// Topic filter, `sensors/+/+`.
    pub filter: String,
    /// Shared-subscription group: every bridge replica that names the same group shares
    /// the stream (`$share/<group>/<filter>`), each message going to one of them. `None`
    /// shares only between this bridge's own connections (group = `client_id`).
    pub share_group: Option<String>,
    /// MQTT connections, all in one shared subscription when more than one. A broker
    /// keeps at most a fixed number of unacknowledged QoS 1 messages per connection
    /// (Mosquitto's `max_inflight_messages`), and the bridge acknowledges only after a
    /// batch is durable, so connections are what lets a batch grow past that window.
    pub connections: usize,
    /// Largest packet read (at least [`MIN_INCOMING_PACKET`]).
    pub max_packet_bytes: usize,
    /// Messages and acknowledgements queued per connection.
    pub queue: usize,
}

/// Acknowledges one message on the connection it came from.
#[derive(Debug)]
pub struct MqttAck {
    connection: usize,
    qos: QoS,
    pkid: u16,
}

/// The bridge's [`Transport`] over an external broker.
pub struct MqttTransport {
    rx: mpsc::Receiver<(usize, Publish)>,
    taken: Vec<(usize, Publish)>,
    clients: Vec<AsyncClient>,
    drivers: Vec<JoinHandle<()>>,
    acks: PendingAcks,
}

impl MqttTransport {
    /// Connects (in the background, retrying with backoff) and subscribes; an error only
    /// when TLS cannot be set up (no CA bundle).
    pub fn connect(sub: &Subscription) -> Result<Self, String> {
        let connections = sub.connections.clamp(1, 64);
        let filter = match (&sub.share_group, connections) {
            (Some(group), _) => format!("$share/{group}/{}", sub.filter),
            (None, 1) => sub.filter.clone(),
            (None, _) => format!("$share/{}/{}", sub.client_id, sub.filter),
        };
        let queue = sub.queue.max(1);
        let (tx, rx) = mpsc::channel(queue * 2);
        let mut clients = Vec::with_capacity(connections);
        let mut drivers = Vec::with_capacity(connections);
        for index in 0..connections {
            let client_id = if connections > 1 {
                format!("{}-{index}", sub.client_id)
            } else {
                sub.client_id.clone()
            };
            let mut options = sub.endpoint.options(client_id)?;
            options
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_keep_alive(Duration::from_secs(30))
                .set_max_packet_size(sub.max_packet_bytes.max(MIN_INCOMING_PACKET), 64 * 1024)
                .set_request_channel_capacity(queue);
            let (client, eventloop) = AsyncClient::new(options, queue);
            drivers.push(tokio::spawn(drive(
                eventloop,
                client.clone(),
                filter.clone(),
                index,
                tx.clone(),
            )));
            clients.push(client);
        }
        info!(broker = %sub.endpoint, filter = %filter, connections, "bridge subscribing");
        Ok(Self {
            rx,
            taken: Vec::new(),
            clients,
            drivers,
            acks: PendingAcks::new(connections),
        })
    }
}

impl Transport for MqttTransport {
    type Ack = MqttAck;

    async fn recv_many(&mut self, into: &mut Vec<Message<MqttAck>>, max: usize) -> usize {
        let received = loop {
            self.acks.send(&self.clients);
            tokio::select! {
                received = self.rx.recv_many(&mut self.taken, max) => break received,
                // Acknowledgements an event loop had no room for yet: offered again shortly.
                _ = tokio::time::sleep(ACK_RETRY), if !self.acks.is_empty() => {}
            }
        };
        into.extend(self.taken.drain(..).map(|(connection, p)| Message {
            topic: p.topic,
            payload: p.payload,
            ack: MqttAck {
                connection,
                qos: p.qos,
                pkid: p.pkid,
            },
        }));
        received
    }

    fn acknowledge(&mut self, acks: impl IntoIterator<Item = MqttAck>) {
        self.acks.extend(acks);
        self.acks.send(&self.clients);
    }

    async fn close(mut self) {
        // Hand over what is still pending (bounded: the broker redelivers the rest).
        for _ in 0..20 {
            if self.acks.send(&self.clients) {
                break;
            }
            tokio::time::sleep(ACK_RETRY).await;
        }
        // Let the event loops send the last acknowledgements, then leave the sessions open
        // on the broker (a clean disconnect would drop what it queued for us).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for MqttTransport {
    fn drop(&mut self) {
        for driver in &self.drivers {
            driver.abort();
        }
    }
}

/// How soon acknowledgements that found an event loop's request queue full are offered
/// again.
const ACK_RETRY: Duration = Duration::from_millis(5);

/// Acknowledgements owed to the broker, per connection, not yet handed to their event
/// loop. Handing them over never waits: an event loop may itself be waiting for the
/// bridge to take the messages it received, and a waiting `ack().await` would close that
/// circle (a deadlock seen under full load, when the broker's in-flight window is larger
/// than the request queue). Only the packet id is kept, not the payload.
struct PendingAcks(Vec<VecDeque<Publish>>);

impl PendingAcks {
    fn new(connections: usize) -> Self {
        Self(vec![VecDeque::new(); connections])
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|queue| queue.is_empty())
    }

    /// Owes an acknowledgement for every QoS 1/2 message of a durable batch.
    fn extend(&mut self, acks: impl IntoIterator<Item = MqttAck>) {
        for MqttAck {
            connection,
            qos,
            pkid,
        } in acks
        {
            if qos != QoS::AtMostOnce {
                let mut ack = Publish::new("", qos, Vec::new());
                ack.pkid = pkid;
                self.0[connection].push_back(ack);
            }
        }
    }

    /// Hands over as many as the event loops take now; true when none is left.
    fn send(&mut self, clients: &[AsyncClient]) -> bool {
        for (queue, client) in self.0.iter_mut().zip(clients) {
            while let Some(ack) = queue.front() {
                // Full: this connection's event loop catches up first. (Closed, at
                // shutdown, looks the same; the broker then redelivers.)
                if client.try_ack(ack).is_err() {
                    break;
                }
                queue.pop_front();
            }
        }
        self.is_empty()
    }
}

/// Owns the MQTT event loop: forwards publishes, subscribes on every connection, and
/// reconnects with a short backoff.
///
/// Subscribing again on a resumed session is what MQTT allows (the subscription is
/// replaced, queued messages stay) and what Mosquitto 2.0 needs: after a restart with
/// persistence it resumes the session (session present) and redelivers what it had
/// queued, but routes nothing new to a restored *shared* subscription until the client
/// subscribes again. Until then it acknowledges devices' readings that reach no bridge,
/// so the bridge retries every 50 ms (a connection attempt to a broker is cheap) to keep
/// that window short; the log says so on the first failure and every 20th.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filter: String,
    index: usize,
    tx: mpsc::Sender<(usize, Publish)>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(50));
    let mut connected_once = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if tx.send((index, publish)).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                if index == 0 {
                    info!(
                        session_present = ack.session_present,
                        "connected to MQTT broker"
                    );
                } else {
                    debug!(
                        connection = index,
                        session_present = ack.session_present,
                        "connected to MQTT broker"
                    );
                }
                connected_once = true;
                if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    warn!(error = %e, "subscribing failed");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => telemetry::BRIDGE_CONNECTED.set(1),
            Ok(_) => {}
            Err(e) => {
                telemetry::BRIDGE_CONNECTED.set(0);
                let delay = backoff.next_delay();
                let retry_in_ms = delay.as_millis() as u64;
                if backoff.failures() % 20 != 1 {
                    debug!(error = %e, connection = index, "MQTT broker still unreachable");
                } else if connected_once {
                    warn!(error = %e, retry_in_ms, "MQTT connection lost; reconnecting");
                } else {
                    warn!(error = %e, retry_in_ms, "cannot reach the MQTT broker; retrying");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let e = MqttEndpoint::parse("mqtt://bridge:s3cret@broker.local:8883").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("broker.local", 8883));
        assert_eq!(e.password.as_deref(), Some("s3cret"));
        assert_eq!(e.to_string(), "mqtt://bridge:****@broker.local:8883");
        assert!(!format!("{e:?}").contains("s3cret"));
        let d = MqttEndpoint::parse("mqtt://127.0.0.1").unwrap();
        assert_eq!(d.port, 1883);
        let v6 = MqttEndpoint::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1884));
        let tls = MqttEndpoint::parse("mqtts://bridge:s3cret@broker.local").unwrap();
        assert!(tls.tls);
        assert_eq!(tls.port, 8883, "the TLS port by default");
        assert_eq!(tls.to_string(), "mqtts://bridge:****@broker.local:8883");
        let bad = MqttEndpoint::parse("mqtts://bridge:s3cret@broker.local:port").unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
        let bad = MqttEndpoint::parse("ftp://bridge:s3cret@broker.local").unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
        assert!(MqttEndpoint::parse("http://x").is_err());
        assert!(MqttEndpoint::parse("mqtt://x:port").is_err());
        assert!(MqttEndpoint::parse("mqtt://").is_err());
    }
}
