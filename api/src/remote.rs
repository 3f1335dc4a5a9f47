//! Acknowledge and clear when the API runs in its own process: the request goes to every
//! processor over the event log's commands topic, and the answer is read back from the
//! registry, where the processor that holds the alert records its new state.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sensorfleet_backends::{EventLog, Record, Registry, Topic};
use sensorfleet_model::{Alert, AlertAction, AlertCommandRecord, AlertPhase};

use crate::AlertControl;

/// [`AlertControl`] over the event log and the registry.
pub struct RemoteControl {
    /// Where commands go.
    pub log: Arc<dyn EventLog>,
    /// Where the outcome shows.
    pub registry: Arc<dyn Registry>,
    /// How long to wait for a processor to apply a command.
    pub wait: Duration,
}

impl RemoteControl {
    async fn send(&self, id: &str, action: AlertAction) -> Result<Option<Alert>, String> {
        let before = self.registry.alert(id).await.map_err(|e| e.to_string())?;
        let Some(before) = before else {
            return Ok(None);
        };
        if matches!(before.state, AlertPhase::Resolved | AlertPhase::Pending) {
            return Ok(None);
        }
        let command = AlertCommandRecord {
            action,
            alert_id: id.to_owned(),
        };
        let payload = serde_json::to_vec(&command).map_err(|e| e.to_string())?;
        self.log
            .append(
                Topic::Commands,
                vec![Record {
                    key: before.device_id.clone(),
                    payload,
                    headers: vec![],
                }],
            )
            .await
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + self.wait;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(Some(now)) = self.registry.alert(id).await
                && now.state != before.state
            {
                return Ok(Some(now));
            }
        }
        Err(format!(
            "no processor applied the request within {} s; check that `sensorfleet processor` runs and reads the {} topic",
            self.wait.as_secs(),
            Topic::Commands.default_name()
        ))
    }
}

#[async_trait]
impl AlertControl for RemoteControl {
    async fn acknowledge(&self, id: &str) -> Result<Option<Alert>, String> {
        self.send(id, AlertAction::Acknowledge).await
    }

    async fn clear(&self, id: &str) -> Result<Option<Alert>, String> {
        self.send(id, AlertAction::Clear).await
    }
}
