//! The registry mirror: SensorFleets become rows in `devices`, AlertRules rows in
//! `alert_rules`, through the backends crate's [`Registry`] trait (PostgreSQL in a
//! cluster). The shaping of rows is pure; [`RegistryConnector`] hides how a pipeline's
//! database is reached, so tests can pass an in-memory one.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sensorfleet_backends::registry::postgres::PostgresRegistry;
use sensorfleet_backends::{BackendError, DeviceRecord, Registry};
use sensorfleet_model::CompiledRule;
use sensorfleet_model::SensorFleetSpec;
use sensorfleet_model::manifest::declared_devices;
use tokio::sync::Mutex;

/// Connections the operator keeps to one pipeline's PostgreSQL: it writes in bursts.
const POOL_SIZE: u32 = 2;

/// Opens the registry at a URL (the one in the Pipeline's Secret).
#[async_trait]
pub trait RegistryConnector: Send + Sync {
    /// A registry for `url`; called once per URL, the result is cached.
    async fn connect(&self, url: &str) -> Result<Arc<dyn Registry>, BackendError>;
}

/// Connects to PostgreSQL with the backends crate's [`PostgresRegistry`] (which also
/// brings the schema up to date).
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresConnector;

#[async_trait]
impl RegistryConnector for PostgresConnector {
    async fn connect(&self, url: &str) -> Result<Arc<dyn Registry>, BackendError> {
        // sqlx's migration future is not provably `Send` for every lifetime
        // (rust-lang/rust#102211), and a reconcile future must be `Send`. `block_on` on a
        // blocking-pool thread needs no `Send`; the pool it makes still lives on the
        // operator's runtime (the same handle).
        let url = url.to_owned();
        let runtime = tokio::runtime::Handle::current();
        let registry = tokio::task::spawn_blocking(move || {
            runtime.block_on(PostgresRegistry::connect(&url, POOL_SIZE))
        })
        .await
        .map_err(|e| BackendError::Unavailable {
            backend: "postgres",
            detail: format!("connect task failed: {e}"),
        })??;
        Ok(Arc::new(registry))
    }
}

/// One pipeline database: the registry and a lock that serialises rule edits.
pub struct MirrorTarget {
    /// The registry.
    pub registry: Arc<dyn Registry>,
    /// `Registry` stores rules as a whole set (`replace_rules`), so editing one rule is
    /// read–modify–write; two AlertRules reconciled at once must not interleave.
    pub rules_lock: Mutex<()>,
}

/// The registries of every pipeline database, opened on first use and kept.
pub struct Registries {
    connector: Arc<dyn RegistryConnector>,
    open: Mutex<HashMap<String, Arc<MirrorTarget>>>,
}

impl Registries {
    /// A cache in front of `connector`.
    pub fn new(connector: Arc<dyn RegistryConnector>) -> Self {
        Self {
            connector,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The registry at `url`, connecting on first use. A failed connect is not cached,
    /// so the next reconcile tries again.
    pub async fn get(&self, url: &str) -> Result<Arc<MirrorTarget>, BackendError> {
        // Holding the map's lock across the connect keeps two reconciles from opening two
        // pools to one database; connects are rare, so the wait does not matter.
        let mut open = self.open.lock().await;
        if let Some(target) = open.get(url) {
            return Ok(target.clone());
        }
        let registry = self.connector.connect(url).await?;
        let target = Arc::new(MirrorTarget {
            registry,
            rules_lock: Mutex::new(()),
        });
        open.insert(url.to_owned(), target.clone());
        Ok(target)
    }
}

/// The `devices` rows of a fleet: every declared device, `active`.
pub fn device_records(fleet: &str, spec: &SensorFleetSpec) -> Vec<DeviceRecord> {
    declared_devices(fleet, spec)
        .into_iter()
        .map(|d| DeviceRecord {
            device_id: d.device_id,
            device_type: d.device_type,
            location: d.location,
            status: "active".to_owned(),
            fleet: Some(d.fleet),
            publish_interval_ms: Some(d.publish_interval_ms),
            offline_after_ms: Some(d.offline_after_ms),
        })
        .collect()
}

/// The stored rule set with `rule` put in place of the one of the same name. `None`
/// when nothing would change, so an unchanged AlertRule writes nothing.
pub fn with_rule(existing: &[CompiledRule], rule: &CompiledRule) -> Option<Vec<CompiledRule>> {
    if existing.iter().any(|r| r == rule) {
        return None;
    }
    let mut rules: Vec<CompiledRule> = existing
        .iter()
        .filter(|r| r.name != rule.name)
        .cloned()
        .collect();
    rules.push(rule.clone());
    Some(rules)
}

/// The stored rule set without the rule `name`; `None` when it is not there.
pub fn without_rule(existing: &[CompiledRule], name: &str) -> Option<Vec<CompiledRule>> {
    existing.iter().any(|r| r.name == name).then(|| {
        existing
            .iter()
            .filter(|r| r.name != name)
            .cloned()
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensorfleet_model::AlertRuleSpec;
    use sensorfleet_model::crd::rule::compile_rule;

    #[test]
    fn fleet_rows_from_a_yaml_fixture() {
        let spec: SensorFleetSpec = serde_yaml::from_str(
            "deviceType: temperature_sensor\nlocation: Server Room\ndevices: [{id: a1, location: Rack 4}]\ngenerate: {count: 3, idPrefix: srv-}\n",
        )
        .expect("fixture");
        let rows = device_records("room", &spec);
        let ids: Vec<_> = rows.iter().map(|r| r.device_id.as_str()).collect();
        assert_eq!(ids, ["a1", "srv-0001", "srv-0002", "srv-0003"]);
        assert_eq!(rows[0].location.as_deref(), Some("Rack 4"));
        assert_eq!(rows[1].location.as_deref(), Some("Server Room"));
        assert!(rows.iter().all(|r| r.fleet.as_deref() == Some("room")));
        assert_eq!(rows[0].offline_after_ms, Some(300_000));
    }

    fn rule(name: &str, max: f64) -> CompiledRule {
        let spec = AlertRuleSpec {
            device_type: Some("t".into()),
            metric: "m".into(),
            max: Some(max),
            ..Default::default()
        };
        compile_rule(name, &spec).expect("valid")
    }

    #[test]
    fn rule_edits_write_only_when_something_changed() {
        let stored = vec![rule("a", 1.0), rule("b", 2.0)];
        assert_eq!(with_rule(&stored, &rule("a", 1.0)), None);
        let edited = with_rule(&stored, &rule("a", 5.0)).expect("changed");
        assert_eq!(edited.len(), 2);
        assert!(edited.contains(&rule("a", 5.0)) && edited.contains(&rule("b", 2.0)));
        assert_eq!(
            with_rule(&stored, &rule("c", 1.0)).map(|r| r.len()),
            Some(3)
        );
        assert_eq!(without_rule(&stored, "a"), Some(vec![rule("b", 2.0)]));
        assert_eq!(without_rule(&stored, "zzz"), None);
    }
}
