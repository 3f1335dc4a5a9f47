//! InfluxQL: the statements this backend sends, the quoting that makes injection
//! impossible, and the shape of `/query` answers, as pure functions.
//!
//! Strings are single-quoted and identifiers double-quoted; inside both, InfluxQL knows
//! exactly four escapes (`\\`, `\'`, `\"`, `\n`) and refuses a raw line feed, so escaping
//! the backslash, the quote and the line feed leaves no way out of the literal.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::line::ROLLUP_MEASUREMENT;
use crate::timeseries::{HistoryQuery, Point};

/// InfluxDB's earliest and latest representable instants, in milliseconds (its
/// timestamps are nanoseconds in an `i64`, minus two reserved values).
const MIN_MS: i64 = -9_223_372_036_854;
const MAX_MS: i64 = 9_223_372_036_854;

fn quote(text: &str, quote: char) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A string literal: `'…'`.
pub fn quote_string(text: &str) -> String {
    quote(text, '\'')
}

/// An identifier (measurement, field, tag key, database): `"…"`.
pub fn quote_ident(text: &str) -> String {
    quote(text, '"')
}

/// `time >= … AND time < …` for a millisecond range, as nanosecond literals clamped to
/// what InfluxDB can represent.
fn time_range(since_ms: i64, until_ms: i64) -> String {
    let ns = |ms: i64| i128::from(ms.clamp(MIN_MS, MAX_MS)) * 1_000_000;
    format!("time >= {} AND time < {}", ns(since_ms), ns(until_ms))
}

/// `CREATE DATABASE "…"` (a no-op when it exists).
pub fn create_database(db: &str) -> String {
    format!("CREATE DATABASE {}", quote_ident(db))
}

/// The newest `limit` rows of one device, per measurement (raw) or per field (rollups),
/// newest first. Raw readings may sit in any measurement (the device type), so the
/// statement reads them all; the caller drops the rollup measurement's series. `*::field`
/// keeps the tags out of the columns.
pub fn history(q: &HistoryQuery) -> String {
    let device = quote_string(&q.device_id);
    let range = time_range(q.since_ms, q.until_ms);
    let limit = q.limit.min(i64::MAX as usize);
    if q.rollup {
        let field = q
            .field
            .as_deref()
            .map(|f| format!(" AND \"field\" = {}", quote_string(f)))
            .unwrap_or_default();
        format!(
            "SELECT \"mean\" FROM {} WHERE \"device_id\" = {device} AND {range}{field} \
             GROUP BY \"field\" ORDER BY time DESC LIMIT {limit}",
            quote_ident(ROLLUP_MEASUREMENT)
        )
    } else {
        let fields = q
            .field
            .as_deref()
            .map(|f| format!("{}::field", quote_ident(f)))
            .unwrap_or_else(|| "*::field".to_owned());
        format!(
            "SELECT {fields} FROM /.*/ WHERE \"device_id\" = {device} AND {range} \
             ORDER BY time DESC LIMIT {limit}"
        )
    }
}

/// One row per distinct timestamp of the device, per measurement: grouping by the
/// millisecond merges the points of all its series (a location change starts a new
/// series) at the same instant. `fill(none)` skips the empty milliseconds.
pub fn readings_per_instant(device_id: &str, since_ms: i64, until_ms: i64) -> String {
    format!(
        "SELECT count(*) FROM /.*/ WHERE \"device_id\" = {} AND {} GROUP BY time(1ms) fill(none)",
        quote_string(device_id),
        time_range(since_ms, until_ms)
    )
}

/// Hourly count/min/mean/max of every field of every device, computed by InfluxDB.
/// `"device_id" != ''` leaves out series without the tag (other writers' data).
pub fn hourly_aggregates(since_ms: i64, until_ms: i64) -> String {
    format!(
        "SELECT count(*), min(*), mean(*), max(*) FROM /.*/ WHERE \"device_id\" != '' AND {} \
         GROUP BY time(1h), \"device_id\" fill(none)",
        time_range(since_ms, until_ms)
    )
}

/// One JSON document of a `/query` answer (with `chunked=true`, one per line).
#[derive(Debug, Default, Deserialize)]
pub struct Answer {
    /// One per statement.
    #[serde(default)]
    pub results: Vec<StatementResult>,
    /// A request-level error.
    #[serde(default)]
    pub error: Option<String>,
}

/// The result of one statement.
#[derive(Debug, Default, Deserialize)]
pub struct StatementResult {
    /// The series it returned.
    #[serde(default)]
    pub series: Vec<Series>,
    /// A statement-level error.
    #[serde(default)]
    pub error: Option<String>,
}

/// One series (or a piece of it, when chunked).
#[derive(Debug, Default, Deserialize)]
pub struct Series {
    /// The measurement.
    #[serde(default)]
    pub name: String,
    /// The GROUP BY tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Column names; the first is `time`.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Rows, one value per column.
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
}

impl Answer {
    /// The error the answer carries, if any.
    pub fn error(&self) -> Option<&str> {
        self.error
            .as_deref()
            .or_else(|| self.results.iter().find_map(|r| r.error.as_deref()))
    }

    /// Every series of every statement.
    pub fn series(&self) -> impl Iterator<Item = &Series> {
        self.results.iter().flat_map(|r| r.series.iter())
    }
}

impl Series {
    /// True for the rollup measurement's series.
    pub fn is_rollup(&self) -> bool {
        self.name == ROLLUP_MEASUREMENT
    }

    /// Each row's time (unix milliseconds, with `epoch=ms`) and the row; rows without
    /// a time are skipped.
    pub fn rows(&self) -> impl Iterator<Item = (i64, &[serde_json::Value])> {
        self.values.iter().filter_map(|row| {
            let ts = row.first()?.as_i64()?;
            Some((ts, row.as_slice()))
        })
    }
}

/// Appends the points of a raw-history series: every non-null numeric field column.
pub fn push_raw_points(series: &Series, points: &mut Vec<Point>) {
    for (ts, row) in series.rows() {
        for (column, cell) in series.columns.iter().zip(row).skip(1) {
            if let Some(value) = cell.as_f64() {
                points.push(Point {
                    ts_ms: ts,
                    field: column.clone(),
                    value,
                });
            }
        }
    }
}

/// Appends the points of a rollup-history series (grouped by `field`, one `mean` column).
pub fn push_rollup_points(series: &Series, points: &mut Vec<Point>) {
    let Some(field) = series.tags.get("field") else {
        return;
    };
    for (ts, row) in series.rows() {
        if let Some(value) = row.get(1).and_then(serde_json::Value::as_f64) {
            points.push(Point {
                ts_ms: ts,
                field: field.clone(),
                value,
            });
        }
    }
}

/// The newest `limit` points, ascending by time (and by field within one instant). A
/// point seen twice (the same instant in two series of one device) is kept once.
pub fn newest(mut points: Vec<Point>, limit: usize) -> Vec<Point> {
    points.sort_by(|a, b| b.ts_ms.cmp(&a.ts_ms).then_with(|| a.field.cmp(&b.field)));
    points.dedup_by(|a, b| a.ts_ms == b.ts_ms && a.field == b.field);
    points.truncate(limit);
    points.sort_by(|a, b| a.ts_ms.cmp(&b.ts_ms).then_with(|| a.field.cmp(&b.field)));
    points
}

/// The hourly aggregate of one field in one row of [`hourly_aggregates`].
#[derive(Debug, Clone, PartialEq)]
pub struct FieldAggregate {
    /// The field.
    pub field: String,
    /// Number of values.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
}

/// Where each field's four aggregates sit in a row of [`hourly_aggregates`]: columns
/// are named `count_<field>`, `min_<field>`, `mean_<field>`, `max_<field>`.
pub fn aggregate_columns(columns: &[String]) -> Vec<(String, [usize; 4])> {
    let mut by_field: BTreeMap<&str, [Option<usize>; 4]> = BTreeMap::new();
    for (i, column) in columns.iter().enumerate() {
        for (slot, prefix) in ["count_", "min_", "mean_", "max_"].iter().enumerate() {
            if let Some(field) = column.strip_prefix(prefix) {
                by_field.entry(field).or_default()[slot] = Some(i);
            }
        }
    }
    by_field
        .into_iter()
        .filter_map(|(field, slots)| {
            let [Some(c), Some(lo), Some(me), Some(hi)] = slots else {
                return None;
            };
            Some((field.to_owned(), [c, lo, me, hi]))
        })
        .collect()
}

/// The aggregates of one row, for the fields that had values in that hour.
pub fn row_aggregates(
    layout: &[(String, [usize; 4])],
    row: &[serde_json::Value],
) -> Vec<FieldAggregate> {
    layout
        .iter()
        .filter_map(|(field, [c, lo, me, hi])| {
            let count = row.get(*c)?.as_u64().filter(|&n| n > 0)?;
            Some(FieldAggregate {
                field: field.clone(),
                count,
                min: row.get(*lo)?.as_f64()?,
                mean: row.get(*me)?.as_f64()?,
                max: row.get(*hi)?.as_f64()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn query(rollup: bool, field: Option<&str>) -> HistoryQuery {
        HistoryQuery {
            device_id: "dev-1".to_owned(),
            since_ms: 1_000,
            until_ms: 2_000,
            field: field.map(str::to_owned),
            limit: 3,
            rollup,
        }
    }

    #[test]
    fn literals_cannot_be_escaped_from() {
        assert_eq!(quote_string("dev-1"), "'dev-1'");
        assert_eq!(
            quote_string("x' OR device_id != '"),
            r"'x\' OR device_id != \''"
        );
        assert_eq!(quote_string("a\\' OR 1=1 --"), r"'a\\\' OR 1=1 --'");
        assert_eq!(quote_string("two\nlines"), r"'two\nlines'");
        assert_eq!(
            quote_ident("f\"; DROP DATABASE x"),
            r#""f\"; DROP DATABASE x""#
        );
        assert_eq!(
            quote_ident("it's"),
            "\"it's\"",
            "the other quote needs no escape"
        );
    }

    #[test]
    fn a_quoted_string_holds_no_unescaped_quote() {
        for hostile in [
            "'",
            "\\'",
            "\\\\'",
            "';DROP DATABASE sensors;'",
            "\\",
            "'\n'",
        ] {
            let quoted = quote_string(hostile);
            let inner = &quoted[1..quoted.len() - 1];
            // Walk the escapes: every quote inside must be escaped.
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => assert!(matches!(chars.next(), Some('\\' | '\'' | 'n')), "{quoted}"),
                    '\'' | '\n' => panic!("unescaped {c:?} in {quoted}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn history_statements() {
        assert_eq!(
            history(&query(false, None)),
            "SELECT *::field FROM /.*/ WHERE \"device_id\" = 'dev-1' AND time >= 1000000000 \
             AND time < 2000000000 ORDER BY time DESC LIMIT 3"
        );
        assert_eq!(
            history(&query(false, Some("temperature_celsius"))),
            "SELECT \"temperature_celsius\"::field FROM /.*/ WHERE \"device_id\" = 'dev-1' \
             AND time >= 1000000000 AND time < 2000000000 ORDER BY time DESC LIMIT 3"
        );
        assert_eq!(
            history(&query(true, Some("t"))),
            "SELECT \"mean\" FROM \"sensorfleet.rollup_1h\" WHERE \"device_id\" = 'dev-1' \
             AND time >= 1000000000 AND time < 2000000000 AND \"field\" = 't' \
             GROUP BY \"field\" ORDER BY time DESC LIMIT 3"
        );
    }

    #[test]
    fn time_bounds_are_clamped_to_what_influxdb_represents() {
        assert_eq!(
            time_range(i64::MIN, i64::MAX),
            "time >= -9223372036854000000 AND time < 9223372036854000000"
        );
    }

    #[test]
    fn answers_parse_into_points() {
        let answer: Answer = serde_json::from_value(json!({"results":[{"statement_id":0,"series":[
            {"name":"temperature_sensor","columns":["time","humidity","temperature_celsius"],
             "values":[[3000,null,21.5],[2000,40,null]]},
            {"name":"sensorfleet.rollup_1h","columns":["time","mean"],"values":[[0,1]]}
        ]}]}))
        .expect("parses");
        assert_eq!(answer.error(), None);
        let mut points = Vec::new();
        for series in answer.series().filter(|s| !s.is_rollup()) {
            push_raw_points(series, &mut points);
        }
        assert_eq!(
            points,
            [
                Point {
                    ts_ms: 3000,
                    field: "temperature_celsius".into(),
                    value: 21.5
                },
                Point {
                    ts_ms: 2000,
                    field: "humidity".into(),
                    value: 40.0
                },
            ]
        );

        let failed: Answer = serde_json::from_value(
            json!({"results":[{"statement_id":0,"error":"database not found: x"}]}),
        )
        .expect("parses");
        assert_eq!(failed.error(), Some("database not found: x"));
    }

    #[test]
    fn newest_keeps_the_latest_points_once_in_ascending_order() {
        let p = |ts, field: &str| Point {
            ts_ms: ts,
            field: field.to_owned(),
            value: ts as f64,
        };
        let points = vec![
            p(3, "b"),
            p(3, "a"),
            p(1, "a"),
            p(2, "a"),
            p(3, "a"),
            p(4, "a"),
        ];
        assert_eq!(newest(points.clone(), 3), [p(3, "a"), p(3, "b"), p(4, "a")]);
        assert_eq!(
            newest(points, 10).len(),
            5,
            "the duplicate (3, a) is dropped"
        );
    }

    #[test]
    fn aggregate_rows_become_per_field_rollups() {
        let columns: Vec<String> = [
            "time",
            "count_a",
            "count_max_b",
            "max_a",
            "max_max_b",
            "mean_a",
            "mean_max_b",
            "min_a",
            "min_max_b",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let layout = aggregate_columns(&columns);
        assert_eq!(
            layout.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
            ["a", "max_b"],
            "a field whose name starts like an aggregate is still found"
        );
        let row = vec![
            json!(3_600_000),
            json!(2),
            json!(null),
            json!(3.0),
            json!(null),
            json!(2.0),
            json!(null),
            json!(1.0),
            json!(null),
        ];
        assert_eq!(
            row_aggregates(&layout, &row),
            [FieldAggregate {
                field: "a".into(),
                count: 2,
                min: 1.0,
                mean: 2.0,
                max: 3.0
            }]
        );
    }
}
