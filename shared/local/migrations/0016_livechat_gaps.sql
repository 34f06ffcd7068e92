-- What the contact calls themself (a LiveChat visitor's name or e-mail, a profile name), as
-- their newest message carried it; NULL until one did.
ALTER TABLE conversations ADD COLUMN contact_name TEXT;

-- LiveChat visitor messages counted per session in a window of a minute from its first message
-- (the rate limit), so every process sharing the database sees one count; rows go once their
-- window is over.
CREATE TABLE livechat_rate (
    tenant_id    TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    window_start TEXT NOT NULL,
    messages     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, session_id)
) STRICT;
CREATE INDEX livechat_rate_by_window ON livechat_rate (window_start);
