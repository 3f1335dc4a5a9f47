//! MQTT endpoints as URLs: `mqtt://[user:password@]host[:port]`.

use std::fmt;

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
}

impl fmt::Debug for MqttEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Shown with the password masked, so it can go in logs.
impl fmt::Display for MqttEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => write!(f, "mqtt://{user}:****@{}:{}", self.host, self.port),
            (Some(user), None) => write!(f, "mqtt://{user}@{}:{}", self.host, self.port),
            _ => write!(f, "mqtt://{}:{}", self.host, self.port),
        }
    }
}

impl MqttEndpoint {
    /// Parses `mqtt://[user[:password]@]host[:port]` (`tcp://` is accepted too).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| format!("{url:?} is not an MQTT URL like mqtt://127.0.0.1:1883"))?;
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
            _ => (address.to_owned(), 1883),
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(Self {
            host,
            port,
            username,
            password,
        })
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
        assert!(MqttEndpoint::parse("http://x").is_err());
        assert!(MqttEndpoint::parse("mqtt://x:port").is_err());
        assert!(MqttEndpoint::parse("mqtt://").is_err());
    }
}
