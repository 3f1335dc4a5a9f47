//! Reading labelled and unlabelled series from `timestamp,value` CSV files (the Numenta
//! Anomaly Benchmark's format), for `sensorfleet detect` and the NAB tests.

use chrono::{DateTime, NaiveDateTime};

/// Why a `timestamp,value` CSV could not be read; every variant names the 1-based line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CsvError {
    /// A line does not have exactly two comma-separated fields.
    #[error("line {line}: expected 2 fields `timestamp,value`, found {found}")]
    Fields {
        /// 1-based line number.
        line: usize,
        /// How many fields the line has.
        found: usize,
    },
    /// The timestamp is in none of the accepted formats.
    #[error(
        "line {line}: cannot read timestamp {text:?}: use `YYYY-MM-DD HH:MM:SS`, RFC 3339 \
         (`2024-05-01T12:00:00Z`) or unix milliseconds"
    )]
    Timestamp {
        /// 1-based line number.
        line: usize,
        /// The offending field.
        text: String,
    },
    /// The value is not a number.
    #[error("line {line}: cannot read value {text:?}: expected a number like `21.5`")]
    Value {
        /// 1-based line number.
        line: usize,
        /// The offending field.
        text: String,
    },
}

/// Parses the NAB `timestamp,value` CSV format into `(unix ms, value)` points.
///
/// A first line whose value field is not a number is taken as the header and skipped;
/// blank lines are skipped; fields may be surrounded by double quotes. Timestamps may be
/// `YYYY-MM-DD HH:MM:SS[.fff]` (UTC, as in NAB), the same with a `T`, RFC 3339 with an
/// offset, or integer unix milliseconds. Values go through unchanged (`NaN` included: the
/// detector ignores non-finite values).
pub fn parse_timestamp_value_csv(text: &str) -> Result<Vec<(i64, f64)>, CsvError> {
    let mut points = Vec::new();
    let mut first = true;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split(',').map(|f| f.trim().trim_matches('"')).collect();
        let [ts_text, value_text] = fields[..] else {
            return Err(CsvError::Fields {
                line,
                found: fields.len(),
            });
        };
        let is_first = std::mem::replace(&mut first, false);
        let value = match value_text.parse::<f64>() {
            Ok(value) => value,
            Err(_) if is_first => continue, // the header
            Err(_) => {
                return Err(CsvError::Value {
                    line,
                    text: value_text.to_owned(),
                });
            }
        };
        let ts = parse_timestamp(ts_text).ok_or_else(|| CsvError::Timestamp {
            line,
            text: ts_text.to_owned(),
        })?;
        points.push((ts, value));
    }
    Ok(points)
}

/// Unix milliseconds from the timestamp forms [`parse_timestamp_value_csv`] accepts.
pub(crate) fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.timestamp_millis());
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_nab_format() {
        let text = "timestamp,value\n2013-07-04 00:00:00,69.88083514\n\
                    2013-07-04 01:00:00,71.22\r\n\n";
        let pts = parse_timestamp_value_csv(text).expect("valid");
        assert_eq!(
            pts,
            vec![
                (1_372_896_000_000, 69.880_835_14),
                (1_372_899_600_000, 71.22)
            ]
        );
    }

    #[test]
    fn csv_other_timestamp_forms() {
        let text = "\"2024-05-01T12:00:00Z\",\"1\"\n2024-05-01T14:00:00+02:00,2\n\
                    2024-05-01T12:00:00.250,3\n2024-05-01 12:00:00.500000,4\n1714564800000,5\n";
        let pts = parse_timestamp_value_csv(text).expect("valid");
        let t0 = 1_714_564_800_000;
        assert_eq!(
            pts,
            vec![
                (t0, 1.0),
                (t0, 2.0),
                (t0 + 250, 3.0),
                (t0 + 500, 4.0),
                (t0, 5.0)
            ]
        );
        assert_eq!(parse_timestamp_value_csv("timestamp,value\n"), Ok(vec![]));
        assert_eq!(parse_timestamp_value_csv(""), Ok(vec![]));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let err = parse_timestamp_value_csv("timestamp,value\n2013-07-04 00:00:00,1\nnope,2\n")
            .expect_err("bad timestamp");
        assert!(
            matches!(err, CsvError::Timestamp { line: 3, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("line 3: cannot read timestamp \"nope\"")
        );

        let err = parse_timestamp_value_csv("timestamp,value\n2013-07-04 00:00:00,abc\n")
            .expect_err("bad value");
        assert_eq!(
            err,
            CsvError::Value {
                line: 2,
                text: "abc".into()
            }
        );

        let err = parse_timestamp_value_csv("timestamp,value\n2013-07-04 00:00:00\n")
            .expect_err("one field");
        assert_eq!(err, CsvError::Fields { line: 2, found: 1 });
        assert!(err.to_string().contains("line 2"));

        let err = parse_timestamp_value_csv("a,b,c\n").expect_err("three fields");
        assert_eq!(err, CsvError::Fields { line: 1, found: 3 });
    }
}
