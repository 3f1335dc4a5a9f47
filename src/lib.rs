//! The `sensorfleet` binary's library: each role's entry point, so `main.rs` stays a thin
//! argument parser and tests and benchmarks call the same code.

pub mod backtest;
pub mod bench;
pub mod detect;
pub mod http;
pub mod manifests;
pub mod roles;
pub mod up;
