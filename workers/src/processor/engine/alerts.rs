//! Alert bookkeeping of one device: which sources are tracked in which phase, how a
//! condition steps them, and the alert records and saved state rows that follow.

use std::sync::Arc;

use sensorfleet_model::analytics::{self, Condition, Phase, Transition};
use sensorfleet_model::duration::format_duration_ms;
use sensorfleet_model::reading::format_ts;
use sensorfleet_model::{Alert, AlertKind, AlertPhase, CompiledRule, Severity};
use serde::{Deserialize, Serialize};

use super::{EngineConfig, Output};

/// The engine's own checks, whose source key is the alert kind's name.
const CHECKS: [AlertKind; 5] = [
    AlertKind::Anomaly,
    AlertKind::Spike,
    AlertKind::Stuck,
    AlertKind::LowBattery,
    AlertKind::Offline,
];

/// Where an alert comes from on a device: an AlertRule, by name, or one of the engine's
/// own checks. Its key is part of the alert id and of the saved state row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Source {
    /// A threshold rule.
    Rule(Arc<str>),
    /// One of [`CHECKS`].
    Check(AlertKind),
}

impl Source {
    /// The device's offline check.
    pub(super) const OFFLINE: Self = Self::Check(AlertKind::Offline);

    pub(super) fn key(&self) -> String {
        match self {
            Self::Rule(name) => format!("rule:{name}"),
            Self::Check(kind) => kind.as_str().to_owned(),
        }
    }

    pub(super) fn parse(key: &str) -> Option<Self> {
        match key.strip_prefix("rule:") {
            Some(name) => Some(Self::Rule(Arc::from(name))),
            None => CHECKS
                .into_iter()
                .find(|kind| kind.as_str() == key)
                .map(Self::Check),
        }
    }

    fn kind(&self) -> AlertKind {
        match self {
            Self::Rule(_) => AlertKind::Threshold,
            Self::Check(kind) => *kind,
        }
    }
}

/// One alert source's lifecycle on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Tracked {
    #[serde(skip, default = "no_source")]
    pub(super) source: Source,
    phase: Phase,
    /// When the condition first held in this episode.
    started_ms: i64,
    value: f64,
    #[serde(default)]
    pub(super) device_type: String,
}

fn no_source() -> Source {
    Source::Check(AlertKind::Anomaly)
}

/// What one step of a device shares with every alert source it moves.
pub(super) struct Step<'a> {
    pub(super) device_id: &'a str,
    pub(super) device_type: &'a str,
    pub(super) now_ms: i64,
    pub(super) cfg: &'a EngineConfig,
    pub(super) out: &'a mut Output,
}

/// The tracked alert sources of one device; only those not inactive are kept.
#[derive(Debug, Clone, Default)]
pub(super) struct Alerts(Vec<Tracked>);

impl Alerts {
    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<Tracked>()
    }

    /// Whether the source has an alert firing or acknowledged.
    pub(super) fn is_active(&self, source: &Source) -> bool {
        self.0
            .iter()
            .any(|t| t.source == *source && t.phase.is_active())
    }

    /// Whether the source is tracked at all (pending counts).
    pub(super) fn is_tracked(&self, source: &Source) -> bool {
        self.0.iter().any(|t| t.source == *source)
    }

    /// Alerts firing or acknowledged.
    pub(super) fn active_count(&self) -> usize {
        self.0.iter().filter(|t| t.phase.is_active()).count()
    }

    /// Rule sources tracked whose rule is not among `rules`.
    pub(super) fn stale_rules(&self, rules: &[Arc<str>]) -> Vec<Source> {
        self.0
            .iter()
            .filter(|t| matches!(&t.source, Source::Rule(name) if !rules.contains(name)))
            .map(|t| t.source.clone())
            .collect()
    }

    /// Puts back a source restored from its saved state, replacing any of the same source.
    pub(super) fn restore(&mut self, tracked: Tracked) {
        self.0.retain(|t| t.source != tracked.source);
        self.0.push(tracked);
    }

    /// Steps one alert source of the device and records what changed.
    pub(super) fn advance(
        &mut self,
        step: &mut Step<'_>,
        source: Source,
        condition: Condition,
        for_ms: i64,
        value: f64,
    ) {
        let now_ms = step.now_ms;
        let index = self.0.iter().position(|t| t.source == source);
        let before = index.map_or(Phase::Inactive, |i| self.0[i].phase);
        if before == Phase::Inactive && condition != Condition::Breach {
            return; // the common case: nothing tracked, nothing to track
        }
        let (after, transition) = analytics::step(before, condition, for_ms, now_ms);
        let index = match index {
            Some(i) => i,
            None => {
                self.0.push(Tracked {
                    source,
                    phase: Phase::Inactive,
                    started_ms: now_ms,
                    value,
                    device_type: step.device_type.to_owned(),
                });
                self.0.len() - 1
            }
        };
        let tracked = &mut self.0[index];
        if before == Phase::Inactive {
            tracked.started_ms = now_ms;
        }
        if condition == Condition::Breach {
            tracked.value = value;
        }
        match transition {
            Some(Transition::Fired) => {
                tracked.phase = after;
                let alert =
                    build_alert(step, tracked, phase_since(after), AlertPhase::Firing, None);
                step.out.alerts.push(alert);
            }
            Some(Transition::Resolved) => {
                let since = phase_since(before);
                let alert = build_alert(step, tracked, since, AlertPhase::Resolved, Some(value));
                tracked.phase = after;
                step.out.alerts.push(alert);
            }
            None => tracked.phase = after,
        }
        if before != after {
            step.out.state.push(state_row(step.device_id, tracked));
        }
        if after == Phase::Inactive {
            self.0.remove(index);
        }
    }

    /// Acknowledges (or, with `clear`, clears by hand) the active alert of `source_key`
    /// that started at `since`; false when there is none.
    pub(super) fn command(
        &mut self,
        step: &mut Step<'_>,
        source_key: &str,
        since: i64,
        clear: bool,
    ) -> bool {
        let Some(tracked) = self.0.iter_mut().find(|t| {
            t.source.key() == source_key && t.phase.is_active() && phase_since(t.phase) == since
        }) else {
            return false;
        };
        let (phase, state) = if clear {
            (analytics::manual_clear(tracked.phase), AlertPhase::Resolved)
        } else {
            (
                analytics::acknowledge(tracked.phase),
                AlertPhase::Acknowledged,
            )
        };
        let alert = build_alert(step, tracked, since, state, None);
        tracked.phase = phase;
        step.out.alerts.push(alert);
        step.out.state.push(state_row(step.device_id, tracked));
        if clear {
            self.0.retain(|t| t.phase != Phase::Inactive);
        }
        true
    }
}

/// Why an acknowledge or clear did not apply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// No active alert has this id.
    #[error("no active alert {0:?}")]
    NotFound(String),
    /// Applied, but the registry did not take the new state; it may apply again.
    #[error("the alert's new state was not stored: {0}")]
    NotPersisted(String),
}

fn phase_since(phase: Phase) -> i64 {
    match phase {
        Phase::Inactive => 0,
        Phase::Pending { since_ms }
        | Phase::Firing { since_ms }
        | Phase::Acknowledged { since_ms } => since_ms,
    }
}

fn state_row(device_id: &str, tracked: &Tracked) -> (String, String, Option<String>) {
    let json = (tracked.phase != Phase::Inactive)
        .then(|| serde_json::to_string(tracked).unwrap_or_default());
    (device_id.to_owned(), tracked.source.key(), json)
}

fn build_alert(
    step: &Step<'_>,
    tracked: &Tracked,
    since_ms: i64,
    state: AlertPhase,
    resolved_value: Option<f64>,
) -> Alert {
    let (device_id, detector) = (step.device_id, &step.cfg.detector);
    let kind = tracked.source.kind();
    let check = |threshold: String, subject: &str| {
        (kind.as_str().to_owned(), threshold, subject.to_owned())
    };
    let (rule, threshold, subject) = match (&tracked.source, kind) {
        (Source::Rule(name), _) => (name.to_string(), String::new(), format!("rule {name}")),
        (_, AlertKind::Threshold) => check(String::new(), "threshold"),
        (_, AlertKind::Anomaly) => check(
            format!("|z| >= {}", detector.z_threshold),
            "value far outside its own history",
        ),
        (_, AlertKind::Spike) => check(
            format!("rate z >= {}", detector.spike_z),
            "value changing far faster than usual",
        ),
        (_, AlertKind::Stuck) => check(
            format!("{} identical readings", detector.stuck_after),
            "sensor reports the same value over and over",
        ),
        (_, AlertKind::LowBattery) => {
            check(format!("< {}%", step.cfg.low_battery_pct), "battery low")
        }
        (_, AlertKind::Offline) => check("no reading".to_owned(), "device silent"),
    };
    let value = resolved_value.unwrap_or(tracked.value);
    let verb = match state {
        AlertPhase::Firing | AlertPhase::Pending => "firing",
        AlertPhase::Acknowledged => "acknowledged",
        AlertPhase::Resolved => "resolved",
    };
    Alert {
        id: format!("{device_id}/{}/{since_ms}", tracked.source.key()),
        device_id: device_id.to_owned(),
        alert_type: kind,
        rule,
        metric: (kind == AlertKind::LowBattery).then(|| "meta_battery_level".to_owned()),
        severity: match kind {
            AlertKind::Offline => Severity::Critical,
            _ => Severity::Warning,
        },
        state,
        value,
        threshold,
        timestamp: format_ts(step.now_ms),
        started_at: format_ts(tracked.started_ms),
        message: format!("{device_id}: {subject} ({verb}, value {value})"),
    }
}

/// Fills in what only the rule knows (metric, limits, severity, wording) on alerts of
/// threshold rules; the engine keeps only the rule name per device to stay small.
pub fn describe_rule_alerts(alerts: &mut [Alert], rules: &[CompiledRule]) {
    for alert in alerts
        .iter_mut()
        .filter(|a| a.alert_type == AlertKind::Threshold)
    {
        let Some(rule) = rules.iter().find(|r| r.name == alert.rule) else {
            continue;
        };
        alert.metric = Some(rule.metric.clone());
        alert.severity = rule.severity;
        alert.threshold = analytics::describe_threshold(&rule.threshold);
        let for_text = if rule.for_ms > 0 {
            format!(" for {}", format_duration_ms(rule.for_ms))
        } else {
            String::new()
        };
        alert.message = match alert.state {
            AlertPhase::Resolved => format!(
                "{}: {} back to {} (limits {}); resolved",
                alert.device_id, rule.metric, alert.value, alert.threshold
            ),
            state => format!(
                "{}: {} {} outside {}{for_text} ({})",
                alert.device_id,
                rule.metric,
                alert.value,
                alert.threshold,
                state.as_str()
            ),
        };
    }
}
