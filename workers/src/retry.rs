//! Retrying backend writes: a sink that is down holds the pipeline (back-pressure) until
//! it is back, instead of dropping what it was given.

use std::future::Future;

use sensorfleet_backends::BackendError;
use sensorfleet_backends::backoff::Backoff;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::telemetry;

/// Runs `op` until it succeeds. A transient error is counted, logged and retried with
/// exponential backoff (100 ms doubling to 5 s); a rejection, or any error once
/// `shutdown` is set, is returned.
pub async fn retry<T, F, Fut>(
    component: &'static str,
    sink: &'static str,
    shutdown: &mut watch::Receiver<bool>,
    mut op: F,
) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let mut backoff = Backoff::service();
    loop {
        match op().await {
            Ok(value) => {
                let failures = backoff.failures();
                if failures > 0 {
                    info!(component, sink, failures, "backend is back; resuming");
                }
                return Ok(value);
            }
            Err(e) => {
                telemetry::SINK_ERRORS
                    .with_label_values(&[component, sink])
                    .inc();
                if !e.is_transient() || *shutdown.borrow() {
                    return Err(e);
                }
                let delay = backoff.next_delay();
                let failures = backoff.failures();
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(component, sink, failures, error = %e, "backend write failed; holding and retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}
