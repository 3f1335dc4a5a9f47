//! The embedded store: one SQLite file in the data dir holds the time series and the
//! registry, so `sensorfleet up` needs no external service and a restart keeps history.
//!
//! WAL mode with `synchronous=NORMAL`: a crash of the process loses nothing committed;
//! a power cut may lose the last transactions, which the event log would replay.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sensorfleet_model::CompiledRule;
use sensorfleet_model::reading::parse_ts;
use sensorfleet_model::{Alert, Reading, Severity};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::BackendError;
use crate::registry::{DeviceRecord, Registry};
use crate::timeseries::{HistoryQuery, Point, TimeSeries};

const BACKEND: &str = "sqlite";
/// Rows per INSERT statement: 5 parameters each, far under SQLite's parameter limit.
const ROWS_PER_STATEMENT: usize = 100;

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> BackendError {
    match e {
        sqlx::Error::Database(db) => BackendError::Rejected {
            backend: BACKEND,
            detail: db.to_string(),
        },
        other => BackendError::Unavailable {
            backend: BACKEND,
            detail: other.to_string(),
        },
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `sensorfleet.db` in `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Self, BackendError> {
        let path = data_dir.join("sensorfleet.db");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(unavailable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        Self::connect(options, 4).await
    }

    /// An in-memory store, for tests.
    pub async fn in_memory() -> Result<Self, BackendError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(unavailable)?;
        // One connection: every connection to :memory: is its own database.
        Self::connect(options, 1).await
    }

    async fn connect(
        options: SqliteConnectOptions,
        connections: u32,
    ) -> Result<Self, BackendError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| BackendError::Rejected {
                backend: BACKEND,
                detail: format!("migrating the database failed: {e}"),
            })?;
        Ok(Self { pool })
    }

    /// Deletes raw readings older than `before_ms` (rollups stay); returns how many.
    pub async fn prune_readings(&self, before_ms: i64) -> Result<u64, BackendError> {
        let done = sqlx::query("DELETE FROM readings WHERE ts < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    /// Number of readings stored in all.
    pub async fn total_readings(&self) -> Result<u64, BackendError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(n as u64)
    }
}

fn insert_readings(rows: &[Reading]) -> QueryBuilder<Sqlite> {
    let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT OR REPLACE INTO readings (device_id, ts, device_type, location, fields) ",
    );
    insert.push_values(rows, |mut row, r| {
        let fields = serde_json::to_string(&r.fields).unwrap_or_else(|_| "{}".into());
        row.push_bind(&r.device_id)
            .push_bind(r.ts_ms)
            .push_bind(&r.device_type)
            .push_bind(&r.location)
            .push_bind(fields);
    });
    insert
}

#[async_trait]
impl TimeSeries for SqliteStore {
    async fn write(&self, readings: &[Reading]) -> Result<(), BackendError> {
        if readings.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Two statement shapes only (a full chunk, and one row), so both stay prepared in
        // the connection's statement cache: preparing a fresh multi-row INSERT for every
        // batch size costs more than the insert itself.
        let mut chunks = readings.chunks_exact(ROWS_PER_STATEMENT);
        for chunk in chunks.by_ref() {
            insert_readings(chunk)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        for reading in chunks.remainder() {
            insert_readings(std::slice::from_ref(reading))
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn history(&self, q: &HistoryQuery) -> Result<Vec<Point>, BackendError> {
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        // Newest `limit` points, then put back in ascending order.
        let rows = if q.rollup {
            sqlx::query(
                "SELECT hour AS ts, field AS key, mean AS value FROM rollups
                 WHERE device_id = ?1 AND hour >= ?2 AND hour < ?3 AND (?4 IS NULL OR field = ?4)
                 ORDER BY hour DESC, field LIMIT ?5",
            )
        } else {
            sqlx::query(
                "SELECT r.ts AS ts, j.key AS key, j.value AS value FROM readings r, json_each(r.fields) j
                 WHERE r.device_id = ?1 AND r.ts >= ?2 AND r.ts < ?3 AND (?4 IS NULL OR j.key = ?4)
                 ORDER BY r.ts DESC, j.key LIMIT ?5",
            )
        }
        .bind(&q.device_id)
        .bind(q.since_ms)
        .bind(q.until_ms)
        .bind(&q.field)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut points: Vec<Point> = rows
            .iter()
            .map(|row| Point {
                ts_ms: row.get("ts"),
                field: row.get("key"),
                value: row.get("value"),
            })
            .collect();
        points.reverse();
        Ok(points)
    }

    async fn rollup(&self, since_ms: i64, until_ms: i64) -> Result<u64, BackendError> {
        let done = sqlx::query(
            "INSERT OR REPLACE INTO rollups (device_id, field, hour, count, min, mean, max)
             SELECT r.device_id, j.key, (r.ts / 3600000) * 3600000, count(*), min(j.value), avg(j.value), max(j.value)
             FROM readings r, json_each(r.fields) j
             WHERE r.ts >= ?1 AND r.ts < ?2
             GROUP BY r.device_id, j.key, r.ts / 3600000",
        )
        .bind(since_ms)
        .bind(until_ms)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn count(
        &self,
        device_id: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<u64, BackendError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM readings WHERE device_id = ? AND ts >= ? AND ts < ?",
        )
        .bind(device_id)
        .bind(since_ms)
        .bind(until_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(n as u64)
    }

    fn name(&self) -> &'static str {
        BACKEND
    }
}

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

fn alert_from_body(body: &str) -> Result<Alert, BackendError> {
    serde_json::from_str(body).map_err(|e| BackendError::Rejected {
        backend: BACKEND,
        detail: format!("stored alert does not parse: {e}"),
    })
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
        rows.iter().map(|body| alert_from_body(body)).collect()
    }

    async fn alert(&self, id: &str) -> Result<Option<Alert>, BackendError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM alerts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        body.as_deref().map(alert_from_body).transpose()
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

    fn name(&self) -> &'static str {
        BACKEND
    }
}
