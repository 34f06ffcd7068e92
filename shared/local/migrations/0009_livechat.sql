-- Omni's local schema, version 9: LiveChat widgets.
--
-- One widget per tenant, found by its public key from visitors' pages. The settings hold the
-- identity secret and the token signing key, so the whole document is AES-256-GCM encrypted
-- like carrier credentials ((tenant_id, 'livechat') is the associated data).
CREATE TABLE livechat (
    tenant_id  TEXT PRIMARY KEY,
    widget_key TEXT NOT NULL UNIQUE,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
