//! The embedded store: one SQLite file in the data dir holds the time series and the
//! registry, so `sensorfleet up` needs no external service and a restart keeps history.
//!
//! This module opens the file (one pool, one set of migrations, shared by both concerns);
//! each concern's code lives with its trait: `timeseries/sqlite.rs` and
//! `registry/sqlite.rs`.
//!
//! WAL mode with `synchronous=NORMAL`: a crash of the process loses nothing committed;
//! a power cut may lose the last transactions, which the event log would replay.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::BackendError;

pub(crate) const BACKEND: &str = "sqlite";
/// Rows per INSERT statement: 5 parameters each, far under SQLite's parameter limit.
pub(crate) const ROWS_PER_STATEMENT: usize = 100;

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

pub(crate) fn unavailable(e: sqlx::Error) -> BackendError {
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
}
