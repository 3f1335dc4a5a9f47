-- Live status for the operator (SensorFleet status.onlineCount, AlertRule firingCount
-- and lastFired), counted by one aggregate query per object instead of from devices'
-- readings or the newest alerts.
--
-- presence: 'online' or 'offline' as the processor owning the device last reported it;
-- NULL until the device is first heard. The processor writes only changes.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS presence VARCHAR(8);
CREATE INDEX IF NOT EXISTS devices_fleet_presence ON devices (fleet, presence);

-- An alert's rule lives in its JSONB body; the index makes a rule's activity a lookup.
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts ((body ->> 'rule'));
