-- A tenant's team: who sent each outbound message (JSON {type, id, name}), API keys get a role (keys issued before roles are admins), users sign in
-- with a password (Argon2id) through sessions and invites kept by the hash of their tokens.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE messages ADD COLUMN sent_by TEXT;

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    password_hash TEXT,
    generation    INTEGER NOT NULL DEFAULT 0, -- sessions of another generation are over
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (tenant_id, email)
) STRICT;

CREATE TABLE invites (
    token_hash TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    generation INTEGER NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
