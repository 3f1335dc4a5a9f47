//! Time-sliding window statistics (count, mean, min, max, stddev) in O(1) memory.
//!
//! The window is a fixed ring of buckets, each summarising the readings of one
//! `bucket_ms = ceil(width_ms / buckets)` slice of time with Welford's running mean and
//! M2 (sum of squared deviations). Buckets are merged with Chan et al.'s parallel
//! formula when the statistics are asked for, which stays accurate where a naive sum of
//! squares would cancel catastrophically (e.g. a pressure sensor at 101 325 Pa ± 0.1).
//!
//! **Edges are at bucket granularity.** The window covers the `buckets` most recent
//! bucket slices up to and including the one that holds `now_ms`, so a reading drops out
//! between `width_ms - bucket_ms` and `width_ms` after it was taken, not exactly at
//! `width_ms`. More buckets make the edge sharper and the state bigger (40 bytes a
//! bucket).

use serde::{Deserialize, Serialize};

use super::usable;

/// Most buckets a window may have: keeps a misconfigured window from costing kilobytes
/// per device.
pub const MAX_BUCKETS: u16 = 600;

/// Summary of the readings inside a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// Number of readings in the window.
    pub count: u64,
    /// Arithmetic mean (0 when `count` is 0).
    pub mean: f64,
    /// Smallest reading (0 when `count` is 0).
    pub min: f64,
    /// Largest reading (0 when `count` is 0).
    pub max: f64,
    /// Population standard deviation (0 when `count` is 0).
    pub stddev: f64,
}

impl WindowStats {
    /// The statistics of an empty window: all zeros, so they serialise as plain numbers.
    pub const EMPTY: WindowStats = WindowStats {
        count: 0,
        mean: 0.0,
        min: 0.0,
        max: 0.0,
        stddev: 0.0,
    };
}

/// One slice of time: Welford accumulators plus extremes.
///
/// An empty bucket keeps zeros (never ±∞) in `min`/`max` so it serialises to JSON;
/// `count == 0` is what marks it empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Bucket {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Bucket {
    fn add(&mut self, value: f64) {
        if self.count == 0 {
            *self = Bucket {
                count: 1,
                mean: value,
                m2: 0.0,
                min: value,
                max: value,
            };
            return;
        }
        self.count = self.count.saturating_add(1);
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Chan et al.'s pairwise combination of two partial summaries.
    fn merge(&mut self, other: &Bucket) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += other.m2 + delta * delta * (na * nb / n);
        self.count = self.count.saturating_add(other.count);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// A time-sliding window of readings, summarised in a fixed ring of buckets.
///
/// Bucket `i` of the ring holds the slice with index `e` (`e = ts_ms.div_euclid(bucket_ms)`)
/// where `e mod buckets == i`; only the slices in `(head - buckets, head]` are live, where
/// `head` is the newest slice seen. Advancing `head` empties the slots it passes over, so
/// no per-bucket timestamp is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Nominal width of the window in milliseconds.
    width_ms: i64,
    /// Length of one bucket's slice of time in milliseconds (at least 1).
    bucket_ms: i64,
    /// Index of the newest slice seen, `None` before the first reading.
    head: Option<i64>,
    /// The ring, `buckets` long.
    ring: Vec<Bucket>,
}

impl Default for SlidingWindow {
    /// The design's default: 5 minutes in 10 buckets of 30 s.
    fn default() -> Self {
        SlidingWindow::new(5 * 60 * 1000, 10)
    }
}

impl SlidingWindow {
    /// A window `width_ms` wide (at least 1 ms) made of `buckets` buckets (clamped to
    /// `1..=MAX_BUCKETS`). When the width does not divide evenly, buckets are rounded up,
    /// so the window covers slightly more than `width_ms` rather than less.
    pub fn new(width_ms: i64, buckets: u16) -> Self {
        let width_ms = width_ms.max(1);
        let buckets = buckets.clamp(1, MAX_BUCKETS);
        let n = i64::from(buckets);
        // Ceiling division without overflow near i64::MAX.
        let bucket_ms = (width_ms / n + i64::from(width_ms % n != 0)).max(1);
        SlidingWindow {
            width_ms,
            bucket_ms,
            head: None,
            ring: vec![Bucket::default(); usize::from(buckets)],
        }
    }

    /// Nominal width of the window in milliseconds.
    pub fn width_ms(&self) -> i64 {
        self.width_ms
    }

    /// Length of one bucket in milliseconds: the granularity of the window's edges.
    pub fn bucket_ms(&self) -> i64 {
        self.bucket_ms
    }

    /// Adds a reading taken at `ts_ms`.
    ///
    /// A reading newer than any before advances the window (emptying the buckets that
    /// fell out); one that is out of order but still inside the window goes into its own
    /// bucket; one older than the window is ignored, and so is a non-finite value.
    pub fn push(&mut self, ts_ms: i64, value: f64) {
        if !usable(value) || self.ring.is_empty() {
            return;
        }
        let n = self.ring.len() as i64;
        // `max(1)` guards a hand-edited persisted state against a division by zero.
        let slice = ts_ms.div_euclid(self.bucket_ms.max(1));
        let head = match self.head {
            None => {
                self.head = Some(slice);
                slice
            }
            Some(head) if slice > head => {
                let advance = slice.saturating_sub(head);
                if advance >= n {
                    self.ring.fill(Bucket::default());
                } else {
                    for e in head + 1..=slice {
                        if let Some(bucket) = self.slot_mut(e) {
                            *bucket = Bucket::default();
                        }
                    }
                }
                self.head = Some(slice);
                slice
            }
            Some(head) => head,
        };
        if slice <= head.saturating_sub(n) {
            return; // older than the window
        }
        if let Some(bucket) = self.slot_mut(slice) {
            bucket.add(value);
        }
    }

    /// Statistics of the readings in the buckets that are still inside the window at
    /// `now_ms`: the `buckets` slices up to and including the one holding `now_ms`.
    ///
    /// Reading the statistics does not change the window, so a device that stopped
    /// reporting sees its window empty out as `now_ms` moves on. Buckets newer than
    /// `now_ms` (a clock behind the readings) are not counted.
    pub fn stats(&self, now_ms: i64) -> WindowStats {
        let Some(head) = self.head else {
            return WindowStats::EMPTY;
        };
        let n = self.ring.len() as i64;
        let now_slice = now_ms.div_euclid(self.bucket_ms.max(1));
        let newest = head.min(now_slice);
        // Live slices are (head - n, head]; in-window ones are (now_slice - n, now_slice].
        let oldest = head.max(now_slice).saturating_sub(n).saturating_add(1);
        let mut total = Bucket::default();
        for e in oldest..=newest {
            if let Some(bucket) = self.slot(e) {
                total.merge(bucket);
            }
        }
        if total.count == 0 {
            return WindowStats::EMPTY;
        }
        let variance = (total.m2 / total.count as f64).max(0.0);
        WindowStats {
            count: total.count,
            mean: total.mean,
            min: total.min,
            max: total.max,
            stddev: variance.sqrt(),
        }
    }

    fn slot(&self, slice: i64) -> Option<&Bucket> {
        let n = self.ring.len() as i64;
        let index = usize::try_from(slice.checked_rem_euclid(n)?).ok()?;
        self.ring.get(index)
    }

    fn slot_mut(&mut self, slice: i64) -> Option<&mut Bucket> {
        let n = self.ring.len() as i64;
        let index = usize::try_from(slice.checked_rem_euclid(n)?).ok()?;
        self.ring.get_mut(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1000;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn empty_window_is_all_zeros() {
        let w = SlidingWindow::default();
        assert_eq!(w.stats(0), WindowStats::EMPTY);
        assert_eq!(w.bucket_ms(), 30 * SEC);
        assert_eq!(w.width_ms(), 300 * SEC);
    }

    #[test]
    fn basic_statistics() {
        let mut w = SlidingWindow::new(60 * SEC, 6);
        for (i, v) in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
            .into_iter()
            .enumerate()
        {
            w.push(i as i64 * SEC, v);
        }
        let s = w.stats(8 * SEC);
        assert_eq!(s.count, 8);
        assert!(close(s.mean, 5.0));
        assert!(close(s.stddev, 2.0), "population stddev, got {}", s.stddev);
        assert_eq!((s.min, s.max), (2.0, 9.0));
    }

    #[test]
    fn merge_across_buckets_matches_direct_computation() {
        let mut w = SlidingWindow::new(100 * SEC, 10);
        let values: Vec<f64> = (0..100)
            .map(|i| ((i * 37) % 17) as f64 * 0.5 - 3.0)
            .collect();
        for (i, v) in values.iter().enumerate() {
            w.push(i as i64 * SEC, *v);
        }
        let s = w.stats(99 * SEC);
        let mean = values.iter().sum::<f64>() / 100.0;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 100.0;
        assert_eq!(s.count, 100);
        assert!(close(s.mean, mean));
        assert!(close(s.stddev, var.sqrt()));
    }

    #[test]
    fn numerically_stable_with_large_offset() {
        // Sum-of-squares would lose every digit of the variance here.
        let mut w = SlidingWindow::new(60 * SEC, 6);
        for i in 0..60 {
            let v = 1e9 + if i % 2 == 0 { 0.1 } else { -0.1 };
            w.push(i * SEC, v);
        }
        let s = w.stats(59 * SEC);
        assert!((s.stddev - 0.1).abs() < 1e-6, "stddev {}", s.stddev);
        assert!((s.mean - 1e9).abs() < 1e-6);
    }

    #[test]
    fn old_readings_slide_out() {
        let mut w = SlidingWindow::new(60 * SEC, 6); // 10 s buckets
        w.push(0, 100.0);
        w.push(30 * SEC, 1.0);
        assert_eq!(w.stats(30 * SEC).count, 2);
        // At 60 s the slice [0, 10 s) is 6 slices back: out, at bucket granularity.
        let s = w.stats(60 * SEC);
        assert_eq!(s.count, 1);
        assert_eq!(s.max, 1.0);
        // Pushing far ahead clears everything older.
        w.push(1000 * SEC, 5.0);
        let s = w.stats(1000 * SEC);
        assert_eq!((s.count, s.min, s.max), (1, 5.0, 5.0));
    }

    #[test]
    fn stats_of_a_silent_device_empty_out() {
        let mut w = SlidingWindow::new(60 * SEC, 6);
        w.push(0, 1.0);
        assert_eq!(w.stats(59 * SEC).count, 1);
        assert_eq!(w.stats(60 * SEC).count, 0);
        assert_eq!(w.stats(i64::MAX), WindowStats::EMPTY);
    }

    #[test]
    fn out_of_order_inside_window_counts_and_too_old_is_ignored() {
        let mut w = SlidingWindow::new(60 * SEC, 6);
        w.push(50 * SEC, 1.0);
        w.push(15 * SEC, 3.0); // late but inside
        w.push(-20 * SEC, 1000.0); // older than the window
        let s = w.stats(50 * SEC);
        assert_eq!(s.count, 2);
        assert!(close(s.mean, 2.0));
        assert_eq!(s.max, 3.0);
    }

    #[test]
    fn readings_newer_than_now_are_not_counted() {
        let mut w = SlidingWindow::new(60 * SEC, 6);
        w.push(10 * SEC, 1.0);
        w.push(40 * SEC, 2.0);
        assert_eq!(w.stats(20 * SEC).count, 1);
    }

    #[test]
    fn non_finite_and_huge_values_are_ignored() {
        let mut w = SlidingWindow::new(60 * SEC, 6);
        w.push(0, f64::NAN);
        w.push(0, f64::INFINITY);
        w.push(0, f64::NEG_INFINITY);
        w.push(0, 1e200);
        assert_eq!(w.stats(0), WindowStats::EMPTY);
        w.push(0, 4.0);
        assert_eq!(w.stats(0).count, 1);
    }

    #[test]
    fn extreme_timestamps_and_parameters_do_not_panic() {
        for (width, buckets) in [(0, 0), (-5, 3), (i64::MAX, u16::MAX), (1, 1), (7, 3)] {
            let mut w = SlidingWindow::new(width, buckets);
            for ts in [i64::MIN, -1, 0, 1, i64::MAX, i64::MIN + 1, 0] {
                w.push(ts, 1.0);
                let _ = w.stats(ts);
            }
            let _ = w.stats(i64::MIN);
            let _ = w.stats(i64::MAX);
        }
        let w = SlidingWindow::new(10, 3);
        assert_eq!(w.bucket_ms(), 4, "rounded up so the window is not narrower");
    }

    #[test]
    fn serde_round_trip_including_empty_buckets() {
        let mut w = SlidingWindow::default();
        w.push(1_700_000_000_000, 21.5);
        w.push(1_700_000_031_000, 22.5);
        let json = serde_json::to_string(&w).expect("serialise");
        let back: SlidingWindow = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, w);
        assert_eq!(back.stats(1_700_000_031_000).count, 2);
    }

    #[test]
    fn corrupted_persisted_state_does_not_panic() {
        let json = r#"{"width_ms":0,"bucket_ms":0,"head":5,"ring":[]}"#;
        let mut w: SlidingWindow = serde_json::from_str(json).expect("deserialise");
        w.push(10, 1.0);
        assert_eq!(w.stats(10), WindowStats::EMPTY);
    }

    #[test]
    fn state_is_small() {
        assert_eq!(std::mem::size_of::<Bucket>(), 40);
        assert!(std::mem::size_of::<SlidingWindow>() <= 64);
    }
}
