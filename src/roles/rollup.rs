//! `sensorfleet rollup`: hourly min/mean/max per device and field for long-range
//! history, computed in the time-series store itself. Runs once and exits (a Kubernetes
//! CronJob), or keeps going with `--every`.

use std::future::Future;
use std::time::Duration;

use sensorfleet_workers::clock::now_ms;
use tracing::{info, warn};

use super::{RoleConfig, connector, open};

const HOUR_MS: i64 = 3_600_000;

/// Settings of `sensorfleet rollup`.
#[derive(Debug, Clone)]
pub struct RollupRole {
    /// Backends.
    pub role: RoleConfig,
    /// Complete hours to (re)compute, ending at the last complete hour.
    pub hours: u32,
    /// Keep running, rolling up again at this interval.
    pub every: Option<Duration>,
}

/// The `[since, until)` range of the `hours` complete hours before `now_ms`.
pub fn window(now_ms: i64, hours: u32) -> (i64, i64) {
    let until = now_ms.div_euclid(HOUR_MS) * HOUR_MS;
    (until - i64::from(hours.max(1)) * HOUR_MS, until)
}

/// Rolls up once, or every `every` until `stop` resolves.
pub async fn run(config: RollupRole, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let connector = connector(&config.role)?;
    let series = open("time series", config.role.connect_timeout, || {
        connector.time_series()
    })
    .await?;
    tokio::pin!(stop);
    loop {
        let (since, until) = window(now_ms(), config.hours);
        match series.rollup(since, until).await {
            Ok(rows) => info!(
                rows,
                since,
                until,
                store = series.name(),
                "hourly rollups written"
            ),
            Err(e) if config.every.is_some() => {
                warn!(error = %e, "rollup failed; trying again at the next interval")
            }
            Err(e) => return Err(e.into()),
        }
        let Some(every) = config.every else {
            return Ok(());
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return Ok(()),
        }
    }
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
