//! Property tests of payload parsing: whatever a device sends, `parse_payload` answers
//! without panicking, and what it accepts is what every store downstream can hold.
//!
//! Three kinds of input: arbitrary bytes, JSON objects built from hostile pieces (huge
//! numbers, deep nesting, control characters, type confusion, ids at the length limit),
//! and valid payloads with a few bytes mutated, which reach the deeper checks that random
//! bytes rarely get past. A valid payload parses back to the reading it was made from.
//!
//! Bounded: `PROPTEST_CASES` cases a property (the Makefile sets 4,096, proptest's own
//! default is 256); a long run sets more:
//! `PROPTEST_CASES=10000000 cargo test --release --locked --workspace --test payload_properties`
//! (figures in BENCHMARKS.md).

use std::collections::BTreeMap;

use proptest::prelude::*;
use sensorfleet_model::reading::{
    MAX_ID_LEN, format_ts, is_valid_device_id, is_valid_device_type, is_valid_name, parse_payload,
};
use sensorfleet_model::{Limits, Reading};
use serde_json::{Map, Number, Value};

const NOW: i64 = 1_780_100_000_000; // 2026-05-30

/// What every accepted reading must satisfy, whatever the input was.
fn assert_storable(topic_id: &str, topic_type: &str, reading: &Reading, limits: &Limits) {
    assert_eq!(reading.device_id, topic_id);
    assert_eq!(reading.device_type, topic_type);
    assert!(is_valid_device_id(&reading.device_id));
    assert!(is_valid_device_type(&reading.device_type));
    assert!(!reading.fields.is_empty() && reading.fields.len() <= 64);
    for (name, value) in &reading.fields {
        assert!(is_valid_name(name, 64), "field name {name:?}");
        assert!(value.is_finite(), "field {name} = {value}");
    }
    if let Some(location) = &reading.location {
        assert!(location.len() <= 100);
        assert!(!location.chars().any(char::is_control), "{location:?}");
    }
    assert!(reading.ts_ms <= NOW + limits.max_future_skew_ms);
    if let Some(max_age) = limits.max_age_ms {
        assert!(reading.ts_ms >= NOW - max_age);
    }
}

/// Parses and checks: accepted readings are storable, rejections say why.
fn check(topic: &str, payload: &[u8]) {
    let limits = Limits::default();
    match parse_payload(topic, payload, NOW, &limits) {
        Ok(reading) => {
            let mut parts = topic.split('/').skip(1);
            let topic_type = parts.next().expect("accepted topics have a type");
            let topic_id = parts.next().expect("accepted topics have an id");
            assert_storable(topic_id, topic_type, &reading, &limits);
        }
        Err(reject) => assert!(!reject.detail.is_empty(), "{:?}", reject.reason),
    }
}

fn device_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._:-]{1,12}",
        Just("d".repeat(MAX_ID_LEN)),
        Just("d".repeat(MAX_ID_LEN + 1)),
    ]
}

fn topic() -> impl Strategy<Value = (String, String, String)> {
    (
        prop_oneof!["[a-z_]{1,20}", Just("x".repeat(64)), Just("x".repeat(65))],
        device_id(),
    )
        .prop_map(|(device_type, id)| (format!("sensors/{device_type}/{id}"), device_type, id))
}

/// Text a device might put anywhere: plain words, control characters, non-ASCII,
/// quotes and backslashes, NaN spellings.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,20}",
        "\\PC{0,12}",
        "[\\x00-\\x1f\\x7f]{1,4}",
        Just("NaN".to_owned()),
        Just("-Infinity".to_owned()),
        Just("1e999".to_owned()),
        Just("0000-00-00T00:00:00Z".to_owned()),
        Just("9999-12-31T23:59:59Z".to_owned()),
        Just("1970-01-01T00:00:00Z".to_owned()),
    ]
}

fn hostile_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>().prop_filter_map("JSON numbers are finite", |v| {
            Number::from_f64(v).map(Value::Number)
        }),
        any::<i64>().prop_map(|v| Value::Number(v.into())),
        any::<u64>().prop_map(|v| Value::Number(v.into())),
        Just(Value::Number(0.into())),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-1e308)),
        Just(serde_json::json!(253402300799_i64)), // 9999-12-31 in seconds
    ]
}

/// Any JSON value, nested up to 8 levels, with hostile leaves (the corpus of the fault
/// tests has nesting 200 deep).
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        hostile_number(),
        hostile_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(8, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}|meta|timestamp|location", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A payload object for `id` made of hostile pieces: the well-known keys take hostile
/// values often enough that every check is reached.
fn hostile_object(id: String) -> impl Strategy<Value = Vec<u8>> {
    let known = (
        prop_oneof![Just(Value::String(id)), hostile_value()],
        prop::option::of(hostile_value()),
        prop::option::of(prop_oneof![
            hostile_text().prop_map(Value::String),
            hostile_value()
        ]),
        prop::option::of(prop_oneof![
            hostile_number(),
            hostile_text().prop_map(Value::String)
        ]),
    );
    let fields = prop::collection::btree_map(
        prop_oneof![
            "[a-z_]{1,12}",
            "[ -~]{1,8}",
            Just("x".repeat(65)),
            "[a-z]{64}"
        ],
        prop_oneof![8 => hostile_number(), 1 => hostile_value()],
        0..70,
    );
    (known, fields).prop_map(|((id, device_type, location, timestamp), fields)| {
        let mut object: Map<String, Value> = fields.into_iter().collect();
        object.insert("device_id".into(), id);
        if let Some(v) = device_type {
            object.insert("device_type".into(), v);
        }
        if let Some(v) = location {
            object.insert("location".into(), v);
        }
        if let Some(v) = timestamp {
            object.insert("timestamp".into(), v);
        }
        serde_json::to_vec(&Value::Object(object)).expect("a Value always encodes")
    })
}

/// A valid reading for `device_type`/`id`, within the default limits.
fn valid_reading(device_type: String, id: String) -> impl Strategy<Value = Reading> {
    let limits = Limits::default();
    let oldest = NOW - limits.max_age_ms.expect("the default has a maximum age");
    (
        prop::option::of("[A-Za-z0-9 ,=\\\\é-]{1,30}"),
        oldest..=NOW + limits.max_future_skew_ms,
        prop::collection::btree_map(
            "[a-z][a-z0-9_]{0,20}",
            prop_oneof![any::<i32>().prop_map(f64::from), -1e12f64..1e12],
            1..20,
        ),
    )
        .prop_map(move |(location, ts_ms, fields)| Reading {
            device_id: id.clone(),
            device_type: device_type.clone(),
            location,
            ts_ms,
            fields: fields
                .into_iter()
                .filter(|(name, _)| {
                    !["device_id", "device_type", "location", "timestamp", "meta"]
                        .contains(&name.as_str())
                })
                .collect(),
        })
        .prop_filter("at least one field", |r| !r.fields.is_empty())
}

/// The design's payload format for a reading: flat fields beside the well-known keys.
fn payload_of(reading: &Reading) -> Vec<u8> {
    let mut object = Map::new();
    object.insert("device_id".into(), reading.device_id.clone().into());
    object.insert("device_type".into(), reading.device_type.clone().into());
    if let Some(location) = &reading.location {
        object.insert("location".into(), location.clone().into());
    }
    object.insert("timestamp".into(), format_ts(reading.ts_ms).into());
    for (name, value) in &reading.fields {
        object.insert(name.clone(), serde_json::json!(value));
    }
    serde_json::to_vec(&Value::Object(object)).expect("a Value always encodes")
}

/// A few byte edits: replace, insert or delete at positions chosen by the strategy.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, kind, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match kind % 3 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= a.abs().max(b.abs()) * 1e-15
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(topic in "\\PC{0,40}|sensors/[a-z_]{1,8}/[a-z0-9]{1,8}",
                                   payload in prop::collection::vec(any::<u8>(), 0..300)) {
        check(&topic, &payload);
    }

    #[test]
    fn hostile_objects_are_accepted_only_when_storable(
        (topic, payload) in topic().prop_flat_map(|(topic, _, id)| (Just(topic), hostile_object(id)))
    ) {
        check(&topic, &payload);
    }

    #[test]
    fn a_valid_payload_parses_back_to_its_reading(
        reading in ("[a-z_]{1,20}", "[A-Za-z0-9._:-]{1,40}")
            .prop_flat_map(|(device_type, id)| valid_reading(device_type, id))
    ) {
        let topic = format!("sensors/{}/{}", reading.device_type, reading.device_id);
        let parsed = parse_payload(&topic, &payload_of(&reading), NOW, &Limits::default())
            .expect("a valid payload is accepted");
        prop_assert_eq!(&parsed.device_id, &reading.device_id);
        prop_assert_eq!(&parsed.location, &reading.location);
        prop_assert_eq!(parsed.ts_ms, reading.ts_ms);
        let names = |r: &Reading| r.fields.keys().cloned().collect::<Vec<_>>();
        prop_assert_eq!(names(&parsed), names(&reading));
        for (name, value) in &reading.fields {
            prop_assert!(close(parsed.fields[name], *value), "{} {} != {}", name, parsed.fields[name], value);
        }
    }

    #[test]
    fn mutated_valid_payloads_never_panic(
        (reading, edits) in ("[a-z_]{1,20}", "[A-Za-z0-9._:-]{1,40}")
            .prop_flat_map(|(device_type, id)| valid_reading(device_type, id))
            .prop_flat_map(|r| (Just(r), prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)))
    ) {
        let topic = format!("sensors/{}/{}", reading.device_type, reading.device_id);
        check(&topic, &mutate(payload_of(&reading), &edits));
    }
}

#[test]
fn sixty_four_fields_of_sixty_four_byte_names_are_the_limit() {
    let id = "limit-device";
    let fields = |n: usize| -> BTreeMap<String, Value> {
        (0..n)
            .map(|i| (format!("{:a<64}", format!("f{i}_")), serde_json::json!(i)))
            .collect()
    };
    for (n, accepted) in [(64, true), (65, false)] {
        let mut object: Map<String, Value> = fields(n).into_iter().collect();
        object.insert("device_id".into(), id.into());
        let payload = serde_json::to_vec(&Value::Object(object)).expect("encodes");
        let result = parse_payload(
            &format!("sensors/probe/{id}"),
            &payload,
            NOW,
            &Limits::default(),
        );
        assert_eq!(result.is_ok(), accepted, "{n} fields: {result:?}");
    }
}
