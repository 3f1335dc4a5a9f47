//! The `sensorfleet` binary's library: every role's flags and entry point ([`roles`]),
//! so `main.rs` stays a thin dispatcher and tests and benchmarks call the same code.

pub mod http;
pub mod manifests;
pub mod process;
pub mod roles;
