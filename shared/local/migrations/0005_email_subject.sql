-- Omni's local schema: email subjects.
--
-- An outbound email has a subject line (the send API's `subject`, or the tenant's default).
-- NULL on every other channel.
ALTER TABLE messages ADD COLUMN subject TEXT;
