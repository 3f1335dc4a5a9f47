//! The per-series anomaly detector the processor runs on every (device, field), and that
//! `sensorfleet detect` replays over history and scores against labelled windows.
//!
//! One parameter set serves every series, because the detector calibrates itself to each
//! series' own noise; it is streaming (no look-ahead), O(1) per reading, and its state is
//! a fixed 360 bytes. It follows the published recipes of the benchmark's leaders —
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
//!      (`spike_z` of it counts as a full threshold), or against the largest change this
//!      hour of the day usually brings (a daily schedule: lights, HVAC, a batch job);
//!    - *stuck*: the same value `stuck_after` times in a row, and twice as long as the
//!      longest run the series had lately.
//! 3. **Calibration**: the largest piece of evidence is compared with this series' own
//!    tail — its tracked top-2 % quantile, and the mean log-excess of the readings above
//!    it (a power-law tail, as counts have) — mapped onto a Gaussian's, so a heavy-tailed
//!    series (tweet counts) must do something rarer *for it* to score as high as a quiet
//!    sensor's excursion. It never amplifies.
//! 4. **One episode, one onset**: for 200 readings after a flag the evidence is damped
//!    (×0.6), so a lasting episode is reported at its start, not at every reading; a stuck
//!    run scores at its onset and then just below the threshold.
//!
//! The score is `r³/(1 + r³)` of the calibrated evidence over `z_threshold`: monotonic,
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
//! 51.3 (standard profile; see BENCHMARKS.md), above the benchmark's windowed Gaussian
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

/// Readings after a flag during which the evidence is damped by [`REFRACTORY_DAMP`]
/// (each new flag restarts it).
const REFRACTORY: u32 = 200;
const REFRACTORY_DAMP: f64 = 0.6;

/// Largest |z| the shift, drift and spread statistics take in.
const Z_CLIP: f64 = 5.0;

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

/// The calibration models the upper tail of each series' raw evidence at two levels: the
/// share of readings above each, and what a Gaussian |z| would be there (two-sided
/// tails). The first level's quantile is tracked; the second is extrapolated from the
/// mean log-excess over the first (a Pareto tail), which needs far fewer readings to
/// learn than a 0.2 % quantile would.
const TAILS: [(f64, f64); 2] = [(0.02, 2.326_347_874), (0.002, 3.090_232_306)];

/// Step of the quantile tracker on a log scale.
const TAIL_STEP: f64 = 0.05;

/// Weight of one exceedance in the mean log-excess.
const EXCESS_WEIGHT: f64 = 0.05;

/// Tuning of the [`Detector`]. One configuration serves every series: the detector
/// calibrates itself to each series' own noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    /// Calibrated evidence (a Gaussian |z|) at or above which a reading is flagged; the
    /// score is 0.5 there, and a flag damps the next 200 readings. Default 2.9 (chosen
    /// on NAB: lower flags more noise, higher misses more windows).
    pub z_threshold: f64,
    /// EWMA weight of a new reading in the level's mean and variance and the typical
    /// rate of change, in (0, 1]. Default 0.001 (a memory of about 1,000 readings).
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
            z_threshold: 2.9,
            alpha: 0.001,
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
    /// Signed z-score of this reading against the model's prediction (level or daily
    /// profile), before calibration; 0 while warming up. The score also weighs recent
    /// readings (shifts, drifts, spread), so `|zscore|` can be small while the score is
    /// high; the processor holds an anomaly alert while `|zscore|` stays at least half
    /// the threshold.
    pub zscore: f64,
    /// The anomaly found, if any; the most specific kind wins (stuck, spike, statistical).
    /// Set exactly when the score is at least 0.5, except along a stuck run: it stays
    /// `Stuck` for the whole run while only its onset scores 0.5 (the rest just below).
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

/// Per-series detector state: 360 bytes, fixed (no heap); serialisable, so it can be
/// persisted and restored.
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
    /// The largest unpredicted change lately in each hour of the day (fading).
    steps: [f32; SEASON_BINS],
    /// EWMA of the daily profile's squared prediction error.
    season_err: f64,
    /// Hours of history the daily profile has learnt from (capped per reading at 1 h).
    season_hours: f64,
    /// Readings since the score last reached 0.5 (see [`REFRACTORY`]).
    since_flag: u32,
    /// The raw evidence's tracked upper quantile and mean log-excess over it ([`TAILS`]).
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
                tails: [TAILS[0].1, gaussian_excess()],
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
        let days_learnt = cfg.season_days > 0.0 && self.season_hours >= SEASON_MIN_DAYS * 24.0;
        let seasonal = days_learnt && self.season_err < SEASON_GAIN * self.var;
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
        let rate = (dt_ms > 0)
            .then(|| (value - self.last_value - expected_change).abs() / (dt_ms as f64 / 1000.0));

        // A sustained shift: the short-term mean of z, against its own typical size
        // (at least what white noise would give, so a quiet series is not oversensitive).
        // Slower drifts of the recent mean, and of the recent spread (|z| against its
        // long-run mean): a change in the distribution rather than in one reading. A
        // repeated value is left to the stuck check: it is no news about the process.
        // The z-score is clipped for them: one wild reading (say, the first change of a
        // series that was constant, against a variance of ~0) would otherwise inflate
        // their typical size for thousands of readings.
        let repeat = in_order && value == self.last_value;
        let z_clipped = z_model.clamp(-Z_CLIP, Z_CLIP);
        let short = self.short + cfg.short_alpha * (z_clipped - self.short);
        let drift = self.drift + DRIFT_ALPHA * (z_clipped - self.drift);
        let spread = self.spread + DRIFT_ALPHA * (z_clipped.abs() - self.spread);
        let spread_dev = spread - self.spread_mean;
        let (z_short, z_drift, z_spread) = if repeat {
            (0.0, 0.0, 0.0)
        } else {
            let white = (cfg.short_alpha / (2.0 - cfg.short_alpha)).sqrt();
            (
                short / self.short_sq.max(0.0).sqrt().max(white),
                drift / self.drift_sq.max(0.0).sqrt().max(DRIFT_WHITE),
                spread_dev / self.spread_sq.max(0.0).sqrt().max(DRIFT_WHITE),
            )
        };
        // A change as large as the largest this hour of the day usually brings (a daily
        // schedule: lights, HVAC, a batch job) is half a spike at most.
        let step_bin = season_bins(ts_ms)[usize::from(season_frac(ts_ms) >= 0.5)].0;
        let routine_step = if days_learnt {
            f64::from(self.steps[step_bin])
        } else {
            0.0
        };
        let z_rate = match rate {
            Some(rate) if self.rate_count >= cfg.warmup => {
                let routine = routine_step / (dt_ms as f64 / 1000.0) * 2.0 / cfg.spike_z;
                let rate_sd = (self.rate_mad * MAD_TO_SD).max(routine).max(scale);
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
        let calibration = if raw > 0.0 { calibrated / raw } else { 1.0 };
        // After a flag, the same episode's later readings are reported more quietly: a
        // new flag soon after needs stronger evidence (one episode, one onset).
        let quiet = if self.since_flag < REFRACTORY {
            REFRACTORY_DAMP
        } else {
            1.0
        };
        let evidence = if warm { calibrated * quiet } else { 0.0 };

        let run = f64::from(self.run);
        let varied = self.runs_done > 0 && run >= STUCK_RUN_RATIO * self.typical_run;
        let stuck = warm && varied && self.run >= cfg.stuck_after;
        // The score marks the onset: a run that goes on says nothing new, and a score that
        // kept rising with it would outrank every later anomaly of the series.
        let onset = self.run == cfg.stuck_after || run < STUCK_RUN_RATIO * self.typical_run + 1.0;
        let r_stuck = match (stuck, onset) {
            (true, true) => 1.0,
            (true, false) => STUCK_ONGOING,
            (false, _) => 0.0,
        };

        let r = (evidence / cfg.z_threshold).max(r_stuck);
        let anomaly = if stuck {
            Some(AnomalyKind::Stuck)
        } else if warm
            && (z_rate * calibration * quiet >= cfg.z_threshold
                // Flagged, and the change alone is spike-strength before calibration:
                // a sudden jump is a spike even where its level evidence dominates.
                || (r >= 1.0 && z_rate >= cfg.z_threshold))
        {
            Some(AnomalyKind::Spike)
        } else if r >= 1.0 {
            Some(AnomalyKind::Statistical)
        } else {
            None
        };
        let score = if r.is_finite() {
            let r3 = r * r * r;
            r3 / (1.0 + r3)
        } else {
            1.0
        };
        let point = if warm { z_model } else { 0.0 };

        // Learn. Warm-up uses the plain running mean (weight 1/n) so early readings are
        // not swamped by the first one; anomalies are learnt slowly, rising to full weight
        // as they become routine (a recurring pattern is learnt instead of flagged for
        // ever); a stuck sensor not at all.
        let base = if warm {
            cfg.alpha
        } else {
            cfg.alpha.max(1.0 / f64::from(self.count.saturating_add(1)))
        };
        // Unusual whether reported or damped as part of an episode: learnt slowly.
        let unusual = stuck || (warm && calibrated >= cfg.z_threshold);
        let learn = if unusual {
            let routine = (self.surprise / RECURRING_SHARE).clamp(0.0, 1.0);
            cfg.anomaly_weight + (1.0 - cfg.anomaly_weight) * routine
        } else {
            1.0
        };
        let flagged = if unusual { 1.0 } else { 0.0 };
        self.surprise += cfg.alpha * (flagged - self.surprise);
        let weight = base * learn;
        if anomaly != Some(AnomalyKind::Stuck) {
            let diff = value - self.mean;
            let season_error = value - self.mean - profile;
            let incr = weight * diff;
            self.mean += incr;
            self.var = ((1.0 - weight) * (self.var + diff * incr)).max(0.0);
            self.season_err += weight * (season_error * season_error - self.season_err);
            if !repeat {
                self.short = short;
                self.short_sq += weight * (short * short - self.short_sq);
                self.drift = drift;
                self.drift_sq += weight * (drift * drift - self.drift_sq);
                self.spread = spread;
                self.spread_mean += weight * (spread - self.spread_mean);
                self.spread_sq += weight * (spread_dev * spread_dev - self.spread_sq);
            }
            // Warm-up evidence (against a baseline of a few readings) says nothing about
            // this series' tail.
            if warm && raw.is_finite() {
                // The quantile tracker: up on an exceedance, down a little otherwise.
                let [(share, _), _] = TAILS;
                let [q, excess] = &mut self.tails;
                let learnt = self.count.saturating_sub(cfg.warmup).saturating_add(1);
                let step = TAIL_STEP.max(1.0 / f64::from(learnt));
                if raw > *q {
                    let log_excess = (raw / *q).ln().min(MAX_LOG_EXCESS);
                    *excess += EXCESS_WEIGHT * (log_excess - *excess);
                }
                let above = if raw > *q { 1.0 } else { 0.0 };
                *q = (*q * (step * (above - share)).exp()).clamp(1e-6, 1e12);
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
                let change = (value - self.last_value - expected_change).abs();
                let step = &mut self.steps[step_bin];
                *step = (f64::from(*step) * (1.0 - beta))
                    .max(change)
                    .min(f64::from(f32::MAX)) as f32;
                self.season_hours = (self.season_hours + hours).min(1e9);
            }
        }
        self.count = self.count.saturating_add(1);
        self.since_flag = if r >= 1.0 {
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

/// The lightest tail the calibration assumes, as a multiple of a Gaussian's log-excess.
const LIGHTEST_TAIL: f64 = 1.5;

/// Largest log-excess one reading contributes to the tail model.
const MAX_LOG_EXCESS: f64 = 20.0;

/// `ln(p_a/p_b)`: how many mean log-excesses the second tail level lies above the first.
fn tail_levels() -> f64 {
    let [(pa, _), (pb, _)] = TAILS;
    (pa / pb).ln()
}

/// The mean log-excess that puts the second tail level where a Gaussian has it: the
/// starting point of every series.
fn gaussian_excess() -> f64 {
    let [(_, za), (_, zb)] = TAILS;
    (zb / za).ln() / tail_levels()
}

/// Maps raw evidence to a Gaussian |z| through the series' tail model: proportionally
/// below the tracked quantile, log-linearly between and beyond the two tail levels
/// (power-law tails, as counts have), never above `raw`.
fn calibrate(tails: &[f64; 2], raw: f64) -> f64 {
    let [(_, za), (_, zb)] = TAILS;
    let qa = tails[0].max(1e-6);
    let z = if raw <= qa {
        raw * za / qa
    } else {
        // A tail lighter than a Gaussian's would amplify: hold it at least half as
        // heavy again (an evidence level no series reaches routinely is still compressed
        // a little: the model is a rough fit of a sparse tail).
        let spread = tails[1].max(LIGHTEST_TAIL * gaussian_excess()) * tail_levels();
        za + (raw / qa).ln() * (zb - za) / spread
    };
    z.min(raw)
}

/// Position of `ts_ms` between the two bins of [`season_bins`], in [0, 1).
fn season_frac(ts_ms: i64) -> f64 {
    season_bins(ts_ms)[1].1
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
        let floats = |d: &Detector| {
            let mut v = vec![
                d.mean,
                d.var,
                d.rate_mad,
                d.last_value,
                d.typical_run,
                d.surprise,
                d.short,
                d.short_sq,
                d.drift,
                d.drift_sq,
                d.spread,
                d.spread_mean,
                d.spread_sq,
                d.season_err,
                d.season_hours,
                d.tails[0],
                d.tails[1],
            ];
            v.extend(d.season.iter().map(|&s| f64::from(s)));
            v
        };
        let (fa, fb) = (floats(a), floats(b));
        assert!(
            fa.iter().zip(&fb).all(|(x, y)| near(*x, *y)),
            "{a:?}\n{b:?}"
        );
        assert_eq!(
            (
                a.count,
                a.rate_count,
                a.last_ts,
                a.run,
                a.runs_done,
                a.since_flag
            ),
            (
                b.count,
                b.rate_count,
                b.last_ts,
                b.run,
                b.runs_done,
                b.since_flag
            )
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
                short_alpha: f64::NAN,
                season_days: -1.0,
            },
            DetectorConfig {
                z_threshold: 1e-300,
                alpha: 5.0,
                warmup: u32::MAX,
                spike_z: f64::INFINITY,
                stuck_after: u32::MAX,
                anomaly_weight: -3.0,
                short_alpha: 1e-300,
                season_days: f64::INFINITY,
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
        // 19 numbers, two 24-bin daily profiles (f32) and a few counters: fixed size, no
        // heap. (The z-score detector before it was 80 bytes, without seasonality,
        // calibration or distribution checks.)
        let size = std::mem::size_of::<Detector>();
        assert!(size <= 384, "{size} bytes");
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

    /// 5-minute readings of a daily cycle (amplitude 10 around 50, ±0.5 noise).
    fn daily(days: i64) -> Vec<(i64, f64)> {
        let per_day = 288;
        (0..days * per_day)
            .map(|i| {
                let ts = i * 5 * MIN;
                let phase = (i % per_day) as f64 / per_day as f64 * std::f64::consts::TAU;
                (ts, 50.0 + 10.0 * phase.sin() + 0.5 * noise(i as u64))
            })
            .collect()
    }

    #[test]
    fn a_daily_profile_flags_the_right_value_at_the_wrong_hour() {
        let cfg = DetectorConfig::default();
        let pts = daily(10);
        let mut d = Detector::default();
        let v: Vec<Verdict> = pts.iter().map(|&(t, x)| d.observe(&cfg, t, x)).collect();
        assert!(
            v[288 * 3..].iter().all(|v| v.anomaly.is_none()),
            "the cycle itself is normal"
        );
        // 60 is the crest, at 06:00 every day; at 18:00 (the trough, 40) it is wrong.
        let ten_days = 10 * 288 * 5 * MIN;
        let at = |hour: i64| ten_days + hour * 60 * MIN;
        let crest = d.clone().observe(&cfg, at(6), 60.0);
        let wrong_hour = d.clone().observe(&cfg, at(18), 60.0);
        assert_eq!(crest.anomaly, None, "{crest:?}");
        assert!(wrong_hour.anomaly.is_some(), "{wrong_hour:?}");
        // Without the daily profile, 60 is within the level's spread at any hour.
        let flat = DetectorConfig {
            season_days: 0.0,
            ..cfg
        };
        let mut d = Detector::default();
        for &(t, x) in &pts {
            d.observe(&flat, t, x);
        }
        assert_eq!(d.observe(&flat, at(18), 60.0).anomaly, None);
    }

    #[test]
    fn a_heavy_tailed_series_must_do_something_rarer_for_it() {
        // Counts with a routine burst every ~40 readings (8 to 12 times the usual spread):
        // the bursts are calibrated away, a burst five times bigger still flags.
        let cfg = DetectorConfig::default();
        let pts = series(6000, |i| {
            let base = 100.0 + 3.0 * noise(i);
            if noise(i ^ 0x5555) > 0.95 {
                base + 30.0 + 6.0 * noise(i + 7)
            } else {
                base
            }
        });
        let mut d = Detector::default();
        let v: Vec<Verdict> = pts.iter().map(|&(t, x)| d.observe(&cfg, t, x)).collect();
        let bursts = pts[1000..].iter().filter(|p| p.1 > 120.0).count();
        let flagged = kinds(&v[1000..]).len();
        assert!(bursts > 80, "{bursts} bursts");
        assert!(
            flagged * 4 < bursts,
            "{flagged} of {bursts} routine bursts flagged"
        );
        let big = d.observe(&cfg, 6000 * MIN, 300.0);
        assert!(big.anomaly.is_some(), "{big:?}");
    }

    #[test]
    fn a_lasting_episode_scores_highest_at_its_onset() {
        // A level shift keeps readings far from the old level for a while; after its
        // first reading the evidence is damped, so the onset outranks the rest of it.
        let cfg = DetectorConfig::default();
        let pts = series(1600, |i| if i < 1000 { 20.0 } else { 26.0 } + noise(i));
        let v = score_series(&cfg, &pts);
        assert!(v[1000].score >= 0.5);
        let later = v[1001..1300].iter().map(|v| v.score).fold(0.0, f64::max);
        assert!(later < v[1000].score, "{later} ≥ {}", v[1000].score);
        // Damped, not ignored: the episode goes on being reported as unusual.
        assert!(v[1001].anomaly.is_some(), "{:?}", v[1001]);
    }

    #[test]
    fn a_stuck_run_scores_at_its_onset_and_stays_stuck() {
        let cfg = DetectorConfig::default();
        let pts = series(700, |i| if i >= 500 { 21.25 } else { 20.0 + noise(i) });
        let v = score_series(&cfg, &pts);
        let onset = 500 + cfg.stuck_after as usize - 1;
        assert_eq!(v[onset].anomaly, Some(AnomalyKind::Stuck));
        assert!(v[onset].score >= 0.5, "{:?}", v[onset]);
        assert!(
            v[onset + 1..]
                .iter()
                .all(|v| v.score < 0.5 && v.score > 0.4)
        );
        assert!(
            v[onset + 1..]
                .iter()
                .all(|v| v.anomaly == Some(AnomalyKind::Stuck))
        );
    }

    #[test]
    fn a_flat_phase_the_series_always_has_is_not_stuck() {
        // Every day: 8 hours at exactly 20.0, then a varying 16 hours.
        let cfg = DetectorConfig::default();
        let pts = series(8 * 1440 / 5, |i| {
            let minute = (i * 5) % 1440;
            if minute < 480 { 20.0 } else { 60.0 + noise(i) }
        });
        let pts: Vec<(i64, f64)> = pts.iter().map(|&(t, x)| (t * 5, x)).collect();
        let v = score_series(&cfg, &pts);
        let stuck = v[1440 / 5 * 2..]
            .iter()
            .filter(|v| v.anomaly == Some(AnomalyKind::Stuck))
            .count();
        assert_eq!(stuck, 0);
    }
}
