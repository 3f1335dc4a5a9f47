//! The MQTT 3.1.1 rules of the ingest endpoint, without I/O: one frame in, what it asks
//! for out. Framing and field decoding are rumqttc's own v4 codec
//! (`rumqttc::mqttbytes::v4`); this module adds what a *server* must check that a client
//! codec does not (packet order, topic rules, the protocol level, packets a server never
//! expects) and encodes the few replies the endpoint sends.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, QoS};

/// What a well-formed frame asks of the endpoint.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// CONNECT at protocol level 4 (MQTT 3.1.1).
    Connect {
        client_id: String,
        clean_session: bool,
        keep_alive_secs: u16,
        /// Username and password, when the client sent them.
        login: Option<(String, String)>,
    },
    /// A PUBLISH whose topic is a valid topic name.
    Publish(Publish),
    /// PINGREQ.
    PingReq,
    /// PUBREL: the second half of a QoS 2 exchange.
    PubRel(u16),
    /// SUBSCRIBE, with the number of filters (each is refused).
    Subscribe { pkid: u16, filters: usize },
    /// UNSUBSCRIBE.
    Unsubscribe(u16),
    /// DISCONNECT.
    Disconnect,
}

/// Why a connection is closed without serving the frame. Each maps to a metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// The bytes are not an MQTT packet.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// The packet announces more than the endpoint's maximum packet size.
    #[error("packet of {size} bytes is larger than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    /// A CONNECT at a protocol level other than 4 (3.1.1); answered with CONNACK 0x01.
    #[error("MQTT protocol level {0} is not supported (only 3.1.1, level 4)")]
    UnsupportedProtocol(u8),
    /// A packet a client may not send here (a second CONNECT, a PUBACK for a message the
    /// endpoint never sent, anything before CONNECT, …).
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    /// A PUBLISH topic that is empty or holds a wildcard or NUL (MQTT-3.3.2-2, 4.7.3).
    #[error("invalid topic name {0:?}")]
    BadTopic(String),
}

impl Violation {
    /// The metric label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedProtocol(_) => "unsupported_protocol",
            Self::Unexpected(_) => "protocol_violation",
            Self::BadTopic(_) => "bad_topic",
        }
    }
}

/// Decodes the next frame of `buf`, if a whole one is there. `connected` says whether a
/// CONNECT was accepted on this connection; `max_packet` bounds the remaining length and
/// is checked as soon as the fixed header is in, before the body is read.
pub(crate) fn decode(
    buf: &mut BytesMut,
    max_packet: usize,
    connected: bool,
) -> Result<Option<Inbound>, Violation> {
    match mqttbytes::check(buf.iter(), max_packet) {
        Ok(_) => {}
        Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
            return Err(Violation::TooLarge {
                size,
                max: max_packet,
            });
        }
        Err(e) => return Err(Violation::Malformed(e.to_string())),
    }
    let kind = buf.first().map_or(0, |b| b >> 4);
    // rumqttc's v4 reader reads a level-5 CONNECT as if it were 3.1.1 (its properties as
    // the client id): look at the level first.
    if kind == 1
        && let Some(level) = connect_level(buf)
        && level != 4
    {
        return Err(Violation::UnsupportedProtocol(level));
    }
    let packet = Packet::read(buf, max_packet).map_err(|e| match e {
        mqttbytes::Error::InvalidProtocolLevel(level) => Violation::UnsupportedProtocol(level),
        e => Violation::Malformed(e.to_string()),
    })?;
    if !connected && !matches!(packet, Packet::Connect(_)) {
        return Err(Violation::Unexpected("packet before CONNECT"));
    }
    let inbound = match packet {
        Packet::Connect(_) if connected => return Err(Violation::Unexpected("second CONNECT")),
        Packet::Connect(connect) => Inbound::Connect {
            client_id: connect.client_id,
            clean_session: connect.clean_session,
            keep_alive_secs: connect.keep_alive,
            login: connect.login.map(|l| (l.username, l.password)),
        },
        Packet::Publish(publish) => {
            let topic = &publish.topic;
            if topic.is_empty() || topic.contains(['+', '#', '\0']) {
                return Err(Violation::BadTopic(topic.clone()));
            }
            Inbound::Publish(publish)
        }
        Packet::PingReq => Inbound::PingReq,
        Packet::PubRel(rel) => Inbound::PubRel(rel.pkid),
        Packet::Subscribe(subscribe) => Inbound::Subscribe {
            pkid: subscribe.pkid,
            filters: subscribe.filters.len(),
        },
        Packet::Unsubscribe(unsubscribe) => Inbound::Unsubscribe(unsubscribe.pkid),
        Packet::Disconnect => Inbound::Disconnect,
        // The endpoint publishes nothing, so it is owed no acknowledgement.
        Packet::PubAck(_) => return Err(Violation::Unexpected("PUBACK")),
        Packet::PubRec(_) => return Err(Violation::Unexpected("PUBREC")),
        Packet::PubComp(_) => return Err(Violation::Unexpected("PUBCOMP")),
        Packet::ConnAck(_) => return Err(Violation::Unexpected("CONNACK")),
        Packet::SubAck(_) => return Err(Violation::Unexpected("SUBACK")),
        Packet::UnsubAck(_) => return Err(Violation::Unexpected("UNSUBACK")),
        Packet::PingResp => return Err(Violation::Unexpected("PINGRESP")),
    };
    Ok(Some(inbound))
}

/// The protocol level byte of the complete CONNECT frame at the start of `buf`.
fn connect_level(buf: &[u8]) -> Option<u8> {
    // Fixed header: the type byte, then 1–4 bytes of remaining length (7 bits each, the
    // high bit saying another follows); `check` has validated both.
    let length_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let name_at = 1 + length_bytes;
    let name_len = u16::from_be_bytes([*buf.get(name_at)?, *buf.get(name_at + 1)?]) as usize;
    buf.get(name_at + 2 + name_len).copied()
}

/// A reply the endpoint sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// CONNACK with this return code and session-present flag.
    ConnAck(ConnectReturnCode, bool),
    /// PUBACK (QoS 1 delivered).
    PubAck(u16),
    /// PUBREC (QoS 2 delivered).
    PubRec(u16),
    /// PUBCOMP (answer to PUBREL).
    PubComp(u16),
    /// PINGRESP.
    PingResp,
    /// SUBACK refusing every one of `filters` filters.
    SubAckRefused { pkid: u16, filters: usize },
    /// UNSUBACK.
    UnsubAck(u16),
}

/// Appends `reply` to `out`.
pub(crate) fn encode(reply: Reply, out: &mut BytesMut) {
    // These packets are a few bytes long (a SUBACK at most the size of the SUBSCRIBE it
    // answers) and their fields are all valid by construction: writing cannot fail.
    let _ = match reply {
        Reply::ConnAck(code, session_present) => ConnAck::new(code, session_present).write(out),
        Reply::PubAck(pkid) => PubAck::new(pkid).write(out),
        Reply::PubRec(pkid) => PubRec::new(pkid).write(out),
        Reply::PubComp(pkid) => PubComp::new(pkid).write(out),
        Reply::PingResp => PingResp.write(out),
        Reply::SubAckRefused { pkid, filters } => {
            SubAck::new(pkid, vec![SubscribeReasonCode::Failure; filters]).write(out)
        }
        Reply::UnsubAck(pkid) => UnsubAck::new(pkid).write(out),
    };
}

/// The acknowledgement a delivered PUBLISH of `qos` is owed, if any.
pub(crate) fn delivered_reply(qos: QoS, pkid: u16) -> Option<Reply> {
    match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(Reply::PubAck(pkid)),
        QoS::ExactlyOnce => Some(Reply::PubRec(pkid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    /// CONNECT, level 4, clean session, keep-alive 60, client id "c".
    const CONNECT: &[u8] = &[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c',
    ];

    #[test]
    fn a_connect_then_a_publish() {
        let mut buf = frame(CONNECT);
        let connect = decode(&mut buf, 1024, false).unwrap();
        assert!(matches!(
            connect,
            Some(Inbound::Connect { ref client_id, clean_session: true, keep_alive_secs: 60, login: None }) if client_id == "c"
        ));
        assert!(buf.is_empty());
        let mut buf = frame(&[0x32, 7, 0, 3, b'a', b'/', b'b', 0, 9]);
        match decode(&mut buf, 1024, true).unwrap() {
            Some(Inbound::Publish(p)) => {
                assert_eq!(
                    (p.topic.as_str(), p.qos, p.pkid),
                    ("a/b", QoS::AtLeastOnce, 9)
                );
                assert!(p.payload.is_empty());
            }
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }

    #[test]
    fn an_incomplete_frame_waits_for_more() {
        for cut in 0..CONNECT.len() {
            let mut buf = frame(&CONNECT[..cut]);
            assert!(
                decode(&mut buf, 1024, false).unwrap().is_none(),
                "cut at {cut}"
            );
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn order_topics_sizes_and_levels_are_enforced() {
        let publish = [0x30, 5, 0, 3, b'a', b'/', b'b'];
        assert_eq!(
            decode(&mut frame(&publish), 1024, false).unwrap_err(),
            Violation::Unexpected("packet before CONNECT")
        );
        assert_eq!(
            decode(&mut frame(CONNECT), 1024, true).unwrap_err(),
            Violation::Unexpected("second CONNECT")
        );
        for topic in [&b"a/+"[..], b"#", b"a\0b"] {
            let mut bytes = vec![0x30, 2 + topic.len() as u8, 0, topic.len() as u8];
            bytes.extend_from_slice(topic);
            assert!(matches!(
                decode(&mut frame(&bytes), 1024, true),
                Err(Violation::BadTopic(_))
            ));
        }
        assert!(matches!(
            decode(&mut frame(&[0x30, 2, 0, 0]), 1024, true),
            Err(Violation::BadTopic(_))
        ));
        // Remaining length 16,384 announced in three bytes: refused from the header alone.
        assert_eq!(
            decode(&mut frame(&[0x30, 0x80, 0x80, 0x01]), 1024, true).unwrap_err(),
            Violation::TooLarge {
                size: 16_384,
                max: 1024
            }
        );
        let mut v5 = CONNECT.to_vec();
        v5[8] = 5;
        assert_eq!(
            decode(&mut frame(&v5), 1024, false).unwrap_err(),
            Violation::UnsupportedProtocol(5)
        );
        let mut v3 = CONNECT.to_vec();
        v3[8] = 3;
        assert_eq!(
            decode(&mut frame(&v3), 1024, false).unwrap_err(),
            Violation::UnsupportedProtocol(3)
        );
        assert_eq!(
            decode(&mut frame(&[0x40, 2, 0, 1]), 1024, true).unwrap_err(),
            Violation::Unexpected("PUBACK")
        );
        // Five length bytes, a QoS of 3, a zero packet id: malformed.
        for bad in [
            &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..],
            &[0x36, 5, 0, 1, b'a', 0, 1],
            &[0x32, 5, 0, 1, b'a', 0, 0],
            &[0xf0, 0],
        ] {
            assert!(
                matches!(
                    decode(&mut frame(bad), usize::MAX, true),
                    Err(Violation::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn replies_are_the_bytes_the_spec_says() {
        let mut out = BytesMut::new();
        encode(Reply::ConnAck(ConnectReturnCode::Success, true), &mut out);
        encode(Reply::PubAck(0x0102), &mut out);
        encode(Reply::PubRec(7), &mut out);
        encode(Reply::PubComp(7), &mut out);
        encode(Reply::PingResp, &mut out);
        encode(
            Reply::SubAckRefused {
                pkid: 3,
                filters: 2,
            },
            &mut out,
        );
        encode(Reply::UnsubAck(4), &mut out);
        assert_eq!(
            &out[..],
            &[
                0x20, 2, 1, 0, // CONNACK
                0x40, 2, 1, 2, // PUBACK
                0x50, 2, 0, 7, // PUBREC
                0x70, 2, 0, 7, // PUBCOMP
                0xd0, 0, // PINGRESP
                0x90, 4, 0, 3, 0x80, 0x80, // SUBACK, two failures
                0xb0, 2, 0, 4, // UNSUBACK
            ][..]
        );
    }
}
