-- Live status, as migrations/postgres/0002_presence.sql: the device's presence as the
-- processor last reported it ('online', 'offline'; NULL until first heard), and an index
-- on the rule of an alert's JSON body.
ALTER TABLE devices ADD COLUMN presence TEXT;
CREATE INDEX IF NOT EXISTS devices_fleet_presence ON devices (fleet, presence);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (json_extract(body, '$.rule'));
