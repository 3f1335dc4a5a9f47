//! Writing line protocol: one request's worth of lines with retries, and a refused
//! write traced back to the reading InfluxDB complained about.

use bytes::Bytes;
use sensorfleet_model::Reading;
use sensorfleet_model::reading::format_ts;

use super::{BACKEND, Failure, InfluxStore};
use crate::BackendError;

/// Whether a refused write is about its points (a time outside InfluxDB's range, a field
/// type conflict, points beyond the retention policy, a series or value limit, a body too
/// large: 400, 413, 422) rather than about the request's configuration (401/403 no
/// permission, 404 no such database or bucket), which is no point's fault.
fn refusal_is_content(status: http::StatusCode, message: &str) -> bool {
    let about_target = ["database not found", "bucket not found", "authoriz"]
        .iter()
        .any(|m| message.to_ascii_lowercase().contains(m));
    matches!(status.as_u16(), 400 | 413 | 422) && !about_target
}

/// Which reading a refused write is about, from InfluxDB's message: a parse error quotes
/// the line (`unable to parse '<line>': …`); a type conflict names the field and the
/// measurement (`input field "f" on measurement "m" is type …`). `lines` holds each line's
/// reading index and start in `body`.
fn bad_point(
    message: &str,
    body: &str,
    lines: &[(usize, usize)],
    readings: &[Reading],
) -> Option<usize> {
    for (n, &(index, start)) in lines.iter().enumerate() {
        let end = lines.get(n + 1).map_or(body.len(), |&(_, next)| next);
        let text = body.get(start..end)?.trim_end_matches('\n');
        if message.contains(&format!("unable to parse '{text}'")) {
            return Some(index);
        }
    }
    let (_, rest) = message.split_once("input field \"")?;
    let (field, rest) = rest.split_once("\" on measurement \"")?;
    let (measurement, _) = rest.split_once("\" is type")?;
    lines.iter().map(|&(index, _)| index).find(|&index| {
        readings
            .get(index)
            .is_some_and(|r| r.device_type == measurement && r.fields.contains_key(field))
    })
}

/// Names a reading the way errors and logs do.
pub(super) fn describe(reading: &Reading) -> String {
    format!(
        "device {} at {} ({})",
        reading.device_id,
        format_ts(reading.ts_ms),
        reading.device_type
    )
}

impl InfluxStore {
    /// Posts one request's worth of line protocol, with retries.
    pub(super) async fn post_lines(&self, body: Bytes) -> Result<(), Failure> {
        let what = format!("writing to InfluxDB at {}", self.endpoint.authority);
        self.retrying(&what, || async {
            let request = self
                .endpoint
                .write_request(body.clone())
                .map_err(Failure::Final)?;
            let response = self.send(request).await?;
            self.finish(response).await
        })
        .await
    }

    /// Posts the lines of some readings; a refusal names the reading InfluxDB means.
    pub(super) async fn post_readings(
        &self,
        body: String,
        lines: &[(usize, usize)],
        readings: &[Reading],
    ) -> Result<(), BackendError> {
        let count = lines.len();
        let body = Bytes::from(body);
        match self.post_lines(body.clone()).await {
            Ok(()) => Ok(()),
            Err(Failure::Refused { status, message }) => {
                // Only a refusal is read back as text, so the happy path never copies.
                let text = String::from_utf8_lossy(&body);
                let point = match bad_point(&message, &text, lines, readings) {
                    Some(index) => format!("the point: {}", describe(&readings[index])),
                    None => {
                        let first = lines.first().map(|&(i, _)| describe(&readings[i]));
                        let last = lines.last().map(|&(i, _)| describe(&readings[i]));
                        format!(
                            "in a request of {count} readings, from {} to {}",
                            first.unwrap_or_default(),
                            last.unwrap_or_default()
                        )
                    }
                };
                let detail =
                    format!("InfluxDB refused a write (HTTP {status}): {message}; {point}");
                Err(if refusal_is_content(status, &message) {
                    BackendError::Content {
                        backend: BACKEND,
                        detail,
                    }
                } else {
                    BackendError::Rejected {
                        backend: BACKEND,
                        detail,
                    }
                })
            }
            Err(failure) => Err(failure.into_error("writing readings")),
        }
    }

    pub(super) fn batch_full(&self, lines: usize, bytes: usize) -> bool {
        lines > self.endpoint.max_lines || bytes > self.endpoint.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::timeseries::influx::line;

    #[test]
    fn point_refusals_are_content_and_configuration_refusals_are_not() {
        let status = |code| http::StatusCode::from_u16(code).expect("a status");
        for (code, message) in [
            (
                400,
                "partial write: field type conflict: input field \"v\" dropped=1",
            ),
            (
                400,
                "unable to parse 't v=1 -99999999999999999999': time outside range",
            ),
            (
                400,
                "partial write: points beyond retention policy dropped=1",
            ),
            (413, "Request Entity Too Large"),
            (422, "failure writing points to database: partial write"),
        ] {
            assert!(
                refusal_is_content(status(code), message),
                "{code} {message}"
            );
        }
        for (code, message) in [
            (401, "authorization failed"),
            (403, "not authorized to execute statement"),
            (404, "database not found: \"sensors\""),
            (400, "bucket not found"),
        ] {
            assert!(
                !refusal_is_content(status(code), message),
                "{code} {message}"
            );
        }
    }

    fn reading(device_id: &str, device_type: &str, ts_ms: i64, field: &str) -> Reading {
        Reading {
            device_id: device_id.to_owned(),
            device_type: device_type.to_owned(),
            location: None,
            ts_ms,
            fields: BTreeMap::from([(field.to_owned(), 1.0)]),
        }
    }

    fn encode(readings: &[Reading]) -> (String, Vec<(usize, usize)>) {
        let mut body = String::new();
        let mut lines = Vec::new();
        for (i, r) in readings.iter().enumerate() {
            lines.push((i, body.len()));
            line::push_reading(&mut body, r).expect("encodes");
        }
        (body, lines)
    }

    #[test]
    fn a_parse_error_names_the_quoted_line() {
        let readings = [
            reading("a", "t", 1_000, "v"),
            reading("b", "t", 2_000, "v"),
            reading("c", "t", 3_000, "v"),
        ];
        let (body, lines) = encode(&readings);
        let message = "unable to parse 't,device_id=b v=1.0 2000': bad timestamp";
        assert_eq!(bad_point(message, &body, &lines, &readings), Some(1));
    }

    #[test]
    fn a_type_conflict_names_the_first_point_with_that_field() {
        let readings = [
            reading("a", "t", 1_000, "v"),
            reading("b", "u", 2_000, "s"),
            reading("c", "u", 3_000, "s"),
        ];
        let (body, lines) = encode(&readings);
        let message = "partial write: field type conflict: input field \"s\" on measurement \
                       \"u\" is type float, already exists as type string dropped=2";
        assert_eq!(bad_point(message, &body, &lines, &readings), Some(1));
        assert_eq!(bad_point("something else", &body, &lines, &readings), None);
    }
}
