//! `sensorfleet backtest`: when would these AlertRules have fired on the stored history?
//!
//! Reads each device's readings from the configured time-series store (SQLite in
//! `--data-dir`, or InfluxDB), replays them through the processor's own engine
//! (`sensorfleet_workers::processor::backtest`) with the rules of the manifests, and
//! prints every transition, then a count per rule. Nothing is written anywhere.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sensorfleet_backends::timeseries::{HistoryQuery, TimeSeries};
use sensorfleet_model::duration::parse_duration_ms;
use sensorfleet_model::reading::parse_ts;
use sensorfleet_model::{Alert, AlertPhase, DeclaredDevice, ManifestSet};
use sensorfleet_workers::processor::backtest::{self, RuleSummary};
use sensorfleet_workers::processor::engine::EngineConfig;

/// The most points read per device: a week of one reading a second with a few fields.
const MAX_POINTS: usize = 10_000_000;
/// The processor's tick, for offline detection between readings.
const TICK_MS: i64 = 1_000;

/// `sensorfleet backtest`.
#[derive(clap::Args, Debug)]
pub struct BacktestArgs {
    /// Manifests: the AlertRules to try and the SensorFleets that declare the devices (a
    /// rule narrowed to a fleet applies only to that fleet's devices, as in the processor).
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    /// A device to replay (repeat the flag for more).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Every device this fleet of the manifests declares.
    #[arg(long)]
    pub fleet: Option<String>,
    /// How far back to read, e.g. 7d, 12h, 30m.
    #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
    pub since: i64,
    /// Leave out the built-in detectors (offline, stuck, anomaly, …): the rules only.
    #[arg(long)]
    pub rules_only: bool,
    /// Where the history is: `embedded` (SQLite in --data-dir) or influx://host:8086?db=sensors.
    #[arg(long, default_value = "embedded", env = "SENSORFLEET_INFLUX_URL")]
    pub influx_url: String,
    /// Folder of the embedded SQLite file.
    #[arg(long, default_value = ".sensorfleet", env = "SENSORFLEET_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// Loads the manifests and picks the devices to replay.
fn plan(args: &BacktestArgs) -> anyhow::Result<(ManifestSet, Vec<DeclaredDevice>)> {
    let mut set = ManifestSet::default();
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        set.add_file(&path.display().to_string(), &text)?;
    }
    set.validate()?;
    let rules = set.compiled_rules();
    anyhow::ensure!(
        !rules.is_empty(),
        "the manifests hold no AlertRule: give the rule to try with -f"
    );
    let declared = set.devices();
    let mut devices: Vec<DeclaredDevice> = match &args.fleet {
        Some(fleet) => {
            let of_fleet: Vec<_> = declared
                .iter()
                .filter(|d| &d.fleet == fleet)
                .cloned()
                .collect();
            anyhow::ensure!(
                !of_fleet.is_empty(),
                "no SensorFleet named {fleet:?} with devices in the manifests: add its manifest with -f"
            );
            of_fleet
        }
        None => Vec::new(),
    };
    for id in &args.devices {
        if devices.iter().any(|d| &d.device_id == id) {
            continue;
        }
        match declared.iter().find(|d| &d.device_id == id) {
            Some(device) => devices.push(device.clone()),
            None => {
                // Undeclared: the type comes from the rule, and fleet rules do not apply.
                let device_type = rules
                    .iter()
                    .find_map(|r| r.device_type.clone())
                    .with_context(|| {
                        format!(
                            "device {id:?} is not declared in the manifests and no rule names a \
                         deviceType: add its SensorFleet with -f"
                        )
                    })?;
                devices.push(DeclaredDevice {
                    device_id: id.clone(),
                    device_type,
                    location: None,
                    fleet: String::new(),
                    publish_interval_ms: 0,
                    offline_after_ms: EngineConfig::default().default_offline_after_ms,
                });
            }
        }
    }
    anyhow::ensure!(
        !devices.is_empty(),
        "say which devices to replay: --device ID (repeatable) or --fleet NAME"
    );
    Ok((set, devices))
}

/// One transition as a line: time, what happened, rule, device, value, limit, message.
fn transition_line(alert: &Alert) -> String {
    let what = match alert.state {
        AlertPhase::Firing => "fired",
        AlertPhase::Resolved => "resolved",
        AlertPhase::Pending => "pending",
        AlertPhase::Acknowledged => "acknowledged",
    };
    format!(
        "{}  {what:<8}  {:<20}  {:<20}  {:>10}  {:<10}  {}",
        alert.timestamp, alert.rule, alert.device_id, alert.value, alert.threshold, alert.message
    )
}

fn summary_line(rule: &str, s: &RuleSummary) -> String {
    format!(
        "{rule:<20}  fired {:>4}  resolved {:>4}  firing at the end {:>3}  time firing {:.0} s",
        s.fired,
        s.resolved,
        s.firing_at_end,
        s.firing_ms as f64 / 1000.0
    )
}

/// Replays the chosen devices' history from `store` and writes the report to `out`.
pub async fn report(
    args: &BacktestArgs,
    store: Arc<dyn TimeSeries>,
    now_ms: i64,
    out: &mut dyn Write,
) -> anyhow::Result<std::collections::BTreeMap<String, RuleSummary>> {
    let (set, devices) = plan(args)?;
    let rule_names: Vec<String> = set.compiled_rules().into_iter().map(|r| r.name).collect();
    let mut transitions = Vec::new();
    let mut replayed = 0;
    for device in &devices {
        let points = store
            .history(&HistoryQuery {
                device_id: device.device_id.clone(),
                since_ms: now_ms - args.since,
                until_ms: now_ms + 1,
                field: None,
                limit: MAX_POINTS,
                rollup: false,
            })
            .await
            .with_context(|| {
                format!(
                    "reading {}'s history from {}",
                    device.device_id,
                    store.name()
                )
            })?;
        let readings =
            backtest::readings_from_points(&device.device_id, &device.device_type, &points);
        replayed += readings.len();
        let alerts = backtest::replay(
            EngineConfig::default(),
            set.compiled_rules(),
            &set.devices(),
            &readings,
            TICK_MS,
        );
        transitions.extend(
            alerts
                .into_iter()
                .filter(|a| !args.rules_only || rule_names.contains(&a.rule)),
        );
    }
    transitions.sort_by_key(|a| parse_ts(&a.timestamp).unwrap_or_default());
    writeln!(
        out,
        "replayed {replayed} readings of {} device(s) since {} against {} rule(s)",
        devices.len(),
        sensorfleet_model::reading::format_ts(now_ms - args.since),
        rule_names.len()
    )?;
    for alert in &transitions {
        writeln!(out, "{}", transition_line(alert))?;
    }
    let summaries = backtest::summarize(&transitions);
    writeln!(out)?;
    for name in &rule_names {
        let summary = summaries.get(name).cloned().unwrap_or_default();
        writeln!(out, "{}", summary_line(name, &summary))?;
    }
    for (name, summary) in summaries.iter().filter(|(n, _)| !rule_names.contains(n)) {
        writeln!(out, "{}", summary_line(name, summary))?;
    }
    Ok(summaries)
}

/// Opens the store the arguments name and prints the report to stdout.
pub async fn run(args: BacktestArgs) -> anyhow::Result<()> {
    let connector =
        sensorfleet_backends::connect::Connector::new(sensorfleet_backends::connect::BackendUrls {
            event_log: "embedded".to_owned(),
            time_series: args.influx_url.clone(),
            cache: "embedded".to_owned(),
            registry: "embedded".to_owned(),
            influx_token: None,
            data_dir: args.data_dir.clone(),
            role: "sensorfleet backtest",
            single_process: false,
        });
    let store = connector.time_series().await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    report(&args, store, now_ms, &mut std::io::stdout().lock()).await?;
    Ok(())
}
