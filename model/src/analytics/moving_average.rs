//! Simple moving average of the last N readings.
//!
//! A ring buffer of the last N values and a running sum, so each reading costs O(1).
//! Adding and subtracting floats for ever lets rounding error pile up in the running
//! sum, so it is recomputed exactly from the ring every N readings — an O(1) amortised
//! cost that bounds the drift to what N additions can produce.

use serde::{Deserialize, Serialize};

use super::usable;

/// Largest N a moving average accepts: its state is 8·N bytes per device and field.
pub const MAX_LEN: usize = 1000;

/// Moving average of the last `n` finite readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovingAverage {
    /// How many readings are averaged (1..=MAX_LEN).
    n: usize,
    /// The ring: grows to `n` values, then the oldest is overwritten at `next`.
    values: Vec<f64>,
    /// Where the next value goes once the ring is full.
    next: usize,
    /// Running sum of `values`.
    sum: f64,
    /// Readings since `sum` was last recomputed from scratch.
    since_resum: usize,
}

impl MovingAverage {
    /// A moving average of the last `n` readings; `n` is clamped to `1..=1000`.
    pub fn new(n: usize) -> Self {
        let n = n.clamp(1, MAX_LEN);
        MovingAverage {
            n,
            values: Vec::with_capacity(n),
            next: 0,
            sum: 0.0,
            since_resum: 0,
        }
    }

    /// How many readings are averaged once the ring is full.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether no reading has been taken in yet.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Adds a reading and returns the current average.
    ///
    /// A non-finite reading is ignored; before any finite reading the average is 0.
    pub fn push(&mut self, v: f64) -> f64 {
        if usable(v) {
            self.insert(v);
        }
        self.value().unwrap_or(0.0)
    }

    /// The average of the readings held, `None` before the first finite reading.
    pub fn value(&self) -> Option<f64> {
        if self.values.is_empty() {
            None
        } else {
            Some(self.sum / self.values.len() as f64)
        }
    }

    fn insert(&mut self, v: f64) {
        // `n.clamp` again because a persisted state may have been edited by hand.
        let cap = self.n.clamp(1, MAX_LEN);
        if self.values.len() < cap {
            self.values.push(v);
            self.sum += v;
        } else {
            if self.next >= self.values.len() {
                self.next = 0;
            }
            if let Some(slot) = self.values.get_mut(self.next) {
                self.sum += v - *slot;
                *slot = v;
            }
            self.next = (self.next + 1) % cap;
        }
        self.since_resum += 1;
        if self.since_resum >= cap {
            self.sum = self.values.iter().sum();
            self.since_resum = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_last_n() {
        let mut ma = MovingAverage::new(3);
        assert_eq!(ma.value(), None);
        assert!(ma.is_empty());
        assert_eq!(ma.push(3.0), 3.0);
        assert_eq!(ma.push(6.0), 4.5);
        assert_eq!(ma.push(9.0), 6.0);
        assert_eq!(ma.push(12.0), 9.0); // 3.0 dropped
        assert_eq!(ma.push(0.0), 7.0);
        assert_eq!(ma.value(), Some(7.0));
        assert_eq!(ma.len(), 3);
    }

    #[test]
    fn n_is_clamped() {
        assert_eq!(MovingAverage::new(0).len(), 1);
        assert_eq!(MovingAverage::new(1_000_000).len(), MAX_LEN);
        let mut one = MovingAverage::new(0);
        one.push(1.0);
        assert_eq!(one.push(5.0), 5.0);
    }

    #[test]
    fn non_finite_is_ignored() {
        let mut ma = MovingAverage::new(4);
        assert_eq!(ma.push(f64::NAN), 0.0);
        assert_eq!(ma.value(), None);
        ma.push(2.0);
        assert_eq!(ma.push(f64::INFINITY), 2.0);
        assert_eq!(ma.push(f64::NEG_INFINITY), 2.0);
        assert_eq!(ma.value(), Some(2.0));
    }

    #[test]
    fn no_drift_over_many_readings() {
        // Large alternating values followed by small ones: without the periodic re-sum
        // the running sum would keep the rounding error of the big values.
        let mut ma = MovingAverage::new(10);
        for i in 0..100_000 {
            ma.push(if i % 2 == 0 { 1e15 + 0.3 } else { -1e15 + 0.1 });
        }
        for _ in 0..10 {
            ma.push(0.1);
        }
        let avg = ma.value().unwrap_or(f64::NAN);
        assert!((avg - 0.1).abs() < 1e-12, "drifted to {avg}");
    }

    #[test]
    fn serde_round_trip_and_corrupted_state() {
        let mut ma = MovingAverage::new(3);
        for v in [1.0, 2.0, 3.0, 4.0] {
            ma.push(v);
        }
        let json = serde_json::to_string(&ma).expect("serialise");
        let mut back: MovingAverage = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, ma);
        assert_eq!(back.push(5.0), 4.0);

        let bad = r#"{"n":2,"values":[1.0,2.0,3.0],"next":99,"sum":6.0,"since_resum":0}"#;
        let mut odd: MovingAverage = serde_json::from_str(bad).expect("deserialise");
        let _ = odd.push(4.0); // must not panic
        assert!(odd.value().is_some());
    }
}
