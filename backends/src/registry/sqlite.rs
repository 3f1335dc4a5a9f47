//! The embedded registry: devices, rules, alert history and rule state in the SQLite
//! file ([`SqliteStore`]).

use async_trait::async_trait;
use sensorfleet_model::CompiledRule;
use sensorfleet_model::reading::parse_ts;
use sensorfleet_model::{Alert, AlertPhase, Severity};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::BackendError;
use crate::registry::{
    DeviceRecord, Registry, RuleActivity, alert_from_body, known_phases, presence_word,
};
use crate::sqlite::{BACKEND, ROWS_PER_STATEMENT, SqliteStore, unavailable};

fn device_from_row(row: &sqlx::sqlite::SqliteRow) -> DeviceRecord {
    DeviceRecord {
        device_id: row.get("device_id"),
        device_type: row.get("device_type"),
        location: row.get("location"),
        status: row.get("status"),
        fleet: row.get("fleet"),
        publish_interval_ms: row.get("publish_interval_ms"),
        offline_after_ms: row.get("offline_after_ms"),
    }
}

fn parse_severity(text: &str) -> Severity {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).unwrap_or_default()
}

const DEVICE_COLUMNS: &str =
    "device_id, device_type, location, status, fleet, publish_interval_ms, offline_after_ms";

impl SqliteStore {
    /// Inserts devices in chunks, `on_conflict` saying what an existing id does.
    async fn insert_devices(
        &self,
        devices: &[DeviceRecord],
        on_conflict: &str,
    ) -> Result<(), BackendError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for chunk in devices.chunks(ROWS_PER_STATEMENT / 2) {
            let mut insert: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("INSERT INTO devices ({DEVICE_COLUMNS}) "));
            insert.push_values(chunk, |mut row, d| {
                row.push_bind(&d.device_id)
                    .push_bind(&d.device_type)
                    .push_bind(&d.location)
                    .push_bind(&d.status)
                    .push_bind(&d.fleet)
                    .push_bind(d.publish_interval_ms)
                    .push_bind(d.offline_after_ms);
            });
            insert.push(on_conflict);
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }
}

#[async_trait]
impl Registry for SqliteStore {
    async fn upsert_devices(&self, devices: &[DeviceRecord]) -> Result<(), BackendError> {
        self.insert_devices(
            devices,
            " ON CONFLICT (device_id) DO UPDATE SET device_type = excluded.device_type,
              location = excluded.location, status = excluded.status, fleet = excluded.fleet,
              publish_interval_ms = excluded.publish_interval_ms, offline_after_ms = excluded.offline_after_ms",
        )
        .await
    }

    async fn insert_missing_devices(&self, devices: &[DeviceRecord]) -> Result<(), BackendError> {
        self.insert_devices(devices, " ON CONFLICT (device_id) DO NOTHING")
            .await
    }

    async fn prune_fleet(&self, fleet: &str, keep: &[String]) -> Result<u64, BackendError> {
        let keep_json = serde_json::to_string(keep).unwrap_or_else(|_| "[]".into());
        let done = sqlx::query(
            "DELETE FROM devices WHERE fleet = ?1 AND device_id NOT IN (SELECT value FROM json_each(?2))",
        )
        .bind(fleet)
        .bind(keep_json)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, BackendError> {
        let rows = sqlx::query("SELECT device_id, device_type, location, status, fleet, publish_interval_ms, offline_after_ms FROM devices ORDER BY device_id")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(device_from_row).collect())
    }

    async fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, BackendError> {
        let row = sqlx::query("SELECT device_id, device_type, location, status, fleet, publish_interval_ms, offline_after_ms FROM devices WHERE device_id = ?")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(device_from_row))
    }

    async fn replace_rules(&self, rules: &[CompiledRule]) -> Result<(), BackendError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let names = serde_json::to_string(&rules.iter().map(|r| &r.name).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        sqlx::query("DELETE FROM alert_rules WHERE name NOT IN (SELECT value FROM json_each(?))")
            .bind(names)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        for rule in rules {
            sqlx::query(
                "INSERT INTO alert_rules (name, device_type, fleet, metric_name, threshold_min, threshold_max,
                    clear_min, clear_max, for_ms, severity)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET device_type = excluded.device_type, fleet = excluded.fleet,
                    metric_name = excluded.metric_name, threshold_min = excluded.threshold_min,
                    threshold_max = excluded.threshold_max, clear_min = excluded.clear_min,
                    clear_max = excluded.clear_max, for_ms = excluded.for_ms, severity = excluded.severity",
            )
            .bind(&rule.name)
            .bind(&rule.device_type)
            .bind(&rule.fleet)
            .bind(&rule.metric)
            .bind(rule.threshold.min)
            .bind(rule.threshold.max)
            .bind(rule.threshold.clear_min)
            .bind(rule.threshold.clear_max)
            .bind(rule.for_ms)
            .bind(rule.severity.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn rules(&self) -> Result<Vec<CompiledRule>, BackendError> {
        let rows = sqlx::query(
            "SELECT name, device_type, fleet, metric_name, threshold_min, threshold_max, clear_min, clear_max,
                    for_ms, severity FROM alert_rules ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| CompiledRule {
                name: row.get("name"),
                device_type: row.get("device_type"),
                fleet: row.get("fleet"),
                metric: row.get("metric_name"),
                threshold: sensorfleet_model::analytics::alert::Threshold {
                    min: row.get("threshold_min"),
                    max: row.get("threshold_max"),
                    clear_min: row.get("clear_min"),
                    clear_max: row.get("clear_max"),
                },
                for_ms: row.get("for_ms"),
                severity: parse_severity(row.get("severity")),
            })
            .collect())
    }

    async fn record_alerts(&self, alerts: &[Alert]) -> Result<(), BackendError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for alert in alerts {
            let body = serde_json::to_string(alert).map_err(|e| BackendError::Rejected {
                backend: BACKEND,
                detail: e.to_string(),
            })?;
            sqlx::query("INSERT OR REPLACE INTO alerts (id, device_id, updated_ms, state, body) VALUES (?, ?, ?, ?, ?)")
                .bind(&alert.id)
                .bind(&alert.device_id)
                .bind(parse_ts(&alert.timestamp).unwrap_or_default())
                .bind(alert.state.as_str())
                .bind(body)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, BackendError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT body FROM alerts ORDER BY updated_ms DESC, id LIMIT ?")
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|body| alert_from_body(BACKEND, body))
            .collect()
    }

    async fn active_alert_count(&self) -> Result<u64, BackendError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM alerts WHERE state IN ('firing', 'acknowledged')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn alert(&self, id: &str) -> Result<Option<Alert>, BackendError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM alerts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        body.as_deref()
            .map(|body| alert_from_body(BACKEND, body))
            .transpose()
    }

    async fn alert_phases(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, AlertPhase)>, BackendError> {
        let mut phases = Vec::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut query =
                QueryBuilder::<Sqlite>::new("SELECT id, state FROM alerts WHERE id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            query.push(")");
            let rows: Vec<(String, String)> = query
                .build_query_as()
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            phases.extend(known_phases(rows));
        }
        Ok(phases)
    }

    async fn save_rule_state(
        &self,
        rows: &[(String, String, Option<String>)],
    ) -> Result<(), BackendError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for (device_id, source, state) in rows {
            let query = match state {
                Some(state) => sqlx::query(
                    "INSERT OR REPLACE INTO rule_state (device_id, source, state) VALUES (?, ?, ?)",
                )
                .bind(device_id)
                .bind(source)
                .bind(state),
                None => sqlx::query("DELETE FROM rule_state WHERE device_id = ? AND source = ?")
                    .bind(device_id)
                    .bind(source),
            };
            query.execute(&mut *tx).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn load_rule_state(&self) -> Result<Vec<(String, String, String)>, BackendError> {
        let rows = sqlx::query("SELECT device_id, source, state FROM rule_state")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| (row.get("device_id"), row.get("source"), row.get("state")))
            .collect())
    }

    async fn set_presence(&self, presence: &[(String, bool)]) -> Result<(), BackendError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for (device_id, online) in presence {
            sqlx::query(
                "UPDATE devices SET presence = ? WHERE device_id = ? AND presence IS NOT ?",
            )
            .bind(presence_word(*online))
            .bind(device_id)
            .bind(presence_word(*online))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn online_count(&self, fleet: &str) -> Result<u64, BackendError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices WHERE fleet = ? AND presence = 'online'",
        )
        .bind(fleet)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn rule_activity(&self, rule: &str) -> Result<RuleActivity, BackendError> {
        let (firing, last_fired): (i64, Option<String>) = sqlx::query_as(
            "SELECT COALESCE(SUM(state IN ('firing', 'acknowledged')), 0),
                    MAX(CASE state WHEN 'pending' THEN NULL
                                   WHEN 'resolved' THEN json_extract(body, '$.started_at')
                                   ELSE json_extract(body, '$.timestamp') END)
             FROM alerts WHERE json_extract(body, '$.rule') = ?",
        )
        .bind(rule)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(RuleActivity {
            firing: u64::try_from(firing).unwrap_or_default(),
            last_fired,
        })
    }

    fn name(&self) -> &'static str {
        BACKEND
    }
}
