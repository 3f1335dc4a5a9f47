//! A sensor reading, and the validation that turns an MQTT message into one.
//!
//! The wire format is DESIGN §3: topic `sensors/{device_type}/{device_id}`, a JSON object
//! with `device_id`, optional `device_type`, `location` and `timestamp`, numeric or boolean
//! fields at the top level, and a `meta` object whose fields become `meta_<name>`.
//! Everything that is not acceptable becomes a [`Reject`] with a machine-readable reason.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest accepted device id, device type, field name and location, in bytes.
pub const MAX_ID_LEN: usize = 128;
const MAX_TYPE_LEN: usize = 64;
const MAX_FIELD_LEN: usize = 64;
const MAX_LOCATION_LEN: usize = 100;
/// Most fields one reading may carry; more is a hostile or broken device.
const MAX_FIELDS: usize = 64;

/// One normalised reading: what flows through the event log and into the stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Device id: 1–128 characters of `[A-Za-z0-9._:-]`.
    pub device_id: String,
    /// Device type, e.g. `temperature_sensor`; the InfluxDB measurement.
    pub device_type: String,
    /// Where the device is, when it said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Reading time, unix milliseconds.
    #[serde(rename = "timestamp", with = "rfc3339_ms")]
    pub ts_ms: i64,
    /// Every numeric field of the payload (booleans as 0/1, `meta.x` as `meta_x`).
    pub fields: BTreeMap<String, f64>,
}

impl Reading {
    /// The value of one field, if the reading carries it.
    pub fn field(&self, name: &str) -> Option<f64> {
        self.fields.get(name).copied()
    }

    /// The reading time as RFC 3339 with milliseconds, e.g. `2026-05-29T10:30:00.000Z`.
    pub fn timestamp(&self) -> String {
        format_ts(self.ts_ms)
    }
}

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn format_ts(ts_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp into unix milliseconds.
pub fn parse_ts(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(ts_ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ts(*ts_ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_ts(&text).ok_or_else(|| D::Error::custom(format!("bad timestamp {text:?}")))
    }
}

/// The earliest instant every store can hold, unix milliseconds: InfluxDB keeps
/// nanoseconds in an i64, from 1677-09-21T00:12:43.145224194Z.
pub const EARLIEST_TS_MS: i64 = -9_223_372_036_854;
/// The latest instant every store can hold, unix milliseconds (2262-04-11T23:47:16.854Z).
pub const LATEST_TS_MS: i64 = 9_223_372_036_854;
/// The default [`Limits::max_age_ms`]: 7 days.
pub const DEFAULT_MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;

/// Limits applied to incoming payloads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted payload, in bytes.
    pub max_payload_bytes: usize,
    /// How far in the future a timestamp may be (clock skew allowance), in milliseconds.
    pub max_future_skew_ms: i64,
    /// How far in the past a timestamp may be, in milliseconds; older readings are
    /// rejected as `too_old` (a store's retention would refuse or drop them, and a
    /// replayed backlog that old is better looked at by a person). `None`: no limit
    /// beyond what the stores can hold ([`EARLIEST_TS_MS`]).
    pub max_age_ms: Option<i64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 16 * 1024,
            max_future_skew_ms: 5 * 60 * 1000,
            max_age_ms: Some(DEFAULT_MAX_AGE_MS),
        }
    }
}

/// Why a message was rejected; the label of the reject metric and the DLQ header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The topic is not `sensors/{device_type}/{device_id}`.
    BadTopic,
    /// The payload is larger than the configured limit.
    TooLarge,
    /// The payload is not a JSON object.
    NotJson,
    /// The payload carries NaN or an infinity.
    NonFinite,
    /// `device_id` is missing.
    MissingDeviceId,
    /// `device_id` or `device_type` breaks the id rule.
    BadDeviceId,
    /// The payload's device id or type differs from the topic's.
    TopicMismatch,
    /// The timestamp does not parse.
    BadTimestamp,
    /// The timestamp is further in the future than the skew allowance.
    FutureTimestamp,
    /// No numeric field, a field name that is not `[A-Za-z0-9_]`, or too many fields.
    BadFields,
    /// The timestamp is older than the configured maximum age.
    TooOld,
    /// A text field (`location`) carries control characters (a NUL byte, a line feed, …).
    BadText,
    /// The device already has another type (declared, or first seen): a reading under a
    /// second type would land in another measurement and confuse its alerts.
    TypeMismatch,
    /// A device no fleet declares, beyond the cap of undeclared devices.
    TooManyDevices,
    /// A new `location` for a device that already has the most locations allowed (each
    /// is a time series).
    TooManyLocations,
    /// A store refused the reading for its content (its reason is in the `detail`
    /// header, the store in `sink`); the rest of its batch was written.
    SinkRefused,
}

impl RejectReason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [RejectReason; 16] = [
        Self::BadTopic,
        Self::TooLarge,
        Self::NotJson,
        Self::NonFinite,
        Self::MissingDeviceId,
        Self::BadDeviceId,
        Self::TopicMismatch,
        Self::BadTimestamp,
        Self::FutureTimestamp,
        Self::BadFields,
        Self::TooOld,
        Self::BadText,
        Self::TypeMismatch,
        Self::TooManyDevices,
        Self::TooManyLocations,
        Self::SinkRefused,
    ];

    /// The snake_case name used in metrics, logs and the dead-letter header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadTopic => "bad_topic",
            Self::TooLarge => "too_large",
            Self::NotJson => "not_json",
            Self::NonFinite => "non_finite",
            Self::MissingDeviceId => "missing_device_id",
            Self::BadDeviceId => "bad_device_id",
            Self::TopicMismatch => "topic_mismatch",
            Self::BadTimestamp => "bad_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::BadFields => "bad_fields",
            Self::TooOld => "too_old",
            Self::BadText => "bad_text",
            Self::TypeMismatch => "type_mismatch",
            Self::TooManyDevices => "too_many_devices",
            Self::TooManyLocations => "too_many_locations",
            Self::SinkRefused => "sink_refused",
        }
    }
}

/// A rejected message: the reason, and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Reject {
    /// The category.
    pub reason: RejectReason,
    /// What exactly was wrong.
    pub detail: String,
}

/// A rejection with its reason and detail.
pub fn reject(reason: RejectReason, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
    }
}

/// True when `id` satisfies the device id rule: 1–128 of `[A-Za-z0-9._:-]`.
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// True when `name` is a valid device type or field name: `[A-Za-z0-9_]`, not empty.
pub fn is_valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// True when `device_type` is a valid device type name.
pub fn is_valid_device_type(device_type: &str) -> bool {
    is_valid_name(device_type, MAX_TYPE_LEN)
}

/// Splits `sensors/{device_type}/{device_id}` into its two parts.
pub fn parse_topic(topic: &str) -> Result<(&str, &str), Reject> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("sensors"), Some(device_type), Some(device_id), None) => {
            if !is_valid_device_type(device_type) {
                return Err(reject(
                    RejectReason::BadDeviceId,
                    format!("device type {device_type:?} in the topic is not [A-Za-z0-9_]{{1,64}}"),
                ));
            }
            if !is_valid_device_id(device_id) {
                return Err(reject(
                    RejectReason::BadDeviceId,
                    format!("device id {device_id:?} in the topic is not [A-Za-z0-9._:-]{{1,128}}"),
                ));
            }
            Ok((device_type, device_id))
        }
        _ => Err(reject(
            RejectReason::BadTopic,
            format!("topic {topic:?} is not sensors/{{device_type}}/{{device_id}}"),
        )),
    }
}

/// Validates and normalises one MQTT message into a [`Reading`].
///
/// `now_ms` is the receive time: it stamps readings that carry no timestamp and bounds
/// how far in the future a timestamp may be.
pub fn parse_payload(
    topic: &str,
    payload: &[u8],
    now_ms: i64,
    limits: &Limits,
) -> Result<Reading, Reject> {
    let (topic_type, topic_id) = parse_topic(topic)?;
    if payload.len() > limits.max_payload_bytes {
        return Err(reject(
            RejectReason::TooLarge,
            format!(
                "payload is {} bytes, the limit is {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let object = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(reject(
                RejectReason::NotJson,
                "payload is not a JSON object",
            ));
        }
        Err(e) => return Err(classify_json_error(payload, e)),
    };

    let device_id = match object.get("device_id") {
        Some(Value::String(id)) => id.as_str(),
        Some(_) => {
            return Err(reject(
                RejectReason::BadDeviceId,
                "device_id is not a string",
            ));
        }
        None => {
            return Err(reject(
                RejectReason::MissingDeviceId,
                "device_id is missing",
            ));
        }
    };
    if device_id != topic_id {
        return Err(reject(
            RejectReason::TopicMismatch,
            format!("payload device_id {device_id:?} differs from the topic's {topic_id:?}"),
        ));
    }
    if let Some(device_type) = object.get("device_type")
        && device_type.as_str() != Some(topic_type)
    {
        return Err(reject(
            RejectReason::TopicMismatch,
            format!("payload device_type {device_type} differs from the topic's {topic_type:?}"),
        ));
    }
    let location = match object.get("location") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) if l.len() > MAX_LOCATION_LEN => {
            return Err(reject(
                RejectReason::BadFields,
                format!("location is longer than {MAX_LOCATION_LEN} bytes"),
            ));
        }
        Some(Value::String(l)) => {
            check_text("location", l)?;
            Some(l.clone())
        }
        Some(_) => return Err(reject(RejectReason::BadFields, "location is not a string")),
    };
    let ts_ms = match object.get("timestamp") {
        None | Some(Value::Null) => now_ms,
        Some(value) => parse_timestamp_value(value)?,
    };
    if ts_ms > now_ms.saturating_add(limits.max_future_skew_ms) {
        return Err(reject(
            RejectReason::FutureTimestamp,
            format!(
                "timestamp {} is more than {} s ahead of the receive time",
                format_ts(ts_ms),
                limits.max_future_skew_ms / 1000
            ),
        ));
    }

    if !(EARLIEST_TS_MS..=LATEST_TS_MS).contains(&ts_ms) {
        return Err(reject(
            RejectReason::BadTimestamp,
            format!(
                "timestamp {} is outside what the stores can hold \
                 (1677-09-21T00:12:43Z to 2262-04-11T23:47:16Z)",
                describe_ts(ts_ms)
            ),
        ));
    }
    if let Some(max_age_ms) = limits.max_age_ms
        && ts_ms < now_ms.saturating_sub(max_age_ms)
    {
        return Err(reject(
            RejectReason::TooOld,
            format!(
                "timestamp {} is more than {} s before the receive time (the bridge's \
                 --max-age)",
                format_ts(ts_ms),
                max_age_ms / 1000
            ),
        ));
    }

    let mut fields = BTreeMap::new();
    for (key, value) in &object {
        match key.as_str() {
            "device_id" | "device_type" | "location" | "timestamp" => {}
            "meta" => {
                if let Value::Object(meta) = value {
                    for (meta_key, meta_value) in meta {
                        add_field(&mut fields, format!("meta_{meta_key}"), meta_value)?;
                    }
                }
            }
            _ => add_field(&mut fields, key.clone(), value)?,
        }
    }
    if fields.is_empty() {
        return Err(reject(
            RejectReason::BadFields,
            "the reading carries no numeric field",
        ));
    }
    if fields.len() > MAX_FIELDS {
        return Err(reject(
            RejectReason::BadFields,
            format!(
                "the reading carries {} fields, the limit is {MAX_FIELDS}",
                fields.len()
            ),
        ));
    }
    Ok(Reading {
        device_id: device_id.to_owned(),
        device_type: topic_type.to_owned(),
        location,
        ts_ms,
        fields,
    })
}

/// Refuses text with control characters: a NUL byte is refused by PostgreSQL, a line
/// feed cannot be written as an InfluxDB tag, and none belongs in a label a person reads.
pub fn check_text(what: &str, text: &str) -> Result<(), Reject> {
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(reject(
            RejectReason::BadText,
            format!("{what} contains the control character {:?}", c),
        )),
        None => Ok(()),
    }
}

/// A timestamp for a message: RFC 3339 when it is one, else the raw milliseconds.
fn describe_ts(ts_ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ts_ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format!("{ts_ms} ms since the epoch"),
    }
}

/// Adds a numeric or boolean JSON value as a field; other kinds (strings, arrays) are
/// descriptive and skipped.
fn add_field(
    fields: &mut BTreeMap<String, f64>,
    name: String,
    value: &Value,
) -> Result<(), Reject> {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => return Ok(()),
    };
    if !is_valid_name(&name, MAX_FIELD_LEN) {
        return Err(reject(
            RejectReason::BadFields,
            format!("field name {name:?} is not [A-Za-z0-9_]{{1,64}}"),
        ));
    }
    match number {
        Some(v) if v.is_finite() => {
            fields.insert(name, v);
            Ok(())
        }
        _ => Err(reject(
            RejectReason::NonFinite,
            format!("field {name:?} is not a finite number"),
        )),
    }
}

/// A timestamp is RFC 3339 text, or a number of seconds (or milliseconds, when larger
/// than any plausible number of seconds) since the epoch.
fn parse_timestamp_value(value: &Value) -> Result<i64, Reject> {
    const MS_THRESHOLD: f64 = 100_000_000_000.0; // year 5138 in seconds, 1973 in ms
    match value {
        Value::String(text) => parse_ts(text).ok_or_else(|| {
            reject(
                RejectReason::BadTimestamp,
                format!("timestamp {text:?} is not RFC 3339 (e.g. 2026-05-29T10:30:00Z)"),
            )
        }),
        Value::Number(n) => match n.as_f64() {
            Some(v) if v.is_finite() && v >= 0.0 => {
                let ms = if v >= MS_THRESHOLD { v } else { v * 1000.0 };
                Ok(ms as i64)
            }
            _ => Err(reject(
                RejectReason::BadTimestamp,
                format!("timestamp {n} is out of range"),
            )),
        },
        other => Err(reject(
            RejectReason::BadTimestamp,
            format!("timestamp {other} is neither RFC 3339 text nor epoch seconds"),
        )),
    }
}

/// JSON has no NaN or infinity; a device that writes them gets a reason of its own so
/// the fix is obvious, the rest is plain "not JSON".
fn classify_json_error(payload: &[u8], error: serde_json::Error) -> Reject {
    let text = String::from_utf8_lossy(payload);
    let out_of_range = error.to_string().contains("out of range");
    if out_of_range || text.contains("NaN") || text.contains("Infinity") {
        reject(
            RejectReason::NonFinite,
            format!("payload carries NaN or infinity: {error}"),
        )
    } else {
        reject(
            RejectReason::NotJson,
            format!("payload is not valid JSON: {error}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_100_000_000; // 2026-05-30, a day after the design's example

    fn parse(topic: &str, payload: &str) -> Result<Reading, Reject> {
        parse_payload(topic, payload.as_bytes(), NOW, &Limits::default())
    }

    fn reason(topic: &str, payload: &str) -> RejectReason {
        parse(topic, payload)
            .expect_err("should be rejected")
            .reason
    }

    #[test]
    fn parses_the_design_payload() {
        let r = parse(
            "sensors/temperature_sensor/7d9c2f1e-4b1a",
            r#"{"device_id":"7d9c2f1e-4b1a","device_type":"temperature_sensor","location":"Server Room",
                "timestamp":"2026-05-29T10:30:00Z","temperature_celsius":22.5,"temperature_fahrenheit":72.5,
                "meta":{"battery_level":87,"signal_strength":-61}}"#,
        )
        .expect("valid");
        assert_eq!(r.device_id, "7d9c2f1e-4b1a");
        assert_eq!(r.device_type, "temperature_sensor");
        assert_eq!(r.location.as_deref(), Some("Server Room"));
        assert_eq!(r.timestamp(), "2026-05-29T10:30:00.000Z");
        assert_eq!(r.field("temperature_celsius"), Some(22.5));
        assert_eq!(r.field("meta_battery_level"), Some(87.0));
        assert_eq!(r.field("meta_signal_strength"), Some(-61.0));
        assert_eq!(r.fields.len(), 4);
    }

    #[test]
    fn booleans_become_numbers_and_strings_are_skipped() {
        let r = parse(
            "sensors/motion_sensor/m-1",
            r#"{"device_id":"m-1","motion":true,"zone":"lobby","count":3}"#,
        )
        .expect("valid");
        assert_eq!(r.field("motion"), Some(1.0));
        assert_eq!(r.field("count"), Some(3.0));
        assert_eq!(r.field("zone"), None);
        assert_eq!(r.device_type, "motion_sensor");
        assert_eq!(
            r.ts_ms, NOW,
            "a reading without timestamp gets the receive time"
        );
    }

    #[test]
    fn epoch_seconds_and_millis_and_offsets() {
        let s = parse(
            "sensors/t/a",
            r#"{"device_id":"a","v":1,"timestamp":1780000000}"#,
        )
        .unwrap();
        assert_eq!(s.ts_ms, 1_780_000_000_000);
        let ms = parse(
            "sensors/t/a",
            r#"{"device_id":"a","v":1,"timestamp":1780000000123}"#,
        )
        .unwrap();
        assert_eq!(ms.ts_ms, 1_780_000_000_123);
        let off = parse(
            "sensors/t/a",
            r#"{"device_id":"a","v":1,"timestamp":"2026-05-29T12:30:00+02:00"}"#,
        )
        .unwrap();
        assert_eq!(off.timestamp(), "2026-05-29T10:30:00.000Z");
    }

    #[test]
    fn ids_real_fleets_use_are_accepted() {
        for id in ["AA:BB:CC:DD:EE:FF", "SN-2026.0001", "x", &"a".repeat(128)] {
            let payload = format!(r#"{{"device_id":"{id}","v":1}}"#);
            assert!(parse(&format!("sensors/t/{id}"), &payload).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_carry_the_right_reason() {
        assert_eq!(
            reason("sensors/t", r#"{"device_id":"a","v":1}"#),
            RejectReason::BadTopic
        );
        assert_eq!(
            reason("other/t/a", r#"{"device_id":"a","v":1}"#),
            RejectReason::BadTopic
        );
        assert_eq!(
            reason("sensors/t/a/b", r#"{"device_id":"a","v":1}"#),
            RejectReason::BadTopic
        );
        assert_eq!(reason("sensors/t/a", "not json"), RejectReason::NotJson);
        assert_eq!(reason("sensors/t/a", "[1,2]"), RejectReason::NotJson);
        assert_eq!(
            reason("sensors/t/a", r#"{"device_id":"a","v":NaN}"#),
            RejectReason::NonFinite
        );
        assert_eq!(
            reason("sensors/t/a", r#"{"device_id":"a","v":1e999}"#),
            RejectReason::NonFinite
        );
        assert_eq!(
            reason("sensors/t/a", r#"{"v":1}"#),
            RejectReason::MissingDeviceId
        );
        assert_eq!(
            reason("sensors/t/a", r#"{"device_id":7,"v":1}"#),
            RejectReason::BadDeviceId
        );
        assert_eq!(
            reason("sensors/t/a b", r#"{"device_id":"a b","v":1}"#),
            RejectReason::BadDeviceId
        );
        assert_eq!(
            reason("sensors/t/a", r#"{"device_id":"b","v":1}"#),
            RejectReason::TopicMismatch
        );
        assert_eq!(
            reason(
                "sensors/t/a",
                r#"{"device_id":"a","device_type":"u","v":1}"#
            ),
            RejectReason::TopicMismatch
        );
        assert_eq!(
            reason(
                "sensors/t/a",
                r#"{"device_id":"a","v":1,"timestamp":"yesterday"}"#
            ),
            RejectReason::BadTimestamp
        );
        assert_eq!(
            reason(
                "sensors/t/a",
                r#"{"device_id":"a","v":1,"timestamp":"2099-01-01T00:00:00Z"}"#
            ),
            RejectReason::FutureTimestamp
        );
        assert_eq!(
            reason("sensors/t/a", r#"{"device_id":"a","s":"x"}"#),
            RejectReason::BadFields
        );
        assert_eq!(
            reason("sensors/t/a", r#"{"device_id":"a","b-c":1}"#),
            RejectReason::BadFields
        );
    }

    #[test]
    fn timestamps_are_bounded_below_by_the_stores_and_the_maximum_age() {
        let at = |ts: &str| format!(r#"{{"device_id":"a","v":1,"timestamp":"{ts}"}}"#);
        // The issue's reproduction: InfluxDB cannot hold year 1000.
        let ancient = parse("sensors/t/a", &at("1000-01-01T00:00:00Z")).expect_err("year 1000");
        assert_eq!(ancient.reason, RejectReason::BadTimestamp);
        assert!(ancient.detail.contains("1677-09-21"), "{}", ancient.detail);
        // Within InfluxDB's range but older than 7 days.
        assert_eq!(
            reason("sensors/t/a", &at("2026-05-22T00:00:00Z")),
            RejectReason::TooOld
        );
        assert!(parse("sensors/t/a", &at("2026-05-24T00:00:00Z")).is_ok());
        // Epoch 0 as a number is too old too; without a maximum age it is stored.
        let epoch = r#"{"device_id":"a","v":1,"timestamp":0}"#;
        assert_eq!(reason("sensors/t/a", epoch), RejectReason::TooOld);
        let no_age = Limits {
            max_age_ms: None,
            ..Limits::default()
        };
        assert!(parse_payload("sensors/t/a", epoch.as_bytes(), NOW, &no_age).is_ok());
        let ancient = at("1000-01-01T00:00:00Z");
        assert_eq!(
            parse_payload("sensors/t/a", ancient.as_bytes(), NOW, &no_age)
                .expect_err("still outside the stores' range")
                .reason,
            RejectReason::BadTimestamp
        );
        // The edges of the range themselves.
        let far = Limits {
            max_age_ms: None,
            max_future_skew_ms: i64::MAX / 2,
            ..Limits::default()
        };
        for (ms, ok) in [
            (EARLIEST_TS_MS, true),
            (EARLIEST_TS_MS - 1, false),
            (LATEST_TS_MS, true),
            (LATEST_TS_MS + 1, false),
        ] {
            let payload = at(&describe_ts(ms));
            let parsed = parse_payload("sensors/t/a", payload.as_bytes(), NOW, &far);
            assert_eq!(parsed.is_ok(), ok, "{ms}: {parsed:?}");
        }
    }

    #[test]
    fn control_characters_in_text_are_rejected() {
        for location in [
            "a\\u0000b",
            "line\\nfeed",
            "tab\\there",
            "del\\u007f",
            "c1\\u0085",
        ] {
            let payload = format!(r#"{{"device_id":"a","location":"{location}","v":1}}"#);
            assert_eq!(
                reason("sensors/t/a", &payload),
                RejectReason::BadText,
                "{location}"
            );
        }
        let fine = parse(
            "sensors/t/a",
            r#"{"device_id":"a","location":"Salle 4 — Étage 2, rack \"B\"","v":1}"#,
        )
        .expect("printable text of any script is fine");
        assert_eq!(
            fine.location.as_deref(),
            Some("Salle 4 — Étage 2, rack \"B\"")
        );
    }

    #[test]
    fn every_reason_has_a_distinct_name() {
        let names: std::collections::BTreeSet<&str> =
            RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), RejectReason::ALL.len());
        for reason in RejectReason::ALL {
            let json = serde_json::to_string(&reason).expect("serialises");
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }

    #[test]
    fn too_large_is_rejected_before_parsing() {
        let big = format!(
            r#"{{"device_id":"a","v":1,"pad":"{}"}}"#,
            "x".repeat(20_000)
        );
        assert_eq!(reason("sensors/t/a", &big), RejectReason::TooLarge);
    }

    #[test]
    fn wildcards_never_pass_as_ids() {
        for id in ["+", "#", "a/b", ""] {
            assert!(!is_valid_device_id(id), "{id:?}");
        }
    }

    #[test]
    fn normalised_json_round_trips() {
        let r = parse(
            "sensors/humidity_sensor/h1",
            r#"{"device_id":"h1","humidity_percent":45.2,"dew_point":10.1,"timestamp":"2026-05-29T10:30:00.250Z"}"#,
        )
        .unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(r#""timestamp":"2026-05-29T10:30:00.250Z""#),
            "{json}"
        );
        let back: Reading = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
