//! The per-series anomaly detector the processor runs on every (device, field), and that
//! `sensorfleet detect --csv FILE` replays over history.
//!
//! Three kinds of evidence, each against the series' *own* history:
//!
//! - **Statistical** — the z-score of the reading against an exponentially weighted mean
//!   and variance (EWMA, weight `alpha`) reaches `z_threshold`.
//! - **Spike** — the rate of change since the previous reading (Δvalue / Δt) is far outside
//!   the series' typical rate of change, itself an EWMA of |rate|.
//! - **Stuck** — the same value `stuck_after` times in a row from a series that was
//!   varying before (runs that long are unusual for it).
//!
//! All three are turned into a ratio `r` (1.0 = exactly at its threshold); the largest
//! gives the [`Verdict`]'s score `r² / (1 + r²)`, which is monotonic, in [0, 1), and
//! 0.5 at the threshold, so a replayed score ≥ 0.5 reads as "flagged".
//!
//! An anomalous reading updates the baseline with only `anomaly_weight × alpha`, so an
//! outlier does not immediately absorb itself, while a lasting level shift is flagged
//! first and then, as its readings keep widening the variance and pulling the mean,
//! accepted as the new normal. The reduced weight rises back to full as flagged readings
//! become routine (more than 5% of recent ones): a recurring pattern, such as an hourly
//! batch job's CPU burst, is then learnt instead of being flagged for ever — without that,
//! each flagged burst kept the variance small and so got the next one flagged too (6% of
//! NAB's CPU series). While a series is stuck the baseline is frozen: repeated
//! values from a dead sensor say nothing about the process it measured.

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::usable;

/// `E|X| = σ·√(2/π)` for a normal X: multiplying a mean absolute deviation by `√(π/2)`
/// gives a standard deviation, so the rate evidence is a z-score like the level's.
const MAD_TO_SD: f64 = 1.253_314_137_315_500_3;

/// A run of identical values must also be this many times longer than the series'
/// typical run to count as stuck, so coarsely quantised sensors (which repeat a lot)
/// are not flagged for doing what they always do.
const STUCK_RUN_RATIO: f64 = 4.0;

/// Share of flagged readings at which anomalies count as routine and are learnt with
/// full weight (see `Detector::observe`).
const RECURRING_SHARE: f64 = 0.05;

/// Weight of one completed run in the typical run length.
const RUN_ALPHA: f64 = 0.1;

/// Tuning of the [`Detector`]. The defaults were tuned on the three labelled NAB series
/// in `testdata/nab/` (see `model/tests/nab.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    /// |z| at or above which a reading is a statistical anomaly. Default 4.
    pub z_threshold: f64,
    /// EWMA weight of a new reading in the mean, variance and typical rate, in (0, 1].
    /// Smaller remembers longer: 0.005 is a memory of about 200 readings (17 h at one
    /// reading per 5 min), long enough that a slow drift is seen as one. Default 0.005.
    pub alpha: f64,
    /// Readings to learn from before anything is flagged. Default 30.
    pub warmup: u32,
    /// Rate-of-change z-score (|rate| over the typical |rate|, scaled to a standard
    /// deviation) at or above which a reading is a spike. Default 8.
    pub spike_z: f64,
    /// Identical readings in a row after which a previously varying series is stuck.
    /// Default 30.
    pub stuck_after: u32,
    /// Fraction of `alpha` an anomalous reading is learnt with, in [0, 1]: 0 never
    /// learns from anomalies (a level shift would be flagged for ever), 1 absorbs them at
    /// once. Default 0.1.
    pub anomaly_weight: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            z_threshold: 4.0,
            alpha: 0.005,
            warmup: 30,
            spike_z: 8.0,
            stuck_after: 30,
            anomaly_weight: 0.1,
        }
    }
}

impl DetectorConfig {
    /// The configuration with every field brought into its meaningful range, so a bad
    /// rule (NaN, negative, zero) degrades to something sane instead of dividing by 0.
    fn sanitized(&self) -> DetectorConfig {
        let d = DetectorConfig::default();
        let positive = |v: f64, fallback: f64| {
            if v.is_finite() && v > 0.0 {
                v
            } else {
                fallback
            }
        };
        DetectorConfig {
            z_threshold: positive(self.z_threshold, d.z_threshold),
            alpha: positive(self.alpha, d.alpha).min(1.0),
            warmup: self.warmup.max(2),
            spike_z: positive(self.spike_z, d.spike_z),
            stuck_after: self.stuck_after.max(2),
            anomaly_weight: if self.anomaly_weight.is_finite() {
                self.anomaly_weight.clamp(0.0, 1.0)
            } else {
                d.anomaly_weight
            },
        }
    }
}

/// The kind of anomaly a reading shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Far from the series' recent level (z-score against its EWMA history).
    Statistical,
    /// Changed far faster than the series usually changes.
    Spike,
    /// The same value over and over from a series that used to vary.
    Stuck,
}

impl AnomalyKind {
    /// The snake_case name used on the wire and in alert names.
    pub fn as_str(&self) -> &'static str {
        match self {
            AnomalyKind::Statistical => "statistical",
            AnomalyKind::Spike => "spike",
            AnomalyKind::Stuck => "stuck",
        }
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the detector makes of one reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Anomaly score in [0, 1]: 0 is perfectly ordinary (and every warm-up reading),
    /// 0.5 is exactly at a threshold, towards 1 is overwhelming evidence.
    pub score: f64,
    /// Signed z-score of the reading against the history before it (0 while warming up).
    pub zscore: f64,
    /// The anomaly found, if any; the most specific kind wins (stuck, spike, statistical).
    pub anomaly: Option<AnomalyKind>,
}

impl Verdict {
    /// Nothing to report: warm-up, or an unusable (non-finite) reading.
    pub const NORMAL: Verdict = Verdict {
        score: 0.0,
        zscore: 0.0,
        anomaly: None,
    };
}

/// Per-series detector state, about 80 bytes; persisted with the processor's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    /// Usable readings seen (saturating).
    count: u32,
    /// EWMA of the value.
    mean: f64,
    /// EWMA variance of the value.
    var: f64,
    /// Rates of change seen (saturating).
    rate_count: u32,
    /// EWMA of |Δvalue / Δt| in units per second.
    rate_mad: f64,
    /// The newest reading (by timestamp) and when it was taken.
    last_value: f64,
    last_ts: i64,
    /// Length of the current run of identical values (1 = the value just changed).
    run: u32,
    /// Runs completed so far (saturating): none means the series never varied.
    runs_done: u32,
    /// EWMA of completed run lengths.
    typical_run: f64,
    /// EWMA of the share of readings flagged: anomalies that keep recurring are learnt.
    surprise: f64,
}

impl Detector {
    /// Scores one reading taken at `ts_ms` and learns from it.
    ///
    /// A non-finite value returns [`Verdict::NORMAL`] and leaves the state untouched. A
    /// reading older than the newest one seen is scored against the level history and
    /// learnt from, but takes no part in the rate and stuck checks, which need order.
    pub fn observe(&mut self, cfg: &DetectorConfig, ts_ms: i64, value: f64) -> Verdict {
        if !usable(value) {
            return Verdict::NORMAL;
        }
        let cfg = cfg.sanitized();
        if self.count == 0 {
            *self = Detector {
                count: 1,
                mean: value,
                last_value: value,
                last_ts: ts_ms,
                run: 1,
                ..Detector::default()
            };
            return Verdict::NORMAL;
        }

        // Order-dependent evidence: rate of change and runs of identical values.
        let in_order = ts_ms >= self.last_ts;
        let mut rate = None;
        if in_order {
            let dt_ms = ts_ms.saturating_sub(self.last_ts);
            if dt_ms > 0 {
                rate = Some((value - self.last_value).abs() / (dt_ms as f64 / 1000.0));
            }
            if value == self.last_value {
                self.run = self.run.saturating_add(1);
            } else {
                self.typical_run = if self.runs_done == 0 {
                    f64::from(self.run)
                } else {
                    self.typical_run + RUN_ALPHA * (f64::from(self.run) - self.typical_run)
                };
                self.runs_done = self.runs_done.saturating_add(1);
                self.run = 1;
            }
        }

        let warm = self.count >= cfg.warmup;
        let scale = 1e-9 * self.mean.abs().max(1.0);
        let sd = self.var.max(0.0).sqrt().max(scale);
        let zscore = (value - self.mean) / sd;
        let r_stat = if warm {
            zscore.abs() / cfg.z_threshold
        } else {
            0.0
        };
        let r_spike = match rate {
            Some(rate) if warm && self.rate_count >= cfg.warmup => {
                let rate_sd = (self.rate_mad * MAD_TO_SD).max(scale);
                rate / rate_sd / cfg.spike_z
            }
            _ => 0.0,
        };
        let run = f64::from(self.run);
        let varied = self.runs_done > 0 && run >= STUCK_RUN_RATIO * self.typical_run;
        let r_stuck = if warm && varied {
            run / f64::from(cfg.stuck_after)
        } else {
            0.0
        };

        let anomaly = if r_stuck >= 1.0 {
            Some(AnomalyKind::Stuck)
        } else if r_spike >= 1.0 {
            Some(AnomalyKind::Spike)
        } else if r_stat >= 1.0 {
            Some(AnomalyKind::Statistical)
        } else {
            None
        };
        let r = r_stat.max(r_spike).max(r_stuck);
        let score = if r.is_finite() {
            r * r / (1.0 + r * r)
        } else {
            1.0
        };

        // Learn. Warm-up uses the plain running mean (weight 1/n) so early readings are
        // not swamped by the first one; anomalies are learnt slowly; a stuck sensor not
        // at all.
        let base = if warm {
            cfg.alpha
        } else {
            cfg.alpha.max(1.0 / f64::from(self.count.saturating_add(1)))
        };
        // An anomaly is learnt with `anomaly_weight`, rising to full weight as anomalies
        // become routine: otherwise a pattern that is flagged (say an hourly batch job's
        // CPU burst) is never learnt, keeps the variance small and so keeps being
        // flagged — a feedback loop measured at 6% false positives on NAB's CPU series.
        let learn = if anomaly.is_some() {
            let routine = (self.surprise / RECURRING_SHARE).clamp(0.0, 1.0);
            cfg.anomaly_weight + (1.0 - cfg.anomaly_weight) * routine
        } else {
            1.0
        };
        let flagged = if anomaly.is_some() { 1.0 } else { 0.0 };
        self.surprise += cfg.alpha * (flagged - self.surprise);
        let weight = base * learn;
        if anomaly != Some(AnomalyKind::Stuck) {
            let diff = value - self.mean;
            let incr = weight * diff;
            self.mean += incr;
            self.var = ((1.0 - weight) * (self.var + diff * incr)).max(0.0);
            if let Some(rate) = rate {
                if self.rate_count == 0 {
                    self.rate_mad = rate;
                } else {
                    let w = if self.rate_count < cfg.warmup {
                        cfg.alpha
                            .max(1.0 / f64::from(self.rate_count.saturating_add(1)))
                    } else {
                        cfg.alpha
                    };
                    self.rate_mad += w * learn * (rate - self.rate_mad);
                }
                self.rate_count = self.rate_count.saturating_add(1);
            }
        }
        self.count = self.count.saturating_add(1);
        if in_order {
            self.last_value = value;
            self.last_ts = ts_ms;
        }

        Verdict {
            score,
            zscore: if warm { zscore } else { 0.0 },
            anomaly,
        }
    }
}

/// Replays a whole series through a fresh [`Detector`]: one verdict per point, in order.
pub fn score_series(cfg: &DetectorConfig, points: &[(i64, f64)]) -> Vec<Verdict> {
    let mut detector = Detector::default();
    points
        .iter()
        .map(|&(ts, value)| detector.observe(cfg, ts, value))
        .collect()
}

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
fn parse_timestamp(text: &str) -> Option<i64> {
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

    const MIN: i64 = 60_000;

    /// Deterministic pseudo-noise in [-1, 1] (no rand dependency, same on every run).
    fn noise(i: u64) -> f64 {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        (x % 20_001) as f64 / 10_000.0 - 1.0
    }

    /// Equal up to the last bit or so: serde_json (without its `float_roundtrip`
    /// feature) may read a float back one ULP off.
    fn assert_close(a: &Detector, b: &Detector) {
        let near = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300);
        let fa = [
            a.mean,
            a.var,
            a.rate_mad,
            a.last_value,
            a.typical_run,
            a.surprise,
        ];
        let fb = [
            b.mean,
            b.var,
            b.rate_mad,
            b.last_value,
            b.typical_run,
            b.surprise,
        ];
        assert!(
            fa.iter().zip(&fb).all(|(x, y)| near(*x, *y)),
            "{a:?}\n{b:?}"
        );
        assert_eq!(
            (a.count, a.rate_count, a.last_ts, a.run, a.runs_done),
            (b.count, b.rate_count, b.last_ts, b.run, b.runs_done)
        );
    }

    fn series(n: u64, f: impl Fn(u64) -> f64) -> Vec<(i64, f64)> {
        (0..n).map(|i| (i as i64 * MIN, f(i))).collect()
    }

    fn kinds(verdicts: &[Verdict]) -> Vec<(usize, AnomalyKind)> {
        verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.anomaly.map(|k| (i, k)))
            .collect()
    }

    #[test]
    fn quiet_noise_is_not_flagged() {
        let cfg = DetectorConfig::default();
        let pts = series(5000, |i| 20.0 + noise(i));
        let v = score_series(&cfg, &pts);
        assert!(kinds(&v).is_empty(), "{:?}", kinds(&v));
        assert!(v.iter().all(|v| (0.0..0.5).contains(&v.score)));
    }

    #[test]
    fn warmup_flags_nothing() {
        let cfg = DetectorConfig::default();
        let pts = series(
            u64::from(cfg.warmup),
            |i| if i % 2 == 0 { 0.0 } else { 1e6 },
        );
        let v = score_series(&cfg, &pts);
        assert!(v.iter().all(|v| *v == Verdict::NORMAL));
    }

    #[test]
    fn level_shift_is_flagged_then_accepted() {
        let cfg = DetectorConfig::default();
        let pts = series(2000, |i| if i < 1000 { 20.0 } else { 30.0 } + noise(i));
        let v = score_series(&cfg, &pts);
        assert!(v[1000].anomaly.is_some(), "{:?}", v[1000]);
        assert!(v[1000].score > 0.9);
        assert!(v[1001].anomaly.is_some(), "not absorbed at once");
        let flagged = kinds(&v);
        assert!(
            flagged.iter().all(|(i, _)| (1000..1300).contains(i)),
            "{flagged:?}"
        );
        assert!(
            v[1500..].iter().all(|v| v.anomaly.is_none()),
            "accepted as normal"
        );
    }

    #[test]
    fn single_outlier_is_statistical_or_spike_and_does_not_stick() {
        let cfg = DetectorConfig::default();
        let pts = series(600, |i| if i == 400 { 35.0 } else { 20.0 + noise(i) });
        let v = score_series(&cfg, &pts);
        assert!(v[400].anomaly.is_some());
        assert!(v[400].zscore > 10.0);
        // The reading right after drops back: a large rate of change, so it may be a
        // spike too, but the level is normal again within a few readings.
        assert!(v[405..].iter().all(|v| v.anomaly.is_none()));
    }

    #[test]
    fn spike_is_a_fast_change_within_the_normal_range() {
        // A slow sine between 10 and 30: any level is normal, but the jump from the
        // trough to the crest within one minute is a spike.
        let cfg = DetectorConfig::default();
        let mut pts = series(3000, |i| 20.0 + 10.0 * (i as f64 / 200.0).sin());
        let (t, _) = pts[2000];
        pts[2000] = (t, 20.0 + 10.0 * ((2000.0 + 314.0) / 200.0_f64).sin());
        let v = score_series(&cfg, &pts);
        assert_eq!(v[2000].anomaly, Some(AnomalyKind::Spike), "{:?}", v[2000]);
        assert!(kinds(&v[..2000]).is_empty());
    }

    #[test]
    fn a_slow_reading_after_a_gap_is_not_a_spike() {
        // Same size of change as above, but after an hour's gap: the rate is ordinary.
        let cfg = DetectorConfig::default();
        let mut pts = series(600, |i| 20.0 + noise(i));
        for p in pts.iter_mut().skip(500) {
            p.0 += 60 * MIN;
        }
        let v = score_series(&cfg, &pts);
        assert_ne!(v[500].anomaly, Some(AnomalyKind::Spike));
    }

    #[test]
    fn stuck_sensor_is_flagged_once_the_run_is_long() {
        let cfg = DetectorConfig::default();
        let pts = series(800, |i| if i >= 500 { 21.25 } else { 20.0 + noise(i) });
        let v = score_series(&cfg, &pts);
        let run_end = 500 + cfg.stuck_after as usize - 1;
        assert!(v[500..run_end].iter().all(|v| v.anomaly.is_none()));
        assert!(
            v[run_end..]
                .iter()
                .all(|v| v.anomaly == Some(AnomalyKind::Stuck))
        );
        // Recovery: the frozen baseline means the return to noise is ordinary.
        let mut d = Detector::default();
        for &(t, x) in &pts {
            d.observe(&cfg, t, x);
        }
        let back = d.observe(&cfg, 800 * MIN, 20.1);
        assert_eq!(back.anomaly, None, "{back:?}");
    }

    #[test]
    fn constant_from_the_start_is_not_stuck() {
        let cfg = DetectorConfig::default();
        let v = score_series(&cfg, &series(500, |_| 5.0));
        assert!(kinds(&v).is_empty());
    }

    #[test]
    fn quantised_sensor_repeating_as_usual_is_not_stuck() {
        // Changes every 20 readings by design; a run of 30 is normal for it.
        let cfg = DetectorConfig::default();
        let v = score_series(&cfg, &series(2000, |i| ((i / 20) % 3) as f64 * 0.5));
        assert!(v.iter().all(|v| v.anomaly != Some(AnomalyKind::Stuck)));
    }

    #[test]
    fn score_is_monotonic_in_the_deviation() {
        let cfg = DetectorConfig::default();
        let mut base = Detector::default();
        for (t, x) in series(500, noise) {
            base.observe(&cfg, t, x);
        }
        let mut last = -1.0;
        for k in 0..40 {
            let mut d = base.clone();
            // From 1.0 up, so the value moves away from both the mean and the previous
            // reading (whose noise is within ±1).
            let v = d.observe(&cfg, 500 * MIN, 1.0 + f64::from(k) * 0.25);
            assert!((0.0..=1.0).contains(&v.score));
            assert!(v.score >= last, "k={k}: {} < {last}", v.score);
            assert_eq!(v.anomaly.is_some(), v.score >= 0.5, "{v:?}");
            last = v.score;
        }
    }

    #[test]
    fn non_finite_readings_are_ignored() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::default();
        for (t, x) in series(100, noise) {
            d.observe(&cfg, t, x);
        }
        let before = d.clone();
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            assert_eq!(d.observe(&cfg, 100 * MIN, x), Verdict::NORMAL);
        }
        assert_eq!(d, before);
    }

    #[test]
    fn hostile_config_and_timestamps_do_not_panic() {
        let cfgs = [
            DetectorConfig {
                z_threshold: f64::NAN,
                alpha: -1.0,
                warmup: 0,
                spike_z: 0.0,
                stuck_after: 0,
                anomaly_weight: f64::INFINITY,
            },
            DetectorConfig {
                z_threshold: 1e-300,
                alpha: 5.0,
                warmup: u32::MAX,
                spike_z: f64::INFINITY,
                stuck_after: u32::MAX,
                anomaly_weight: -3.0,
            },
        ];
        for cfg in &cfgs {
            let mut d = Detector::default();
            for (i, ts) in [i64::MIN, i64::MAX, 0, 0, -5, i64::MAX, i64::MIN]
                .into_iter()
                .enumerate()
            {
                for x in [0.0, 1e100, -1e100, 0.0, 1e-300] {
                    let v = d.observe(cfg, ts, x + i as f64);
                    assert!((0.0..=1.0).contains(&v.score), "{v:?}");
                    assert!(v.zscore.is_finite());
                }
            }
            let json = serde_json::to_string(&d).expect("state stays serialisable");
            let back: Detector = serde_json::from_str(&json).expect("and readable");
            assert_close(&back, &d);
        }
    }

    #[test]
    fn out_of_order_reading_does_not_touch_rate_or_runs() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::default();
        for (t, x) in series(100, noise) {
            d.observe(&cfg, t, x);
        }
        let (last_ts, last_value) = (d.last_ts, d.last_value);
        d.observe(&cfg, 10 * MIN, 0.3);
        assert_eq!((d.last_ts, d.last_value), (last_ts, last_value));
    }

    #[test]
    fn state_serde_round_trip_and_config_defaults() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::default();
        for (t, x) in series(50, noise) {
            d.observe(&cfg, t, x);
        }
        let json = serde_json::to_string(&d).expect("serialise");
        let back: Detector = serde_json::from_str(&json).expect("deserialise");
        assert_close(&back, &d);
        let partial: DetectorConfig =
            serde_json::from_str(r#"{"z_threshold": 3.5}"#).expect("missing fields default");
        assert_eq!(partial.z_threshold, 3.5);
        assert_eq!(partial.alpha, cfg.alpha);
    }

    #[test]
    fn state_is_small() {
        assert!(std::mem::size_of::<Detector>() <= 80);
    }

    #[test]
    fn kind_names() {
        assert_eq!(AnomalyKind::Statistical.as_str(), "statistical");
        assert_eq!(AnomalyKind::Spike.to_string(), "spike");
        assert_eq!(
            serde_json::to_string(&AnomalyKind::Stuck).expect("serialise"),
            r#""stuck""#
        );
    }

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
