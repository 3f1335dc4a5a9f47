//! SensorFleet's workers, in the order data flows through them:
//!
//! device → [`simulator`] → MQTT → a [`transport`] ([`mqtt`] client of a broker, or the
//! embedded [`ingest`] endpoint) → [`bridge`] → event log → [`processor`] → stores. The API reads the stores; it lives in its own crate.

pub mod bridge;
pub mod clock;
pub mod deadletter;
pub mod ingest;
pub mod mqtt;
pub mod processor;
pub mod retry;
pub mod simulator;
pub mod sink;
pub mod telemetry;
pub mod transport;
