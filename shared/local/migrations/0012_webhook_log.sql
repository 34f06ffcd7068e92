-- The inbound webhook log: what became of each carrier webhook, under the tenant its number
-- named ('' when none could be told), kept as long as raw payloads.
CREATE TABLE webhook_log (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    received_at TEXT NOT NULL,
    carrier     TEXT NOT NULL,
    result      TEXT NOT NULL,
    entry       TEXT NOT NULL, -- JSON of the whole entry
    expires_at  TEXT NOT NULL
) STRICT;
CREATE INDEX webhook_log_by_tenant ON webhook_log (tenant_id, received_at DESC, id DESC);
CREATE INDEX webhook_log_by_expiry ON webhook_log (expires_at);
