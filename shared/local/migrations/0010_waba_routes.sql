-- WhatsApp Business Account routes to other environments, with their counters. The app
-- secret is AES-256-GCM under the master key, bound to the account id, like credentials.
CREATE TABLE waba_routes (
    waba_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    note TEXT,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    forwarded INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    last_forwarded_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
