-- Omni's local schema: when a queued message's next attempt is due.
--
-- Set by a retry (backoff, a carrier's Retry-After); the outbox sweeper leaves a queued
-- message alone until it has passed, so a long delay is not cut short. NULL until a retry.
ALTER TABLE messages ADD COLUMN retry_at TEXT;
