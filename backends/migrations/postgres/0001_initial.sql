-- The registry in PostgreSQL: the original design's tables (DESIGN.md section 3) with
-- text device ids, extended with fleet, rule name, hysteresis, `for` duration, alert
-- history and the processor's rule state: the same shape as the SQLite registry
-- (migrations/sqlite/0001_initial.sql), so both pass one conformance suite.
--
-- Time series do not live here (InfluxDB in production).

-- device_type is VARCHAR(64), not the original design's VARCHAR(50): the model accepts
-- device types of up to 64 bytes (sensorfleet_model::reading::MAX_TYPE_LEN), and a
-- reading the bridge accepts must not be refused by one registry backend only.
CREATE TABLE IF NOT EXISTS devices (
    device_id           TEXT PRIMARY KEY,
    device_type         VARCHAR(64) NOT NULL,
    location            VARCHAR(100),
    installation_date   TIMESTAMPTZ DEFAULT now(),
    last_maintenance    TIMESTAMPTZ,
    status              VARCHAR(20) NOT NULL DEFAULT 'active',
    fleet               TEXT,
    publish_interval_ms BIGINT,
    offline_after_ms    BIGINT
);
CREATE INDEX IF NOT EXISTS devices_fleet ON devices (fleet);

CREATE TABLE IF NOT EXISTS device_configs (
    config_id    SERIAL PRIMARY KEY,
    device_id    TEXT REFERENCES devices (device_id) ON DELETE CASCADE,
    config_key   TEXT,
    config_value TEXT,
    updated_at   TIMESTAMPTZ DEFAULT now()
);
CREATE INDEX IF NOT EXISTS device_configs_device ON device_configs (device_id);

CREATE TABLE IF NOT EXISTS alert_rules (
    rule_id       SERIAL PRIMARY KEY,
    name          TEXT             NOT NULL UNIQUE,
    device_type   VARCHAR(64),
    fleet         TEXT,
    metric_name   TEXT             NOT NULL,
    threshold_min DOUBLE PRECISION,
    threshold_max DOUBLE PRECISION,
    clear_min     DOUBLE PRECISION,
    clear_max     DOUBLE PRECISION,
    for_ms        BIGINT           NOT NULL DEFAULT 0,
    severity      VARCHAR(20)      NOT NULL
);

-- Alert history: one row per alert id, updated as it moves through its lifecycle. The
-- body is JSONB so operators can query it; readers get it back as text.
CREATE TABLE IF NOT EXISTS alerts (
    id         TEXT   PRIMARY KEY,
    device_id  TEXT   NOT NULL,
    updated_ms BIGINT NOT NULL,
    state      TEXT   NOT NULL,
    body       JSONB  NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_ms);

-- The processor's rule state, so a restart neither refires nor forgets an alert. The
-- state is TEXT, not JSONB: it is handed back byte for byte as it was saved.
CREATE TABLE IF NOT EXISTS rule_state (
    device_id TEXT NOT NULL,
    source    TEXT NOT NULL,
    state     TEXT NOT NULL,
    PRIMARY KEY (device_id, source)
);
