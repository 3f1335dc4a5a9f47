//! The production registry: devices, alert rules, alert history and rule state in
//! PostgreSQL (15 or newer), the schema in `migrations/postgres`.
//!
//! Every batch is one transaction of a few statements whatever its size: rows travel as
//! arrays (`UNNEST($1::text[], …)`), in chunks of [`ROWS_PER_STATEMENT`], so the
//! statement text never changes and stays prepared. Rows are de-duplicated and sorted
//! by key before they are written: PostgreSQL refuses an `ON CONFLICT DO UPDATE` that
//! touches one row twice, and two writers that lock rows in the same order cannot
//! deadlock.
//!
//! TLS (rustls) follows the URL's libpq parameters: `sslmode=disable|prefer|require|
//! verify-ca|verify-full` (default `prefer`: encrypted when the server offers it) and
//! `sslrootcert=/path/ca.crt` for a private CA (else the system's roots); a TLS failure
//! is a [`BackendError::Rejected`] that names the parameters to check.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sensorfleet_model::CompiledRule;
use sensorfleet_model::analytics::alert::Threshold;
use sensorfleet_model::reading::parse_ts;
use sensorfleet_model::{Alert, AlertPhase};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgPool, Row};

use crate::BackendError;
use crate::registry::{
    DeviceRecord, Registry, RuleActivity, alert_from_body, known_phases, presence_word,
};
use crate::url::mask;

const BACKEND: &str = "postgres";
/// Rows per statement: bounds one message to the server, not a parameter limit (arrays
/// are one parameter each).
const ROWS_PER_STATEMENT: usize = 1000;
/// How long `connect` waits for the server before it reports it unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an operation waits for a free pooled connection (or a new one).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The registry in PostgreSQL.
#[derive(Clone)]
pub struct PostgresRegistry {
    pool: PgPool,
}

/// SQLSTATEs after which the same request may succeed later: the connection broke, the
/// server is short of resources or shutting down, or the transaction lost a race.
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, disk full)
        || matches!(
            code,
            "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "57014" // query_canceled (statement_timeout)
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now (starting up)
        )
}

/// SQLSTATEs that refuse the data itself: class 22 (data exception: a NUL byte in text,
/// a value out of range, bad encoding) and class 23 (integrity constraint violation).
/// The rows carrying it will never be written; the other rows of the batch will.
fn is_content_sqlstate(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23")
}

/// Maps a sqlx error to the backend error: the connection, IO and pool timeouts are
/// transient (`Unavailable`); what the server refuses is `Rejected`, except for the
/// SQLSTATEs of [`is_transient_sqlstate`].
fn classify(e: sqlx::Error) -> BackendError {
    let unavailable = |detail: String| BackendError::Unavailable {
        backend: BACKEND,
        detail,
    };
    let rejected = |detail: String| BackendError::Rejected {
        backend: BACKEND,
        detail,
    };
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let detail = format!("{} (SQLSTATE {code})", db.message());
            if is_transient_sqlstate(&code) {
                unavailable(detail)
            } else if is_content_sqlstate(&code) {
                BackendError::Content {
                    backend: BACKEND,
                    detail,
                }
            } else {
                rejected(detail)
            }
        }
        sqlx::Error::PoolClosed => BackendError::Closed(BACKEND),
        // rustls reports a certificate it cannot verify as invalid data on the socket:
        // retrying would not help, the URL's TLS settings have to change.
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            tls_rejected(&e.to_string())
        }
        e @ (sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed) => unavailable(e.to_string()),
        sqlx::Error::Tls(e) => tls_rejected(&e.to_string()),
        other => rejected(other.to_string()),
    }
}

fn tls_rejected(detail: &str) -> BackendError {
    BackendError::Rejected {
        backend: BACKEND,
        detail: format!(
            "TLS with the server failed: {detail}; check the URL's sslmode and sslrootcert \
             (the CA that signed the server's certificate)"
        ),
    }
}

impl PostgresRegistry {
    /// Connects to `url` (`postgres://user:password@host:port/db`), brings the schema up
    /// to date, and keeps a pool of at most `max_connections` (at least 1).
    ///
    /// Fails within about 10 s when the server cannot be reached
    /// ([`BackendError::Unavailable`]); a bad URL, a refused login or a failed migration
    /// is [`BackendError::Rejected`]. Every message names the URL with its password
    /// masked.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, BackendError> {
        let shown = mask(url);
        let in_context = |e: BackendError| match e {
            BackendError::Unavailable { backend, detail } => BackendError::Unavailable {
                backend,
                detail: format!("connecting to {shown}: {detail}"),
            },
            BackendError::Rejected { backend, detail } => BackendError::Rejected {
                backend,
                detail: format!("connecting to {shown}: {detail}"),
            },
            closed => closed,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                in_context(BackendError::Rejected {
                    backend: BACKEND,
                    detail: format!("not a valid PostgreSQL URL: {e}"),
                })
            })?
            .application_name("sensorfleet");

        // One direct connection first, not the pool: the pool retries a refused
        // connection until its timeout and then reports only "timed out", while this
        // says at once what happened. It also runs the migrations.
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(in_context(classify(e))),
            Err(_) => {
                return Err(in_context(BackendError::Unavailable {
                    backend: BACKEND,
                    detail: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                }));
            }
        };
        // Concurrent processes are safe: sqlx holds an advisory lock while migrating.
        let migrated = sqlx::migrate!("./migrations/postgres")
            .run(&mut conn)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => classify(e),
                other => BackendError::Rejected {
                    backend: BACKEND,
                    detail: format!("migrating the database failed: {other}"),
                },
            });
        // Closing is a courtesy to the server; the migration's outcome is what matters.
        let _ = conn.close().await;
        migrated.map_err(in_context)?;

        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool, for callers that need more than the [`Registry`] trait.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The rows of `items` with distinct keys, sorted by key; of rows with one key, the
/// last wins when `last_wins`, else the first. This is what writing the rows one by
/// one would leave (upsert: the last; insert-if-missing: the first).
fn unique_by_key<'a, T, K: Ord>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
    last_wins: bool,
) -> Vec<&'a T> {
    let mut by_key = BTreeMap::new();
    for item in items {
        if last_wins {
            by_key.insert(key(item), item);
        } else {
            by_key.entry(key(item)).or_insert(item);
        }
    }
    by_key.into_values().collect()
}

fn device_from_row(row: &PgRow) -> Result<DeviceRecord, sqlx::Error> {
    Ok(DeviceRecord {
        device_id: row.try_get("device_id")?,
        device_type: row.try_get("device_type")?,
        location: row.try_get("location")?,
        status: row.try_get("status")?,
        fleet: row.try_get("fleet")?,
        publish_interval_ms: row.try_get("publish_interval_ms")?,
        offline_after_ms: row.try_get("offline_after_ms")?,
    })
}

fn rule_from_row(row: &PgRow) -> Result<CompiledRule, sqlx::Error> {
    let severity: String = row.try_get("severity")?;
    Ok(CompiledRule {
        name: row.try_get("name")?,
        device_type: row.try_get("device_type")?,
        fleet: row.try_get("fleet")?,
        metric: row.try_get("metric_name")?,
        threshold: Threshold {
            min: row.try_get("threshold_min")?,
            max: row.try_get("threshold_max")?,
            clear_min: row.try_get("clear_min")?,
            clear_max: row.try_get("clear_max")?,
        },
        for_ms: row.try_get("for_ms")?,
        severity: serde_json::from_value(serde_json::Value::String(severity)).unwrap_or_default(),
    })
}

/// The start of both device inserts (`concat!` needs a literal: sqlx 0.9 accepts only
/// `&'static str` statements).
macro_rules! insert_devices {
    () => {
        "INSERT INTO devices (device_id, device_type, location, status, fleet,
            publish_interval_ms, offline_after_ms)
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
            $6::int8[], $7::int8[])"
    };
}

/// Rewrites only rows that change: mirroring a large, unchanged fleet again then costs
/// reads, not a new version of every row.
const UPSERT_DEVICES: &str = concat!(
    insert_devices!(),
    " ON CONFLICT (device_id) DO UPDATE SET
        device_type = excluded.device_type, location = excluded.location,
        status = excluded.status, fleet = excluded.fleet,
        publish_interval_ms = excluded.publish_interval_ms,
        offline_after_ms = excluded.offline_after_ms
    WHERE (devices.device_type, devices.location, devices.status, devices.fleet,
            devices.publish_interval_ms, devices.offline_after_ms)
        IS DISTINCT FROM (excluded.device_type, excluded.location, excluded.status,
            excluded.fleet, excluded.publish_interval_ms, excluded.offline_after_ms)"
);

const INSERT_MISSING_DEVICES: &str =
    concat!(insert_devices!(), " ON CONFLICT (device_id) DO NOTHING");

impl PostgresRegistry {
    /// Writes `devices` (already unique and sorted) with `statement`, one of
    /// [`UPSERT_DEVICES`] and [`INSERT_MISSING_DEVICES`].
    async fn insert_devices(
        &self,
        devices: &[&DeviceRecord],
        statement: &'static str,
    ) -> Result<(), BackendError> {
        if devices.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for chunk in devices.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(statement)
                .bind(
                    chunk
                        .iter()
                        .map(|d| d.device_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    chunk
                        .iter()
                        .map(|d| d.device_type.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    chunk
                        .iter()
                        .map(|d| d.location.as_deref())
                        .collect::<Vec<_>>(),
                )
                .bind(chunk.iter().map(|d| d.status.as_str()).collect::<Vec<_>>())
                .bind(chunk.iter().map(|d| d.fleet.as_deref()).collect::<Vec<_>>())
                .bind(
                    chunk
                        .iter()
                        .map(|d| d.publish_interval_ms)
                        .collect::<Vec<_>>(),
                )
                .bind(chunk.iter().map(|d| d.offline_after_ms).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }
}

#[async_trait]
impl Registry for PostgresRegistry {
    async fn upsert_devices(&self, devices: &[DeviceRecord]) -> Result<(), BackendError> {
        let unique = unique_by_key(devices, |d| d.device_id.as_str(), true);
        self.insert_devices(&unique, UPSERT_DEVICES).await
    }

    async fn insert_missing_devices(&self, devices: &[DeviceRecord]) -> Result<(), BackendError> {
        let unique = unique_by_key(devices, |d| d.device_id.as_str(), false);
        self.insert_devices(&unique, INSERT_MISSING_DEVICES).await
    }

    async fn prune_fleet(&self, fleet: &str, keep: &[String]) -> Result<u64, BackendError> {
        // NOT EXISTS over the array plans as a hash anti-join; `<> ALL($2)` would compare
        // every device with every kept id.
        let done = sqlx::query(
            "DELETE FROM devices d WHERE d.fleet = $1
               AND NOT EXISTS (SELECT 1 FROM UNNEST($2::text[]) AS k(id) WHERE k.id = d.device_id)",
        )
        .bind(fleet)
        .bind(keep)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, BackendError> {
        // Collation "C" orders by bytes, as SQLite and Rust do, whatever the database's
        // locale: both registries list devices in the same order.
        let rows = sqlx::query(
            "SELECT device_id, device_type, location, status, fleet, publish_interval_ms,
                    offline_after_ms
             FROM devices ORDER BY device_id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(device_from_row)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }

    async fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, BackendError> {
        let row = sqlx::query(
            "SELECT device_id, device_type, location, status, fleet, publish_interval_ms,
                    offline_after_ms
             FROM devices WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        row.as_ref()
            .map(device_from_row)
            .transpose()
            .map_err(classify)
    }

    async fn replace_rules(&self, rules: &[CompiledRule]) -> Result<(), BackendError> {
        let unique = unique_by_key(rules, |r| r.name.as_str(), true);
        let names: Vec<&str> = unique.iter().map(|r| r.name.as_str()).collect();
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query(
            "DELETE FROM alert_rules r
             WHERE NOT EXISTS (SELECT 1 FROM UNNEST($1::text[]) AS k(name) WHERE k.name = r.name)",
        )
        .bind(&names)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(
                "INSERT INTO alert_rules (name, device_type, fleet, metric_name, threshold_min,
                    threshold_max, clear_min, clear_max, for_ms, severity)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                    $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::int8[], $10::text[])
                 ON CONFLICT (name) DO UPDATE SET device_type = excluded.device_type,
                    fleet = excluded.fleet, metric_name = excluded.metric_name,
                    threshold_min = excluded.threshold_min, threshold_max = excluded.threshold_max,
                    clear_min = excluded.clear_min, clear_max = excluded.clear_max,
                    for_ms = excluded.for_ms, severity = excluded.severity",
            )
            .bind(chunk.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| r.device_type.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| r.fleet.as_deref()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.threshold.min).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.threshold.max).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| r.threshold.clear_min)
                    .collect::<Vec<_>>(),
            )
            .bind(
                chunk
                    .iter()
                    .map(|r| r.threshold.clear_max)
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| r.for_ms).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| r.severity.as_str())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn rules(&self) -> Result<Vec<CompiledRule>, BackendError> {
        let rows = sqlx::query(
            "SELECT name, device_type, fleet, metric_name, threshold_min, threshold_max,
                    clear_min, clear_max, for_ms, severity
             FROM alert_rules ORDER BY name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(rule_from_row)
            .collect::<Result<_, _>>()
            .map_err(classify)
    }

    async fn record_alerts(&self, alerts: &[Alert]) -> Result<(), BackendError> {
        let unique = unique_by_key(alerts, |a| a.id.as_str(), true);
        if unique.is_empty() {
            return Ok(());
        }
        let bodies = unique
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BackendError::Rejected {
                backend: BACKEND,
                detail: format!("alert does not serialise: {e}"),
            })?;
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for (chunk, bodies) in unique
            .chunks(ROWS_PER_STATEMENT)
            .zip(bodies.chunks(ROWS_PER_STATEMENT))
        {
            sqlx::query(
                "INSERT INTO alerts (id, device_id, updated_ms, state, body)
                 SELECT id, device_id, updated_ms, state, body::jsonb
                 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[])
                    AS t(id, device_id, updated_ms, state, body)
                 ON CONFLICT (id) DO UPDATE SET device_id = excluded.device_id,
                    updated_ms = excluded.updated_ms, state = excluded.state, body = excluded.body",
            )
            .bind(chunk.iter().map(|a| a.id.as_str()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|a| a.device_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                chunk
                    .iter()
                    .map(|a| parse_ts(&a.timestamp).unwrap_or_default())
                    .collect::<Vec<i64>>(),
            )
            .bind(chunk.iter().map(|a| a.state.as_str()).collect::<Vec<_>>())
            .bind(bodies)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<Alert>, BackendError> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body::text FROM alerts ORDER BY updated_ms DESC, id COLLATE \"C\" LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        bodies
            .iter()
            .map(|body| alert_from_body(BACKEND, body))
            .collect()
    }

    async fn active_alert_count(&self) -> Result<u64, BackendError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM alerts WHERE state IN ('firing', 'acknowledged')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn alert(&self, id: &str) -> Result<Option<Alert>, BackendError> {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body::text FROM alerts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
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
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT id, state FROM alerts WHERE id = ANY($1::text[])")
                    .bind(chunk)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(classify)?;
            phases.extend(known_phases(rows));
        }
        Ok(phases)
    }

    async fn save_rule_state(
        &self,
        rows: &[(String, String, Option<String>)],
    ) -> Result<(), BackendError> {
        let unique = unique_by_key(rows, |(d, s, _)| (d.as_str(), s.as_str()), true);
        if unique.is_empty() {
            return Ok(());
        }
        let (saves, deletes): (Vec<_>, Vec<_>) = unique
            .into_iter()
            .partition(|(_, _, state)| state.is_some());
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for chunk in deletes.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(
                "DELETE FROM rule_state r USING UNNEST($1::text[], $2::text[]) AS k(device_id, source)
                 WHERE r.device_id = k.device_id AND r.source = k.source",
            )
            .bind(chunk.iter().map(|(d, _, _)| d.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s, _)| s.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for chunk in saves.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(
                "INSERT INTO rule_state (device_id, source, state)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (device_id, source) DO UPDATE SET state = excluded.state",
            )
            .bind(chunk.iter().map(|(d, _, _)| d.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, s, _)| s.as_str()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|(_, _, st)| st.as_deref())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn load_rule_state(&self) -> Result<Vec<(String, String, String)>, BackendError> {
        let rows = sqlx::query("SELECT device_id, source, state FROM rule_state")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("device_id")?,
                    row.try_get("source")?,
                    row.try_get("state")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(classify)
    }

    async fn set_presence(&self, presence: &[(String, bool)]) -> Result<(), BackendError> {
        let unique = unique_by_key(presence, |(id, _)| id.as_str(), true);
        if unique.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(
                "UPDATE devices d SET presence = p.presence
                 FROM UNNEST($1::text[], $2::text[]) AS p(device_id, presence)
                 WHERE d.device_id = p.device_id AND d.presence IS DISTINCT FROM p.presence",
            )
            .bind(chunk.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|(_, online)| presence_word(*online))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn online_count(&self, fleet: &str) -> Result<u64, BackendError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices WHERE fleet = $1 AND presence = 'online'",
        )
        .bind(fleet)
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn rule_activity(&self, rule: &str) -> Result<RuleActivity, BackendError> {
        let (firing, last_fired): (i64, Option<String>) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE state IN ('firing', 'acknowledged')),
                    MAX(CASE state WHEN 'pending' THEN NULL
                                   WHEN 'resolved' THEN body ->> 'started_at'
                                   ELSE body ->> 'timestamp' END)
             FROM alerts WHERE body ->> 'rule' = $1",
        )
        .bind(rule)
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        Ok(RuleActivity {
            firing: u64::try_from(firing).unwrap_or_default(),
            last_fired,
        })
    }

    fn name(&self) -> &'static str {
        BACKEND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_by_key_keeps_the_last_or_the_first_in_key_order() {
        let rows = [("b", 1), ("a", 2), ("b", 3)];
        assert_eq!(unique_by_key(&rows, |r| r.0, true), [&("a", 2), &("b", 3)]);
        assert_eq!(unique_by_key(&rows, |r| r.0, false), [&("a", 2), &("b", 1)]);
    }

    #[test]
    fn transient_sqlstates() {
        for code in ["08006", "53300", "40001", "40P01", "57P01", "57P03"] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "22001", "42P01", "28P01", "3D000", ""] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn data_exceptions_and_constraint_violations_are_content() {
        for code in ["22021", "22001", "22P02", "23505", "23503"] {
            assert!(is_content_sqlstate(code), "{code}");
        }
        for code in ["28P01", "3D000", "42P01", "08006", "53300", ""] {
            assert!(!is_content_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn io_and_pool_errors_are_unavailable_and_closed_is_closed() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(classify(sqlx::Error::Io(refused)).is_transient());
        assert!(classify(sqlx::Error::PoolTimedOut).is_transient());
        assert!(matches!(
            classify(sqlx::Error::PoolClosed),
            BackendError::Closed(BACKEND)
        ));
        assert!(!classify(sqlx::Error::RowNotFound).is_transient());
    }
}
