//! A client of Mosquitto's dynamic-security API: JSON commands published to
//! `$CONTROL/dynamic-security/v1`, answered on `…/response` to the sender only.
//!
//! Commands go in messages of at most [`MESSAGE_BYTES`] (under the broker's
//! `max_packet_size`), one message at a time, each answer awaited before the next is
//! sent, so the answers line up with the commands.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use sensorfleet_backends::tls::client_config;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::plan::Existing;
use crate::Error;

const CONTROL: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";
/// Largest command message: below `max_packet_size 98304` of the test environment's
/// and the chart's broker.
const MESSAGE_BYTES: usize = 60 * 1024;
/// An answer takes long on a large configuration: Mosquitto 2.0 rewrites its whole file
/// after every change (BENCHMARKS.md).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients read per `listClients` page.
const PAGE: usize = 1000;

/// Where the broker is and who may administer it. Shown without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// MQTT port.
    pub port: u16,
    /// A user allowed to use the dynamic-security API.
    pub username: String,
    /// Its password.
    pub password: String,
    /// TLS (`mqtts://`), verified against the system's CA bundle or `SSL_CERT_FILE`.
    pub tls: bool,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mqtt://{}:****@{}:{}",
            self.username, self.host, self.port
        )
    }
}

impl Broker {
    /// `host`, `port` and whether TLS, of `mqtt://host[:port]` or `mqtts://…` (a
    /// Pipeline's `spec.mqtt.url`, which carries no credentials).
    pub fn address(url: &str) -> Option<(String, u16, bool)> {
        let (tls, rest) = match url.strip_prefix("mqtts://") {
            Some(rest) => (true, rest),
            None => (false, url.strip_prefix("mqtt://")?),
        };
        let authority = rest.split(['/', '?']).next()?;
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, tail) = v6.split_once(']')?;
                (host, tail.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let default = if tls { 8883 } else { 1883 };
        let port = port.map_or(Some(default), |p| p.parse().ok())?;
        Some((host.to_owned(), port, tls))
    }

    /// Client options for `client_id` (TLS when `mqtts://`).
    fn options(&self, client_id: &str) -> Result<MqttOptions, Error> {
        let mut options = MqttOptions::new(client_id, &self.host, self.port);
        if self.tls {
            let config = client_config(true).map_err(|e| self.error(e))?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        }
        Ok(options)
    }

    fn error(&self, problem: impl std::fmt::Display) -> Error {
        Error::Broker(format!("{self:?}: {problem}"))
    }
}

/// Whether the broker admits `credentials` (none: an anonymous client): a CONNECT and
/// its CONNACK. Refusals are `Ok(false)`; an unreachable broker is an error.
pub async fn admits(
    broker: &Broker,
    client_id: &str,
    credentials: Option<(&str, &str)>,
) -> Result<bool, Error> {
    let mut options = broker.options(client_id)?;
    options.set_keep_alive(Duration::from_secs(10));
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(true),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(
                    ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
                )) => return Ok(false),
                Err(e) => return Err(broker.error(e)),
            }
        }
    })
    .await
    .map_err(|_| broker.error("no CONNACK within 10 s"))?;
    let _ = client.try_disconnect();
    answer
}

/// A connection to the dynamic-security API.
pub struct Dynsec {
    broker: Broker,
    client: AsyncClient,
    answers: mpsc::Receiver<Vec<u8>>,
    driver: JoinHandle<()>,
}

impl Drop for Dynsec {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.driver.abort();
    }
}

impl Dynsec {
    /// Connects as the admin and subscribes to the answers.
    pub async fn connect(broker: &Broker, client_id: &str) -> Result<Self, Error> {
        let mut options = broker.options(client_id)?;
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_credentials(&broker.username, &broker.password)
            // A page of 1000 verbose clients is ~300 KiB.
            .set_max_packet_size(64 << 20, MESSAGE_BYTES + 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let (tx, answers) = mpsc::channel(4);
        let subscriber = client.clone();
        let driver = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Err(e) = subscriber.try_subscribe(RESPONSE, QoS::AtLeastOnce) {
                            if let Some(r) = ready.take() {
                                let _ = r.send(Err(e.to_string()));
                            }
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let granted = ack
                            .return_codes
                            .iter()
                            .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                        if let Some(r) = ready.take() {
                            let _ = r.send(if granted {
                                Ok(())
                            } else {
                                Err(format!("may not subscribe to {RESPONSE}: is this user a dynamic-security admin?"))
                            });
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == RESPONSE => {
                        if tx.send(p.payload.to_vec()).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let problem = match e {
                            ConnectionError::ConnectionRefused(
                                ConnectReturnCode::NotAuthorized
                                | ConnectReturnCode::BadUserNamePassword,
                            ) => "the broker refused the admin's username or password".to_owned(),
                            e => e.to_string(),
                        };
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(problem));
                        }
                        return;
                    }
                }
            }
        });
        let dynsec = Dynsec {
            broker: broker.clone(),
            client,
            answers,
            driver,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(dynsec),
            Ok(Ok(Err(problem))) => Err(broker.error(problem)),
            Ok(Err(_)) => Err(broker.error("the connection ended")),
            Err(_) => Err(broker.error("not connected within 10 s")),
        }
    }

    /// Runs `commands` in order; the answers, one per command (`error` set where one
    /// failed).
    pub async fn execute(&mut self, commands: &[Value]) -> Result<Vec<Value>, Error> {
        let mut answers = Vec::with_capacity(commands.len());
        let mut batch: Vec<&Value> = Vec::new();
        let mut bytes = 0;
        for command in commands {
            let size = command.to_string().len() + 1;
            if !batch.is_empty() && bytes + size > MESSAGE_BYTES {
                answers.extend(self.send(&batch).await?);
                batch.clear();
                bytes = 0;
            }
            batch.push(command);
            bytes += size;
        }
        if !batch.is_empty() {
            answers.extend(self.send(&batch).await?);
        }
        Ok(answers)
    }

    async fn send(&mut self, batch: &[&Value]) -> Result<Vec<Value>, Error> {
        let message = json!({ "commands": batch }).to_string();
        self.client
            .publish(CONTROL, QoS::AtLeastOnce, false, message)
            .await
            .map_err(|e| self.broker.error(e))?;
        let payload = tokio::time::timeout(ANSWER_TIMEOUT, self.answers.recv())
            .await
            .map_err(|_| self.broker.error("no dynamic-security answer within 300 s"))?
            .ok_or_else(|| self.broker.error("the connection ended before the answer"))?;
        let answer: Value = serde_json::from_slice(&payload)
            .map_err(|e| self.broker.error(format!("unreadable answer: {e}")))?;
        let responses = answer["responses"].as_array().cloned().unwrap_or_default();
        if responses.len() != batch.len() {
            return Err(self.broker.error(format!(
                "{} answers to {} commands: is the dynamic-security plugin loaded?",
                responses.len(),
                batch.len()
            )));
        }
        Ok(responses)
    }

    /// Every client the broker has (username and description), page by page.
    pub async fn clients(&mut self) -> Result<Vec<Existing>, Error> {
        let mut clients = Vec::new();
        loop {
            let command = json!({"command": "listClients", "verbose": true, "count": PAGE, "offset": clients.len()});
            let answer = self.execute(&[command]).await?.remove(0);
            if let Some(error) = answer["error"].as_str() {
                return Err(self.broker.error(format!("listClients: {error}")));
            }
            let page = answer["data"]["clients"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = answer["data"]["totalCount"].as_u64().unwrap_or(0) as usize;
            let got = page.len();
            clients.extend(page.into_iter().filter_map(|c| {
                Some(Existing {
                    username: c["username"].as_str()?.to_owned(),
                    description: c["textdescription"].as_str().map(str::to_owned),
                })
            }));
            if got == 0 || clients.len() >= total {
                return Ok(clients);
            }
        }
    }

    /// The client `username` (its `getClient` data), if the broker has it.
    pub async fn client(&mut self, username: &str) -> Result<Option<Value>, Error> {
        let mut answer = self
            .execute(&[json!({"command": "getClient", "username": username})])
            .await?
            .remove(0);
        Ok(answer["error"]
            .is_null()
            .then(|| answer["data"]["client"].take()))
    }
}

/// The errors among `answers` of commands that make something (`create…`, `set…`,
/// `add…`); a failed delete means it was already gone.
pub fn failures(answers: &[Value]) -> Vec<String> {
    answers
        .iter()
        .filter(|a| !a["command"].as_str().unwrap_or("").starts_with("delete"))
        .filter_map(|a| {
            let error = a["error"].as_str()?;
            Some(format!("{}: {error}", a["command"].as_str().unwrap_or("?")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_a_url_without_credentials() {
        assert_eq!(
            Broker::address("mqtt://mosquitto:1884"),
            Some(("mosquitto".into(), 1884, false))
        );
        assert_eq!(
            Broker::address("mqtt://mosquitto.iot.svc"),
            Some(("mosquitto.iot.svc".into(), 1883, false))
        );
        assert_eq!(
            Broker::address("mqtt://[::1]:1883"),
            Some(("::1".into(), 1883, false))
        );
        assert_eq!(
            Broker::address("mqtts://mosquitto"),
            Some(("mosquitto".into(), 8883, true))
        );
        assert_eq!(Broker::address("mqtt://u:p@m:1883"), None);
        assert_eq!(Broker::address("http://m"), None);
        assert_eq!(Broker::address("mqtt://m:port"), None);
    }

    #[test]
    fn the_admin_password_is_never_shown() {
        let broker = Broker {
            host: "m".into(),
            port: 1883,
            username: "admin".into(),
            password: "s3cret-admin".into(),
            tls: false,
        };
        assert!(!format!("{broker:?}").contains("s3cret"));
        assert!(!broker.error("x").to_string().contains("s3cret"));
    }

    #[test]
    fn only_failed_makes_are_failures() {
        let answers = [
            json!({"command": "createClient"}),
            json!({"command": "deleteRole", "error": "Role not found"}),
            json!({"command": "createRole", "error": "Role already exists"}),
        ];
        assert_eq!(failures(&answers), ["createRole: Role already exists"]);
    }
}
