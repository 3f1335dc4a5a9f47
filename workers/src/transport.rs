//! The device transport (DESIGN §2): where the bridge's messages come from, and how it
//! tells their publishers that they are safe.
//!
//! A [`Transport`] is a stream of [`Message`]s, each with an acknowledgement handle the
//! bridge hands back once the message's batch is durable in every sink. Two implement it:
//! [`crate::mqtt::MqttTransport`] (a client of an external broker, shared subscription,
//! manual acknowledgements) and [`crate::ingest::IngestTransport`] (the embedded ingest
//! endpoint, which writes a publisher's PUBACK only then).

use std::future::Future;

use bytes::Bytes;

/// One received message.
#[derive(Debug)]
pub struct Message<A> {
    /// Its topic, e.g. `sensors/temperature_sensor/lab-temp-1`.
    pub topic: String,
    /// Its payload, as sent.
    pub payload: Bytes,
    /// What to hand to [`Transport::acknowledge`] once the message is durable.
    pub ack: A,
}

/// A source of device messages with acknowledgements.
pub trait Transport: Send {
    /// A message's acknowledgement handle.
    type Ack: Send;

    /// Waits for at least one message and appends up to `max` to `into`; returns how many,
    /// 0 once the stream has ended. Cancel-safe: a message is either appended or left for
    /// the next call.
    fn recv_many(
        &mut self,
        into: &mut Vec<Message<Self::Ack>>,
        max: usize,
    ) -> impl Future<Output = usize> + Send;

    /// Acknowledges messages whose batch is durable. Never waits: the loop that calls it
    /// is the one that takes the next messages, which a transport may be waiting on.
    fn acknowledge(&mut self, acks: impl IntoIterator<Item = Self::Ack>);

    /// After the last batch: hands over what is still owed (bounded) and lets go.
    fn close(self) -> impl Future<Output = ()> + Send;
}
