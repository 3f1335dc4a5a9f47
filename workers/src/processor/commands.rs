//! Acknowledge and clear, from any API process: the API appends an
//! [`AlertCommandRecord`] to the event log's commands topic (the embedded log serves it
//! too), and every processor reads every command. The one holding the alert's device
//! (see `ownership`) applies it and records the new state in the registry before
//! anything else, which is what the API waits for before it answers.
//!
//! The reader is a tail of the topic ([`EventLog::tail`]): no consumer group, nothing
//! committed, only commands appended after the processor started. So a restart neither
//! replays the command history nor leaves a group behind (one per start, as a group of
//! its own per process did). A command sent while no processor runs is not applied
//! later: the API has answered it with a timeout already.

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

/// Passes the commands appended from now on to the engine until `stop`.
pub(super) async fn relay(
    log: Arc<dyn EventLog>,
    engine: mpsc::Sender<AlertCommand>,
    mut stop: watch::Receiver<bool>,
) {
    let subscribed = retry("processor", "event log", &mut stop, || {
        log.tail(Topic::Commands)
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
            match answer.await {
                Ok(Ok(alert)) => {
                    info!(alert_id = %alert.id, state = alert.state.as_str(), "alert changed by hand")
                }
                Ok(Err(e @ CommandError::NotPersisted(_))) => {
                    warn!(error = %e, "an alert command was not stored; the API reports a timeout")
                }
                // Not ours (another replica holds it) or already changed: nothing to do.
                Ok(Err(CommandError::NotFound(_))) | Err(_) => {}
            }
        }
    }
}
