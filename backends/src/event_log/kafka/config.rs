//! The `kafka://` URL and the settings it overrides: topic names, partitions, timeouts.

use std::time::Duration;

use super::error::rejected;
use crate::BackendError;
use crate::event_log::Topic;
use crate::url::mask;

/// The names of the three topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    /// Normalised readings; `sensor-readings` by default.
    pub readings: String,
    /// Alerts; `sensor-alerts` by default.
    pub alerts: String,
    /// Rejects; `sensor-readings-dlq` by default.
    pub dead_letter: String,
    /// Acknowledge/clear requests between API and processors; `sensor-alert-commands`.
    pub commands: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

impl TopicNames {
    /// The default names with `prefix` in front (e.g. a test run's unique prefix).
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |topic: Topic| format!("{prefix}{}", topic.default_name());
        Self {
            readings: name(Topic::Readings),
            alerts: name(Topic::Alerts),
            dead_letter: name(Topic::DeadLetter),
            commands: name(Topic::Commands),
        }
    }

    /// The name of `topic`.
    pub fn name(&self, topic: Topic) -> &str {
        match topic {
            Topic::Readings => &self.readings,
            Topic::Alerts => &self.alerts,
            Topic::DeadLetter => &self.dead_letter,
            Topic::Commands => &self.commands,
        }
    }

    pub(super) fn all(&self) -> [&str; 4] {
        [
            &self.readings,
            &self.alerts,
            &self.dead_letter,
            &self.commands,
        ]
    }
}

/// Settings of a [`KafkaLog`] and [`KafkaAdmin`]; URL parameters override them.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Topic names.
    pub topics: TopicNames,
    /// Partitions of a topic created on connect.
    pub partitions: u32,
    /// Replication factor of a created topic; `None` takes the broker's default.
    pub replication: Option<u16>,
    /// Create missing topics on connect.
    pub create_topics: bool,
    /// How long an append waits for acknowledgement (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Bound on admin requests, metadata requests and offset commits.
    pub request_timeout: Duration,
    /// Kafka `client.id`, for the brokers' logs and quotas.
    pub client_id: String,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            topics: TopicNames::default(),
            // DESIGN §6: a pipeline's minPartitions defaults to 3.
            partitions: 3,
            replication: None,
            create_topics: true,
            delivery_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            client_id: "sensorfleet".to_owned(),
        }
    }
}

/// A parsed `kafka://` URL: the bootstrap servers, with the options it overrides
/// applied.
#[derive(Debug, Clone)]
pub(super) struct KafkaUrl {
    pub(super) bootstrap: String,
    pub(super) options: KafkaOptions,
}

pub(super) fn parse_url(url: &str, defaults: &KafkaOptions) -> Result<KafkaUrl, BackendError> {
    let shown = mask(url);
    let bad = |what: &str| {
        rejected(format!(
            "bad Kafka URL {shown}: {what} (expected kafka://host:9092[,host2:9092][?topic_prefix=…&partitions=…])"
        ))
    };
    let rest = url
        .strip_prefix("kafka://")
        .ok_or_else(|| bad("it must start with kafka://"))?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains('@') {
        return Err(bad(
            "credentials are not supported (this build has no SASL/TLS); remove user:password@",
        ));
    }
    if authority.contains('/') {
        return Err(bad("a Kafka URL has no path"));
    }
    let mut servers = Vec::new();
    for server in authority.split(',') {
        servers.push(parse_server(server).map_err(|what| bad(&what))?);
    }

    let mut options = defaults.clone();
    let mut prefix = None;
    let mut names: [Option<String>; 3] = [None, None, None];
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let number = |max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| bad(&format!("{key} must be a number from 1 to {max}")))
        };
        match key.as_ref() {
            "topic_prefix" => prefix = Some(value.into_owned()),
            "readings_topic" => names[0] = Some(value.into_owned()),
            "alerts_topic" => names[1] = Some(value.into_owned()),
            "dead_letter_topic" => names[2] = Some(value.into_owned()),
            "partitions" => options.partitions = number(1_000_000)? as u32,
            "replication" => options.replication = Some(number(u16::MAX.into())? as u16),
            "create_topics" => {
                options.create_topics = match value.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad("create_topics must be true or false")),
                }
            }
            "delivery_timeout_ms" => {
                options.delivery_timeout = Duration::from_millis(number(i32::MAX as u64)?)
            }
            "request_timeout_ms" => {
                options.request_timeout = Duration::from_millis(number(i32::MAX as u64)?)
            }
            "client_id" => options.client_id = value.into_owned(),
            other => return Err(bad(&format!("unknown parameter {other}"))),
        }
    }
    if let Some(prefix) = prefix {
        options.topics = TopicNames::with_prefix(&prefix);
    }
    let [readings, alerts, dead_letter] = names;
    options.topics.readings = readings.unwrap_or(options.topics.readings);
    options.topics.alerts = alerts.unwrap_or(options.topics.alerts);
    options.topics.dead_letter = dead_letter.unwrap_or(options.topics.dead_letter);
    for name in options.topics.all() {
        check_topic_name(name).map_err(|what| bad(&what))?;
    }
    Ok(KafkaUrl {
        bootstrap: servers.join(","),
        options,
    })
}

/// `host:port`, `host` (port 9092) or `[v6]:port`.
fn parse_server(server: &str) -> Result<String, String> {
    if server.is_empty() {
        return Err("a server is missing (empty entry between commas)".to_owned());
    }
    let (host, port) = match server.rsplit_once(':') {
        // A bare IPv6 address in brackets has colons but no port.
        Some((host, port)) if !server.ends_with(']') => (host, Some(port)),
        _ => (server, None),
    };
    if host.is_empty() {
        return Err(format!("server {server} has no host"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("server {server} has a bad port"))?,
        None => 9092,
    };
    Ok(format!("{host}:{port}"))
}

/// Kafka's rule: 1–249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub(super) fn check_topic_name(name: &str) -> Result<(), String> {
    let legal = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > 249 || !legal || name == "." || name == ".." {
        return Err(format!(
            "topic name {name:?} is not a legal Kafka topic name (1–249 of [A-Za-z0-9._-])"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_log::kafka::BACKEND;

    fn parse(url: &str) -> Result<KafkaUrl, BackendError> {
        parse_url(url, &KafkaOptions::default())
    }

    #[test]
    fn parses_servers_and_parameters() {
        let url = parse(
            "kafka://k1:9092,k2,[::1]:9094/?topic_prefix=t1-&partitions=6&replication=3\
             &dead_letter_topic=rejects&create_topics=false&delivery_timeout_ms=1500",
        )
        .expect("valid");
        assert_eq!(url.bootstrap, "k1:9092,k2:9092,[::1]:9094");
        let options = url.options;
        assert_eq!(options.topics.readings, "t1-sensor-readings");
        assert_eq!(options.topics.alerts, "t1-sensor-alerts");
        assert_eq!(
            options.topics.dead_letter, "rejects",
            "explicit beats prefix"
        );
        assert_eq!(options.partitions, 6);
        assert_eq!(options.replication, Some(3));
        assert!(!options.create_topics);
        assert_eq!(options.delivery_timeout, Duration::from_millis(1500));

        let plain = parse("kafka://localhost:9092").expect("valid");
        assert_eq!(plain.options.topics, TopicNames::default());
        assert_eq!(
            plain.options.topics.name(Topic::DeadLetter),
            "sensor-readings-dlq"
        );
        assert_eq!(plain.options.replication, None);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, expected) in [
            ("http://k:9092", "must start with kafka://"),
            ("kafka://", "server is missing"),
            ("kafka://k:9092,", "server is missing"),
            ("kafka://k:http", "bad port"),
            ("kafka://k:9092/path", "no path"),
            ("kafka://k:9092?partitions=0", "partitions must be a number"),
            (
                "kafka://k:9092?partitoins=3",
                "unknown parameter partitoins",
            ),
            (
                "kafka://k:9092?topic_prefix=a/b",
                "not a legal Kafka topic name",
            ),
        ] {
            let error = parse(url).expect_err(url).to_string();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(
                !BackendError::Rejected {
                    backend: BACKEND,
                    detail: String::new()
                }
                .is_transient()
            );
        }
    }

    #[test]
    fn passwords_are_never_echoed() {
        let error = parse("kafka://fleet:s3cret@k:9092?partitions=x")
            .expect_err("credentials are refused")
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
        assert!(error.contains("kafka://fleet:***@k:9092"), "{error}");
        assert!(error.contains("credentials are not supported"), "{error}");
    }
}
