//! Retrying backend writes: a sink that is down holds the pipeline (back-pressure) until
//! it is back, instead of dropping what it was given.

use std::future::Future;
use std::time::Duration;

use sensorfleet_backends::BackendError;
use sensorfleet_backends::backoff::Backoff;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::telemetry;

/// A misconfigured backend will not fix itself within seconds: retry it less often.
const MAX_REJECTED_BACKOFF: Duration = Duration::from_secs(30);

/// Runs `op` until it succeeds. A transient error is counted, logged and retried with
/// exponential backoff (100 ms doubling to 5 s); a rejection, or any error once
/// `shutdown` is set, is returned.
pub async fn retry<T, F, Fut>(
    component: &'static str,
    sink: &'static str,
    shutdown: &mut watch::Receiver<bool>,
    op: F,
) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    persist(false, component, sink, shutdown, op).await
}

/// Runs `op` until it succeeds or the backend refuses the content. Unavailable and
/// rejected backends are retried with backoff (a rejection logged as an error each
/// time, as it needs a person, and retried at most every 30 s); a closed backend, a
/// content refusal, or any error once `shutdown` is set is returned.
pub async fn hold<T, F, Fut>(
    component: &'static str,
    sink: &'static str,
    shutdown: &mut watch::Receiver<bool>,
    op: F,
) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    persist(true, component, sink, shutdown, op).await
}

/// The one retry loop: waits out unavailability, and rejections too when
/// `through_rejections`.
async fn persist<T, F, Fut>(
    through_rejections: bool,
    component: &'static str,
    sink: &'static str,
    shutdown: &mut watch::Receiver<bool>,
    mut op: F,
) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let mut unavailable = Backoff::service();
    let mut rejected = Backoff::new(Duration::from_millis(100), MAX_REJECTED_BACKOFF);
    loop {
        let e = match op().await {
            Ok(value) => {
                let failures = unavailable.failures() + rejected.failures();
                if failures > 0 {
                    info!(component, sink, failures, "backend is back; resuming");
                }
                return Ok(value);
            }
            Err(e) => e,
        };
        telemetry::SINK_ERRORS
            .with_label_values(&[component, sink])
            .inc();
        let is_rejection = through_rejections && matches!(e, BackendError::Rejected { .. });
        if !(is_rejection || e.is_transient()) || *shutdown.borrow() {
            return Err(e);
        }
        let delay = if is_rejection {
            let delay = rejected.next_delay();
            error!(
                component,
                sink,
                failures = rejected.failures(),
                error = %e,
                "the backend refuses every write: check its credentials, permissions and \
                 database; holding (nothing is acknowledged or dead-lettered) until it accepts"
            );
            delay
        } else {
            let delay = unavailable.next_delay();
            let failures = unavailable.failures();
            if failures == 1 || failures.is_multiple_of(10) {
                warn!(component, sink, failures, error = %e, "backend write failed; holding and retrying");
            }
            delay
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
}
