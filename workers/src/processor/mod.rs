//! The stream processor: consumes readings from the event log, runs the [`engine`] and
//! writes alerts, device metrics and rule state; commits the log only after every sink
//! has flushed, so a crash replays rather than loses.
//!
//! Nothing in the log stops it: a record that does not parse, a reading under another
//! type than its device's ([`admit`]), and whatever a sink refuses for its content
//! (found by bisecting the write, [`crate::sink`]) are dead-lettered with their reason,
//! and the batch is committed. Only an unavailable or misconfigured sink holds it.
//!
//! Beside the loop run the [`declarations`] refresh (devices and rules from the registry)
//! and the [`commands`] reader (acknowledge and clear from the event log). Each pass's
//! results are written by `flush`; a device's presence goes to the registry only when it
//! changes (`presence`), for the fleets' online count.
//!
//! Several processors share the readings: each holds the devices of the partitions it
//! owns, and adopts or forgets devices when that changes ([`ownership`]). Dashboard
//! counters are computed from the whole cache and registry, not from a processor's own
//! devices ([`dashboard_counters`]), so every processor writes the same numbers.

pub mod admit;
pub mod backtest;
mod commands;
pub mod declarations;
pub mod engine;
mod flush;
mod ownership;
mod presence;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sensorfleet_backends::backoff::Backoff;
use sensorfleet_backends::{
    Assignment, BackendError, Cache, DashboardCounters, DeviceMetrics, EventLog, LogConsumer,
    Registry, Topic,
};
use sensorfleet_model::{AlertAction, CompiledRule, Reading};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::deadletter::{DeadLetters, SpoolConfig};
use crate::retry::retry;
use crate::telemetry;
use commands::AlertCommand;
pub use declarations::Declarations;
use engine::{CommandError, Output, describe_rule_alerts};
pub use engine::{Engine, EngineConfig};
use flush::{Tick, flush};
use presence::Presence;

/// Everything the processor writes to and reads from.
#[derive(Clone)]
pub struct ProcessorSinks {
    /// The event log: readings in, alerts and dead letters out.
    pub log: Arc<dyn EventLog>,
    /// Devices, rules, alert history, rule state.
    pub registry: Arc<dyn Registry>,
    /// Device metrics, alert list, dashboard counters, live feed.
    pub cache: Arc<dyn Cache>,
}

/// Processor settings.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Consumer group of the readings (the command reader has none: it reads from the end).
    pub group: String,
    /// How often devices and rules are re-read from the registry.
    pub refresh: Duration,
    /// Most readings per batch.
    pub batch_max: usize,
    /// How often offline checks, health and dashboard counters run.
    pub tick: Duration,
    /// Engine tuning.
    pub engine: EngineConfig,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            group: "sensorfleet-processor".to_owned(),
            refresh: Duration::from_secs(10),
            batch_max: 5000,
            tick: Duration::from_secs(1),
            engine: EngineConfig::default(),
        }
    }
}

/// Runs the processor until `shutdown` turns true, then flushes and commits.
pub async fn run(
    config: ProcessorConfig,
    sinks: ProcessorSinks,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BackendError> {
    let declared = retry("processor", "registry", &mut shutdown, || {
        declarations::read(sinks.registry.as_ref())
    })
    .await?;
    info!(
        devices = declared.devices.len(),
        rules = declared.rules.len(),
        "declarations read"
    );
    let (helpers_stop, helpers_stopped) = watch::channel(false);
    let (declared_tx, mut declarations) = watch::channel(declared);
    let refresher = tokio::spawn(declarations::refresh(
        sinks.registry.clone(),
        config.refresh,
        declared_tx,
        helpers_stopped.clone(),
    ));
    let (commands_tx, mut commands) = mpsc::channel(64);
    let relay = tokio::spawn(commands::relay(
        sinks.log.clone(),
        commands_tx,
        helpers_stopped,
    ));
    let result = process(
        &config,
        &sinks,
        &mut declarations,
        &mut commands,
        &mut shutdown,
    )
    .await;
    let _ = helpers_stop.send(true);
    let _ = refresher.await;
    relay.abort();
    result
}

async fn process(
    config: &ProcessorConfig,
    sinks: &ProcessorSinks,
    declarations: &mut watch::Receiver<Declarations>,
    commands: &mut mpsc::Receiver<AlertCommand>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), BackendError> {
    let mut consumer = retry("processor", "event log", shutdown, || {
        sinks.log.subscribe(Topic::Readings, &config.group)
    })
    .await?;
    let mut engine = Engine::new(config.engine.clone());
    apply_declarations(&mut engine, &declarations.borrow_and_update());
    // Rule state and silence clocks are loaded per owned partition, at the first
    // assignment and at every change (see `ownership`).
    let mut owned: Option<Assignment> = None;
    // The embedded log's consumer owns its partition at once; Kafka's after a poll.
    follow(
        consumer.as_mut(),
        &mut owned,
        &mut engine,
        declarations,
        sinks,
        shutdown,
    )
    .await?;
    info!(assigned = owned.is_some(), "processor started");
    let dead_letters = DeadLetters::new(
        "processor",
        Arc::clone(&sinks.log),
        SpoolConfig::named(&format!(
            "processor-{}-{}",
            config.group,
            std::process::id()
        )),
    );
    let mut declared_types = declared_types(&declarations.borrow());

    let mut rules = declarations.borrow().rules.clone();
    let mut presence = Presence::default();
    let mut last_tick = Instant::now();
    let mut ticks: u64 = 0;
    loop {
        // On shutdown, drain what the log holds (without waiting for more), then stop.
        let stopping = *shutdown.borrow();
        let polled = if stopping {
            consumer.poll(config.batch_max, 0).await
        } else {
            tokio::select! {
                polled = consumer.poll(config.batch_max, 200) => polled,
                _ = shutdown.changed() => continue,
            }
        };
        let batch = match polled {
            Ok(batch) => batch,
            // The log is unreachable: nothing was taken from it, so wait and poll again.
            Err(e) if e.is_transient() && !stopping => {
                telemetry::SINK_ERRORS
                    .with_label_values(&["processor", "event log poll"])
                    .inc();
                warn!(error = %e, "polling the event log failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if stopping && batch.is_empty() {
            break;
        }
        let held = owned.clone();
        let current = follow(
            consumer.as_mut(),
            &mut owned,
            &mut engine,
            declarations,
            sinks,
            shutdown,
        )
        .await?;
        if owned != held {
            presence.forget();
        }
        let started = Instant::now();
        let mut out = Output::default();
        let mut malformed = Vec::new();
        let mut newest_ts = 0;
        let received = now_ms();
        for delivery in &batch {
            // Polled before its partition was revoked: not committed, the new owner's.
            if current.as_ref().is_some_and(|a| !a.has(delivery.partition)) {
                continue;
            }
            match serde_json::from_slice::<Reading>(&delivery.record.payload) {
                Ok(mut reading) => {
                    let declared = declared_types.get(&reading.device_id).map(String::as_str);
                    let known = engine.device_type(&reading.device_id);
                    if let Err(reject) = admit::admit(&mut reading, declared, known, received) {
                        let mut record = delivery.record.clone();
                        record
                            .headers
                            .push(("reason".into(), reject.reason.as_str().into()));
                        record.headers.push(("detail".into(), reject.detail));
                        malformed.push(record);
                        continue;
                    }
                    newest_ts = newest_ts.max(reading.ts_ms);
                    engine.observe(&reading, &mut out);
                }
                Err(e) => {
                    let mut record = delivery.record.clone();
                    record
                        .headers
                        .push(("reason".into(), "malformed_log_record".into()));
                    record.headers.push(("detail".into(), e.to_string()));
                    malformed.push(record);
                }
            }
        }
        if !batch.is_empty() {
            telemetry::PROCESSOR_READINGS.inc_by(batch.len() as u64);
            if newest_ts > 0 {
                telemetry::PROCESSOR_LAG_SECONDS
                    .observe(((now_ms() - newest_ts).max(0) as f64) / 1000.0);
            }
        }

        if declarations.has_changed().unwrap_or(false) {
            let declared = declarations.borrow_and_update().clone();
            rules = declared.rules.clone();
            declared_types = self::declared_types(&declared);
            apply_declarations(&mut engine, &declared);
            info!(
                devices = declared.devices.len(),
                rules = rules.len(),
                "declarations updated"
            );
        }
        while let Ok(command) = commands.try_recv() {
            handle_command(&mut engine, command, &rules, sinks, &dead_letters, shutdown).await;
        }

        let now = now_ms();
        let reports;
        let mut tick = None;
        if last_tick.elapsed() >= config.tick {
            last_tick = Instant::now();
            ticks += 1;
            engine.tick(now, &mut out);
            // Every device every 10 ticks, so health decays for silent devices too.
            reports = engine.reports(now, ticks.is_multiple_of(10));
            tick = Some(Tick {
                reports: &reports,
                presence: Some(&mut presence),
                dashboard: whole_dashboard(sinks, now).await,
            });
            telemetry::PROCESSOR_DEVICES.set(engine.device_count() as i64);
            telemetry::PROCESSOR_LAST_TICK.set(now / 1000);
            telemetry::PROCESSOR_STATE_BYTES.set(engine.state_bytes() as i64);
        }
        let processed = started.elapsed();

        describe_rule_alerts(&mut out.alerts, &rules);
        flush(
            sinks,
            &dead_letters,
            &mut out,
            tick,
            malformed,
            now,
            shutdown,
        )
        .await?;
        if !batch.is_empty() {
            commit(consumer.as_mut(), shutdown).await?;
        }
        if !batch.is_empty() || !out.alerts.is_empty() {
            telemetry::PROCESSOR_BATCH_SECONDS
                .with_label_values(&["process"])
                .observe(processed.as_secs_f64());
            telemetry::PROCESSOR_BATCH_SECONDS
                .with_label_values(&["total"])
                .observe(started.elapsed().as_secs_f64());
        }
    }
    info!("processor stopped; everything processed is committed");
    Ok(())
}

/// Reads the consumer's assignment and, when it changed from `owned`, makes the engine
/// hold exactly its devices. Returns the assignment just read: `None` before the group
/// assigned anything, or when it could not be read (the devices held are kept).
async fn follow(
    consumer: &mut dyn LogConsumer,
    owned: &mut Option<Assignment>,
    engine: &mut Engine,
    declarations: &watch::Receiver<Declarations>,
    sinks: &ProcessorSinks,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Assignment>, BackendError> {
    let current = match consumer.assignment().await {
        Ok(current) => current,
        Err(e) => {
            warn!(error = %e, "reading the partition assignment failed; keeping the devices held");
            return Ok(None);
        }
    };
    if let Some(assignment) = &current
        && owned.as_ref() != Some(assignment)
    {
        let devices = declarations.borrow().devices.clone();
        ownership::adopt(engine, assignment, &devices, sinks, shutdown).await?;
        *owned = Some(assignment.clone());
    }
    Ok(current)
}

/// Commits the consumer's position, retrying transient failures until shutdown.
async fn commit(
    consumer: &mut dyn LogConsumer,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), BackendError> {
    let mut backoff = Backoff::service();
    loop {
        match consumer.commit().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && !*shutdown.borrow() => {
                telemetry::SINK_ERRORS
                    .with_label_values(&["processor", "event log commit"])
                    .inc();
                warn!(error = %e, "committing the event log position failed; retrying");
                backoff.wait().await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Device id → declared type.
fn declared_types(declared: &Declarations) -> HashMap<String, String> {
    declared
        .devices
        .iter()
        .map(|d| (d.device_id.clone(), d.device_type.clone()))
        .collect()
}

fn apply_declarations(engine: &mut Engine, declared: &Declarations) {
    engine.set_declared(&declared.devices);
    engine.set_rules(declared.rules.clone());
}

/// The dashboard of the whole fleet, from every device's metrics (each written by the
/// device's owner) and the registry's active alerts: every processor computes the same,
/// so whichever writes last is right. `None` (nothing written) when either is unreadable.
async fn whole_dashboard(sinks: &ProcessorSinks, now: i64) -> Option<DashboardCounters> {
    let read = async {
        let metrics = sinks.cache.all_metrics(now).await?;
        let active = sinks.registry.active_alert_count().await?;
        Ok::<_, BackendError>(dashboard_counters(&metrics, active))
    };
    match read.await {
        Ok(counters) => Some(counters),
        Err(e) => {
            warn!(error = %e, "reading the fleet for the dashboard failed; counters not refreshed");
            None
        }
    }
}

/// Online devices and their mean health, of all devices' `metrics`, and `active_alerts`.
fn dashboard_counters(metrics: &[DeviceMetrics], active_alerts: u64) -> DashboardCounters {
    let online = metrics.iter().filter(|m| m.status == "online").count() as u64;
    let average = if metrics.is_empty() {
        0.0
    } else {
        metrics.iter().map(|m| m.health_score).sum::<f64>() / metrics.len() as f64
    };
    DashboardCounters {
        active_devices: online,
        total_alerts: active_alerts,
        average_health_score: (average * 1000.0).round() / 1000.0,
    }
}

async fn handle_command(
    engine: &mut Engine,
    command: AlertCommand,
    rules: &[CompiledRule],
    sinks: &ProcessorSinks,
    dead_letters: &DeadLetters,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut out = Output::default();
    let now = now_ms();
    let id = &command.alert_id;
    let result = match command.action {
        AlertAction::Acknowledge => engine.acknowledge(id, now, &mut out),
        AlertAction::Clear => engine.clear(id, now, &mut out),
    };
    describe_rule_alerts(&mut out.alerts, rules);
    let answer = match result {
        Ok(()) => {
            let alert = out.alerts.first().cloned();
            // The registry is written first; only once it holds the new state is the
            // command answered as done (the API waits for that state too).
            match flush(
                sinks,
                dead_letters,
                &mut out,
                None,
                Vec::new(),
                now,
                shutdown,
            )
            .await
            {
                Ok(0) => alert.ok_or_else(|| CommandError::NotFound(id.clone())),
                Ok(_) => Err(CommandError::NotPersisted(format!(
                    "the {} refused the alert's new state",
                    sinks.registry.name()
                ))),
                Err(e) => {
                    warn!(error = %e, "writing an acknowledged or cleared alert failed");
                    Err(CommandError::NotPersisted(e.to_string()))
                }
            }
        }
        Err(e) => Err(e),
    };
    let _ = command.reply.send(answer);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(id: &str, status: &str, health: f64) -> DeviceMetrics {
        DeviceMetrics {
            device_id: id.to_owned(),
            health_score: health,
            status: status.to_owned(),
            ..DeviceMetrics::default()
        }
    }

    #[test]
    fn the_dashboard_counts_every_devices_metrics_not_one_processors_share() {
        let all = [
            metrics("a", "online", 1.0),
            metrics("b", "offline", 0.0),
            metrics("c", "online", 0.5),
        ];
        let counters = dashboard_counters(&all, 4);
        assert_eq!(counters.active_devices, 2);
        assert_eq!(counters.total_alerts, 4);
        assert_eq!(counters.average_health_score, 0.5);
        let none = dashboard_counters(&[], 0);
        assert_eq!((none.active_devices, none.average_health_score), (0, 0.0));
    }
}
