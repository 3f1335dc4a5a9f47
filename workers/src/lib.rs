//! SensorFleet's workers, in the order data flows through them:
//!
//! device → [`simulator`] → MQTT ([`ingest`] when embedded) → [`bridge`] → event log →
//! [`processor`] → stores. The API reads the stores; it lives in its own crate.

pub mod bridge;
pub mod broker;
pub mod clock;
pub mod deadletter;
pub mod ingest;
pub mod mqtt;
pub mod processor;
pub mod retry;
pub mod simulator;
pub mod sink;
pub mod telemetry;
