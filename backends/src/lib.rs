//! SensorFleet's backends: one trait per concern, each with an embedded implementation
//! (used by `sensorfleet up`) and a production one chosen by URL (some still to come).
//!
//! | concern | trait | embedded | production |
//! | --- | --- | --- | --- |
//! | event log between bridge and processor | [`EventLog`] | [`event_log::memory::MemoryLog`] | [`event_log::kafka::KafkaLog`] |
//! | time series (readings, rollups) | [`TimeSeries`] | [`sqlite::SqliteStore`] | [`timeseries::influx::InfluxStore`] |
//! | registry (devices, rules, alerts, rule state) | [`Registry`] | [`sqlite::SqliteStore`] | [`registry::postgres::PostgresRegistry`] |
//! | latest values, device metrics, alert feed, live events | [`Cache`] | [`cache::memory::MemoryCache`] | [`cache::redis::RedisCache`] |

pub mod backoff;
pub mod cache;
pub mod conformance;
pub mod connect;
pub mod error;
pub mod event_log;
pub mod registry;
pub mod signal;
pub mod sqlite;
pub mod timeseries;
pub mod url;

pub use cache::{Cache, DashboardCounters, DeviceMetrics, LiveEvent};
pub use error::BackendError;
pub use event_log::{Delivery, EventLog, LogConsumer, Record, Topic};
pub use registry::{DeviceRecord, Registry};
pub use timeseries::{HistoryQuery, Point, TimeSeries};
