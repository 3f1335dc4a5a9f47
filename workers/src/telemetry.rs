//! Metrics of the workers, named `sensorfleet_<component>_<name>_<unit>`, registered in
//! the process-wide Prometheus registry that the API's `/metrics` serves.
//!
//! Metrics are updated per batch, never per reading, to stay off the hot path.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge,
};

fn counter(name: &str, help: &str) -> IntCounter {
    register_int_counter!(name, help)
        .unwrap_or_else(|_| IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register_int_counter_vec!(name, help, labels).unwrap_or_else(|_| {
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
    })
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register_int_gauge!(name, help)
        .unwrap_or_else(|_| IntGauge::new(name, help).expect("valid metric"))
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register_histogram!(name, help, buckets.clone()).unwrap_or_else(|_| {
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric")
    })
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register_histogram_vec!(name, help, labels, buckets.clone()).unwrap_or_else(|_| {
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("valid metric")
    })
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ]
}

/// MQTT messages the bridge received.
pub static BRIDGE_RECEIVED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sensorfleet_bridge_messages_received_total",
        "MQTT messages received by the bridge",
    )
});
/// Readings the bridge accepted and delivered.
pub static BRIDGE_ACCEPTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sensorfleet_bridge_readings_accepted_total",
        "Readings validated and delivered to the log and stores",
    )
});
/// Rejected messages by reason.
pub static BRIDGE_REJECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sensorfleet_bridge_rejects_total",
        "Messages rejected and dead-lettered, by reason",
        &["reason"],
    )
});
/// Time to deliver one batch to all sinks.
pub static BRIDGE_FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "sensorfleet_bridge_flush_seconds",
        "Time to deliver one batch to the event log, time-series store and cache",
        latency_buckets(),
    )
});
/// Failed sink writes, by sink; each is retried.
pub static SINK_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sensorfleet_sink_errors_total",
        "Failed backend writes (retried with backoff), by component and sink",
        &["component", "sink"],
    )
});
/// Readings the processor consumed.
pub static PROCESSOR_READINGS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sensorfleet_processor_readings_total",
        "Readings processed by the stream processor",
    )
});
/// Alert transitions.
pub static PROCESSOR_ALERTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sensorfleet_processor_alerts_total",
        "Alert transitions, by alert type and state",
        &["alert_type", "state"],
    )
});
/// Devices with processor state.
pub static PROCESSOR_DEVICES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sensorfleet_processor_devices",
        "Devices the processor keeps state for",
    )
});
/// Bytes of processor state.
pub static PROCESSOR_STATE_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sensorfleet_processor_state_bytes",
        "Approximate bytes of per-device processor state",
    )
});
/// Lag between a reading's time and its processing.
pub static PROCESSOR_LAG_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "sensorfleet_processor_lag_seconds",
        "Age of the newest reading of each batch when processed",
        latency_buckets(),
    )
});
/// Time to process and flush one batch.
pub static PROCESSOR_BATCH_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "sensorfleet_processor_batch_seconds",
        "Time to process one batch and flush its sinks",
        &["stage"],
        latency_buckets(),
    )
});
/// Malformed records found in the event log.
pub static PROCESSOR_MALFORMED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sensorfleet_processor_malformed_total",
        "Event-log records that did not parse (dead-lettered)",
    )
});
/// 1 while the bridge is connected to its MQTT broker.
pub static BRIDGE_CONNECTED: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sensorfleet_bridge_connected",
        "1 while the bridge is connected to the MQTT broker",
    )
});
/// When the processor last ran its periodic checks (unix seconds).
pub static PROCESSOR_LAST_TICK: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sensorfleet_processor_last_tick_timestamp_seconds",
        "When the processor last ran its periodic checks (unix seconds)",
    )
});
/// Dead letters by component and outcome (`delivered`, `spooled`, `dropped`).
pub static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sensorfleet_dead_letters_total",
        "Dead letters by component and outcome: delivered to the dead-letter topic, \
         spooled locally while it is unavailable, or dropped (spool full: the last resort)",
        &["component", "outcome"],
    )
});
/// Event-log records the processor dead-lettered, by reason.
pub static PROCESSOR_REJECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sensorfleet_processor_rejects_total",
        "Records the processor dead-lettered instead of processing or storing, by reason",
        &["reason"],
    )
});
/// Readings the simulator published.
pub static SIMULATOR_PUBLISHED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sensorfleet_simulator_published_total",
        "Readings published by the simulator",
    )
});
/// Open connections of the embedded MQTT ingest endpoint.
pub static INGEST_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "sensorfleet_ingest_connections",
        "Open connections of the embedded MQTT ingest endpoint",
    )
});
/// PUBLISH packets the ingest endpoint received, by QoS (QoS 0 is best effort).
pub static INGEST_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sensorfleet_ingest_messages_total",
        "PUBLISH packets received by the embedded MQTT ingest endpoint, by QoS",
        &["qos"],
    )
});
/// Connections the ingest endpoint closed or that ended, by reason.
pub static INGEST_CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sensorfleet_ingest_closed_total",
        "Connections of the embedded MQTT ingest endpoint that ended, by reason",
        &["reason"],
    )
});
/// SUBSCRIBE packets refused by the ingest endpoint.
pub static INGEST_SUBSCRIBES_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "sensorfleet_ingest_subscribes_refused_total",
        "SUBSCRIBE packets refused by the embedded MQTT ingest endpoint (ingest only)",
    )
});

/// Registers every worker metric now, so `/metrics` lists them (at 0) before first use.
pub fn register_all() {
    LazyLock::force(&BRIDGE_RECEIVED);
    LazyLock::force(&BRIDGE_ACCEPTED);
    for reason in sensorfleet_model::RejectReason::ALL {
        BRIDGE_REJECTS.with_label_values(&[reason.as_str()]);
    }
    LazyLock::force(&BRIDGE_FLUSH_SECONDS);
    LazyLock::force(&SINK_ERRORS);
    LazyLock::force(&PROCESSOR_READINGS);
    LazyLock::force(&PROCESSOR_ALERTS);
    LazyLock::force(&PROCESSOR_DEVICES);
    LazyLock::force(&PROCESSOR_STATE_BYTES);
    LazyLock::force(&PROCESSOR_LAG_SECONDS);
    LazyLock::force(&PROCESSOR_BATCH_SECONDS);
    LazyLock::force(&PROCESSOR_MALFORMED);
    LazyLock::force(&SIMULATOR_PUBLISHED);
    for outcome in ["delivered", "spooled", "dropped"] {
        for component in ["bridge", "processor"] {
            DEAD_LETTERS.with_label_values(&[component, outcome]);
        }
    }
    for reason in ["malformed_log_record", "type_mismatch", "sink_refused"] {
        PROCESSOR_REJECTS.with_label_values(&[reason]);
    }
    LazyLock::force(&BRIDGE_CONNECTED);
    LazyLock::force(&PROCESSOR_LAST_TICK);
    for qos in ["0", "1", "2"] {
        INGEST_MESSAGES.with_label_values(&[qos]);
    }
    LazyLock::force(&INGEST_CONNECTIONS);
    LazyLock::force(&INGEST_CLOSED);
    LazyLock::force(&INGEST_SUBSCRIBES_REFUSED);
}
