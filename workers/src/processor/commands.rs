//! Acknowledge and clear, from any API process: the API appends an
//! [`AlertCommandRecord`] to the event log's commands topic (the embedded log serves it
//! too), and every processor reads every command in a consumer group of its own. The one
//! holding the alert applies it and records the new state in the registry, which is what
//! the API waits for.

use std::sync::Arc;

use sensorfleet_backends::backoff::Backoff;
use sensorfleet_backends::{EventLog, Topic};
use sensorfleet_model::{Alert, AlertAction, AlertCommandRecord};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::engine::CommandError;
use crate::retry::retry;

/// A command on its way from the topic to the engine.
#[derive(Debug)]
pub(super) struct AlertCommand {
    /// What to do.
    pub action: AlertAction,
    /// To which alert.
    pub alert_id: String,
    /// The alert's new state, or why nothing changed.
    pub reply: oneshot::Sender<Result<Alert, CommandError>>,
}

/// The consumer group of this process's command reader: every processor reads every
/// command, so the group is its own (the host name, a pod's name in Kubernetes, and the
/// process id).
pub(super) fn group(processor_group: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "host".to_owned());
    format!("{processor_group}-commands-{host}-{}", std::process::id())
}

/// Passes the commands topic to the engine until `stop`.
pub(super) async fn relay(
    log: Arc<dyn EventLog>,
    group: String,
    engine: mpsc::Sender<AlertCommand>,
    mut stop: watch::Receiver<bool>,
) {
    let subscribed = retry("processor", "event log", &mut stop, || {
        log.subscribe(Topic::Commands, &group)
    })
    .await;
    let mut consumer = match subscribed {
        Ok(consumer) => consumer,
        Err(e) => {
            warn!(error = %e, "cannot read alert commands; acknowledge and clear will time out");
            return;
        }
    };
    let mut backoff = Backoff::service();
    loop {
        let polled = tokio::select! {
            polled = consumer.poll(100, 500) => polled,
            _ = stop.wait_for(|s| *s) => return,
        };
        let deliveries = match polled {
            Ok(deliveries) => {
                backoff.reset();
                deliveries
            }
            Err(e) => {
                warn!(error = %e, "reading alert commands failed; retrying");
                backoff.wait().await;
                continue;
            }
        };
        for delivery in &deliveries {
            let Ok(command) =
                serde_json::from_slice::<AlertCommandRecord>(&delivery.record.payload)
            else {
                warn!(
                    offset = delivery.offset,
                    "skipping an alert command that does not parse"
                );
                continue;
            };
            let (reply, answer) = oneshot::channel();
            let request = AlertCommand {
                action: command.action,
                alert_id: command.alert_id,
                reply,
            };
            if engine.send(request).await.is_err() {
                return;
            }
            // Not ours (another replica holds it) or already changed: nothing to do.
            if let Ok(Ok(alert)) = answer.await {
                info!(alert_id = %alert.id, state = alert.state.as_str(), "alert changed by hand");
            }
        }
        if !deliveries.is_empty()
            && let Err(e) = consumer.commit().await
        {
            warn!(error = %e, "committing the alert command position failed");
        }
    }
}
