//! `sensorfleet replay`: reprocess the readings still in Kafka from a point in time into
//! fresh processor state — after a detector upgrade or a fixed AlertRule.
//!
//! The log is the source of truth (event sourcing): the bridge stored every reading in
//! the time-series store when it came in, and the processor stores none, so reading the
//! log again duplicates nothing. What replay changes, with the processors stopped:
//!
//! 1. the processors' consumer group is moved back, per partition, to the first reading
//!    appended at or after `--from` ([`sensorfleet_backends::EventLog::rewind`]); a group with running members
//!    is refused (they would commit over it);
//! 2. the saved rule state (pending and firing alerts, their `for` clocks) is cleared,
//!    so the engine starts fresh at `--from` instead of carrying state from the future
//!    into the past. `--keep-state` leaves it.
//!
//! The processors started again read from there. An alert the replay raises again has
//! the same id (it is built from the reading times), and the processor never writes an
//! alert behind the phase the registry holds: a resolved alert does not fire again, an
//! acknowledged one is not re-notified. An alert a fixed rule now raises on old readings
//! is new, and fires and resolves as the readings say.

use std::io::Write;

use anyhow::Context;
use sensorfleet_backends::{Registry, Rewound, Topic};
use sensorfleet_model::duration::parse_duration_ms;
use sensorfleet_model::reading::{format_ts, parse_ts};
use sensorfleet_workers::clock::now_ms;

use super::BackendArgs;

// The flags of `sensorfleet replay` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
    /// Where to start: an RFC 3339 time (2026-12-01T08:00:00Z) or how long ago (2h, 7d).
    /// The time a reading entered the log, not its own timestamp; a time before the
    /// oldest reading Kafka still keeps starts at that one.
    #[arg(long, value_parser = parse_from)]
    pub from: FromTime,
    /// The processors' consumer group (the processor's --group).
    #[arg(
        long,
        default_value = "sensorfleet-processor",
        env = "SENSORFLEET_PROCESSOR_GROUP"
    )]
    pub group: String,
    /// Keep the saved rule state instead of starting the engine fresh.
    #[arg(long)]
    pub keep_state: bool,
}

/// `--from`: an absolute time, or a duration before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromTime {
    /// Unix ms.
    At(i64),
    /// Milliseconds before now.
    Ago(i64),
}

impl FromTime {
    /// The instant, in unix ms, given now.
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            Self::At(ms) => ms,
            Self::Ago(ms) => now_ms.saturating_sub(ms),
        }
    }
}

fn parse_from(text: &str) -> Result<FromTime, String> {
    if let Some(ms) = parse_ts(text) {
        return Ok(FromTime::At(ms));
    }
    parse_duration_ms(text).map(FromTime::Ago).map_err(|_| {
        format!(
            "{text:?}: give an RFC 3339 time (2026-12-01T08:00:00Z) or a duration ago (30m, 2h, 7d)"
        )
    })
}

/// One line per partition and a total.
pub fn report(rewound: &[Rewound]) -> String {
    let mut text = String::new();
    for r in rewound {
        let before = r
            .before
            .map_or_else(|| "nothing committed".to_owned(), |o| format!("offset {o}"));
        text.push_str(&format!(
            "  partition {}: {before} -> offset {} ({} readings to process, end {})\n",
            r.partition,
            r.to,
            r.records(),
            r.end
        ));
    }
    let total: u64 = rewound.iter().map(Rewound::records).sum();
    text.push_str(&format!(
        "  {total} readings in {} partitions\n",
        rewound.len()
    ));
    text
}

/// Clears every saved rule state row; how many there were.
async fn clear_rule_state(registry: &dyn Registry) -> anyhow::Result<usize> {
    let rows: Vec<(String, String, Option<String>)> = registry
        .load_rule_state()
        .await
        .context("reading the saved rule state")?
        .into_iter()
        .map(|(device, source, _)| (device, source, None))
        .collect();
    registry
        .save_rule_state(&rows)
        .await
        .context("clearing the saved rule state")?;
    Ok(rows.len())
}

/// Runs the replay's two steps and says what to do next.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let from_ms = args.from.resolve(now_ms());
    let connector = args.backends.connector("sensorfleet replay")?;
    let log = args
        .backends
        .open("event log", || connector.event_log(0))
        .await?;
    let registry = args
        .backends
        .open("registry", || connector.registry(1))
        .await?;
    let rewound = log
        .rewind(Topic::Readings, &args.group, from_ms)
        .await
        .with_context(|| {
            format!(
                "cannot rewind consumer group {} of the {} event log",
                args.group,
                log.name()
            )
        })?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rewound consumer group {} to {}:\n{}",
        args.group,
        format_ts(from_ms),
        report(&rewound)
    )?;
    if args.keep_state {
        writeln!(out, "saved rule state kept (--keep-state)")?;
    } else {
        let cleared = clear_rule_state(registry.as_ref()).await.context(
            "the group is rewound, but the rule state is not cleared: run the same replay again",
        )?;
        writeln!(
            out,
            "cleared {cleared} saved rule state rows: the processors start fresh"
        )?;
    }
    writeln!(
        out,
        "next: start the processors again (in Kubernetes: unset the Pipeline's \
         spec.processor.paused); they reprocess from there and never move an alert back"
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_is_a_time_or_a_duration_ago() {
        assert_eq!(
            parse_from("2026-12-01T08:00:00Z"),
            Ok(FromTime::At(1_796_112_000_000))
        );
        assert_eq!(parse_from("2h"), Ok(FromTime::Ago(7_200_000)));
        assert_eq!(FromTime::Ago(7_200_000).resolve(10_000_000), 2_800_000);
        assert_eq!(FromTime::At(5).resolve(10_000_000), 5);
        let error = parse_from("yesterday").expect_err("neither");
        assert!(
            error.contains("RFC 3339") && error.contains("2h"),
            "{error}"
        );
    }

    #[test]
    fn the_report_counts_what_is_read_again() {
        let text = report(&[
            Rewound {
                partition: 0,
                before: Some(90),
                to: 40,
                end: 100,
            },
            Rewound {
                partition: 1,
                before: None,
                to: 7,
                end: 7,
            },
        ]);
        assert!(
            text.contains("partition 0: offset 90 -> offset 40 (60 readings"),
            "{text}"
        );
        assert!(
            text.contains("partition 1: nothing committed -> offset 7 (0 readings"),
            "{text}"
        );
        assert!(text.contains("60 readings in 2 partitions"), "{text}");
    }
}
