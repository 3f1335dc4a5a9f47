//! The live feed: events published on the live channel, and the task that forwards what
//! the subscriber connection receives to [`Cache::live`](crate::Cache::live)'s receivers.

use std::sync::Arc;

use sensorfleet_model::{Alert, Reading};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::cache::LiveEvent;

/// What travels on the live channel.
#[derive(Serialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
pub(super) enum WireEvent<'a> {
    Reading(&'a Reading),
    Alert(&'a Alert),
}

/// [`WireEvent`], as received.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
enum ReceivedEvent {
    Reading(Reading),
    Alert(Alert),
}

/// Moves messages from the subscriber connection to the broadcast channel `live()` hands
/// out, decoding each once.
pub(super) async fn forward_live(
    mut messages: broadcast::Receiver<fred::types::Message>,
    channel: String,
    live: broadcast::Sender<LiveEvent>,
) {
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::warn!(
                    skipped,
                    "redis live feed: events skipped, forwarder too slow"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if *message.channel != *channel {
            continue;
        }
        let Some(text) = message.value.as_str() else {
            continue;
        };
        let event = match serde_json::from_str::<ReceivedEvent>(&text) {
            Ok(ReceivedEvent::Reading(r)) => LiveEvent::Reading(Arc::new(r)),
            Ok(ReceivedEvent::Alert(a)) => LiveEvent::Alert(Arc::new(a)),
            Err(e) => {
                tracing::warn!(error = %e, "redis live feed: message that is not a live event");
                continue;
            }
        };
        // No receiver is fine: nobody is watching.
        let _ = live.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::redis::encode;

    #[test]
    fn live_events_have_the_documented_shape() {
        let reading = Reading {
            device_id: "d1".to_owned(),
            device_type: "temperature_sensor".to_owned(),
            location: None,
            ts_ms: 1_780_000_000_000,
            fields: [("temperature_celsius".to_owned(), 21.5)].into(),
        };
        let json: serde_json::Value =
            serde_json::from_str(&encode(&WireEvent::Reading(&reading)).expect("encode"))
                .expect("json");
        assert_eq!(json["type"], "reading");
        assert_eq!(json["data"]["device_id"], "d1");
        let back: ReceivedEvent = serde_json::from_value(json).expect("decode");
        assert!(matches!(back, ReceivedEvent::Reading(r) if r == reading));
    }
}
