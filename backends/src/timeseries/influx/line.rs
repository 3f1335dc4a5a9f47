//! InfluxDB line protocol: readings and rollups to text, as pure functions.
//!
//! One line per point: `measurement,tag=value,… field=value,… timestamp`. Measurement
//! names escape `,` and space; tag keys, tag values and field keys also escape `=`, all
//! with a backslash. A backslash itself is never escaped: InfluxDB reads `\x` as the two
//! characters unless `x` is one of the escaped ones.
//!
//! Two things line protocol cannot carry at all, checked against InfluxDB 1.6:
//! - a line feed (it ends the line, escaped or not): in tags and field keys it becomes a
//!   space;
//! - a backslash at the end of a tag value or key (the parser takes the separator after it
//!   as escaped): a space is appended, so every original character is kept.
//!
//! A measurement name that cannot be written (empty, starting with `#` — a comment line —,
//! holding a line feed or ending with a backslash) is an error instead: it is the device
//! type, which the model restricts to `[A-Za-z0-9_]`, so only a caller bypassing
//! validation gets there.

use std::fmt::Write as _;

use sensorfleet_model::Reading;

/// The measurement holding hourly rollups. The dot keeps it outside the device-type
/// alphabet (`[A-Za-z0-9_]`), so it can never be a device type's measurement.
pub const ROLLUP_MEASUREMENT: &str = "sensorfleet.rollup_1h";

/// Field keys InfluxDB refuses (1.8+: "invalid field name"; 1.6 drops them silently).
const RESERVED_FIELD_KEYS: [&str; 1] = ["time"];

/// Why a reading could not become a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// The measurement name (device type) cannot be written.
    Measurement(&'static str),
    /// The device id is empty, which InfluxDB refuses as a tag value.
    EmptyDeviceId,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Measurement(why) => write!(f, "the device type {why}"),
            Self::EmptyDeviceId => f.write_str("the device id is empty"),
        }
    }
}

/// What [`push_reading`] left out of a reading, for the caller to report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Fields named `time`, which InfluxDB cannot store.
    pub reserved_fields: usize,
    /// Fields holding NaN or infinity, which line protocol cannot carry.
    pub non_finite_fields: usize,
    /// Readings with no field left: InfluxDB has no point without fields.
    pub empty_readings: usize,
}

impl Skipped {
    /// Adds another count.
    pub fn add(&mut self, other: Skipped) {
        self.reserved_fields += other.reserved_fields;
        self.non_finite_fields += other.non_finite_fields;
        self.empty_readings += other.empty_readings;
    }

    /// True when nothing was skipped.
    pub fn is_empty(&self) -> bool {
        *self == Skipped::default()
    }
}

/// Checks that `name` can be written as a measurement.
pub fn check_measurement(name: &str) -> Result<(), LineError> {
    if name.is_empty() {
        Err(LineError::Measurement("is empty"))
    } else if name.starts_with('#') {
        Err(LineError::Measurement(
            "starts with `#`, which makes a comment line",
        ))
    } else if name.contains('\n') {
        Err(LineError::Measurement("contains a line feed"))
    } else if name.ends_with('\\') {
        Err(LineError::Measurement("ends with a backslash"))
    } else if name == ROLLUP_MEASUREMENT {
        Err(LineError::Measurement("is the rollup measurement's name"))
    } else {
        Ok(())
    }
}

/// Checks that a reading can be written: its device type as a measurement, and a
/// device id that is not empty (InfluxDB refuses empty tag values).
pub fn check_reading(reading: &Reading) -> Result<(), LineError> {
    check_measurement(&reading.device_type)?;
    if reading.device_id.is_empty() {
        return Err(LineError::EmptyDeviceId);
    }
    Ok(())
}

/// Appends a measurement name (checked with [`check_measurement`]) escaped.
pub fn push_measurement(out: &mut String, name: &str) {
    for c in name.chars() {
        if matches!(c, ',' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Appends a tag key, tag value or field key escaped (see the module docs for the two
/// characters that cannot be carried as they are).
pub fn push_key(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
    if text.ends_with('\\') {
        out.push_str("\\ ");
    }
}

/// Appends a float field value: Rust's shortest round-trip form (`22.5`, `1e300`), which
/// InfluxDB parses back to the same `f64`. Without an `i` suffix it is a float field.
fn push_float(out: &mut String, value: f64) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{value:?}");
}

/// Appends one reading as a line (with its newline): measurement = device type, tags
/// `device_id` and `location` (when present and not empty), every finite field as a float
/// field, timestamp in milliseconds. Returns what was left out; a reading with no field
/// left appends nothing.
pub fn push_reading(out: &mut String, reading: &Reading) -> Result<Skipped, LineError> {
    check_reading(reading)?;
    let mut skipped = Skipped::default();
    let start = out.len();
    push_measurement(out, &reading.device_type);
    out.push_str(",device_id=");
    push_key(out, &reading.device_id);
    if let Some(location) = reading.location.as_deref().filter(|l| !l.is_empty()) {
        out.push_str(",location=");
        push_key(out, location);
    }
    let mut separator = ' ';
    for (name, &value) in &reading.fields {
        if RESERVED_FIELD_KEYS.contains(&name.as_str()) {
            skipped.reserved_fields += 1;
            continue;
        }
        if !value.is_finite() {
            skipped.non_finite_fields += 1;
            continue;
        }
        out.push(separator);
        separator = ',';
        push_key(out, name);
        out.push('=');
        push_float(out, value);
    }
    if separator == ' ' {
        out.truncate(start);
        skipped.empty_readings = 1;
        return Ok(skipped);
    }
    let _ = writeln!(out, " {}", reading.ts_ms);
    Ok(skipped)
}

/// One hourly rollup row as stored: measurement [`ROLLUP_MEASUREMENT`], tags `device_id`
/// and `field`, fields `count` (integer), `min`, `mean`, `max`, timestamp = hour start.
pub fn push_rollup(out: &mut String, rollup: &crate::timeseries::Rollup) {
    push_measurement(out, ROLLUP_MEASUREMENT);
    out.push_str(",device_id=");
    push_key(out, &rollup.device_id);
    out.push_str(",field=");
    push_key(out, &rollup.field);
    let _ = write!(out, " count={}i,max=", rollup.count);
    push_float(out, rollup.max);
    out.push_str(",mean=");
    push_float(out, rollup.mean);
    out.push_str(",min=");
    push_float(out, rollup.min);
    let _ = writeln!(out, " {}", rollup.hour_ms);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::timeseries::Rollup;

    fn reading(device_type: &str, location: Option<&str>, fields: &[(&str, f64)]) -> Reading {
        Reading {
            device_id: "srv-temp-0001".to_owned(),
            device_type: device_type.to_owned(),
            location: location.map(str::to_owned),
            ts_ms: 1_780_000_000_123,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn line(r: &Reading) -> (String, Skipped) {
        let mut out = String::new();
        let skipped = push_reading(&mut out, r).expect("encodes");
        (out, skipped)
    }

    #[test]
    fn a_reading_is_one_line_in_the_design_schema() {
        let (text, skipped) = line(&reading(
            "temperature_sensor",
            Some("Server Room"),
            &[("temperature_celsius", 22.5), ("meta_battery_level", 87.0)],
        ));
        assert_eq!(
            text,
            "temperature_sensor,device_id=srv-temp-0001,location=Server\\ Room \
             meta_battery_level=87.0,temperature_celsius=22.5 1780000000123\n"
        );
        assert!(skipped.is_empty());
    }

    #[test]
    fn no_or_empty_location_means_no_location_tag() {
        for location in [None, Some("")] {
            let (text, _) = line(&reading("t", location, &[("v", 1.0)]));
            assert_eq!(text, "t,device_id=srv-temp-0001 v=1.0 1780000000123\n");
        }
    }

    #[test]
    fn hostile_strings_are_escaped() {
        let mut out = String::new();
        push_key(&mut out, "a,b=c d");
        assert_eq!(out, "a\\,b\\=c\\ d");

        out.clear();
        push_measurement(&mut out, "m,x y=z");
        assert_eq!(out, "m\\,x\\ y=z", "`=` needs no escape in a measurement");

        // Quotes, backslashes in the middle, tabs and unicode pass through as they are.
        out.clear();
        push_key(&mut out, "it's \"Rack\" C:\\temp\t☃");
        assert_eq!(out, "it's\\ \"Rack\"\\ C:\\temp\t☃");

        // A backslash before an escaped character stays a backslash: `\,` reads back as `\,`.
        out.clear();
        push_key(&mut out, "a\\,b");
        assert_eq!(out, "a\\\\,b");
    }

    #[test]
    fn what_line_protocol_cannot_carry_is_changed_the_documented_way() {
        let mut out = String::new();
        push_key(&mut out, "two\nlines");
        assert_eq!(out, "two\\ lines", "reads back as `two lines`");

        out.clear();
        push_key(&mut out, "C:\\");
        assert_eq!(
            out, "C:\\\\ ",
            "a trailing backslash gets a space: reads back as `C:\\ `"
        );
    }

    #[test]
    fn a_whole_line_with_hostile_tags_keeps_its_structure() {
        let (text, _) = line(&reading("t", Some("a b,c=d\\"), &[("weird key,=", -0.5)]));
        // Unescaped spaces separate exactly three sections: series, fields, timestamp.
        let unescaped_spaces = text
            .char_indices()
            .filter(|&(i, c)| c == ' ' && !text[..i].ends_with('\\'))
            .count();
        assert_eq!(unescaped_spaces, 2, "{text}");
        assert_eq!(
            text,
            "t,device_id=srv-temp-0001,location=a\\ b\\,c\\=d\\\\  weird\\ key\\,\\==-0.5 1780000000123\n"
        );
    }

    #[test]
    fn floats_use_the_shortest_round_trip_form() {
        let (text, _) = line(&reading(
            "t",
            None,
            &[("a", 1e300), ("b", -5e-324), ("c", 0.1 + 0.2), ("d", 22.0)],
        ));
        assert_eq!(
            text,
            "t,device_id=srv-temp-0001 a=1e300,b=-5e-324,c=0.30000000000000004,d=22.0 1780000000123\n"
        );
        for value in ["1e300", "-5e-324", "0.30000000000000004"] {
            let parsed: f64 = value.parse().expect("float");
            assert_eq!(format!("{parsed:?}"), value);
        }
    }

    #[test]
    fn reserved_and_non_finite_fields_are_skipped_and_counted() {
        let (text, skipped) = line(&reading(
            "t",
            None,
            &[("time", 5.0), ("nan", f64::NAN), ("v", 1.0)],
        ));
        assert_eq!(text, "t,device_id=srv-temp-0001 v=1.0 1780000000123\n");
        assert_eq!(
            skipped,
            Skipped {
                reserved_fields: 1,
                non_finite_fields: 1,
                empty_readings: 0
            }
        );

        let mut out = "previous\n".to_owned();
        let skipped = push_reading(&mut out, &reading("t", None, &[("time", 1.0)])).expect("ok");
        assert_eq!(
            out, "previous\n",
            "a reading without fields appends nothing"
        );
        assert_eq!(skipped.empty_readings, 1);
    }

    #[test]
    fn unwritable_measurements_and_empty_ids_are_errors() {
        for bad in ["", "#comment", "a\nb", "trailing\\", ROLLUP_MEASUREMENT] {
            let result = push_reading(&mut String::new(), &reading(bad, None, &[("v", 1.0)]));
            assert!(
                matches!(result, Err(LineError::Measurement(_))),
                "{bad:?}: {result:?}"
            );
        }
        let mut r = reading("t", None, &[("v", 1.0)]);
        r.device_id.clear();
        assert_eq!(
            push_reading(&mut String::new(), &r),
            Err(LineError::EmptyDeviceId)
        );
    }

    #[test]
    fn a_rollup_is_one_line_with_an_integer_count() {
        let mut out = String::new();
        push_rollup(
            &mut out,
            &Rollup {
                device_id: "d 1".to_owned(),
                field: "temperature_celsius".to_owned(),
                hour_ms: 1_779_998_400_000,
                count: 10,
                min: 20.0,
                mean: 24.5,
                max: 29.0,
            },
        );
        assert_eq!(
            out,
            "sensorfleet.rollup_1h,device_id=d\\ 1,field=temperature_celsius \
             count=10i,max=29.0,mean=24.5,min=20.0 1779998400000\n"
        );
    }
}
