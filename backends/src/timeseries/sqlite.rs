//! The embedded time series: readings and hourly rollups in the SQLite file
//! ([`SqliteStore`]), keyed by device and timestamp so a replayed reading overwrites itself.

use async_trait::async_trait;
use sensorfleet_model::Reading;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::BackendError;
use crate::sqlite::{BACKEND, ROWS_PER_STATEMENT, SqliteStore, unavailable};
use crate::timeseries::{HistoryQuery, Point, TimeSeries};

impl SqliteStore {
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
