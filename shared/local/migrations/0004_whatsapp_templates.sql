-- Omni's local schema: WhatsApp templates.
--
-- An outbound WhatsApp message may be an approved template instead of text: its name,
-- language and components as JSON (the `template` object of the send API). NULL otherwise.
ALTER TABLE messages ADD COLUMN template TEXT;
