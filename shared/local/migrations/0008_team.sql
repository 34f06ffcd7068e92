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

-- Failed sign-ins per account or address, in windows (the lockout).
CREATE TABLE login_failures (
    subject      TEXT PRIMARY KEY, -- account:<tenant>:<email> or address:<ip>
    window_start TEXT NOT NULL,
    failures     INTEGER NOT NULL
) STRICT;

-- Conversations get a status (a new inbound message opens them again) and an assignee,
-- whose name is kept as it was when assigned.
ALTER TABLE conversations ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE conversations ADD COLUMN assignee_id TEXT;
ALTER TABLE conversations ADD COLUMN assignee_name TEXT;

-- Private notes in a conversation's timeline (never sent).
CREATE TABLE notes (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    body            TEXT NOT NULL,
    author          TEXT NOT NULL, -- JSON {type, id, name}
    created_at      TEXT NOT NULL
) STRICT;
CREATE INDEX notes_by_conversation ON notes (tenant_id, conversation_id, created_at);

-- The audit log: append-only (nothing updates it), purged after its retention.
CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    at         TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    entry      TEXT NOT NULL, -- JSON of the whole entry
    expires_at TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_tenant ON audit_log (tenant_id, at DESC, id DESC);
CREATE INDEX audit_by_expiry ON audit_log (expires_at);
