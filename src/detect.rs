//! `sensorfleet detect --csv FILE`: replays a `timestamp,value` series through the very
//! detector the processor runs and prints a per-row anomaly score in [0, 1]; with an
//! AlertRule, also when that rule would have fired and resolved.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sensorfleet_model::CompiledRule;
use sensorfleet_model::ManifestSet;
use sensorfleet_model::analytics::{self, Condition, DetectorConfig, Phase, Transition};
use sensorfleet_model::reading::format_ts;

/// What the replay found.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// Rows replayed.
    pub rows: usize,
    /// Rows flagged as anomalies.
    pub anomalies: usize,
    /// Times the rule fired.
    pub fired: usize,
    /// Times the rule resolved.
    pub resolved: usize,
}

/// Replays `points` and writes one CSV row per point to `out`:
/// `timestamp,value,score,anomaly[,rule]`.
pub fn replay(
    points: &[(i64, f64)],
    detector: &DetectorConfig,
    rule: Option<&CompiledRule>,
    out: &mut dyn Write,
) -> std::io::Result<Summary> {
    let verdicts = analytics::score_series(detector, points);
    let mut summary = Summary {
        rows: points.len(),
        ..Summary::default()
    };
    write!(out, "timestamp,value,score,anomaly")?;
    if rule.is_some() {
        write!(out, ",rule")?;
    }
    writeln!(out)?;
    let mut phase = Phase::Inactive;
    for (&(ts, value), verdict) in points.iter().zip(&verdicts) {
        let kind = verdict.anomaly.map_or("", |k| k.as_str());
        summary.anomalies += usize::from(verdict.anomaly.is_some());
        write!(out, "{},{value},{:.4},{kind}", format_ts(ts), verdict.score)?;
        if let Some(rule) = rule {
            let condition =
                analytics::threshold_condition(&rule.threshold, value, phase.is_active());
            let (next, transition) = analytics::step(phase, condition, rule.for_ms, ts);
            phase = next;
            let text = match transition {
                Some(Transition::Fired) => {
                    summary.fired += 1;
                    "fired"
                }
                Some(Transition::Resolved) => {
                    summary.resolved += 1;
                    "resolved"
                }
                None if phase.is_active() => "firing",
                None if condition == Condition::Breach => "pending",
                None => "",
            };
            write!(out, ",{text}")?;
        }
        writeln!(out)?;
    }
    Ok(summary)
}

/// Loads the single AlertRule in `path`.
pub fn load_rule(path: &Path) -> anyhow::Result<CompiledRule> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut set = ManifestSet::default();
    set.add_file(&path.display().to_string(), &text)?;
    let mut rules = set.compiled_rules();
    match rules.len() {
        1 => Ok(rules.remove(0)),
        n => anyhow::bail!(
            "{}: holds {n} AlertRules; give a file with exactly one",
            path.display()
        ),
    }
}

/// Reads and parses the CSV.
pub fn load_csv(path: &Path) -> anyhow::Result<Vec<(i64, f64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    analytics::parse_timestamp_value_csv(&text).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests {
    use sensorfleet_model::Severity;
    use sensorfleet_model::analytics::Threshold;

    use super::*;

    #[test]
    fn replay_scores_every_row_and_tries_the_rule() {
        let mut points: Vec<(i64, f64)> = (0..200)
            .map(|i| (i * 60_000, 20.0 + (i % 7) as f64 * 0.1))
            .collect();
        points.extend((200..210).map(|i| (i * 60_000, 45.0)));
        points.extend((210..230).map(|i| (i * 60_000, 20.0)));
        let rule = CompiledRule {
            name: "hot".into(),
            device_type: Some("t".into()),
            fleet: None,
            metric: "value".into(),
            threshold: Threshold {
                min: None,
                max: Some(30.0),
                clear_min: None,
                clear_max: Some(29.0),
            },
            for_ms: 120_000,
            severity: Severity::Warning,
        };
        let mut out = Vec::new();
        let summary = replay(&points, &DetectorConfig::default(), Some(&rule), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 231, "a header and one row per point");
        assert!(text.starts_with("timestamp,value,score,anomaly,rule\n"));
        assert_eq!(summary.rows, 230);
        assert!(summary.anomalies >= 1, "the jump to 45 is an anomaly");
        assert_eq!(
            (summary.fired, summary.resolved),
            (1, 1),
            "fires once after `for`, resolves once"
        );
        assert!(text.contains(",pending"));
    }
}
