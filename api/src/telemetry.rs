//! The API's own metrics: requests by route and status, latency by route, WebSocket clients.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

/// Requests answered, by route and status.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let metric = IntCounterVec::new(
        Opts::new(
            "sensorfleet_api_requests_total",
            "HTTP requests answered, by route and status",
        ),
        &["route", "status"],
    )
    .expect("valid metric");
    let _ = prometheus::register(Box::new(metric.clone()));
    metric
});

/// Request latency by route.
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    let metric = HistogramVec::new(
        HistogramOpts::new(
            "sensorfleet_api_request_seconds",
            "HTTP request latency, by route",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]),
        &["route"],
    )
    .expect("valid metric");
    let _ = prometheus::register(Box::new(metric.clone()));
    metric
});

/// Connected WebSocket clients.
pub static WS_CLIENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    let metric = IntGauge::new(
        "sensorfleet_api_websocket_clients",
        "Connected WebSocket clients",
    )
    .expect("valid metric");
    let _ = prometheus::register(Box::new(metric.clone()));
    metric
});

/// Registers the API's metrics so `/metrics` lists them before the first request.
pub fn register_all() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&LATENCY);
    LazyLock::force(&WS_CLIENTS);
}

/// Records one answered request.
pub fn record(route: &str, status: u16, elapsed: Duration) {
    REQUESTS
        .with_label_values(&[route, &status.to_string()])
        .inc();
    LATENCY
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
}
