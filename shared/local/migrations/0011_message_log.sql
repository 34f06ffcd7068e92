-- The delivery log: a tenant's messages by time, newest first, whatever their conversation.
CREATE INDEX messages_by_tenant_time ON messages (tenant_id, created_at DESC, id DESC);
