-- A tenant's automatic replies, and when each conversation last got one (the cooldown).
CREATE TABLE auto_replies (
    tenant_id  TEXT PRIMARY KEY,
    settings   TEXT NOT NULL, -- JSON
    updated_at TEXT NOT NULL
) STRICT;
CREATE TABLE auto_reply_turns (
    tenant_id       TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    last_at         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
) STRICT;
