//! Scoring a detector against labelled anomaly windows, by the rules of the Numenta Anomaly
//! Benchmark (NAB; Lavin & Ahmad 2015), so `sensorfleet detect --labels` can say how far a
//! detector can be trusted on a user's own incidents, and how it compares with the
//! published scoreboard.
//!
//! The rules, as implemented here:
//!
//! - A file is a series of rows, each with the detector's score in [0, 1]. A row whose
//!   score is at or above the threshold is a *detection*. One threshold applies to every
//!   file; [`evaluate`] picks the one that maximises the total score.
//! - The first `min(⌊0.15·n⌋, 750)` rows of a file are its *probationary period*: the
//!   detector is still learning, so nothing there is scored.
//! - A *window* is a labelled `[start, end]` time span (both ends inclusive). Only the best
//!   (that is, the earliest) detection in it counts: a detection at row `i` of a window
//!   spanning rows `l..=r` sits at `y = −(r − i + 1)/(r − l + 1)` (−1 at the start, just
//!   below 0 at the end) and earns `A_TP · σ(y)/σ(−1)` with the scaled sigmoid
//!   `σ(y) = 2/(1 + e^(5y)) − 1`. A window without a detection costs `A_FN`.
//! - A detection outside every window costs `A_FP`, weighted by how far it is past the
//!   end of the preceding window: `−σ(|i − r|/(r − l))` (full weight if there is none, or
//!   beyond three window lengths), so a detection just after a window costs little.
//! - Per profile `(A_TP, A_FP, A_FN)`: standard `(1, −0.11, −1)`, reward low FP
//!   `(1, −0.22, −1)`, reward low FN `(1, −0.11, −2)`.
//! - A total `S` is reported as `100·(S − S_null)/(S_perfect − S_null)`: the null detector
//!   never fires (`S_null = A_FN · windows`), the perfect one fires once at the start of
//!   every window (`S_perfect = A_TP · windows`).
//!
//! Everything is pure: rows come in as timestamps and scores, windows as unix-ms spans.

use std::collections::BTreeMap;

use super::csv::parse_timestamp;

/// Share of a file's rows in its probationary period.
const PROBATION_SHARE: f64 = 0.15;

/// Most rows a probationary period can have (15 % of 5,000).
const PROBATION_MAX: usize = 750;

/// A false positive further than this many window lengths past a window costs full weight.
const FAR_PAST_WINDOW: f64 = 3.0;

/// The weights a profile gives to true positives, false positives and missed windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Name as printed: `standard`, `reward_low_fp`, `reward_low_fn`.
    pub name: &'static str,
    /// Reward for a detection at the very start of a window (positive).
    pub tp: f64,
    /// Cost of a false positive far from any window (negative).
    pub fp: f64,
    /// Cost of a window without a detection (negative).
    pub fn_: f64,
}

/// NAB's three application profiles, standard first.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fp: -0.11,
        fn_: -1.0,
    },
    Profile {
        name: "reward_low_fp",
        tp: 1.0,
        fp: -0.22,
        fn_: -1.0,
    },
    Profile {
        name: "reward_low_fn",
        tp: 1.0,
        fp: -0.11,
        fn_: -2.0,
    },
];

/// One labelled file with the detector's score on each of its rows.
#[derive(Debug, Clone, Copy)]
pub struct ScoredFile<'a> {
    /// Row timestamps, unix ms, in time order.
    pub timestamps: &'a [i64],
    /// The detector's score on each row (same length as `timestamps`). A non-finite score
    /// is never a detection.
    pub scores: &'a [f64],
    /// Labelled anomaly windows `[start, end]`, unix ms, both inclusive.
    pub windows: &'a [(i64, i64)],
}

/// What one file scored at the chosen threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct FileResult {
    /// Raw score `S` of the file.
    pub raw: f64,
    /// `S_null` of the file (`A_FN · windows`).
    pub null: f64,
    /// `S_perfect` of the file (`A_TP · windows`).
    pub perfect: f64,
    /// Windows with a detection.
    pub detected: usize,
    /// Windows in the file.
    pub windows: usize,
    /// Detections outside every window (in scored rows).
    pub false_positives: usize,
}

impl FileResult {
    /// `100·(S − S_null)/(S_perfect − S_null)`; `None` for a file without windows, where
    /// perfect and null coincide (its raw score is then 0 or a cost).
    pub fn normalised(&self) -> Option<f64> {
        normalise(self.raw, self.null, self.perfect)
    }
}

/// The outcome of one profile over a set of files.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileResult {
    /// The profile scored.
    pub profile: Profile,
    /// The threshold that maximises the total (`f64::INFINITY` when detecting nothing is
    /// best: every threshold costs more than it earns).
    pub threshold: f64,
    /// Per file, in the order given.
    pub files: Vec<FileResult>,
}

impl ProfileResult {
    /// Sums the files selected by `keep` (by index): raw, null and perfect add up.
    pub fn total_of(&self, keep: impl Fn(usize) -> bool) -> FileResult {
        let mut sum = FileResult {
            raw: 0.0,
            null: 0.0,
            perfect: 0.0,
            detected: 0,
            windows: 0,
            false_positives: 0,
        };
        for (_, f) in self.files.iter().enumerate().filter(|(i, _)| keep(*i)) {
            sum.raw += f.raw;
            sum.null += f.null;
            sum.perfect += f.perfect;
            sum.detected += f.detected;
            sum.windows += f.windows;
            sum.false_positives += f.false_positives;
        }
        sum
    }

    /// The benchmark's score: the normalised total over all files (0 when there are no
    /// windows at all).
    pub fn score(&self) -> f64 {
        self.total_of(|_| true).normalised().unwrap_or(0.0)
    }
}

fn normalise(raw: f64, null: f64, perfect: f64) -> Option<f64> {
    (perfect > null).then(|| 100.0 * (raw - null) / (perfect - null))
}

/// NAB's scaled sigmoid: 2/(1 + e^(5y)) − 1, exactly −1 beyond three window lengths.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > FAR_PAST_WINDOW {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// Rows of a file that are not scored: `min(⌊0.15·rows⌋, 750)`.
pub fn probationary_rows(rows: usize) -> usize {
    ((PROBATION_SHARE * rows as f64).floor() as usize).min(PROBATION_MAX)
}

/// What a detection on a given row would do, independent of the profile.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowClass {
    /// Probationary: not scored.
    Ignored,
    /// Inside window `index` (within the file); earns `A_TP × credit`, credit in (0, 1].
    Window { index: usize, credit: f64 },
    /// Outside every window; costs `A_FP × weight`, weight in [0, 1].
    Outside { weight: f64 },
}

/// Classifies every row of a file. Windows are matched by timestamp; a row inside two
/// overlapping windows belongs to the earlier one.
fn classify(file: &ScoredFile<'_>) -> Vec<RowClass> {
    let ts = file.timestamps;
    let mut windows: Vec<(i64, i64)> = file.windows.to_vec();
    windows.sort_unstable();
    // Row spans `l..=r` of each window (None when no row falls inside it).
    let spans: Vec<Option<(usize, usize)>> = windows
        .iter()
        .map(|&(start, end)| {
            let l = ts.partition_point(|&t| t < start);
            let r = ts.partition_point(|&t| t <= end);
            (r > l).then(|| (l, r - 1))
        })
        .collect();
    let probation = probationary_rows(ts.len());
    let max_tp = scaled_sigmoid(-1.0);
    // The window a row is in or was last after, advanced as rows go by.
    let mut next = 0;
    let mut previous: Option<(usize, usize)> = None;
    (0..ts.len())
        .map(|i| {
            while let Some(&span) = spans.get(next) {
                match span {
                    Some((l, r)) if r < i => {
                        previous = Some((l, r));
                        next += 1;
                    }
                    None => next += 1,
                    _ => break,
                }
            }
            let class = match spans.get(next).copied().flatten() {
                Some((l, r)) if (l..=r).contains(&i) => {
                    let width = (r - l + 1) as f64;
                    let y = -((r - i + 1) as f64) / width;
                    RowClass::Window {
                        index: next,
                        credit: scaled_sigmoid(y) / max_tp,
                    }
                }
                _ => RowClass::Outside {
                    weight: previous.map_or(1.0, |(l, r)| {
                        let past = (i - r) as f64 / ((r - l) as f64).max(1.0);
                        -scaled_sigmoid(past)
                    }),
                },
            };
            if i < probation {
                RowClass::Ignored
            } else {
                class
            }
        })
        .collect()
}

/// Scores one file at a fixed threshold (detections are scores ≥ `threshold`).
pub fn score_file(file: &ScoredFile<'_>, profile: &Profile, threshold: f64) -> FileResult {
    score_classified(file, &classify(file), profile, threshold)
}

fn score_classified(
    file: &ScoredFile<'_>,
    classes: &[RowClass],
    profile: &Profile,
    threshold: f64,
) -> FileResult {
    let windows = file.windows.len();
    let mut best: Vec<Option<f64>> = vec![None; windows];
    let mut raw = 0.0;
    let mut false_positives = 0;
    for (&score, class) in file.scores.iter().zip(classes) {
        // Below the threshold, or a NaN on either side: not a detection.
        if score
            .partial_cmp(&threshold)
            .is_none_or(std::cmp::Ordering::is_lt)
        {
            continue;
        }
        match *class {
            RowClass::Ignored => {}
            RowClass::Window { index, credit } => {
                let slot = &mut best[index];
                *slot = Some(slot.map_or(credit, |b| b.max(credit)));
            }
            RowClass::Outside { weight } => {
                raw += profile.fp * weight;
                false_positives += 1;
            }
        }
    }
    let detected = best.iter().filter(|b| b.is_some()).count();
    raw += best
        .iter()
        .map(|b| b.map_or(profile.fn_, |credit| profile.tp * credit))
        .sum::<f64>();
    FileResult {
        raw,
        null: profile.fn_ * windows as f64,
        perfect: profile.tp * windows as f64,
        detected,
        windows,
        false_positives,
    }
}

/// Scores `files` under `profile` at the one threshold that maximises the total raw score
/// over all of them (ties go to the highest threshold).
///
/// The sweep visits every distinct score once, from the highest down, updating the total
/// as each row becomes a detection: O(n log n) for n rows in all.
pub fn evaluate(files: &[ScoredFile<'_>], profile: &Profile) -> ProfileResult {
    let classes: Vec<Vec<RowClass>> = files.iter().map(classify).collect();
    // (score, file, class) for every row that a threshold could make matter.
    let mut rows: Vec<(f64, usize, RowClass)> = Vec::new();
    for (f, (file, classes)) in files.iter().zip(&classes).enumerate() {
        for (&score, &class) in file.scores.iter().zip(classes) {
            if score.is_finite() && class != RowClass::Ignored {
                rows.push((score, f, class));
            }
        }
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));

    let mut best_credit: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    let null: f64 = files
        .iter()
        .map(|f| profile.fn_ * f.windows.len() as f64)
        .sum();
    let (mut total, mut best_total, mut threshold) = (null, null, f64::INFINITY);
    for (k, &(score, f, class)) in rows.iter().enumerate() {
        match class {
            RowClass::Ignored => {}
            RowClass::Window { index, credit } => match best_credit.get_mut(&(f, index)) {
                None => {
                    best_credit.insert((f, index), credit);
                    total += profile.tp * credit - profile.fn_;
                }
                Some(b) if credit > *b => {
                    total += profile.tp * (credit - *b);
                    *b = credit;
                }
                Some(_) => {}
            },
            RowClass::Outside { weight } => total += profile.fp * weight,
        }
        let group_done = rows.get(k + 1).is_none_or(|next| next.0 != score);
        // A small tolerance so rounding in the running sum cannot pick a different
        // threshold than the exact arithmetic would.
        if group_done && total > best_total + 1e-9 {
            best_total = total;
            threshold = score;
        }
    }
    ProfileResult {
        profile: *profile,
        threshold,
        files: files
            .iter()
            .zip(&classes)
            .map(|(file, classes)| score_classified(file, classes, profile, threshold))
            .collect(),
    }
}

/// Why a windows file could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabelError {
    /// Not JSON of the expected shape.
    #[error("labels are not a JSON object of `\"<category>/<file>\": [[start, end], …]`: {0}")]
    Shape(String),
    /// A window bound is not a timestamp.
    #[error(
        "{file}: cannot read window bound {text:?}: use `YYYY-MM-DD HH:MM:SS[.ffffff]`, \
         RFC 3339 or unix milliseconds"
    )]
    Timestamp {
        /// The key whose window is wrong.
        file: String,
        /// The offending bound.
        text: String,
    },
    /// A window ends before it starts.
    #[error("{file}: window {start:?} .. {end:?} ends before it starts")]
    Reversed {
        /// The key whose window is wrong.
        file: String,
        /// The start as written.
        start: String,
        /// The end as written.
        end: String,
    },
}

/// Reads the labelled windows in NAB's `combined_windows.json` format: an object from
/// `"<category>/<file>"` (or just `"<file>"`) to a list of `[start, end]` timestamps.
pub fn parse_windows(text: &str) -> Result<BTreeMap<String, Vec<(i64, i64)>>, LabelError> {
    let raw: BTreeMap<String, Vec<[String; 2]>> =
        serde_json::from_str(text).map_err(|e| LabelError::Shape(e.to_string()))?;
    raw.into_iter()
        .map(|(file, list)| {
            let spans = list
                .iter()
                .map(|[a, b]| {
                    let bound = |text: &String| {
                        parse_timestamp(text.trim()).ok_or_else(|| LabelError::Timestamp {
                            file: file.clone(),
                            text: text.clone(),
                        })
                    };
                    let (start, end) = (bound(a)?, bound(b)?);
                    if end < start {
                        return Err(LabelError::Reversed {
                            file: file.clone(),
                            start: a.clone(),
                            end: b.clone(),
                        });
                    }
                    Ok((start, end))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((file, spans))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Profile = PROFILES[0];
    const LOW_FP: Profile = PROFILES[1];
    const LOW_FN: Profile = PROFILES[2];

    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Timestamps 0, 1, …, n−1 (one row per millisecond keeps the windows readable).
    fn rows(n: usize) -> Vec<i64> {
        (0..n as i64).collect()
    }

    fn scores(n: usize, hits: &[(usize, f64)]) -> Vec<f64> {
        let mut s = vec![0.0; n];
        for &(i, v) in hits {
            s[i] = v;
        }
        s
    }

    #[test]
    fn sigmoid_and_probation_by_hand() {
        // σ(−1) = 2/(1 + e^−5) − 1 = 0.986614…; σ(0) = 0; beyond 3 exactly −1.
        assert!(near(
            scaled_sigmoid(-1.0),
            2.0 / (1.0 + (-5.0f64).exp()) - 1.0
        ));
        assert!((scaled_sigmoid(-1.0) - 0.986_614).abs() < 1e-6);
        assert!(near(scaled_sigmoid(0.0), 0.0));
        assert_eq!(scaled_sigmoid(3.5), -1.0);
        // 15 % of 100 = 15; of 4,032 = 604; of 10,320 = 1,548 → capped at 750.
        assert_eq!(probationary_rows(100), 15);
        assert_eq!(probationary_rows(4032), 604);
        assert_eq!(probationary_rows(10_320), 750);
        assert_eq!(probationary_rows(0), 0);
    }

    #[test]
    fn detection_at_a_window_start_is_perfect() {
        // 100 rows, probation 15, one window over rows 50..=59; one detection at row 50:
        // y = −(59 − 50 + 1)/10 = −1 → full credit 1.0; no FP. S = 1, null = −1,
        // perfect = 1: normalised 100 in every profile.
        let ts = rows(100);
        let s = scores(100, &[(50, 0.9)]);
        let windows = [(50, 59)];
        let file = ScoredFile {
            timestamps: &ts,
            scores: &s,
            windows: &windows,
        };
        for profile in &PROFILES {
            let r = evaluate(&[file], profile);
            assert_eq!(r.threshold, 0.9);
            assert!(near(r.files[0].raw, 1.0), "{r:?}");
            assert_eq!(r.files[0].normalised(), Some(100.0));
            assert_eq!((r.files[0].detected, r.files[0].false_positives), (1, 0));
            assert!(near(r.score(), 100.0));
        }
    }

    #[test]
    fn late_detection_earns_less_and_only_the_first_counts() {
        // Window rows 50..=59 (width 10). Detections at rows 55 and 58: row 55 sits at
        // y = −(59 − 55 + 1)/10 = −0.5: σ(−0.5) = 2/(1 + e^−2.5) − 1 = 0.848284; credit
        // 0.848284/0.986614 = 0.859792. Row 58 (later) adds nothing, and is no FP.
        // Standard: S = 0.859792, normalised 100·(0.859792 + 1)/2 = 92.9896.
        let ts = rows(100);
        let s = scores(100, &[(55, 0.8), (58, 0.8)]);
        let windows = [(50, 59)];
        let file = ScoredFile {
            timestamps: &ts,
            scores: &s,
            windows: &windows,
        };
        let r = evaluate(&[file], &STANDARD);
        let credit = (2.0 / (1.0 + (-2.5f64).exp()) - 1.0) / scaled_sigmoid(-1.0);
        assert!((credit - 0.859_792).abs() < 1e-6);
        assert!(near(r.files[0].raw, credit));
        assert_eq!(r.files[0].false_positives, 0);
        assert!((r.score() - 92.9896).abs() < 1e-3, "{}", r.score());
    }

    #[test]
    fn false_positives_cost_by_profile_and_distance_from_the_last_window() {
        // 100 rows, window 50..=59 (r − l = 9). Detections: row 20 (before any window:
        // full weight 1), row 52 (TP: y = −0.8, σ = 2/(1+e^−4) − 1 = 0.964028, credit
        // 0.977107), row 68 (past the window by (68 − 59)/9 = 1: weight −σ(1) =
        // 1 − 2/(1 + e^5) = 0.986614), row 61 (past by 2/9: weight −σ(2/9) =
        // 1 − 2/(1 + e^(10/9)) = 0.504672).
        // Standard: 0.977107 − 0.11·(1 + 0.986614 + 0.504672) = 0.703065.
        // Low FP: 0.977107 − 0.22·2.491287 = 0.429024. Low FN: same as standard.
        let ts = rows(100);
        let hit = 0.7;
        let s = scores(100, &[(20, hit), (52, hit), (61, hit), (68, hit)]);
        let windows = [(50, 59)];
        let file = ScoredFile {
            timestamps: &ts,
            scores: &s,
            windows: &windows,
        };
        let fp_weights =
            1.0 + (1.0 - 2.0 / (1.0 + 5f64.exp())) + (1.0 - 2.0 / (1.0 + (10.0f64 / 9.0).exp()));
        assert!((fp_weights - 2.491_287).abs() < 1e-6, "{fp_weights}");
        let credit = (2.0 / (1.0 + (-4.0f64).exp()) - 1.0) / scaled_sigmoid(-1.0);
        let at = |p: &Profile| score_file(&file, p, hit);
        assert!(near(at(&STANDARD).raw, credit - 0.11 * fp_weights));
        assert!((at(&STANDARD).raw - 0.703_065).abs() < 1e-6);
        assert!(near(at(&LOW_FP).raw, credit - 0.22 * fp_weights));
        assert_eq!(at(&STANDARD).false_positives, 3);
        // Low FN: null = −2, perfect = 1: 100·(0.703065 + 2)/3 = 90.1022.
        let r = evaluate(&[file], &LOW_FN);
        assert!((r.score() - 90.1021).abs() < 1e-3, "{}", r.score());
    }

    #[test]
    fn probationary_rows_are_not_scored() {
        // 100 rows: probation is rows 0..15. A detection at row 10 is neither an FP nor
        // (for a window inside the probation) a TP; the window still counts as missed.
        let ts = rows(100);
        let s = scores(100, &[(10, 1.0)]);
        let windows = [(8, 12)];
        let file = ScoredFile {
            timestamps: &ts,
            scores: &s,
            windows: &windows,
        };
        let r = score_file(&file, &STANDARD, 0.5);
        assert_eq!((r.raw, r.detected, r.false_positives), (-1.0, 0, 0));
    }

    #[test]
    fn one_threshold_for_all_files_maximises_the_total() {
        // File A: window 50..=59, scores 0.9 at row 50 (TP, +1) and 0.6 at row 30 (FP).
        // File B: no windows, 0.6 at rows 20..=29 (10 FPs, 0.11 each) and 0.3 at row 40.
        // Thresholds: 0.9 → A's TP only: S = 1 − 0 = 1 (B: 0) → standard total 1.
        //             0.6 → adds 11 FPs: 1 − 11·0.11 = −0.21.
        //             0.3 → one more: −0.32.  Nothing (∞) → −1.
        // Best is 0.9; normalised 100·(1 + 1)/(1 + 1) = 100.
        let ts = rows(100);
        let sa = scores(100, &[(50, 0.9), (30, 0.6)]);
        let mut sb = scores(100, &[(40, 0.3)]);
        sb[20..30].fill(0.6);
        let wa = [(50, 59)];
        let files = [
            ScoredFile {
                timestamps: &ts,
                scores: &sa,
                windows: &wa,
            },
            ScoredFile {
                timestamps: &ts,
                scores: &sb,
                windows: &[],
            },
        ];
        let r = evaluate(&files, &STANDARD);
        assert_eq!(r.threshold, 0.9);
        assert!(near(r.score(), 100.0));
        assert_eq!(
            r.files[1].normalised(),
            None,
            "no windows: nothing to normalise"
        );
        assert!(near(score_file(&files[1], &STANDARD, 0.6).raw, -1.1));
        // The sweep's choice agrees with scoring each candidate directly.
        for t in [0.3, 0.6] {
            let direct: f64 = files.iter().map(|f| score_file(f, &STANDARD, t).raw).sum();
            assert!(direct < r.total_of(|_| true).raw, "{t}: {direct}");
        }
    }

    #[test]
    fn detecting_nothing_wins_when_every_threshold_costs_more() {
        // A detection only outside the window, in a file whose window is missed anyway:
        // every threshold loses 0.11, so the best is to detect nothing: score 0.
        let ts = rows(100);
        let s = scores(100, &[(30, 0.9)]);
        let windows = [(50, 59)];
        let file = ScoredFile {
            timestamps: &ts,
            scores: &s,
            windows: &windows,
        };
        let r = evaluate(&[file], &STANDARD);
        assert_eq!(r.threshold, f64::INFINITY);
        assert_eq!(r.score(), 0.0);
        assert_eq!(r.files[0].false_positives, 0);
    }

    #[test]
    fn ties_become_detections_together() {
        // Rows 50 (in the window) and 30 (outside) both score 0.5: no threshold takes one
        // without the other. S = 1 − 0.11 = 0.89; normalised 100·1.89/2 = 94.5.
        let ts = rows(100);
        let s = scores(100, &[(50, 0.5), (30, 0.5)]);
        let windows = [(50, 59)];
        let file = ScoredFile {
            timestamps: &ts,
            scores: &s,
            windows: &windows,
        };
        let r = evaluate(&[file], &STANDARD);
        assert!(near(r.score(), 94.5), "{}", r.score());
        assert_eq!(r.files[0].false_positives, 1);
    }

    #[test]
    fn windows_parse_from_nab_json() {
        let text = r#"{"realKnownCause/a.csv": [["2014-01-01 00:00:00.000000",
                       "2014-01-01 01:00:00.000000"]], "b.csv": []}"#;
        let w = parse_windows(text).expect("valid");
        assert_eq!(
            w["realKnownCause/a.csv"],
            vec![(1_388_534_400_000, 1_388_538_000_000)]
        );
        assert!(w["b.csv"].is_empty());
        assert!(matches!(parse_windows("[1]"), Err(LabelError::Shape(_))));
        let bad = parse_windows(r#"{"a": [["soon", "2014-01-01 00:00:00"]]}"#);
        assert!(matches!(bad, Err(LabelError::Timestamp { .. })), "{bad:?}");
        let reversed = parse_windows(r#"{"a": [["2014-01-02 00:00:00", "2014-01-01 00:00:00"]]}"#);
        assert!(matches!(reversed, Err(LabelError::Reversed { .. })));
    }
}
