-- A tenant's message templates: every version of one template in one JSON document, written
-- over the revision it was read at (concurrent workflow steps: one wins).
CREATE TABLE templates (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

-- Meta's status for each language of a tenant's WhatsApp templates (sync and webhooks).
CREATE TABLE meta_template_statuses (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name, language)
) STRICT;
