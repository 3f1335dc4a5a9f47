//! The anomaly detector against real labelled data: the 18 Numenta Anomaly Benchmark
//! series in `testdata/nab/` (MIT licence), scored by the benchmark's own rules
//! (`analytics::score`: windows, probationary period, sigmoid weighting, one threshold for
//! all files, normalised so the null detector scores 0 and the perfect one 100).
//!
//! The bounds are what the default configuration measured, minus a small margin, so a
//! change that makes the detector worse on real data fails here. Run with
//! `cargo test -p sensorfleet-model --test nab -- --nocapture` to see the table.

use sensorfleet_model::analytics::score::{self, PROFILES, ScoredFile};
use sensorfleet_model::analytics::{
    AnomalyKind, DetectorConfig, parse_timestamp_value_csv, score_series,
};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/nab/");

/// Measured with the default configuration: standard, reward low FP, reward low FN.
const MEASURED: [f64; 3] = [51.3, 35.7, 58.0];

/// How far below the measurement a run may land before it counts as a regression.
const MARGIN: f64 = 1.0;

/// Windows caught at the standard profile's threshold (of 35), measured.
const DETECTED: usize = 25;

/// The files with no anomaly at all: whatever fires there is a false positive.
const NO_ANOMALY: [&str; 2] = [
    "artificialNoAnomaly/art_daily_no_noise.csv",
    "artificialNoAnomaly/art_noisy.csv",
];

struct Series {
    key: String,
    timestamps: Vec<i64>,
    scores: Vec<f64>,
    windows: Vec<(i64, i64)>,
}

fn load(cfg: &DetectorConfig) -> Vec<Series> {
    let path = format!("{DATA}anomaly_windows.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let labels = score::parse_windows(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    labels
        .into_iter()
        .map(|(key, windows)| {
            let file = key.rsplit('/').next().unwrap_or(&key);
            let path = format!("{DATA}{file}");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let points = parse_timestamp_value_csv(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
            let verdicts = score_series(cfg, &points);
            assert_eq!(verdicts.len(), points.len());
            for v in &verdicts {
                assert!((0.0..=1.0).contains(&v.score), "{key}: {v:?}");
                // Flagged exactly at 0.5, except along a stuck run (flagged throughout,
                // scored at its onset).
                if v.anomaly != Some(AnomalyKind::Stuck) {
                    assert_eq!(v.anomaly.is_some(), v.score >= 0.5, "{key}: {v:?}");
                }
            }
            Series {
                key,
                timestamps: points.iter().map(|p| p.0).collect(),
                scores: verdicts.iter().map(|v| v.score).collect(),
                windows,
            }
        })
        .collect()
}

#[test]
fn default_detector_scores_on_the_18_nab_series() {
    let cfg = DetectorConfig::default();
    let series = load(&cfg);
    assert_eq!(series.len(), 18, "all 18 shipped series are labelled");
    let files: Vec<ScoredFile<'_>> = series
        .iter()
        .map(|s| ScoredFile {
            timestamps: &s.timestamps,
            scores: &s.scores,
            windows: &s.windows,
        })
        .collect();
    let results: Vec<_> = PROFILES
        .iter()
        .map(|p| score::evaluate(&files, p))
        .collect();

    println!("\nNAB, default DetectorConfig: {cfg:?}");
    for r in &results {
        let total = r.total_of(|_| true);
        println!(
            "{:<14} {:6.1}  threshold {:.4}  windows {}/{}  false positives {}",
            r.profile.name,
            r.score(),
            r.threshold,
            total.detected,
            total.windows,
            total.false_positives
        );
    }
    let standard = &results[0];
    for (s, f) in series.iter().zip(&standard.files) {
        println!(
            "  {:<56} {:>7} {}/{}  fp {}",
            s.key,
            f.normalised()
                .map_or_else(|| format!("({:+.2})", f.raw), |n| format!("{n:.1}")),
            f.detected,
            f.windows,
            f.false_positives
        );
    }

    let mut failures = Vec::new();
    for (r, measured) in results.iter().zip(MEASURED) {
        if r.score() < measured - MARGIN {
            failures.push(format!(
                "{}: {:.1}, want ≥ {:.1} (measured {measured})",
                r.profile.name,
                r.score(),
                measured - MARGIN
            ));
        }
    }
    let total = standard.total_of(|_| true);
    assert_eq!(total.windows, 35);
    if total.detected + 2 < DETECTED {
        failures.push(format!(
            "{} of 35 windows caught, want ≥ {}",
            total.detected,
            DETECTED - 2
        ));
    }
    // The benchmark's bar: above its windowed Gaussian (39.6 on all 58 series).
    if standard.score() < 40.0 {
        failures.push(format!(
            "standard {:.1} is below the bar of 40",
            standard.score()
        ));
    }
    let quiet: usize = series
        .iter()
        .zip(&standard.files)
        .filter(|(s, _)| NO_ANOMALY.contains(&s.key.as_str()))
        .map(|(_, f)| f.false_positives)
        .sum();
    if quiet > 20 {
        failures.push(format!(
            "{quiet} false positives on the two series without anomalies, want ≤ 20"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
