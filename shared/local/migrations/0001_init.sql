-- Omni's local schema, version 1.
--
-- Timestamps are RFC 3339 UTC text with a fixed nine-digit fraction, so comparing the text
-- compares the instants; the job queue uses integer milliseconds because it only ever
-- compares against "now". Ids are hyphenated lower-case UUIDs (v7 sorts by creation).
-- Tenant-scoped rows carry tenant_id and every query filters on it.

CREATE TABLE tenants (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    default_region TEXT NOT NULL,
    help_text      TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
) STRICT;

-- A number belongs to at most one tenant: the primary key enforces it.
CREATE TABLE numbers (
    number     TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    provider   TEXT NOT NULL,
    channels   TEXT NOT NULL, -- JSON array of channel names
    updated_at TEXT NOT NULL
) STRICT;
CREATE INDEX numbers_by_tenant ON numbers (tenant_id, number);

-- Only the hash of an API key is ever stored.
CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

-- Carrier credentials, AES-256-GCM encrypted; (tenant_id, provider) is the associated data.
CREATE TABLE credentials (
    tenant_id  TEXT NOT NULL,
    provider   TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, provider)
) STRICT;
CREATE INDEX credentials_by_provider ON credentials (provider, tenant_id);

-- Verified webhook bodies, kept for the retention period; the key deduplicates redeliveries.
CREATE TABLE raw_webhooks (
    tenant_id   TEXT NOT NULL,
    dedupe_key  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    body        BLOB NOT NULL,
    received_at TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, dedupe_key)
) STRICT;
CREATE INDEX raw_webhooks_by_expiry ON raw_webhooks (expires_at);

CREATE TABLE conversations (
    id                     TEXT PRIMARY KEY,
    tenant_id              TEXT NOT NULL,
    channel                TEXT NOT NULL, -- the thread channel (MMS is kept under SMS)
    contact                TEXT NOT NULL,
    tenant_number          TEXT NOT NULL,
    unread_count           INTEGER NOT NULL DEFAULT 0,
    starred_count          INTEGER NOT NULL DEFAULT 0,
    last_message_id        TEXT,
    last_message_body      TEXT,
    last_message_direction TEXT,
    last_message_at        TEXT,
    UNIQUE (tenant_id, channel, contact)
) STRICT;
CREATE INDEX conversations_by_activity ON conversations (tenant_id, last_message_at DESC, id DESC);

CREATE TABLE messages (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    conversation_id     TEXT NOT NULL REFERENCES conversations (id),
    direction           TEXT NOT NULL,
    channel             TEXT NOT NULL,
    from_number         TEXT NOT NULL,
    to_number           TEXT NOT NULL,
    body                TEXT,
    media               TEXT NOT NULL, -- JSON array of {url, content_type}
    status              TEXT NOT NULL,
    provider            TEXT,
    provider_message_id TEXT,
    error_code          TEXT,
    error_message       TEXT,
    starred             INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    events              TEXT NOT NULL, -- JSON array of status events, oldest first
    idempotency_key     TEXT,
    claim_until         TEXT,          -- a delivery worker's lease, while it holds one
    attempts            INTEGER NOT NULL DEFAULT 0
) STRICT;
-- A carrier message is applied once: redeliveries hit this index.
CREATE UNIQUE INDEX messages_by_carrier_id
    ON messages (tenant_id, provider, provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE UNIQUE INDEX messages_by_idempotency_key
    ON messages (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at DESC, id DESC);
-- The outbox: what the sweeper scans.
CREATE INDEX messages_outbox ON messages (updated_at) WHERE status = 'queued';

-- Only opted-out contacts have a row; opting back in deletes it.
CREATE TABLE opt_outs (
    tenant_id  TEXT NOT NULL,
    contact    TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, contact)
) STRICT;

-- The durable queue. message_id is set for Deliver jobs so the sweeper can tell a message
-- that is still on its way from one that was never handed over.
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    payload       TEXT NOT NULL,    -- serde_json of omni_core::ports::Job
    message_id    TEXT,
    visible_at_ms INTEGER NOT NULL, -- Unix milliseconds; leasing pushes it forward
    attempts      INTEGER NOT NULL DEFAULT 0,
    leased        INTEGER NOT NULL DEFAULT 0, -- 1 while a runner holds it (not a backoff delay)
    created_at    TEXT NOT NULL
) STRICT;
CREATE INDEX jobs_by_visibility ON jobs (visible_at_ms, id);
CREATE INDEX jobs_by_message ON jobs (message_id) WHERE message_id IS NOT NULL;

CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    payload    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
