-- API keys are listed (name, prefix, last use) and revoked by id, per tenant.
ALTER TABLE api_keys ADD COLUMN name TEXT;
ALTER TABLE api_keys ADD COLUMN prefix TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, key_id);
