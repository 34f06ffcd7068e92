-- Omni's local schema, version 3: halves of split messages (VoiceMeUp's MMS) waiting for
-- each other.
--
-- One row per (tenant, carrier, correlation key). Each half is the InboundMessage as JSON.
-- `flushed` names the half the sweep gave up waiting for a partner for (it was delivered
-- alone, so a later half is delivered alone too). `pending` is 1 while the sweep must look at
-- the row: a lone half, or a flushed one not yet confirmed handed on.
CREATE TABLE message_parts (
    tenant_id  TEXT NOT NULL,
    provider   TEXT NOT NULL,
    part_key   TEXT NOT NULL,
    text_part  TEXT,
    media_part TEXT,
    flushed    TEXT CHECK (flushed IN ('text', 'media')),
    pending    INTEGER NOT NULL DEFAULT 1,
    flush_at   TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, provider, part_key)
) STRICT;

CREATE INDEX message_parts_due ON message_parts (flush_at) WHERE pending = 1;
