//! Picks an implementation of each concern from a URL (DESIGN §2): `embedded` (the
//! default) or the production backend's URL. Parsing is pure; opening connects.
//!
//! The embedded event log and cache live inside one process: a role that runs as its
//! own process (`sensorfleet bridge`, …) refuses them with an error that says which URL
//! to pass, since another process could never read what it wrote. The embedded time
//! series and registry are a SQLite file, which separate processes on one machine can
//! share.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::cache::memory::MemoryCache;
use crate::cache::redis::RedisCache;
use crate::event_log::kafka::{KafkaLog, KafkaOptions};
use crate::event_log::memory::MemoryLog;
use crate::registry::postgres::PostgresRegistry;
use crate::sqlite::SqliteStore;
use crate::timeseries::influx::{InfluxOptions, InfluxStore};
use crate::url::{mask, take_query_param};
use crate::{BackendError, Cache, EventLog, Registry, TimeSeries};

/// One backend concern, as named in flags and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concern {
    /// The event log between bridge and processor.
    EventLog,
    /// Readings and rollups.
    TimeSeries,
    /// Latest values, device metrics, alert feed.
    Cache,
    /// Devices, rules, alert history, rule state.
    Registry,
}

impl Concern {
    /// The flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::EventLog => "--kafka-url",
            Self::TimeSeries => "--influx-url",
            Self::Cache => "--redis-url",
            Self::Registry => "--postgres-url",
        }
    }

    fn accepted(self) -> &'static str {
        match self {
            Self::EventLog => "`embedded` or kafka://host:9092[,host2:9092]",
            Self::TimeSeries => "`embedded`, influx://host:8086?db=sensors or influxs://… (TLS)",
            Self::Cache => "`embedded` or redis://host:6379",
            Self::Registry => "`embedded` or postgres://user:password@host:5432/database",
        }
    }
}

/// What a URL chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The in-process / SQLite implementation.
    Embedded,
    /// The production backend at this URL.
    Url(String),
}

/// Why a backend could not be chosen or opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL's scheme does not fit the concern.
    #[error("{flag} {shown:?} is not understood: pass {accepted}")]
    Unsupported {
        /// The flag.
        flag: &'static str,
        /// The value, with any password masked.
        shown: String,
        /// What would be understood.
        accepted: &'static str,
    },
    /// The embedded implementation cannot be shared between processes.
    #[error(
        "{role} runs as its own process and cannot share an embedded {what}: pass {flag} ({accepted}), or run everything in one process with `sensorfleet up`"
    )]
    NotShareable {
        /// The role.
        role: &'static str,
        /// The concern in words.
        what: &'static str,
        /// The flag to pass.
        flag: &'static str,
        /// What it takes.
        accepted: &'static str,
    },
    /// The backend did not answer or refused.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Which implementation `text` names for `concern`.
pub fn choose(concern: Concern, text: &str) -> Result<Choice, ConnectError> {
    let text = text.trim();
    if text.is_empty() || text == "embedded" {
        return Ok(Choice::Embedded);
    }
    let scheme = text.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let fits = matches!(
        (concern, scheme.as_deref()),
        (Concern::EventLog, Some("kafka"))
            | (Concern::TimeSeries, Some("influx" | "influxs" | "influxdb"))
            | (Concern::Cache, Some("redis"))
            | (Concern::Registry, Some("postgres" | "postgresql"))
    );
    if fits {
        Ok(Choice::Url(text.to_owned()))
    } else {
        Err(ConnectError::Unsupported {
            flag: concern.flag(),
            shown: mask(text),
            accepted: concern.accepted(),
        })
    }
}

/// The URLs of every concern, plus where embedded SQLite lives.
#[derive(Debug, Clone)]
pub struct BackendUrls {
    /// Event log: `embedded` or `kafka://…`.
    pub event_log: String,
    /// Time series: `embedded` or `influx://…`.
    pub time_series: String,
    /// Cache: `embedded` or `redis://…`.
    pub cache: String,
    /// Registry: `embedded` or `postgres://…`.
    pub registry: String,
    /// The time series' token (`Authorization: Token …`), when not in the environment.
    pub influx_token: Option<String>,
    /// The folder of the embedded SQLite file.
    pub data_dir: PathBuf,
    /// The role opening them, for errors (`sensorfleet bridge`).
    pub role: &'static str,
    /// Whether in-process implementations are acceptable (only `up`).
    pub single_process: bool,
}

/// Opens backends by URL, sharing one SQLite store between the concerns that use it.
pub struct Connector {
    urls: BackendUrls,
    sqlite: OnceCell<SqliteStore>,
}

impl Connector {
    /// A connector for these URLs; nothing is opened yet.
    pub fn new(urls: BackendUrls) -> Self {
        Self {
            urls,
            sqlite: OnceCell::new(),
        }
    }

    /// The URLs.
    pub fn urls(&self) -> &BackendUrls {
        &self.urls
    }

    /// The embedded SQLite store, if a concern opened it.
    pub fn embedded_store(&self) -> Option<SqliteStore> {
        self.sqlite.get().cloned()
    }

    /// Checks every URL parses for its concern, before anything connects.
    pub fn validate(&self) -> Result<(), ConnectError> {
        choose(Concern::EventLog, &self.urls.event_log)?;
        choose(Concern::TimeSeries, &self.urls.time_series)?;
        choose(Concern::Cache, &self.urls.cache)?;
        choose(Concern::Registry, &self.urls.registry)?;
        Ok(())
    }

    async fn sqlite(&self) -> Result<SqliteStore, ConnectError> {
        let store = self
            .sqlite
            .get_or_try_init(|| SqliteStore::open(&self.urls.data_dir))
            .await?;
        Ok(store.clone())
    }

    fn shared_only(&self, concern: Concern, what: &'static str) -> Result<(), ConnectError> {
        if self.urls.single_process {
            Ok(())
        } else {
            Err(ConnectError::NotShareable {
                role: self.urls.role,
                what,
                flag: concern.flag(),
                accepted: concern.accepted(),
            })
        }
    }

    /// The event log.
    pub async fn event_log(&self, capacity: usize) -> Result<Arc<dyn EventLog>, ConnectError> {
        match choose(Concern::EventLog, &self.urls.event_log)? {
            Choice::Embedded => {
                self.shared_only(Concern::EventLog, "event log")?;
                Ok(Arc::new(MemoryLog::new(capacity)))
            }
            Choice::Url(url) => Ok(Arc::new(
                KafkaLog::connect(&url, KafkaOptions::default()).await?,
            )),
        }
    }

    /// The time-series store.
    pub async fn time_series(&self) -> Result<Arc<dyn TimeSeries>, ConnectError> {
        match choose(Concern::TimeSeries, &self.urls.time_series)? {
            Choice::Embedded => Ok(Arc::new(self.sqlite().await?)),
            Choice::Url(url) => Ok(Arc::new(
                InfluxStore::connect(
                    &url,
                    InfluxOptions {
                        token: self.urls.influx_token.clone(),
                        ..InfluxOptions::default()
                    },
                )
                .await?,
            )),
        }
    }

    /// The cache.
    pub async fn cache(&self) -> Result<Arc<dyn Cache>, ConnectError> {
        match choose(Concern::Cache, &self.urls.cache)? {
            Choice::Embedded => {
                self.shared_only(Concern::Cache, "cache")?;
                Ok(Arc::new(MemoryCache::default()))
            }
            Choice::Url(url) => {
                let (url, prefix) = take_query_param(&url, "prefix");
                let prefix = prefix.unwrap_or_default();
                Ok(Arc::new(
                    RedisCache::connect_with_prefix(&url, &prefix).await?,
                ))
            }
        }
    }

    /// The registry.
    pub async fn registry(&self, max_connections: u32) -> Result<Arc<dyn Registry>, ConnectError> {
        match choose(Concern::Registry, &self.urls.registry)? {
            Choice::Embedded => Ok(Arc::new(self.sqlite().await?)),
            Choice::Url(url) => Ok(Arc::new(
                PostgresRegistry::connect(&url, max_connections).await?,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_is_the_default() {
        for concern in [
            Concern::EventLog,
            Concern::TimeSeries,
            Concern::Cache,
            Concern::Registry,
        ] {
            assert_eq!(choose(concern, "").unwrap(), Choice::Embedded);
            assert_eq!(choose(concern, " embedded ").unwrap(), Choice::Embedded);
        }
    }

    #[test]
    fn each_concern_takes_its_own_scheme() {
        assert_eq!(
            choose(Concern::EventLog, "kafka://k:9092").unwrap(),
            Choice::Url("kafka://k:9092".into())
        );
        assert!(choose(Concern::TimeSeries, "influx://i:8086?db=s").is_ok());
        assert!(choose(Concern::Cache, "redis://r:6379").is_ok());
        assert!(choose(Concern::Registry, "postgresql://p/db").is_ok());
        assert!(choose(Concern::Registry, "POSTGRES://p/db").is_ok());
    }

    #[test]
    fn a_wrong_scheme_names_the_flag_and_masks_the_password() {
        let err = choose(Concern::Cache, "postgres://u:secret@h/db").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--redis-url"), "{text}");
        assert!(text.contains("redis://host:6379"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(choose(Concern::EventLog, "localhost:9092").is_err());
    }

    #[tokio::test]
    async fn a_separate_process_refuses_in_process_backends() {
        let dir = tempfile::tempdir().unwrap();
        let connector = Connector::new(BackendUrls {
            event_log: "embedded".into(),
            time_series: "embedded".into(),
            cache: "embedded".into(),
            registry: "embedded".into(),
            influx_token: None,
            data_dir: dir.path().to_owned(),
            role: "sensorfleet bridge",
            single_process: false,
        });
        let err = connector.event_log(10).await.err().unwrap().to_string();
        assert!(err.contains("--kafka-url"), "{err}");
        assert!(err.contains("sensorfleet up"), "{err}");
        assert!(connector.cache().await.is_err());
        // SQLite is a file: separate processes can share it.
        assert!(connector.time_series().await.is_ok());
        assert!(connector.registry(1).await.is_ok());
    }
}
