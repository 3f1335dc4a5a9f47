//! Property tests of the text this backend sends InfluxDB: line protocol read back by a
//! reference reader that follows InfluxDB's rules (the ones `line.rs` documents, which
//! `tests/influx.rs::hostile_locations_and_ids_round_trip` checks against the real
//! server), and InfluxQL literals read back by a reference unquoter.
//!
//! Bounded: `PROPTEST_CASES` cases a property (the Makefile sets 4,096, proptest's own
//! default is 256); a long run sets more
//! (see BENCHMARKS.md for the command and figures).

use std::collections::BTreeMap;

use proptest::prelude::*;
use sensorfleet_model::Reading;
use sensorfleet_model::reading::{Limits, parse_payload};

use super::line::{check_reading, push_reading};
use super::query::{quote_ident, quote_string};

/// One point as InfluxDB reads a line.
#[derive(Debug, PartialEq)]
struct ReadPoint {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: BTreeMap<String, f64>,
    ts: i64,
}

/// Reads up to the first unescaped `stop` character. A backslash escapes the next
/// character only when it is one of `escaped`; otherwise it is an ordinary character.
fn read_part<'a>(text: &'a str, escaped: &[char], stop: &[char]) -> (String, &'a str) {
    let mut out = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == '\\' {
            if let Some(&(_, next)) = chars.peek()
                && escaped.contains(&next)
            {
                out.push(next);
                chars.next();
                continue;
            }
        } else if stop.contains(&c) {
            return (out, &text[at..]);
        }
        out.push(c);
    }
    (out, "")
}

/// The reference reader of one line (no trailing newline).
fn read_line(line: &str) -> ReadPoint {
    let key_escapes = [',', '=', ' '];
    let (measurement, mut rest) = read_part(line, &[',', ' '], &[',', ' ']);
    let mut tags = BTreeMap::new();
    while let Some(tail) = rest.strip_prefix(',') {
        let (key, tail) = read_part(tail, &key_escapes, &['=']);
        let tail = tail.strip_prefix('=').expect("a tag has `=`");
        let (value, tail) = read_part(tail, &key_escapes, &[',', ' ']);
        tags.insert(key, value);
        rest = tail;
    }
    let mut rest = rest.strip_prefix(' ').expect("a space before the fields");
    let mut fields = BTreeMap::new();
    loop {
        let (key, tail) = read_part(rest, &key_escapes, &['=']);
        let tail = tail.strip_prefix('=').expect("a field has `=`");
        let end = tail.find([',', ' ']).expect("a field ends");
        let value: f64 = tail[..end].parse().expect("a float field value");
        fields.insert(key, value);
        rest = &tail[end..];
        if let Some(tail) = rest.strip_prefix(',') {
            rest = tail;
        } else {
            break;
        }
    }
    let ts = rest
        .strip_prefix(' ')
        .expect("a space before the timestamp")
        .parse()
        .expect("an integer timestamp");
    ReadPoint {
        measurement,
        tags,
        fields,
        ts,
    }
}

/// What InfluxDB keeps of a tag or key (line.rs's two documented changes).
fn as_stored(text: &str) -> String {
    let mut out = text.replace('\n', " ");
    if out.ends_with('\\') {
        out.push(' ');
    }
    out
}

/// The reference unquoter of an InfluxQL literal: the four escapes, nothing else.
fn unquote(literal: &str, quote: char) -> String {
    let inner = literal
        .strip_prefix(quote)
        .and_then(|l| l.strip_suffix(quote))
        .expect("quoted on both ends");
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        assert_ne!(c, '\n', "a raw line feed inside a literal");
        assert!(
            c != quote,
            "an unescaped quote ends the literal early: {literal:?}"
        );
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(e @ ('\\' | '\'' | '"')) => out.push(e),
                other => panic!("unknown escape \\{other:?} in {literal:?}"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Readings as the model lets them through, plus text the model would refuse (line
/// feeds, trailing backslashes) that a caller bypassing validation might hand over.
fn reading() -> impl Strategy<Value = Reading> {
    (
        "[A-Za-z0-9_]{1,20}",
        prop_oneof!["[A-Za-z0-9._:-]{1,30}", "\\PC{1,12}", "[a\\\\,= \n]{1,8}"],
        prop::option::of(prop_oneof!["\\PC{0,30}", "[a\\\\,= \"'\n]{0,12}"]),
        any::<i64>(),
        prop::collection::btree_map(
            prop_oneof!["[a-z_][a-z0-9_]{0,12}", "[a\\\\,= \n]{1,6}"],
            prop_oneof![any::<f64>(), -1e3f64..1e3],
            1..8,
        ),
    )
        .prop_map(
            |(device_type, device_id, location, ts_ms, fields)| Reading {
                device_id,
                device_type,
                location,
                ts_ms,
                fields,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_line_reads_back_as_its_reading(reading in reading()) {
        prop_assume!(check_reading(&reading).is_ok());
        let mut out = String::new();
        let skipped = push_reading(&mut out, &reading).expect("checked");
        let finite: BTreeMap<String, f64> = reading
            .fields
            .iter()
            .filter(|(name, v)| v.is_finite() && name.as_str() != "time")
            .map(|(name, v)| (as_stored(name), *v))
            .collect();
        if finite.is_empty() {
            prop_assert!(out.is_empty());
            prop_assert_eq!(skipped.empty_readings, 1);
            return Ok(());
        }
        let line = out.strip_suffix('\n').expect("one line, newline-terminated");
        prop_assert!(!line.contains('\n'), "a line feed inside the line: {:?}", line);
        let point = read_line(line);
        prop_assert_eq!(&point.measurement, &reading.device_type);
        let mut tags = BTreeMap::from([("device_id".to_owned(), as_stored(&reading.device_id))]);
        if let Some(location) = reading.location.as_deref().filter(|l| !l.is_empty()) {
            tags.insert("location".to_owned(), as_stored(location));
        }
        prop_assert_eq!(point.tags, tags);
        prop_assert_eq!(point.ts, reading.ts_ms);
        // Bit-for-bit: the shortest round-trip form parses back to the same float. Names
        // that InfluxDB stores alike (a line feed read as a space) keep the last value, in
        // `finite` as in the line, which is written in the same order.
        prop_assert_eq!(point.fields.len(), finite.len());
        for (name, value) in &finite {
            prop_assert_eq!(point.fields[name].to_bits(), value.to_bits(), "{}", name);
        }
    }

    #[test]
    fn every_accepted_payload_becomes_a_line(
        id in "[A-Za-z0-9._:-]{1,128}",
        location in prop::option::of("\\PC{0,100}"),
        value in any::<f64>(),
    ) {
        let mut object = serde_json::json!({ "device_id": id, "v": value });
        if let Some(location) = &location {
            object["location"] = location.clone().into();
        }
        let Ok(reading) = parse_payload(
            &format!("sensors/probe/{id}"),
            &serde_json::to_vec(&object).expect("encodes"),
            1_780_100_000_000,
            &Limits::default(),
        ) else {
            return Ok(());
        };
        let mut out = String::new();
        let skipped = push_reading(&mut out, &reading).expect("a parsed reading is writable");
        prop_assert!(skipped.is_empty(), "{:?}", skipped);
        let point = read_line(out.trim_end_matches('\n'));
        let expected = location.as_deref().filter(|l| !l.is_empty()).map(as_stored);
        prop_assert_eq!(point.tags.get("location"), expected.as_ref());
    }

    #[test]
    fn influxql_literals_cannot_be_escaped_from(text in "\\PC{0,40}|[\\\\'\"\n a]{0,16}") {
        prop_assert_eq!(unquote(&quote_string(&text), '\''), text.clone());
        prop_assert_eq!(unquote(&quote_ident(&text), '"'), text);
    }
}
