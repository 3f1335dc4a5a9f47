//! The per-series anomaly detector the processor runs on every (device, field), and that
//! `sensorfleet detect` replays over history and scores against labelled windows.
//!
//! One parameter set serves every series, because the detector calibrates itself to each
//! series' own noise; it is streaming (no look-ahead), O(1) per reading, and its state is
//! a fixed ~330 bytes. It follows the published recipes of the benchmark's leaders —
//! an ensemble of simple tests (Skyline), seasonality, the likelihood of the recent error
//! distribution rather than a raw z-score (HTM), and a calibrated score so one threshold
//! fits all series — in its own, much smaller form:
//!
//! 1. **A model** predicts the reading: the level (an EWMA mean and variance, weight
//!    `alpha`), or — once two days of history show that it explains the swing — the level
//!    plus a daily profile (24 hourly bins, interpolated, memory `season_days`).
//! 2. **Evidence**, each as a z-score against its own typical size on this series:
//!    - *point*: the reading's deviation from the prediction;
//!    - *shift*: the short-term mean of those deviations (weight `short_alpha`);
//!    - *drift* and *spread*: the mean and the mean |z| over about 20 readings, so a change
//!      of distribution (a floor that rises, spikes that get denser) shows;
//!    - *spike*: the rate of change the model did not predict, against the typical rate
//!      (`spike_z` of it counts as a full threshold);
//!    - *stuck*: the same value `stuck_after` times in a row, and twice as long as the
//!      longest run the series had lately.
//! 3. **Calibration**: the largest piece of evidence is compared with this series' own
//!    tail — two tracked quantiles (the top 2 % and 0.2 %) are mapped onto a Gaussian's,
//!    so a heavy-tailed series (tweet counts) must do something rarer *for it* to score
//!    as high as a quiet sensor's excursion. It never amplifies.
//! 4. **One episode, one onset**: for 120 readings after a flag the evidence is damped
//!    (×0.6), so a lasting episode is reported at its start, not at every reading; a stuck
//!    run scores at its onset and then just below the threshold.
//!
//! The score is `r²/(1 + r²)` of the calibrated evidence over `z_threshold`: monotonic,
//! in [0, 1), 0.5 at the threshold, so a score ≥ 0.5 reads as "flagged".
//!
//! An anomalous reading updates the baseline with only `anomaly_weight × alpha`, so an
//! outlier does not immediately absorb itself, while a lasting level shift is flagged
//! first and then accepted as the new normal; the reduced weight rises back to full as
//! flagged readings become routine (more than 5 % of recent ones), so a recurring pattern
//! is learnt instead of being flagged for ever. While a series is stuck the baseline is
//! frozen: repeated values from a dead sensor say nothing about the process it measured.
//!
//! On the 18 labelled Numenta Anomaly Benchmark series in `../shared/data/nab/` it scores
//! 44.5 (standard profile; see BENCHMARKS.md), above the benchmark's windowed Gaussian
//! (39.6), below its leaders (HTM 70.1).

use serde::{Deserialize, Serialize};

use super::usable;

/// `E|X| = σ·√(2/π)` for a normal X: multiplying a mean absolute deviation by `√(π/2)`
/// gives a standard deviation.
const MAD_TO_SD: f64 = 1.253_314_137_315_500_3;

/// A run of identical values must also be this many times longer than the longest run
/// the series had lately to count as stuck, so coarsely quantised sensors and series
/// with a flat phase (which repeat a lot) are not flagged for doing what they always do.
const STUCK_RUN_RATIO: f64 = 2.0;

/// Share of flagged readings at which anomalies count as routine and are learnt with
/// full weight.
const RECURRING_SHARE: f64 = 0.05;

/// Evidence ratio of a stuck run after its onset: just below flagging.
const STUCK_ONGOING: f64 = 0.9;

/// Weight of a reading in the slow drift and spread statistics (a memory of about 20
/// readings).
const DRIFT_ALPHA: f64 = 0.05;

/// What white noise gives for the drift statistics' standard deviation,
/// `√(α/(2 − α))`: their floor, so a quiet series is not oversensitive.
const DRIFT_WHITE: f64 = 0.160_128_153;

/// Readings after a notable one (evidence at least [`REFRACTORY_FROM`] of the threshold)
/// during which the evidence is damped by [`REFRACTORY_DAMP`].
const REFRACTORY: u32 = 120;
const REFRACTORY_DAMP: f64 = 0.6;
const REFRACTORY_FROM: f64 = 1.0;

/// How much slower than the level the longest recent run fades (a share of `alpha`).
const RUN_FADE: f64 = 0.25;

/// Bins of the daily profile: one per hour of the (UTC) day.
const SEASON_BINS: usize = 24;

const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: f64 = 86_400_000.0;

/// Days of history before the daily profile may be used.
const SEASON_MIN_DAYS: f64 = 2.0;

/// The daily profile replaces the level as the model only when its squared error is at
/// most this share of the level's variance: it must explain a real part of the swing.
const SEASON_GAIN: f64 = 0.6;

/// The calibration tracks two upper quantiles of each series' raw evidence: the share
/// of readings above each, and what a Gaussian |z| would be there (two-sided tails).
const TAILS: [(f64, f64); 2] = [(0.02, 2.326_347_874), (0.002, 3.090_232_306)];

/// Step of the quantile trackers on a log scale.
const TAIL_STEP: f64 = 0.05;

/// Tuning of the [`Detector`]. One configuration serves every series: the detector
/// calibrates itself to each series' own noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    /// Calibrated evidence (a Gaussian |z|) at or above which a reading is flagged; the
    /// score is 0.5 there. Default 3 (chosen on NAB: lower flags more noise, higher
    /// misses more windows).
    pub z_threshold: f64,
    /// EWMA weight of a new reading in the level's mean and variance and the typical
    /// rate of change, in (0, 1]. Default 0.002 (a memory of about 500 readings).
    pub alpha: f64,
    /// Readings to learn from before anything is flagged. Default 30.
    pub warmup: u32,
    /// Rate-of-change z-score (|rate| over the typical |rate|, scaled to a standard
    /// deviation) at or above which a reading is a spike. Default 8.
    pub spike_z: f64,
    /// Identical readings in a row after which a previously varying series is stuck.
    /// Default 30.
    pub stuck_after: u32,
    /// Fraction of `alpha` an anomalous reading is learnt with, in [0, 1]. Default 0.1.
    pub anomaly_weight: f64,
    /// Weight of a reading in the short-term mean deviation, in (0, 1]: smaller sees
    /// smaller sustained shifts, later. Default 0.2.
    pub short_alpha: f64,
    /// Memory of the daily profile in days; 0 turns seasonality off. Default 3.
    pub season_days: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            z_threshold: 3.0,
            alpha: 0.002,
            warmup: 30,
            spike_z: 8.0,
            stuck_after: 30,
            anomaly_weight: 0.1,
            short_alpha: 0.2,
            season_days: 3.0,
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
        let unit = |v: f64, fallback: f64| {
            if v.is_finite() {
                v.clamp(0.0, 1.0)
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
            anomaly_weight: unit(self.anomaly_weight, d.anomaly_weight),
            short_alpha: positive(self.short_alpha, d.short_alpha).min(1.0),
            season_days: if self.season_days.is_finite() && self.season_days >= 0.0 {
                self.season_days.min(1e6)
            } else {
                d.season_days
            },
        }
    }
}

/// The kind of anomaly a reading shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Far from what the series' own history predicts (level, daily profile, or a
    /// sustained shift of the recent mean).
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
    /// 0.5 is exactly at the threshold, towards 1 is overwhelming evidence.
    pub score: f64,
    /// How far this reading itself is from the model's prediction, as a calibrated
    /// signed z-score (0 while warming up). The score also weighs the recent readings
    /// (shifts, drifts, spread), so `|zscore|` can be small while the score is high; the
    /// processor holds an anomaly alert while `|zscore|` stays at least half the threshold.
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

/// Per-series detector state, about 330 bytes; persisted with the processor's state.
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
    /// The longest completed run lately (fading slowly).
    typical_run: f64,
    /// EWMA of the share of readings flagged: anomalies that keep recurring are learnt.
    surprise: f64,
    /// EWMA (weight `short_alpha`) of the model's signed z-score: a sustained shift.
    short: f64,
    /// EWMA of `short²`, its typical size on this series.
    short_sq: f64,
    /// EWMA (weight [`DRIFT_ALPHA`]) of the model's z-score, and of its square.
    drift: f64,
    drift_sq: f64,
    /// EWMA (weight [`DRIFT_ALPHA`]) of |z|, its long-run mean and squared deviation.
    spread: f64,
    spread_mean: f64,
    spread_sq: f64,
    /// Daily profile: the mean deviation from the level in each hour of the day.
    season: [f32; SEASON_BINS],
    /// EWMA of the daily profile's squared prediction error.
    season_err: f64,
    /// Hours of history the daily profile has learnt from (capped per reading at 1 h).
    season_hours: f64,
    /// Readings since the last notable one (see [`REFRACTORY`]).
    since_flag: u32,
    /// The tracked upper quantiles of the raw evidence ([`TAILS`]).
    tails: [f64; 2],
}

impl Detector {
    /// Scores one reading taken at `ts_ms` and learns from it.
    ///
    /// A non-finite value returns [`Verdict::NORMAL`] and leaves the state untouched. A
    /// reading older than the newest one seen is scored against the level history and
    /// learnt from, but takes no part in the rate, stuck and daily checks, which need
    /// order.
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
                tails: [TAILS[0].1, TAILS[1].1],
                since_flag: u32::MAX,
                ..Detector::default()
            };
            return Verdict::NORMAL;
        }

        // Order-dependent evidence: rate of change and runs of identical values.
        let in_order = ts_ms >= self.last_ts;
        let dt_ms = if in_order {
            ts_ms.saturating_sub(self.last_ts)
        } else {
            0
        };
        if in_order {
            if value == self.last_value {
                self.run = self.run.saturating_add(1);
            } else {
                self.typical_run = self.typical_run.max(f64::from(self.run));
                self.runs_done = self.runs_done.saturating_add(1);
                self.run = 1;
            }
            // The longest run lately: it fades with a memory of about 4/alpha readings.
            self.typical_run *= 1.0 - RUN_FADE * cfg.alpha;
        }

        let warm = self.count >= cfg.warmup;
        let scale = 1e-9 * self.mean.abs().max(1.0);
        let sd = self.var.max(0.0).sqrt().max(scale);

        // The model: the daily profile when it explains the swing, else the level.
        let profile = season_at(&self.season, ts_ms);
        let seasonal = cfg.season_days > 0.0
            && self.season_hours >= SEASON_MIN_DAYS * 24.0
            && self.season_err < SEASON_GAIN * self.var;
        let (prediction, model_sd) = if seasonal {
            (
                self.mean + profile,
                self.season_err.max(0.0).sqrt().max(scale),
            )
        } else {
            (self.mean, sd)
        };
        let z_model = (value - prediction) / model_sd;
        // The rate of change the model did not predict (a daily profile's own steps are
        // not spikes).
        let expected_change = if seasonal {
            profile - season_at(&self.season, self.last_ts)
        } else {
            0.0
        };
        let rate = (dt_ms > 0).then(|| {
            (value - self.last_value - expected_change).abs() / (dt_ms as f64 / 1000.0)
        });

        // A sustained shift: the short-term mean of z, against its own typical size
        // (at least what white noise would give, so a quiet series is not oversensitive).
        let short = self.short + cfg.short_alpha * (z_model - self.short);
        let white = (cfg.short_alpha / (2.0 - cfg.short_alpha)).sqrt();
        let z_short = short / self.short_sq.max(0.0).sqrt().max(white);

        // Slower drifts of the recent mean, and of the recent spread (|z| against its
        // long-run mean): a change in the distribution rather than in one reading.
        let drift = self.drift + DRIFT_ALPHA * (z_model - self.drift);
        let z_drift = drift / self.drift_sq.max(0.0).sqrt().max(DRIFT_WHITE);
        let spread = self.spread + DRIFT_ALPHA * (z_model.abs() - self.spread);
        let spread_dev = spread - self.spread_mean;
        let z_spread = spread_dev / self.spread_sq.max(0.0).sqrt().max(DRIFT_WHITE);
        let z_rate = match rate {
            Some(rate) if self.rate_count >= cfg.warmup => {
                let rate_sd = (self.rate_mad * MAD_TO_SD).max(scale);
                rate / rate_sd * cfg.z_threshold / cfg.spike_z
            }
            _ => 0.0,
        };

        let raw = z_model
            .abs()
            .max(z_short.abs())
            .max(z_rate)
            .max(z_drift.abs())
            .max(z_spread);
        // Calibration: heavy-tailed series see large raw evidence routinely; map this
        // series' own tail quantiles onto a Gaussian's (never amplifying).
        let calibrated = calibrate(&self.tails, raw);
        let evidence = if warm { calibrated } else { 0.0 };
        let calibration = if raw > 0.0 { calibrated / raw } else { 1.0 };

        let run = f64::from(self.run);
        let varied = self.runs_done > 0 && run >= STUCK_RUN_RATIO * self.typical_run;
        let stuck = warm && varied && self.run >= cfg.stuck_after;
        // The score marks the onset: a run that goes on says nothing new, and a score that
        // kept rising with it would outrank every later anomaly of the series.
        let r_stuck = match stuck {
            true if run < STUCK_RUN_RATIO * self.typical_run + 1.0 || self.run == cfg.stuck_after => 1.0,
            true => STUCK_ONGOING,
            false => 0.0,
        };

        let anomaly = if stuck {
            Some(AnomalyKind::Stuck)
        } else if warm && z_rate * calibration >= cfg.z_threshold {
            Some(AnomalyKind::Spike)
        } else if evidence >= cfg.z_threshold {
            Some(AnomalyKind::Statistical)
        } else {
            None
        };
        // After a flag, the same episode's later readings are reported more quietly: a
        // new flag soon after needs stronger evidence (one episode, one onset).
        let quiet = if self.since_flag < REFRACTORY { REFRACTORY_DAMP } else { 1.0 };
        let r = (evidence * quiet / cfg.z_threshold).max(r_stuck);
        let score = if r.is_finite() {
            r * r / (1.0 + r * r)
        } else {
            1.0
        };
        let point = if warm { z_model * calibration } else { 0.0 };

        // Learn. Warm-up uses the plain running mean (weight 1/n) so early readings are
        // not swamped by the first one; anomalies are learnt slowly, rising to full weight
        // as they become routine (a recurring pattern is learnt instead of flagged for
        // ever); a stuck sensor not at all.
        let base = if warm {
            cfg.alpha
        } else {
            cfg.alpha.max(1.0 / f64::from(self.count.saturating_add(1)))
        };
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
            let season_error = value - self.mean - profile;
            let incr = weight * diff;
            self.mean += incr;
            self.var = ((1.0 - weight) * (self.var + diff * incr)).max(0.0);
            self.season_err += weight * (season_error * season_error - self.season_err);
            self.short = short;
            self.short_sq += weight * (short * short - self.short_sq);
            self.drift = drift;
            self.drift_sq += weight * (drift * drift - self.drift_sq);
            self.spread = spread;
            self.spread_mean += weight * (spread - self.spread_mean);
            self.spread_sq += weight * (spread_dev * spread_dev - self.spread_sq);
            if raw.is_finite() {
                // The quantile trackers: up on an exceedance, down a little otherwise.
                let step = TAIL_STEP.max(1.0 / f64::from(self.count));
                for (q, (share, _)) in self.tails.iter_mut().zip(TAILS) {
                    let above = if raw > *q { 1.0 } else { 0.0 };
                    *q = (*q * (step * (above - share)).exp()).clamp(1e-6, 1e12);
                }
            }
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
            if cfg.season_days > 0.0 && dt_ms > 0 {
                let hours = (dt_ms as f64 / HOUR_MS).min(1.0);
                let beta = (hours / cfg.season_days).min(1.0) * learn;
                season_learn(&mut self.season, ts_ms, beta, diff);
                self.season_hours = (self.season_hours + hours).min(1e9);
            }
        }
        self.count = self.count.saturating_add(1);
        self.since_flag = if r >= REFRACTORY_FROM {
            0
        } else {
            self.since_flag.saturating_add(1)
        };
        if in_order {
            self.last_value = value;
            self.last_ts = ts_ms;
        }

        Verdict {
            score,
            zscore: point,
            anomaly,
        }
    }
}

/// Maps raw evidence to a Gaussian |z| through the series' tracked tail quantiles:
/// proportionally below the first, linearly between and beyond them, never above `raw`.
fn calibrate(tails: &[f64; 2], raw: f64) -> f64 {
    let [(_, za), (_, zb)] = TAILS;
    let qa = tails[0].max(1e-6);
    let z = if raw <= qa {
        raw * za / qa
    } else {
        // A spread narrower than a Gaussian's would amplify: hold it at least that wide.
        let spread = (tails[1] - qa).max((zb - za) * qa / za);
        za + (raw - qa) * (zb - za) / spread
    };
    z.min(raw)
}

/// The two profile bins around `ts_ms` and their interpolation weights (bins are centred
/// on the half hour).
fn season_bins(ts_ms: i64) -> [(usize, f64); 2] {
    let hour = ts_ms.rem_euclid(DAY_MS as i64) as f64 / HOUR_MS - 0.5;
    let below = hour.floor();
    let frac = hour - below;
    let k = (below as i64).rem_euclid(SEASON_BINS as i64) as usize;
    [(k, 1.0 - frac), ((k + 1) % SEASON_BINS, frac)]
}

fn season_at(season: &[f32; SEASON_BINS], ts_ms: i64) -> f64 {
    season_bins(ts_ms)
        .iter()
        .map(|&(k, w)| w * f64::from(season[k]))
        .sum()
}

fn season_learn(season: &mut [f32; SEASON_BINS], ts_ms: i64, beta: f64, deviation: f64) {
    for (k, w) in season_bins(ts_ms) {
        let old = f64::from(season[k]);
        let limit = f64::from(f32::MAX);
        season[k] = (old + beta * w * (deviation - old)).clamp(-limit, limit) as f32;
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
