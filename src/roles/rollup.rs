//! `sensorfleet rollup`: hourly min/mean/max per device and field for long-range
//! history, computed in the time-series store itself. Runs once and exits (a Kubernetes
//! CronJob), or keeps going with `--every` (`up` runs it every 10 minutes, and there also
//! drops raw readings past its `--retention`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sensorfleet_backends::TimeSeries;
use sensorfleet_backends::sqlite::SqliteStore;
use sensorfleet_workers::clock::now_ms;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{BackendArgs, Worker, parse_duration, supervise};

const HOUR_MS: i64 = 3_600_000;

// The flags of `sensorfleet rollup` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
pub struct RollupArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
    /// Complete hours to (re)compute, ending at the last complete hour.
    #[arg(long, default_value_t = 2)]
    pub hours: u32,
    /// Keep running and roll up again at this interval (e.g. 10m); default: once.
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
}

/// Raw readings older than `retention` are deleted from the embedded store after each
/// rollup (InfluxDB keeps data by its own retention policy).
pub struct Prune {
    /// The embedded store.
    pub store: SqliteStore,
    /// How long raw readings are kept.
    pub retention: Duration,
}

/// The `[since, until)` range of the `hours` complete hours before `now_ms`.
pub fn window(now_ms: i64, hours: u32) -> (i64, i64) {
    let until = now_ms.div_euclid(HOUR_MS) * HOUR_MS;
    (until - i64::from(hours.max(1)) * HOUR_MS, until)
}

/// Rolls up once, or every `--every` until `shutdown` turns true. Without `--every` a
/// failed rollup is the worker's error; with it, a warning and a try at the next interval.
pub fn spawn(
    args: &RollupArgs,
    series: Arc<dyn TimeSeries>,
    prune: Option<Prune>,
    mut shutdown: watch::Receiver<bool>,
) -> Worker {
    let (hours, every) = (args.hours, args.every);
    tokio::spawn(async move {
        loop {
            let (since, until) = window(now_ms(), hours);
            match series.rollup(since, until).await {
                Ok(rows) => info!(
                    rows,
                    since,
                    until,
                    store = series.name(),
                    "hourly rollups written"
                ),
                Err(e) if every.is_some() => {
                    warn!(error = %e, "rollup failed; trying again at the next interval")
                }
                Err(e) => return Err(e.into()),
            }
            if let Some(Prune { store, retention }) = &prune {
                let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                match store.prune_readings(cutoff).await {
                    Ok(n) if n > 0 => info!(deleted = n, "raw readings past retention deleted"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "pruning old readings failed"),
                }
            }
            let Some(every) = every else {
                return Ok(());
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            }
        }
    })
}

/// Rolls up once, or every `--every` until `stop` resolves.
pub async fn run(args: RollupArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let connector = args.backends.connector("sensorfleet rollup")?;
    let series = args
        .backends
        .open("time series", || connector.time_series())
        .await?;
    let (stopping, stopped) = watch::channel(false);
    supervise(
        "rollup",
        spawn(&args, series, None, stopped),
        &stopping,
        stop,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ends_at_the_last_complete_hour() {
        let now = 10 * HOUR_MS + 1234;
        assert_eq!(window(now, 2), (8 * HOUR_MS, 10 * HOUR_MS));
        assert_eq!(window(now, 0), (9 * HOUR_MS, 10 * HOUR_MS));
        assert_eq!(window(10 * HOUR_MS, 1), (9 * HOUR_MS, 10 * HOUR_MS));
    }
}
