//! The alert lifecycle as a pure state machine, and threshold rules with hysteresis.
//!
//! An alert rule is evaluated on every reading into a [`Condition`]; [`step`] turns the
//! rule's current [`Phase`] and that condition into the next phase and, at most once per
//! episode, a [`Transition`] to notify:
//!
//! ```text
//!             Breach (for elapsed)                Clear
//! Inactive ──Breach──▶ Pending ─────────▶ Firing ───────────▶ Inactive (Resolved)
//!    ▲                   │ Hold/Clear       │ acknowledge()        ▲
//!    └───────────────────┘                  ▼                      │ Clear
//!                                       Acknowledged ──────────────┘
//! ```
//!
//! `Fired` is emitted once when the alert starts and `Resolved` once when it clears, never
//! per reading. [`manual_clear`] drops an alert back to `Inactive`, so a condition that
//! persists goes through `Pending`/`Firing` again and fires anew.

use serde::{Deserialize, Serialize};

/// Where an alert rule stands for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Not breached (or breached for too short a time to matter yet).
    Inactive,
    /// Breached since `since_ms`, waiting for the rule's `for` duration to elapse.
    Pending {
        /// When the breach began (unix ms).
        since_ms: i64,
    },
    /// Firing since `since_ms` (when it was promoted from pending).
    Firing {
        /// When the alert fired (unix ms).
        since_ms: i64,
    },
    /// Firing and acknowledged by a user; still resolves when it clears.
    Acknowledged {
        /// When the alert fired (unix ms), kept from the firing phase.
        since_ms: i64,
    },
}

impl Phase {
    /// Whether the alert is firing, acknowledged or not: the state in which hysteresis
    /// applies (see [`threshold_condition`]).
    pub fn is_active(&self) -> bool {
        matches!(self, Phase::Firing { .. } | Phase::Acknowledged { .. })
    }
}

/// What a rule says about the latest reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The rule is breached.
    Breach,
    /// Not breached, but not clear of the hysteresis band either: an active alert stays.
    Hold,
    /// Clear of the rule: an active alert resolves.
    Clear,
}

/// A change worth notifying about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// The alert started firing.
    Fired,
    /// The alert stopped firing because its condition cleared.
    Resolved,
}

/// Advances an alert rule's phase with the condition observed at `now_ms`.
///
/// `for_ms` is how long the condition must hold before the alert fires (≤ 0 fires on the
/// first breach). A pending alert resets as soon as the condition is not strictly
/// breached, as Prometheus does, so only an uninterrupted breach fires.
pub fn step(
    phase: Phase,
    condition: Condition,
    for_ms: i64,
    now_ms: i64,
) -> (Phase, Option<Transition>) {
    match (phase, condition) {
        (Phase::Inactive, Condition::Breach) if for_ms <= 0 => {
            (Phase::Firing { since_ms: now_ms }, Some(Transition::Fired))
        }
        (Phase::Inactive, Condition::Breach) => (Phase::Pending { since_ms: now_ms }, None),
        (Phase::Inactive, _) => (Phase::Inactive, None),
        (Phase::Pending { since_ms }, Condition::Breach) => {
            if now_ms.saturating_sub(since_ms) >= for_ms {
                (Phase::Firing { since_ms: now_ms }, Some(Transition::Fired))
            } else {
                (phase, None)
            }
        }
        (Phase::Pending { .. }, _) => (Phase::Inactive, None),
        (Phase::Firing { .. } | Phase::Acknowledged { .. }, Condition::Clear) => {
            (Phase::Inactive, Some(Transition::Resolved))
        }
        (Phase::Firing { .. } | Phase::Acknowledged { .. }, _) => (phase, None),
    }
}

/// A user acknowledged the alert: a firing alert becomes acknowledged (it no longer needs
/// attention, never fires again for this episode, and still resolves when it clears); any
/// other phase is left as it is.
///
/// `since_ms` keeps the firing time, so the acknowledged phase still tells when the
/// episode started; callers that want the acknowledgement time record it themselves.
pub fn acknowledge(phase: Phase) -> Phase {
    match phase {
        Phase::Firing { since_ms } => Phase::Acknowledged { since_ms },
        other => other,
    }
}

/// A user cleared the alert by hand: back to `Inactive` without a `Resolved`
/// notification, so if the condition persists the rule goes pending and fires again.
pub fn manual_clear(_phase: Phase) -> Phase {
    Phase::Inactive
}

/// A threshold rule: alert when the value leaves `[min, max]`, and — once alerting —
/// only clear when it is back inside `[clear_min, clear_max]`.
///
/// The clear limits give hysteresis: with `max = 30` and `clear_max = 28`, a value
/// hovering around 30 fires once and stays firing until it drops to 28, instead of
/// flapping on every reading.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Threshold {
    /// Breach below this value.
    pub min: Option<f64>,
    /// Breach above this value.
    pub max: Option<f64>,
    /// Once active, clear only at or above this value (defaults to `min`).
    pub clear_min: Option<f64>,
    /// Once active, clear only at or below this value (defaults to `max`).
    pub clear_max: Option<f64>,
}

/// Evaluates a threshold rule for `value`; `active` is whether the alert is currently
/// firing or acknowledged ([`Phase::is_active`]).
///
/// - `value < min` or `value > max` → [`Condition::Breach`];
/// - not breaching and not `active` → [`Condition::Clear`];
/// - `active` and inside `[clear_min, clear_max]` → [`Condition::Clear`], else
///   [`Condition::Hold`].
///
/// NaN is never a breach (it compares false to every limit); an active alert holds on it
/// rather than resolving on a garbage reading.
pub fn threshold_condition(t: &Threshold, value: f64, active: bool) -> Condition {
    let below = t.min.is_some_and(|min| value < min);
    let above = t.max.is_some_and(|max| value > max);
    if below || above {
        return Condition::Breach;
    }
    if !active {
        return Condition::Clear;
    }
    if value.is_nan() {
        return Condition::Hold;
    }
    let clear_min = t.clear_min.or(t.min);
    let clear_max = t.clear_max.or(t.max);
    let low_ok = clear_min.is_none_or(|m| value >= m);
    let high_ok = clear_max.is_none_or(|m| value <= m);
    if low_ok && high_ok {
        Condition::Clear
    } else {
        Condition::Hold
    }
}

/// A short human form of the threshold for the API's `threshold` field: the allowed range
/// `10-30` when both limits are set (`-10 to 30` when a limit is negative, so the minus
/// sign is not ambiguous), `> 30` for a maximum only, `< 10` for a minimum only, and an
/// empty string for none.
pub fn describe_threshold(t: &Threshold) -> String {
    match (t.min, t.max) {
        (Some(min), Some(max)) if min < 0.0 || max < 0.0 => format!("{min} to {max}"),
        (Some(min), Some(max)) => format!("{min}-{max}"),
        (None, Some(max)) => format!("> {max}"),
        (Some(min), None) => format!("< {min}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn upper(max: f64, clear_max: Option<f64>) -> Threshold {
        Threshold {
            max: Some(max),
            clear_max,
            ..Threshold::default()
        }
    }

    /// Runs a threshold rule over `(ts, value)` readings; returns the transitions seen.
    fn run(
        t: &Threshold,
        for_ms: i64,
        phase: &mut Phase,
        readings: &[(i64, f64)],
    ) -> Vec<(i64, Transition)> {
        let mut out = Vec::new();
        for &(ts, v) in readings {
            let c = threshold_condition(t, v, phase.is_active());
            let (next, tr) = step(*phase, c, for_ms, ts);
            *phase = next;
            if let Some(tr) = tr {
                out.push((ts, tr));
            }
        }
        out
    }

    #[test]
    fn fires_once_across_many_breaching_readings() {
        let t = upper(30.0, None);
        let mut phase = Phase::Inactive;
        let readings: Vec<_> = (0..100)
            .map(|i| (i * 1000, 35.0 + i as f64 * 0.01))
            .collect();
        let tr = run(&t, 0, &mut phase, &readings);
        assert_eq!(tr, vec![(0, Transition::Fired)]);
        assert_eq!(phase, Phase::Firing { since_ms: 0 });
    }

    #[test]
    fn for_duration_delays_firing() {
        let t = upper(30.0, None);
        let mut phase = Phase::Inactive;
        let readings: Vec<_> = (0..=6).map(|i| (i * MIN, 31.0)).collect();
        let tr = run(&t, 5 * MIN, &mut phase, &readings);
        assert_eq!(tr, vec![(5 * MIN, Transition::Fired)]);
        // Pending resets on a reading that is not strictly breached.
        let mut phase = Phase::Inactive;
        let readings = [
            (0, 31.0),
            (4 * MIN, 31.0),
            (4 * MIN + 1, 29.0),
            (6 * MIN, 31.0),
        ];
        assert!(run(&t, 5 * MIN, &mut phase, &readings).is_empty());
        assert_eq!(phase, Phase::Pending { since_ms: 6 * MIN });
    }

    #[test]
    fn pending_resets_on_hold_too() {
        let (p, tr) = step(Phase::Pending { since_ms: 0 }, Condition::Hold, MIN, 10);
        assert_eq!((p, tr), (Phase::Inactive, None));
    }

    #[test]
    fn hysteresis_prevents_flapping_at_the_limit() {
        let t = upper(30.0, Some(28.0));
        let mut phase = Phase::Inactive;
        let readings: Vec<_> = (0..50)
            .map(|i| (i * 1000, if i % 2 == 0 { 30.2 } else { 29.8 }))
            .collect();
        let tr = run(&t, 0, &mut phase, &readings);
        assert_eq!(tr, vec![(0, Transition::Fired)]);
        assert!(phase.is_active());
        // Dropping to the clear limit resolves, once.
        let tr = run(&t, 0, &mut phase, &[(60_000, 28.0), (61_000, 27.0)]);
        assert_eq!(tr, vec![(60_000, Transition::Resolved)]);
        assert_eq!(phase, Phase::Inactive);
    }

    #[test]
    fn without_hysteresis_the_same_input_does_flap() {
        // The control for the test above: it is the clear limit that makes the difference.
        let t = upper(30.0, None);
        let mut phase = Phase::Inactive;
        let readings: Vec<_> = (0..10)
            .map(|i| (i * 1000, if i % 2 == 0 { 30.2 } else { 29.8 }))
            .collect();
        assert_eq!(run(&t, 0, &mut phase, &readings).len(), 10);
    }

    #[test]
    fn lower_limit_with_hysteresis() {
        let t = Threshold {
            min: Some(10.0),
            clear_min: Some(12.0),
            ..Threshold::default()
        };
        assert_eq!(threshold_condition(&t, 9.0, false), Condition::Breach);
        assert_eq!(threshold_condition(&t, 11.0, false), Condition::Clear);
        assert_eq!(threshold_condition(&t, 11.0, true), Condition::Hold);
        assert_eq!(threshold_condition(&t, 12.0, true), Condition::Clear);
    }

    #[test]
    fn resolves_when_clear() {
        let t = upper(30.0, None);
        let mut phase = Phase::Inactive;
        let tr = run(
            &t,
            0,
            &mut phase,
            &[(0, 40.0), (1, 40.0), (2, 20.0), (3, 20.0)],
        );
        assert_eq!(tr, vec![(0, Transition::Fired), (2, Transition::Resolved)]);
    }

    #[test]
    fn manual_clear_then_refires_if_condition_persists() {
        let t = upper(30.0, None);
        let mut phase = Phase::Inactive;
        run(&t, 2 * MIN, &mut phase, &[(0, 40.0), (2 * MIN, 40.0)]);
        assert_eq!(phase, Phase::Firing { since_ms: 2 * MIN });
        phase = manual_clear(phase);
        assert_eq!(phase, Phase::Inactive);
        // The condition persists: pending again, then fires again after `for`.
        let tr = run(&t, 2 * MIN, &mut phase, &[(3 * MIN, 40.0), (5 * MIN, 40.0)]);
        assert_eq!(tr, vec![(5 * MIN, Transition::Fired)]);
    }

    #[test]
    fn acknowledge_keeps_it_from_refiring_and_still_resolves() {
        let t = upper(30.0, None);
        let mut phase = Phase::Inactive;
        run(&t, 0, &mut phase, &[(0, 40.0)]);
        phase = acknowledge(phase);
        assert_eq!(phase, Phase::Acknowledged { since_ms: 0 });
        let readings: Vec<_> = (1..20).map(|i| (i * 1000, 45.0)).collect();
        assert!(run(&t, 0, &mut phase, &readings).is_empty());
        assert!(phase.is_active());
        let tr = run(&t, 0, &mut phase, &[(30_000, 10.0)]);
        assert_eq!(tr, vec![(30_000, Transition::Resolved)]);
        // Acknowledging anything but a firing alert changes nothing.
        assert_eq!(acknowledge(Phase::Inactive), Phase::Inactive);
        let pending = Phase::Pending { since_ms: 3 };
        assert_eq!(acknowledge(pending), pending);
    }

    #[test]
    fn nan_is_not_a_breach() {
        let t = Threshold {
            min: Some(10.0),
            max: Some(30.0),
            ..Threshold::default()
        };
        assert_eq!(threshold_condition(&t, f64::NAN, false), Condition::Clear);
        assert_eq!(threshold_condition(&t, f64::NAN, true), Condition::Hold);
        let mut phase = Phase::Inactive;
        assert!(run(&t, 0, &mut phase, &[(0, f64::NAN), (1, f64::NAN)]).is_empty());
        // A firing alert neither resolves nor re-fires on NaN.
        run(&t, 0, &mut phase, &[(2, 50.0)]);
        assert!(run(&t, 0, &mut phase, &[(3, f64::NAN)]).is_empty());
        assert!(phase.is_active());
    }

    #[test]
    fn infinities_compare_as_numbers() {
        let t = upper(30.0, None);
        assert_eq!(
            threshold_condition(&t, f64::INFINITY, false),
            Condition::Breach
        );
        assert_eq!(
            threshold_condition(&t, f64::NEG_INFINITY, true),
            Condition::Clear
        );
    }

    #[test]
    fn no_limits_never_breach() {
        let t = Threshold::default();
        assert_eq!(threshold_condition(&t, 1e300, false), Condition::Clear);
        assert_eq!(threshold_condition(&t, 1e300, true), Condition::Clear);
    }

    #[test]
    fn step_table_and_extreme_times() {
        let firing = Phase::Firing { since_ms: 1 };
        assert_eq!(step(firing, Condition::Breach, 0, 5), (firing, None));
        assert_eq!(step(firing, Condition::Hold, 0, 5), (firing, None));
        assert_eq!(
            step(firing, Condition::Clear, 0, 5),
            (Phase::Inactive, Some(Transition::Resolved))
        );
        let pending = Phase::Pending { since_ms: i64::MAX };
        assert_eq!(
            step(pending, Condition::Breach, MIN, i64::MIN),
            (pending, None)
        );
        let pending = Phase::Pending { since_ms: i64::MIN };
        assert_eq!(
            step(pending, Condition::Breach, i64::MAX, i64::MAX),
            (
                Phase::Firing { since_ms: i64::MAX },
                Some(Transition::Fired)
            )
        );
        assert_eq!(
            step(Phase::Inactive, Condition::Clear, 0, 0),
            (Phase::Inactive, None)
        );
    }

    #[test]
    fn phase_serde_is_tagged() {
        let json = serde_json::to_string(&Phase::Pending { since_ms: 7 }).expect("serialise");
        assert_eq!(json, r#"{"phase":"pending","since_ms":7}"#);
        let back: Phase = serde_json::from_str(r#"{"phase":"inactive"}"#).expect("parse");
        assert_eq!(back, Phase::Inactive);
    }

    #[test]
    fn describe() {
        let both = Threshold {
            min: Some(10.0),
            max: Some(30.0),
            ..Threshold::default()
        };
        assert_eq!(describe_threshold(&both), "10-30");
        assert_eq!(describe_threshold(&upper(30.5, None)), "> 30.5");
        let low = Threshold {
            min: Some(10.0),
            ..Threshold::default()
        };
        assert_eq!(describe_threshold(&low), "< 10");
        let neg = Threshold {
            min: Some(-10.0),
            max: Some(30.0),
            ..Threshold::default()
        };
        assert_eq!(describe_threshold(&neg), "-10 to 30");
        assert_eq!(describe_threshold(&Threshold::default()), "");
    }
}
