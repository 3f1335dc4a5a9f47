//! The handlers, one module per area of the API.

pub mod alerts;
pub mod assets;
pub mod dashboard;
pub mod devices;
pub mod health;
pub mod live;
pub mod metrics;

use std::collections::HashMap;

use serde::Deserialize;

use crate::ApiError;

/// Query parameters, validated by hand so that every mistake gets a sentence that says
/// which parameter, what was given and what is accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// The raw value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A number in `(above, max]`, or `default` when absent.
    pub fn f64_in(&self, name: &str, default: f64, above: f64, max: f64) -> Result<f64, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > above && v <= max => Ok(v),
            _ => Err(ApiError::bad_parameter(format!(
                "{name} must be a number above {above} and at most {max}, got {text:?}"
            ))),
        }
    }

    /// A whole number in `[min, max]`, or `default` when absent.
    pub fn usize_in(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        match text.trim().parse::<usize>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(ApiError::bad_parameter(format!(
                "{name} must be a whole number from {min} to {max}, got {text:?}"
            ))),
        }
    }

    /// One of `allowed`, or `None` when absent.
    pub fn one_of(
        &self,
        name: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        allowed
            .iter()
            .find(|a| **a == text)
            .map(|a| Some(*a))
            .ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "{name} must be one of {}, got {text:?}",
                    allowed.join(", ")
                ))
            })
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn numbers_are_checked_with_a_sentence() {
        let p = params(&[("hours", "abc"), ("limit", "0"), ("ok", "2.5")]);
        let e = p.f64_in("hours", 24.0, 0.0, 100.0).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(p.f64_in("ok", 24.0, 0.0, 100.0).unwrap(), 2.5);
        assert_eq!(p.f64_in("absent", 24.0, 0.0, 100.0).unwrap(), 24.0);
        assert!(
            params(&[("hours", "0")])
                .f64_in("hours", 1.0, 0.0, 10.0)
                .is_err()
        );
        assert!(
            params(&[("hours", "NaN")])
                .f64_in("hours", 1.0, 0.0, 10.0)
                .is_err()
        );
        assert!(p.usize_in("limit", 5, 1, 10).is_err());
        assert_eq!(
            params(&[("s", "raw")])
                .one_of("s", &["raw", "hourly"])
                .unwrap(),
            Some("raw")
        );
        assert!(params(&[("s", "x")]).one_of("s", &["raw"]).is_err());
    }
}
