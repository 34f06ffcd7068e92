-- Omni's local schema, version 2: carrier failover.
--
-- A tenant's carriers per channel in priority order, as JSON ({"sms": ["twilio", "voipms"]}).
-- No row means no fallbacks.
CREATE TABLE routing (
    tenant_id  TEXT PRIMARY KEY,
    routing    TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
