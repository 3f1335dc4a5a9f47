//! What the processor lets reach the engine: pure checks on a reading from the event
//! log, given what is known about its device and the current time.

use sensorfleet_model::Reading;
use sensorfleet_model::reading::{Reject, RejectReason, reject};

/// Admits `reading` for analysis, or says why not.
///
/// - **Type.** A device keeps its declared type, else the one the engine first saw it
///   with (`known`); a reading under another type is rejected as `type_mismatch` and
///   dead-lettered: it must not resolve (or raise) that device's alerts.
/// - **Future timestamps.** A reading stamped ahead of `now_ms` (the bridge allows some
///   clock skew) is analysed as if it arrived now. Alert state only moves forward in
///   time, so a reading kept at its future stamp would make every genuine reading before
///   that instant look late, and freeze the device's alerts until then.
pub fn admit(
    reading: &mut Reading,
    declared: Option<&str>,
    known: Option<&str>,
    now_ms: i64,
) -> Result<(), Reject> {
    if let Some(expected) = declared.or(known)
        && expected != reading.device_type
    {
        let whose = if declared.is_some() {
            "declared"
        } else {
            "first seen"
        };
        return Err(reject(
            RejectReason::TypeMismatch,
            format!(
                "device {} is a {expected} ({whose}); this reading says {}",
                reading.device_id, reading.device_type
            ),
        ));
    }
    reading.ts_ms = reading.ts_ms.min(now_ms);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::processor::engine::{Engine, EngineConfig, Output};
    use sensorfleet_model::CompiledRule;

    fn reading(device_type: &str, ts_ms: i64, value: f64) -> Reading {
        Reading {
            device_id: "d".to_owned(),
            device_type: device_type.to_owned(),
            location: None,
            ts_ms,
            fields: BTreeMap::from([("temperature_celsius".to_owned(), value)]),
        }
    }

    #[test]
    fn the_declared_type_then_the_first_seen_one_decide() {
        let mut r = reading("humidity_sensor", 1_000, 1.0);
        let e = admit(&mut r, Some("temperature_sensor"), None, 2_000).expect_err("declared");
        assert_eq!(e.reason, RejectReason::TypeMismatch);
        assert!(e.detail.contains("declared"), "{}", e.detail);
        let e = admit(&mut r, None, Some("temperature_sensor"), 2_000).expect_err("first seen");
        assert!(e.detail.contains("first seen"), "{}", e.detail);
        assert!(admit(&mut r, None, Some("humidity_sensor"), 2_000).is_ok());
        assert!(admit(&mut r, None, None, 2_000).is_ok(), "a new device");
        // A declaration wins over what the engine saw first.
        assert!(
            admit(
                &mut r,
                Some("humidity_sensor"),
                Some("temperature_sensor"),
                2_000
            )
            .is_ok()
        );
    }

    #[test]
    fn a_future_stamp_is_analysed_as_now_and_past_ones_are_kept() {
        let mut ahead = reading("t", 10_000, 1.0);
        admit(&mut ahead, None, None, 4_000).expect("admitted");
        assert_eq!(ahead.ts_ms, 4_000);
        let mut past = reading("t", 3_000, 1.0);
        admit(&mut past, None, None, 4_000).expect("admitted");
        assert_eq!(past.ts_ms, 3_000);
    }

    /// The bug this prevents, end to end through the engine: a reading stamped four
    /// minutes ahead, then genuine readings that breach a rule. Without the clamp the
    /// genuine ones look older than the last processed reading and never fire.
    #[test]
    fn a_future_reading_does_not_freeze_the_alerts_of_later_genuine_ones() {
        let rule = hot_rule();
        let now = 1_780_000_000_000;
        let run = |clamp: bool| {
            let mut engine = Engine::new(EngineConfig::default());
            engine.set_rules(vec![rule.clone()]);
            let mut out = Output::default();
            let mut feed = |mut r: Reading, at: i64, out: &mut Output| {
                if clamp {
                    admit(&mut r, None, None, at).expect("admitted");
                }
                engine.observe(&r, out);
            };
            feed(
                reading("temperature_sensor", now + 240_000, 20.0),
                now,
                &mut out,
            );
            for i in 1..=3 {
                let at = now + i * 1000;
                feed(reading("temperature_sensor", at, 40.0), at, &mut out);
            }
            out.alerts.iter().any(|a| a.state.as_str() == "firing")
        };
        assert!(!run(false), "the freeze this guards against");
        assert!(run(true), "genuine readings fire their alert");
    }

    fn hot_rule() -> CompiledRule {
        CompiledRule {
            name: "hot".to_owned(),
            device_type: Some("temperature_sensor".to_owned()),
            fleet: None,
            metric: "temperature_celsius".to_owned(),
            threshold: sensorfleet_model::analytics::alert::Threshold {
                min: None,
                max: Some(30.0),
                clear_min: None,
                clear_max: None,
            },
            for_ms: 0,
            severity: sensorfleet_model::Severity::Critical,
        }
    }
}
