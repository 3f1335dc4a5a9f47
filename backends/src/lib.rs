//! SensorFleet's backends: one trait per concern, each with an embedded implementation
//! (used by `sensorfleet up`) and a production one chosen by URL (some still to come).
//!
//! | concern | trait | embedded | production |
//! | --- | --- | --- | --- |
//! | event log between bridge and processor | [`EventLog`] | [`event_log::memory::MemoryLog`] | [`event_log::kafka::KafkaLog`] |
//! | time series (readings, rollups) | [`TimeSeries`] | [`sqlite::SqliteStore`] | [`timeseries::influx::InfluxStore`] |
//! | registry (devices, rules, alerts, rule state) | [`Registry`] | [`sqlite::SqliteStore`] | [`registry::postgres::PostgresRegistry`] |
//! | latest values, device metrics, alert feed, live events | [`Cache`] | [`cache::memory::MemoryCache`] | [`cache::redis::RedisCache`] |
//!
//! One folder per concern (the trait in its `mod.rs`), one file or folder per engine:
//!
//! ```text
//! event_log/  mod.rs (EventLog) · memory.rs · kafka/{mod, config, error, admin, producer, consumer}.rs
//! timeseries/ mod.rs (TimeSeries) · sqlite.rs · influx/{mod, config, line, query, write}.rs
//! registry/   mod.rs (Registry) · sqlite.rs · postgres.rs
//! cache/      mod.rs (Cache) · memory.rs · redis/{mod, live, scripts}.rs
//! sqlite.rs   the embedded SQLite file both timeseries/sqlite.rs and registry/sqlite.rs use
//! connect.rs  picks each concern's implementation from its URL
//! url.rs · backoff.rs · signal.rs · error.rs   shared by every backend and the workers
//! conformance/ mod.rs (time series, cache) · registry.rs · event_log.rs: the suites
//!             every implementation passes (feature `testing`)
//! ```

pub mod backoff;
pub mod cache;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod connect;
pub mod error;
pub mod event_log;
pub mod registry;
pub mod signal;
pub mod sqlite;
pub mod timeseries;
pub mod tls;
pub mod url;

pub use cache::{Cache, DashboardCounters, DeviceMetrics, LiveEvent};
pub use error::BackendError;
pub use event_log::{
    Assignment, Delivery, EventLog, LogConsumer, Record, Rewound, Topic, partition_of,
};
pub use registry::{DeviceRecord, Registry, RuleActivity};
pub use timeseries::{HistoryQuery, Point, TimeSeries};
