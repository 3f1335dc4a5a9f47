//! `sensorfleet detect`: replays `timestamp,value` series through the very detector the
//! processor runs.
//!
//! - `--csv FILE` prints a per-row anomaly score in [0, 1]; with an AlertRule, also when
//!   that rule would have fired and resolved.
//! - `--labels windows.json DIR/… FILE…` scores the detector against labelled anomaly
//!   windows by the Numenta Anomaly Benchmark's rules (`analytics::score`) and prints the
//!   normalised score per profile, per category and per file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sensorfleet_model::CompiledRule;
use sensorfleet_model::ManifestSet;
use sensorfleet_model::analytics::score::{self, PROFILES, ProfileResult, ScoredFile};
use sensorfleet_model::analytics::{self, Condition, DetectorConfig, Phase, Transition};
use sensorfleet_model::reading::format_ts;

// The flags of `sensorfleet detect` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
pub struct DetectArgs {
    /// The series: a CSV with a `timestamp,value` header (NAB format).
    #[arg(long, required_unless_present = "labels", conflicts_with = "labels")]
    pub csv: Option<PathBuf>,
    /// An AlertRule manifest to try on the series.
    #[arg(long, requires = "csv")]
    pub rule: Option<PathBuf>,
    /// Score the detector instead: labelled anomaly windows in NAB's JSON format
    /// (`{"<category>/<file>.csv": [["start", "end"], …]}`) for the CSV files or
    /// directories given after it; prints the benchmark's normalised score per profile,
    /// category and file. Example: sensorfleet detect --labels windows.json data/
    #[arg(long, requires = "paths")]
    pub labels: Option<PathBuf>,
    /// With --labels: the CSV files, or directories of them, to score.
    #[arg(requires = "labels")]
    pub paths: Vec<PathBuf>,
    /// Calibrated |z| at or above which a reading is flagged (score 0.5).
    #[arg(long)]
    pub z_threshold: Option<f64>,
    /// Detector tuning as JSON, any subset of the fields (alpha, warmup, spike_z,
    /// stuck_after, anomaly_weight, short_alpha, season_days, z_threshold), e.g.
    /// '{"season_days": 0}'.
    #[arg(long)]
    pub detector: Option<String>,
}

/// Replays `--csv` (printing scores to stdout and a summary to stderr) or scores
/// `--labels`.
pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    let mut detector: DetectorConfig = match &args.detector {
        Some(json) => {
            serde_json::from_str(json).map_err(|e| anyhow::anyhow!("--detector {json:?}: {e}"))?
        }
        None => DetectorConfig::default(),
    };
    if let Some(z) = args.z_threshold {
        detector.z_threshold = z;
    }
    let stdout = std::io::stdout();
    if let Some(labels) = &args.labels {
        let (series, skipped) = load_labelled(labels, &args.paths)?;
        for path in skipped {
            eprintln!("{}: not in {}, skipped", path.display(), labels.display());
        }
        let results = score_labelled(&series, &detector);
        write_scores(&series, &results, &mut stdout.lock())?;
        return Ok(());
    }
    let csv = args
        .csv
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("give --csv FILE or --labels FILE DIR…"))?;
    let points = load_csv(csv)?;
    let rule = args.rule.as_deref().map(load_rule).transpose()?;
    let summary = replay(&points, &detector, rule.as_ref(), &mut stdout.lock())?;
    let rule_counts = if rule.is_some() {
        format!(
            ", rule fired {} times and resolved {} times",
            summary.fired, summary.resolved
        )
    } else {
        String::new()
    };
    eprintln!(
        "{} rows, {} anomalies{rule_counts}",
        summary.rows, summary.anomalies
    );
    Ok(())
}

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

/// The detector's score of every point, in order: the code path `detect` shares with the
/// processor (each is one [`analytics::Detector`] per series, fed reading by reading).
pub fn scores(points: &[(i64, f64)], detector: &DetectorConfig) -> Vec<f64> {
    analytics::score_series(detector, points)
        .iter()
        .map(|v| v.score)
        .collect()
}

/// One labelled series: its key in the windows file, its rows and its windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    /// Key in the windows file, e.g. `realKnownCause/nyc_taxi.csv`.
    pub key: String,
    /// Rows `(unix ms, value)`.
    pub points: Vec<(i64, f64)>,
    /// Labelled anomaly windows `[start, end]`, unix ms.
    pub windows: Vec<(i64, i64)>,
}

impl Labelled {
    /// The category: the key's directory (`realKnownCause`), or `-` without one.
    pub fn category(&self) -> &str {
        self.key.rsplit_once('/').map_or("-", |(dir, _)| dir)
    }
}

/// Loads the windows file and the series in `paths` (CSV files, or directories whose
/// `*.csv` files are taken in name order). A file named on the command line must have an
/// entry in the windows file; files of a directory without one are skipped and returned
/// by path.
pub fn load_labelled(
    labels: &Path,
    paths: &[PathBuf],
) -> anyhow::Result<(Vec<Labelled>, Vec<PathBuf>)> {
    let text = std::fs::read_to_string(labels)
        .with_context(|| format!("{}: cannot read", labels.display()))?;
    let windows = score::parse_windows(&text).with_context(|| format!("{}", labels.display()))?;
    let mut files: Vec<(PathBuf, bool)> = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "csv"))
                .collect();
            found.sort();
            files.extend(found.into_iter().map(|p| (p, false)));
        } else {
            files.push((path.clone(), true));
        }
    }
    let (mut series, mut skipped) = (Vec::new(), Vec::new());
    for (path, named) in files {
        let Some(key) = label_key(&windows, &path) else {
            if named {
                anyhow::bail!(
                    "{}: no entry for this file in {}; add its windows (an empty list if it \
                     has no anomaly) or leave it out",
                    path.display(),
                    labels.display()
                );
            }
            skipped.push(path);
            continue;
        };
        series.push(Labelled {
            points: load_csv(&path)?,
            windows: windows[&key].clone(),
            key,
        });
    }
    if series.is_empty() {
        anyhow::bail!(
            "no labelled series: none of the CSV files given has an entry in {}",
            labels.display()
        );
    }
    Ok((series, skipped))
}

/// The key of `path` in the windows: the longest key that is the file name or ends with
/// `/<file name>` and matches the most trailing directories of the path.
fn label_key(windows: &BTreeMap<String, Vec<(i64, i64)>>, path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|p| p.to_str());
    let candidates: Vec<&String> = windows
        .keys()
        .filter(|k| *k == name || k.ends_with(&format!("/{name}")))
        .collect();
    let exact = parent.and_then(|dir| {
        candidates
            .iter()
            .find(|k| k.ends_with(&format!("{dir}/{name}")))
    });
    match (exact, candidates.as_slice()) {
        (Some(k), _) => Some((*k).clone()),
        (None, [only]) => Some((*only).clone()),
        _ => None,
    }
}

/// Scores the detector on every series under each of the three profiles.
pub fn score_labelled(series: &[Labelled], detector: &DetectorConfig) -> Vec<ProfileResult> {
    let rows: Vec<(Vec<i64>, Vec<f64>)> = series
        .iter()
        .map(|s| {
            let ts = s.points.iter().map(|p| p.0).collect();
            (ts, scores(&s.points, detector))
        })
        .collect();
    let files: Vec<ScoredFile<'_>> = series
        .iter()
        .zip(&rows)
        .map(|(s, (ts, sc))| ScoredFile {
            timestamps: ts,
            scores: sc,
            windows: &s.windows,
        })
        .collect();
    PROFILES
        .iter()
        .map(|profile| score::evaluate(&files, profile))
        .collect()
}

/// Writes the score tables: per profile, per category, per file.
pub fn write_scores(
    series: &[Labelled],
    results: &[ProfileResult],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let cell = |f: &score::FileResult| {
        f.normalised()
            .map_or_else(|| format!("({:+.2})", f.raw), |n| format!("{n:.1}"))
    };
    writeln!(
        out,
        "NAB score of {} series (100 = every window caught at its start, 0 = never firing)",
        series.len()
    )?;
    writeln!(
        out,
        "{:<15} {:>7} {:>10} {:>9} {:>10}",
        "profile", "score", "threshold", "detected", "false pos."
    )?;
    for r in results {
        let total = r.total_of(|_| true);
        writeln!(
            out,
            "{:<15} {:>7.1} {:>10.4} {:>9} {:>10}",
            r.profile.name,
            r.score(),
            r.threshold,
            format!("{}/{}", total.detected, total.windows),
            total.false_positives
        )?;
    }

    let names: Vec<&str> = results.iter().map(|r| r.profile.name).collect();
    let mut categories: Vec<&str> = series.iter().map(Labelled::category).collect();
    categories.sort_unstable();
    categories.dedup();
    writeln!(out)?;
    write!(out, "{:<24} {:>5}", "category", "files")?;
    for name in &names {
        write!(out, " {name:>14}")?;
    }
    writeln!(out)?;
    for category in categories {
        let members = |i: usize| series[i].category() == category;
        let count = (0..series.len()).filter(|&i| members(i)).count();
        write!(out, "{category:<24} {count:>5}")?;
        for r in results {
            write!(out, " {:>14}", cell(&r.total_of(members)))?;
        }
        writeln!(out)?;
    }

    writeln!(out)?;
    write!(out, "{:<56} {:>7}", "file", "windows")?;
    for name in &names {
        write!(out, " {name:>14}")?;
    }
    writeln!(out, " {:>9} {:>10}", "detected", "false pos.")?;
    for (i, s) in series.iter().enumerate() {
        write!(out, "{:<56} {:>7}", s.key, s.windows.len())?;
        for r in results {
            write!(out, " {:>14}", cell(&r.files[i]))?;
        }
        // Detections and false positives at the standard profile's threshold.
        let standard = &results[0].files[i];
        writeln!(
            out,
            " {:>9} {:>10}",
            format!("{}/{}", standard.detected, standard.windows),
            standard.false_positives
        )?;
    }
    writeln!(
        out,
        "\n(per file: normalised score at the profile's one threshold; in brackets the raw \
         score of a file without windows, where every detection is a false positive)"
    )
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
    use sensorfleet_model::analytics::Threshold;
    use sensorfleet_model::{Reading, Severity};
    use sensorfleet_workers::processor::{Engine, EngineConfig, engine::Output};

    use super::*;

    const NAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/nab/");

    #[test]
    fn detect_and_the_processor_give_the_same_scores() {
        // A real series (hourly, 7,267 rows, with a daily profile and anomalies) through
        // the processor's engine as one temperature sensor, and through `detect`.
        let points = load_csv(Path::new(&format!(
            "{NAB}ambient_temperature_system_failure.csv"
        )))
        .expect("shipped series");
        let cfg = DetectorConfig::default();
        let mut engine = Engine::new(EngineConfig {
            detector: cfg,
            ..EngineConfig::default()
        });
        let mut out = Output::default();
        let mut from_engine = Vec::with_capacity(points.len());
        for &(ts_ms, value) in &points {
            let reading = Reading {
                device_id: "office-1".into(),
                device_type: "temperature_sensor".into(),
                location: None,
                ts_ms,
                fields: [("temperature_celsius".to_owned(), value)].into(),
            };
            engine.observe(&reading, &mut out);
            from_engine.push(engine.anomaly_score("office-1").expect("checked device"));
        }
        let from_detect = scores(&points, &cfg);
        assert_eq!(from_engine.len(), points.len());
        assert_eq!(from_engine, from_detect, "bit for bit");
        // Not vacuous: the series does score, and the engine raised anomaly alerts.
        assert!(from_detect.iter().any(|&s| s >= 0.5));
        assert!(
            out.alerts
                .iter()
                .any(|a| a.alert_type == sensorfleet_model::AlertKind::Anomaly)
        );
    }

    #[test]
    fn labelled_scoring_reads_keys_directories_and_reports_every_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rows = |spike_at: usize| {
            let mut text = String::from("timestamp,value\n");
            for i in 0..400 {
                let value = if i == spike_at {
                    90.0
                } else {
                    20.0 + (i % 5) as f64 * 0.1
                };
                text.push_str(&format!(
                    "2024-01-01 {:02}:{:02}:00,{value}\n",
                    i / 60,
                    i % 60
                ));
            }
            text
        };
        std::fs::write(dir.path().join("a.csv"), rows(300)).expect("write");
        std::fs::write(dir.path().join("quiet.csv"), rows(10_000)).expect("write");
        std::fs::write(dir.path().join("unlabelled.csv"), rows(0)).expect("write");
        let labels = dir.path().join("windows.json");
        std::fs::write(
            &labels,
            r#"{"cat/a.csv": [["2024-01-01 04:50:00", "2024-01-01 05:10:00"]],
                "other/quiet.csv": []}"#,
        )
        .expect("write");

        let (series, skipped) =
            load_labelled(&labels, &[dir.path().to_path_buf()]).expect("labelled");
        assert_eq!(
            series.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            ["cat/a.csv", "other/quiet.csv"]
        );
        assert_eq!(skipped, [dir.path().join("unlabelled.csv")]);
        assert_eq!(series[0].category(), "cat");

        // The spike at row 300 (05:00) sits in the middle of the only window: it is
        // caught, and the quiet file raises nothing, so the standard score is high.
        let results = score_labelled(&series, &DetectorConfig::default());
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].files[0].detected, 1);
        assert_eq!(results[0].files[1].false_positives, 0);
        assert!(results[0].score() > 50.0, "{}", results[0].score());

        let mut out = Vec::new();
        write_scores(&series, &results, &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        for needle in [
            "standard",
            "reward_low_fp",
            "reward_low_fn",
            "cat/a.csv",
            "other",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }

        // A file named on the command line must be labelled.
        let err = load_labelled(&labels, &[dir.path().join("unlabelled.csv")])
            .expect_err("unlabelled file");
        assert!(err.to_string().contains("no entry"), "{err}");
    }

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
