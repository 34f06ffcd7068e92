-- Scheduled, prioritised, paced sends, and fallback to another channel.
--
-- A message sent with `send_at` is `scheduled` until it is due; the runner then moves it to
-- the outbox. Jobs are taken high priority first (0 high, 1 normal, 2 bulk), oldest first
-- within a priority. A number's `max_per_second` paces the sends from it; `send_pace` holds the
-- time after which the next send from a paced number may go.
ALTER TABLE messages ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal';
ALTER TABLE messages ADD COLUMN send_at TEXT;
CREATE INDEX messages_scheduled ON messages (send_at, id) WHERE status = 'scheduled';
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
DROP INDEX jobs_by_visibility;
CREATE INDEX jobs_by_priority ON jobs (priority, visible_at_ms, id);
ALTER TABLE numbers ADD COLUMN max_per_second INTEGER;
CREATE TABLE send_pace (
    number     TEXT PRIMARY KEY,
    next_at_ms INTEGER NOT NULL -- Unix milliseconds: the next send may go from then on
) STRICT;
-- The channels a message still falls back to (JSON), and a tenant's defaults by first channel.
ALTER TABLE messages ADD COLUMN fallback TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tenants ADD COLUMN fallback TEXT NOT NULL DEFAULT '{}';
-- A message's carrier ids from the attempts it fell back from: a late delivery receipt still
-- finds it.
CREATE TABLE superseded_carrier_ids (
    tenant_id           TEXT NOT NULL,
    provider            TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    message_id          TEXT NOT NULL,
    PRIMARY KEY (tenant_id, provider, provider_message_id)
) STRICT;
