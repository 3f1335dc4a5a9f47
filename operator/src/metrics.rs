//! The operator's metrics, named `sensorfleet_operator_<name>_<unit>` (STYLE §9) in the
//! process-wide Prometheus registry that `/metrics` serves ([`crate::ops`]): reconciles
//! and their durations, errors by category, and the watched objects per state.
//!
//! Reconciles are counted as they finish; the objects per state are counted from the
//! controllers' caches when `/metrics` is scraped ([`Watches::observe`]), so a deleted
//! object can never linger in the gauge.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use sensorfleet_model::crd::status::{
    Condition, ConditionStatus, READY, REASON_INVALID_SPEC, find_condition,
};
use sensorfleet_model::{AlertRule, Pipeline, SensorFleet};
use serde::de::DeserializeOwned;

use crate::Error;

/// Registers `metric` in the default registry (once: a second registration of the same
/// name is refused and the unregistered copy still works) and returns it.
fn registered<M: Collector + Clone + 'static>(metric: M) -> M {
    let _ = prometheus::register(Box::new(metric.clone()));
    metric
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric"))
}

/// Finished reconciles by kind and result (`success` or `error`).
pub static RECONCILES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sensorfleet_operator_reconciles_total",
        "Reconciles finished, by kind and result (success, error)",
        &["kind", "result"],
    )
});

/// Failed reconciles by kind and error category ([`Error::category`]).
pub static RECONCILE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "sensorfleet_operator_reconcile_errors_total",
        "Failed reconciles, by kind and error category (the Warning Event's reason)",
        &["kind", "category"],
    )
});

/// How long one reconcile took, by kind.
pub static RECONCILE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    registered(
        HistogramVec::new(
            HistogramOpts::new(
                "sensorfleet_operator_reconcile_duration_seconds",
                "Time of one reconcile (API calls, Kafka, PostgreSQL included), by kind",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["kind"],
        )
        .expect("a valid metric"),
    )
});

/// Watched objects by kind and state ([`state`]).
pub static OBJECTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(
            Opts::new(
                "sensorfleet_operator_objects",
                "Pipelines, SensorFleets and AlertRules in the operator's cache, by kind and \
                 state (ready, not_ready, invalid, unknown)",
            ),
            &["kind", "state"],
        )
        .expect("a valid metric"),
    )
});

/// 1 while this replica reconciles (it leads, or leader election is off), else 0.
pub static LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(
        IntGauge::new(
            "sensorfleet_operator_leader",
            "1 while this replica holds the Lease (or leader election is off) and reconciles",
        )
        .expect("a valid metric"),
    )
});

/// Makes every metric visible in `/metrics` before its first event.
pub fn register_all() {
    LazyLock::force(&RECONCILES);
    LazyLock::force(&RECONCILE_ERRORS);
    LazyLock::force(&RECONCILE_SECONDS);
    LazyLock::force(&OBJECTS);
    LazyLock::force(&LEADER);
}

/// Counts one finished reconcile of `kind` that took `took` and failed with `error`, if any.
pub fn reconciled(kind: &str, took: Duration, error: Option<&Error>) {
    let result = if error.is_some() { "error" } else { "success" };
    RECONCILES.with_label_values(&[kind, result]).inc();
    RECONCILE_SECONDS
        .with_label_values(&[kind])
        .observe(took.as_secs_f64());
    if let Some(error) = error {
        RECONCILE_ERRORS
            .with_label_values(&[kind, error.category()])
            .inc();
    }
}

/// Every value of the `state` label, in the order they are reported.
pub const STATES: [&str; 4] = ["ready", "not_ready", "invalid", "unknown"];

/// An object's state from its `Ready` condition: `ready` (True), `invalid` (False because
/// the spec does not validate: it waits for an edit), `not_ready` (False for any other
/// reason: a missing dependency, a failing backend), `unknown` (no condition yet, or
/// Unknown, e.g. a paused Pipeline). Pure.
pub fn state(conditions: &[Condition]) -> &'static str {
    match find_condition(conditions, READY) {
        Some(c) if c.status == ConditionStatus::True => "ready",
        Some(c) if c.status == ConditionStatus::False && c.reason == REASON_INVALID_SPEC => {
            "invalid"
        }
        Some(c) if c.status == ConditionStatus::False => "not_ready",
        _ => "unknown",
    }
}

/// A custom resource whose status carries conditions.
pub trait WithConditions {
    /// The status conditions; empty before the first status write.
    fn conditions(&self) -> &[Condition];
}

impl WithConditions for Pipeline {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl WithConditions for SensorFleet {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl WithConditions for AlertRule {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

type Tally = Box<dyn Fn() -> BTreeMap<&'static str, i64> + Send + Sync>;

struct Watched {
    kind: &'static str,
    synced: Arc<AtomicBool>,
    tally: Tally,
}

/// The controllers' caches (one per watched kind): whether each has received its first
/// full list, for the readiness probe, and their objects per state, for [`OBJECTS`].
#[derive(Default)]
pub struct Watches {
    watched: Mutex<Vec<Watched>>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("synced", &self.synced())
            .finish()
    }
}

impl Watches {
    /// Follows the cache `store` of one controller's kind, watched through `api` (the
    /// controller's own). Synced once a watch of the same objects has delivered its
    /// first full list: the list the controller's cache waits for. Must be called
    /// inside a Tokio runtime.
    ///
    /// (Not `Store::wait_until_ready`: its readiness is one oneshot channel with a single
    /// waker slot, which the controller's own runner waits on; a second waiter can take
    /// the wake-up from it and leave the controller waiting for ever.)
    pub fn follow<K>(&self, kind: &'static str, store: Store<K>, api: Api<K>)
    where
        K: WithConditions
            + kube::Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let synced = Arc::new(AtomicBool::new(false));
        let flag = synced.clone();
        tokio::spawn(async move {
            let events = watcher(api, watcher::Config::default()).default_backoff();
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if matches!(event, Ok(watcher::Event::InitDone)) {
                    flag.store(true, Ordering::Release);
                    return;
                }
            }
        });
        let tally: Tally = Box::new(move || {
            let mut counts: BTreeMap<&'static str, i64> = STATES.iter().map(|s| (*s, 0)).collect();
            for object in store.state() {
                *counts.entry(state(object.conditions())).or_default() += 1;
            }
            counts
        });
        if let Ok(mut watched) = self.watched.lock() {
            watched.push(Watched {
                kind,
                synced,
                tally,
            });
        }
    }

    /// True once at least one cache is followed and every followed cache has listed.
    pub fn synced(&self) -> bool {
        self.watched.lock().is_ok_and(|watched| {
            !watched.is_empty() && watched.iter().all(|w| w.synced.load(Ordering::Acquire))
        })
    }

    /// Sets [`OBJECTS`] from the caches as they are now.
    pub fn observe(&self) {
        let Ok(watched) = self.watched.lock() else {
            return;
        };
        for w in watched.iter() {
            for (state, count) in (w.tally)() {
                OBJECTS.with_label_values(&[w.kind, state]).set(count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: ConditionStatus, reason: &str) -> Vec<Condition> {
        vec![Condition::new(READY, status, reason, "", Some(1), "t")]
    }

    #[test]
    fn the_ready_condition_decides_the_state() {
        assert_eq!(state(&[]), "unknown");
        assert_eq!(state(&ready(ConditionStatus::True, "Reconciled")), "ready");
        assert_eq!(
            state(&ready(ConditionStatus::False, REASON_INVALID_SPEC)),
            "invalid"
        );
        assert_eq!(
            state(&ready(ConditionStatus::False, "PipelineNotFound")),
            "not_ready"
        );
        assert_eq!(state(&ready(ConditionStatus::Unknown, "Paused")), "unknown");
    }

    #[test]
    fn a_failed_reconcile_counts_its_category() {
        let kind = "MetricsUnitTest";
        let error = Error::MissingObjectKey("metadata.uid");
        reconciled(kind, Duration::from_millis(3), None);
        reconciled(kind, Duration::from_millis(5), Some(&error));
        reconciled(kind, Duration::from_millis(5), Some(&error));
        assert_eq!(RECONCILES.with_label_values(&[kind, "success"]).get(), 1);
        assert_eq!(RECONCILES.with_label_values(&[kind, "error"]).get(), 2);
        assert_eq!(
            RECONCILE_ERRORS
                .with_label_values(&[kind, "MissingObjectKey"])
                .get(),
            2
        );
        assert_eq!(
            RECONCILE_SECONDS
                .with_label_values(&[kind])
                .get_sample_count(),
            3
        );
    }

    #[test]
    fn no_cache_followed_is_not_synced() {
        assert!(!Watches::default().synced());
    }
}
