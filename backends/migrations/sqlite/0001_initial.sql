-- The embedded store: readings and rollups (time series), and the registry.

-- One row per reading; fields as a JSON object. Unique by device and time so that a
-- replayed reading overwrites itself. A rowid table with a separate index, not a
-- WITHOUT ROWID table keyed by (device_id, ts): rows arrive in time order across many
-- devices, and appending them while only the small index takes the random inserts is
-- about twice as fast (measured in BENCHMARKS.md).
CREATE TABLE IF NOT EXISTS readings (
    device_id   TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    device_type TEXT    NOT NULL,
    location    TEXT,
    fields      TEXT    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS readings_device_ts ON readings (device_id, ts);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);

CREATE TABLE IF NOT EXISTS rollups (
    device_id TEXT    NOT NULL,
    field     TEXT    NOT NULL,
    hour      INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    min       REAL    NOT NULL,
    mean      REAL    NOT NULL,
    max       REAL    NOT NULL,
    PRIMARY KEY (device_id, field, hour)
) WITHOUT ROWID;

-- The original design's registry tables, with text device ids.
CREATE TABLE IF NOT EXISTS devices (
    device_id           TEXT PRIMARY KEY,
    device_type         TEXT NOT NULL,
    location            TEXT,
    installation_date   TEXT DEFAULT CURRENT_TIMESTAMP,
    last_maintenance    TEXT,
    status              TEXT NOT NULL DEFAULT 'active',
    fleet               TEXT,
    publish_interval_ms INTEGER,
    offline_after_ms    INTEGER
);
CREATE INDEX IF NOT EXISTS devices_fleet ON devices (fleet);

CREATE TABLE IF NOT EXISTS device_configs (
    config_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id    TEXT REFERENCES devices (device_id) ON DELETE CASCADE,
    config_key   TEXT,
    config_value TEXT,
    updated_at   TEXT DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS alert_rules (
    rule_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    device_type   TEXT,
    fleet         TEXT,
    metric_name   TEXT    NOT NULL,
    threshold_min REAL,
    threshold_max REAL,
    clear_min     REAL,
    clear_max     REAL,
    for_ms        INTEGER NOT NULL DEFAULT 0,
    severity      TEXT    NOT NULL
);

-- Alert history: one row per alert id, updated as it moves through its lifecycle.
CREATE TABLE IF NOT EXISTS alerts (
    id         TEXT    PRIMARY KEY,
    device_id  TEXT    NOT NULL,
    updated_ms INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    body       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_ms);

-- The processor's rule state, so a restart neither refires nor forgets an alert.
CREATE TABLE IF NOT EXISTS rule_state (
    device_id TEXT NOT NULL,
    source    TEXT NOT NULL,
    state     TEXT NOT NULL,
    PRIMARY KEY (device_id, source)
) WITHOUT ROWID;
