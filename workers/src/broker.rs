//! The embedded MQTT broker (rumqttd) that `sensorfleet up` starts when no external
//! broker is given.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
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
    /// The broker thread could not be started.
    #[error("cannot start the embedded MQTT broker: {0}")]
    Start(String),
}

/// Starts the broker on `addr` in its own threads; it lives as long as the process.
///
/// `max_payload_bytes` is what the broker accepts; the bridge applies its own, smaller
/// limit and dead-letters what is larger, so the broker's must be larger still.
pub fn start(addr: SocketAddr, max_payload_bytes: usize) -> Result<(), BrokerError> {
    // rumqttd logs a bind failure from its own thread and carries on; check first so the
    // user gets an error that says what to do.
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| BrokerError::Bind { addr, source })?;
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: max_payload_bytes,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "embedded".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            // The router keeps recent messages in segments: 4 × 32 MiB bounds its memory.
            max_segment_size: 32 * 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("embedded".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    info!(%addr, "embedded MQTT broker listening");
    Ok(())
}
