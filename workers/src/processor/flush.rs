//! Writing one pass's results to the sinks: new devices, alerts and rule state from the
//! engine's [`Output`], device metrics and presence changes of a [`Tick`], the dashboard
//! counters, and dead letters for whatever a sink refused for its content.

use std::collections::HashMap;

use sensorfleet_backends::{
    BackendError, DashboardCounters, DeviceMetrics, DeviceRecord, Record, Topic,
};
use sensorfleet_model::{Alert, AlertPhase};
use tokio::sync::watch;
use tracing::{info, warn};

use super::ProcessorSinks;
use super::engine::{DeviceReport, Output};
use super::presence::Presence;
use crate::deadletter::DeadLetters;
use crate::retry::hold;
use crate::sink::{Refused, write_isolating};
use crate::telemetry;

/// What a tick of the loop writes beside the batch's output.
#[derive(Default)]
pub(super) struct Tick<'a> {
    /// Metrics of the devices that changed (every device every 10 ticks).
    pub reports: &'a [DeviceReport],
    /// What the registry holds of their presence; only changes are written.
    pub presence: Option<&'a mut Presence>,
    /// The whole platform's dashboard counters, when computed.
    pub dashboard: Option<DashboardCounters>,
}

/// A dead letter of something the processor computed and a sink refused: `payload` as
/// JSON, the sink's reason in `detail`.
fn refused_letter(key: &str, payload: Vec<u8>, sink: &str, refused: &Refused) -> Record {
    Record {
        key: key.to_owned(),
        payload,
        headers: vec![
            ("reason".to_owned(), "sink_refused".to_owned()),
            ("detail".to_owned(), refused.reason.clone()),
            ("sink".to_owned(), sink.to_owned()),
        ],
    }
}

/// Writes one batch's results. Each sink holds while it is unavailable or misconfigured,
/// until it accepts or shutdown; what it refuses for its content is dead-lettered, with
/// `rejected` (records the batch itself refused). Alerts go to the registry before the
/// cache and the log; returns how many alerts the registry refused.
pub(super) async fn flush(
    sinks: &ProcessorSinks,
    dead_letters: &DeadLetters,
    out: &mut Output,
    tick: Option<Tick<'_>>,
    rejected: Vec<Record>,
    now: i64,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<usize, BackendError> {
    let Tick {
        reports,
        presence,
        dashboard,
    } = tick.unwrap_or_default();
    let mut letters = rejected;
    let mut registry_refused = 0;
    let json = |value: &serde_json::Value| serde_json::to_vec(value).unwrap_or_default();
    if !out.new_devices.is_empty() {
        let devices: Vec<DeviceRecord> = out
            .new_devices
            .drain(..)
            .map(|(device_id, device_type, location)| DeviceRecord {
                device_id,
                device_type,
                location,
                status: "unregistered".to_owned(),
                fleet: None,
                publish_interval_ms: None,
                offline_after_ms: None,
            })
            .collect();
        let refused = write_isolating("processor", "registry", devices.len(), shutdown, |range| {
            sinks.registry.insert_missing_devices(&devices[range])
        })
        .await?;
        for r in &refused {
            let device = &devices[r.index];
            let payload = serde_json::json!({
                "device_id": device.device_id,
                "device_type": device.device_type,
                "location": device.location,
            });
            letters.push(refused_letter(
                &device.device_id,
                json(&payload),
                sinks.registry.name(),
                r,
            ));
        }
    }
    if !out.alerts.is_empty() {
        let ids: Vec<String> = out.alerts.iter().map(|a| a.id.clone()).collect();
        let stored = hold("processor", "registry", shutdown, || {
            sinks.registry.alert_phases(&ids)
        })
        .await?;
        let behind = keep_not_behind(&mut out.alerts, &stored);
        if behind > 0 {
            info!(
                alerts = behind,
                "alerts the registry already holds in a later phase were not written again \
                 (readings reprocessed after a crash or a replay)"
            );
        }
    }
    if !out.alerts.is_empty() {
        for alert in &out.alerts {
            telemetry::PROCESSOR_ALERTS
                .with_label_values(&[alert.alert_type.as_str(), alert.state.as_str()])
                .inc();
            info!(
                alert_id = %alert.id,
                device_id = %alert.device_id,
                alert_type = alert.alert_type.as_str(),
                state = alert.state.as_str(),
                severity = alert.severity.as_str(),
                "alert"
            );
        }
        let alerts = std::mem::take(&mut out.alerts);
        let registry = write_isolating("processor", "registry", alerts.len(), shutdown, |range| {
            sinks.registry.record_alerts(&alerts[range])
        })
        .await?;
        registry_refused = registry.len();
        let cache = write_isolating("processor", "cache", alerts.len(), shutdown, |range| {
            sinks.cache.push_alerts(&alerts[range])
        })
        .await?;
        let records: Vec<Record> = alerts
            .iter()
            .map(|a| Record {
                key: a.device_id.clone(),
                // Infallible: a derived Serialize of strings, numbers and unit enums,
                // into memory.
                payload: serde_json::to_vec(a).expect("an Alert always encodes as JSON"),
                headers: vec![],
            })
            .collect();
        let log = write_isolating("processor", "event log", records.len(), shutdown, |range| {
            sinks.log.append(Topic::Alerts, records[range].to_vec())
        })
        .await?;
        for (sink, refused) in [
            (sinks.registry.name(), registry),
            (sinks.cache.name(), cache),
            (sinks.log.name(), log),
        ] {
            for r in &refused {
                let alert = &alerts[r.index];
                letters.push(refused_letter(
                    &alert.device_id,
                    records[r.index].payload.clone(),
                    sink,
                    r,
                ));
            }
        }
    }
    if !out.state.is_empty() {
        let rows = std::mem::take(&mut out.state);
        let refused = write_isolating("processor", "registry", rows.len(), shutdown, |range| {
            sinks.registry.save_rule_state(&rows[range])
        })
        .await?;
        for r in &refused {
            let (device_id, source, state) = &rows[r.index];
            let payload =
                serde_json::json!({"device_id": device_id, "source": source, "state": state});
            letters.push(refused_letter(
                device_id,
                json(&payload),
                sinks.registry.name(),
                r,
            ));
        }
    }
    if let Some(presence) = presence {
        let changes = presence.changes(reports);
        let refused = write_isolating("processor", "registry", changes.len(), shutdown, |range| {
            sinks.registry.set_presence(&changes[range])
        })
        .await?;
        for r in &refused {
            // Computed, not sent by a device: nothing to dead-letter; tried again with
            // the device's next report.
            let (device_id, _) = &changes[r.index];
            warn!(device_id = %device_id, reason = %r.reason, "the registry refused a presence change");
            presence.unwrite(device_id);
        }
    }
    if !reports.is_empty() {
        let metrics: Vec<DeviceMetrics> = reports.iter().map(device_metrics).collect();
        let refused = write_isolating("processor", "cache", metrics.len(), shutdown, |range| {
            sinks.cache.put_metrics(&metrics[range], now)
        })
        .await?;
        for r in &refused {
            let m = &metrics[r.index];
            let payload = serde_json::to_vec(m).unwrap_or_default();
            letters.push(refused_letter(&m.device_id, payload, sinks.cache.name(), r));
        }
    }
    if let Some(counters) = dashboard {
        match hold("processor", "cache", shutdown, || {
            sinks.cache.put_dashboard(counters, now)
        })
        .await
        {
            Ok(()) => {}
            // Computed by the processor, not sent by a device: nothing to dead-letter.
            Err(e) if e.is_content() => warn!(error = %e, "the dashboard counters were refused"),
            Err(e) => return Err(e),
        }
    }
    if !letters.is_empty() {
        for letter in &letters {
            let reason = letter
                .headers
                .iter()
                .rev()
                .find(|(k, _)| k == "reason")
                .map_or("unknown", |(_, v)| v.as_str());
            if reason == "malformed_log_record" {
                telemetry::PROCESSOR_MALFORMED.inc();
            }
            telemetry::PROCESSOR_REJECTS
                .with_label_values(&[reason])
                .inc();
        }
        dead_letters.send(letters).await;
    }
    Ok(registry_refused)
}

/// Drops the alerts whose id the registry holds in a later phase (`stored`): reprocessed
/// readings never move an alert back, so a resolved alert does not fire again and an
/// acknowledged one is not re-notified. The same phase is written again (idempotent; the
/// cache and the alerts topic may have missed it before a crash). Returns how many went.
fn keep_not_behind(alerts: &mut Vec<Alert>, stored: &[(String, AlertPhase)]) -> usize {
    let stored: HashMap<&str, AlertPhase> = stored
        .iter()
        .map(|(id, phase)| (id.as_str(), *phase))
        .collect();
    let before = alerts.len();
    alerts.retain(|a| {
        stored
            .get(a.id.as_str())
            .is_none_or(|&phase| a.state >= phase)
    });
    before - alerts.len()
}

fn device_metrics(report: &DeviceReport) -> DeviceMetrics {
    let average_of = |field: &str| {
        (report.main_field.as_deref() == Some(field))
            .then_some(report.moving_average)
            .flatten()
    };
    DeviceMetrics {
        device_id: report.device_id.clone(),
        avg_temp: average_of("temperature_celsius"),
        humidity: average_of("humidity_percent"),
        main_field: report.main_field.clone(),
        moving_average: report.moving_average,
        window: report.window,
        health_score: report.health_score,
        status: if report.online { "online" } else { "offline" }.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use sensorfleet_model::analytics::WindowStats;

    use super::*;

    fn report(main_field: &str) -> DeviceReport {
        DeviceReport {
            device_id: "d".to_owned(),
            moving_average: Some(42.5),
            main_field: Some(main_field.to_owned()),
            window: Some(WindowStats {
                count: 4,
                mean: 42.0,
                min: 40.0,
                max: 44.0,
                stddev: 1.5,
            }),
            health_score: 0.8,
            online: true,
        }
    }

    #[test]
    fn an_alert_is_never_written_behind_its_stored_phase() {
        let alert = |id: &str, state: AlertPhase| Alert {
            id: id.to_owned(),
            device_id: "d".to_owned(),
            alert_type: sensorfleet_model::AlertKind::Threshold,
            rule: "hot".to_owned(),
            metric: None,
            severity: sensorfleet_model::Severity::Warning,
            state,
            value: 1.0,
            threshold: String::new(),
            timestamp: String::new(),
            started_at: String::new(),
            message: String::new(),
        };
        let mut alerts = vec![
            alert("resolved-refires", AlertPhase::Firing),
            alert("acked-refires", AlertPhase::Firing),
            alert("acked-resolves", AlertPhase::Resolved),
            alert("firing-again", AlertPhase::Firing),
            alert("new", AlertPhase::Firing),
        ];
        let stored = [
            ("resolved-refires".to_owned(), AlertPhase::Resolved),
            ("acked-refires".to_owned(), AlertPhase::Acknowledged),
            ("acked-resolves".to_owned(), AlertPhase::Acknowledged),
            ("firing-again".to_owned(), AlertPhase::Firing),
        ];
        assert_eq!(keep_not_behind(&mut alerts, &stored), 2);
        let kept: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(kept, ["acked-resolves", "firing-again", "new"]);
    }

    #[test]
    fn every_type_keeps_its_moving_average_and_window_and_the_original_keys_stay() {
        let gps = device_metrics(&report("speed_kmh"));
        assert_eq!(gps.main_field.as_deref(), Some("speed_kmh"));
        assert_eq!(gps.moving_average, Some(42.5));
        assert_eq!(gps.window, report("speed_kmh").window);
        assert_eq!((gps.avg_temp, gps.humidity), (None, None));
        let thermometer = device_metrics(&report("temperature_celsius"));
        assert_eq!(
            (thermometer.avg_temp, thermometer.humidity),
            (Some(42.5), None)
        );
        let hygrometer = device_metrics(&report("humidity_percent"));
        assert_eq!(
            (hygrometer.avg_temp, hygrometer.humidity),
            (None, Some(42.5))
        );
    }
}
