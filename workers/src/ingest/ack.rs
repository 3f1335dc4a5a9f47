//! Acknowledgement handles: how the pipeline tells a connection that a message is safe.
//!
//! Each connection owns one [`AckQueue`]; every QoS 1/2 message it hands out carries an
//! [`Ack`] pointing at it (an `Arc` clone and a packet id: no allocation per message).
//! [`Ack::ack`] pushes the packet id and wakes the connection, which writes the PUBACK.
//! It never waits: the pipeline acknowledges from the same loop that reads the next
//! messages, and a waiting acknowledgement could close a circle with a connection that
//! is itself waiting for that loop to take its next message (the deadlock the bridge's
//! `PendingAcks` note describes). The queue cannot grow without bound: a connection stops
//! reading once its window of unacknowledged messages is full, so at most that many ids
//! are ever queued.

use std::sync::{Arc, Mutex, PoisonError};

use rumqttc::mqttbytes::QoS;
use tokio::sync::Notify;

use super::protocol::{Reply, delivered_reply};

/// A connection's acknowledgements, filled by the pipeline, drained by the connection.
#[derive(Debug, Default)]
pub(crate) struct AckQueue {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct State {
    ready: Vec<Reply>,
    /// A message was dropped unacknowledged: the pipeline will not confirm it.
    abandoned: bool,
}

impl AckQueue {
    /// Moves the acknowledgements owed so far into `into` (which the caller reuses);
    /// false when a message was abandoned.
    pub(crate) fn take(&self, into: &mut Vec<Reply>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut state.ready, into);
        !state.abandoned
    }

    /// Resolves when an acknowledgement (or an abandonment) arrives; one that arrived
    /// since the last call resolves it at once.
    pub(crate) async fn changed(&self) {
        self.wake.notified().await;
    }

    fn push(&self, reply: Reply) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ready
            .push(reply);
        self.wake.notify_one();
    }

    fn abandon(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abandoned = true;
        self.wake.notify_one();
    }
}

/// The acknowledgement of one message: call [`Ack::ack`] once the message is durable.
///
/// Dropping it without acknowledging tells the connection that the pipeline will not
/// confirm the message: the connection is closed, so the publisher resends everything it
/// has not had acknowledged (MQTT 3.1.1 §4.4) once it reconnects. For QoS 0 it is a no-op.
#[derive(Debug)]
#[must_use = "a message is acknowledged to its publisher only when `ack` is called"]
pub struct Ack {
    queue: Option<Arc<AckQueue>>,
    reply: Option<Reply>,
}

impl Ack {
    pub(crate) fn new(queue: &Arc<AckQueue>, qos: QoS, pkid: u16) -> Self {
        let reply = delivered_reply(qos, pkid);
        Self {
            queue: reply.is_some().then(|| queue.clone()),
            reply,
        }
    }

    /// Whether the publisher waits for this acknowledgement (QoS 1 or 2).
    pub fn is_owed(&self) -> bool {
        self.reply.is_some()
    }

    /// Sends the PUBACK (PUBREC for QoS 2) on the message's connection. Never blocks; if
    /// the connection is gone, the publisher resends on its next one.
    pub fn ack(mut self) {
        if let (Some(queue), Some(reply)) = (self.queue.take(), self.reply) {
            queue.push(reply);
        }
    }
}

impl Ack {
    /// Lets go without acknowledging and without abandoning: for a connection that is
    /// closing anyway and drops a message it never handed over.
    pub(crate) fn forget(mut self) {
        self.queue.take();
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_queue_in_order_and_abandonment_is_reported() {
        let queue = Arc::new(AckQueue::default());
        let one = Ack::new(&queue, QoS::AtLeastOnce, 1);
        let two = Ack::new(&queue, QoS::ExactlyOnce, 2);
        let none = Ack::new(&queue, QoS::AtMostOnce, 0);
        assert!(one.is_owed() && two.is_owed() && !none.is_owed());
        one.ack();
        two.ack();
        drop(none);
        let mut ready = Vec::new();
        assert!(queue.take(&mut ready), "a QoS 0 drop abandons nothing");
        assert_eq!(ready, [Reply::PubAck(1), Reply::PubRec(2)]);
        let mut again = Vec::new();
        assert!(queue.take(&mut again) && again.is_empty());
        drop(Ack::new(&queue, QoS::AtLeastOnce, 3));
        assert!(
            !queue.take(&mut again),
            "an unacknowledged QoS 1 drop is reported"
        );
    }
}
