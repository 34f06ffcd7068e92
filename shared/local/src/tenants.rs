//! [`TenantStore`] and [`SecretStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use omni_core::autoreply::AutoReplies;
use omni_core::domain::{Address, Channel, ChatId, ProviderKind, TenantId};
use omni_core::livechat::LivechatSettings;
use omni_core::model::{ApiKeyInfo, ApiKeyOwner, NumberRoute, Routing, Tenant};
use omni_core::ports::{SecretStore, StoreError, StoreResult, TenantStore};
use omni_core::providers::Credentials;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::db::{corrupt, db, parse, parse_ts, ts, Cached};
use crate::SqliteBackend;

const TENANT_COLS: &str = "id, name, default_region, help_text, created_at, updated_at, fallback";
const NUMBER_COLS: &str = "number, tenant_id, provider, channels, updated_at, max_per_second";

fn tenant_row(row: &Row) -> StoreResult<Tenant> {
    let text = |i| row.get::<_, String>(i).map_err(db);
    Ok(Tenant {
        id: TenantId::parse(&text(0)?).map_err(|_| corrupt("tenant id"))?,
        name: text(1)?,
        default_region: parse(&text(2)?, "region")?,
        help_text: row.get(3).map_err(db)?,
        created_at: parse_ts(&text(4)?)?,
        updated_at: parse_ts(&text(5)?)?,
        fallback: serde_json::from_str(&text(6)?).map_err(|_| corrupt("tenant fallback"))?,
    })
}

fn number_row(row: &Row) -> StoreResult<NumberRoute> {
    let text = |i| row.get::<_, String>(i).map_err(db);
    let channels: Vec<Channel> =
        serde_json::from_str(&text(3)?).map_err(|_| corrupt("number channels"))?;
    Ok(NumberRoute {
        number: Address::from_stored(&text(0)?).map_err(|_| corrupt("number"))?,
        tenant_id: TenantId::parse(&text(1)?).map_err(|_| corrupt("tenant id"))?,
        provider: parse(&text(2)?, "provider")?,
        channels,
        updated_at: parse_ts(&text(4)?)?,
        max_per_second: row.get(5).map_err(db)?,
    })
}

fn get_tenant(conn: &Connection, id: &str) -> StoreResult<Option<Tenant>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"))
        .map_err(db)?;
    let mut rows = stmt.query([id]).map_err(db)?;
    rows.next().map_err(db)?.map(tenant_row).transpose()
}

fn number_route(conn: &Connection, number: &str) -> StoreResult<Option<NumberRoute>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {NUMBER_COLS} FROM numbers WHERE number = ?1"
        ))
        .map_err(db)?;
    let mut rows = stmt.query([number]).map_err(db)?;
    rows.next().map_err(db)?.map(number_row).transpose()
}

#[async_trait]
impl TenantStore for SqliteBackend {
    async fn put_tenant(&self, tenant: &Tenant) -> StoreResult<Tenant> {
        let t = tenant.clone();
        let fallback = serde_json::to_string(&t.fallback)
            .map_err(|e| StoreError::Backend(format!("tenant fallback: {e}")))?;
        self.write(move |tx| {
            // On update the first created_at wins: it records when the tenant came to be.
            tx.exec(
                "INSERT INTO tenants (id, name, default_region, help_text, created_at, updated_at,
                     fallback)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                     default_region = excluded.default_region, help_text = excluded.help_text,
                     updated_at = excluded.updated_at, fallback = excluded.fallback",
                params![
                    t.id.as_str(),
                    t.name,
                    t.default_region.code(),
                    t.help_text,
                    ts(t.created_at),
                    ts(t.updated_at),
                    fallback
                ],
            )
            .map_err(db)?;
            get_tenant(tx, t.id.as_str())?.ok_or_else(|| corrupt("tenant vanished"))
        })
        .await
    }

    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        let id = id.clone();
        self.read(move |conn| get_tenant(conn, id.as_str())).await
    }

    async fn put_number(&self, route: &NumberRoute) -> StoreResult<NumberRoute> {
        let r = route.clone();
        let channels = serde_json::to_string(&r.channels)
            .map_err(|e| StoreError::Backend(format!("channels: {e}")))?;
        let stored = self
            .write(move |tx| {
                if let Some(existing) = number_route(tx, r.number.as_str())? {
                    if existing.tenant_id != r.tenant_id {
                        return Err(StoreError::Conflict(format!(
                            "number {} is held by another tenant",
                            r.number
                        )));
                    }
                }
                tx.exec(
                    "INSERT INTO numbers (number, tenant_id, provider, channels, updated_at,
                     max_per_second)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (number) DO UPDATE SET provider = excluded.provider,
                     channels = excluded.channels, updated_at = excluded.updated_at,
                     max_per_second = excluded.max_per_second",
                    params![
                        r.number.as_str(),
                        r.tenant_id.as_str(),
                        r.provider.as_str(),
                        channels,
                        ts(r.updated_at),
                        r.max_per_second
                    ],
                )
                .map_err(db)?;
                number_route(tx, r.number.as_str())?.ok_or_else(|| corrupt("number vanished"))
            })
            .await;
        self.routes.invalidate();
        stored
    }

    async fn delete_number(&self, tenant: &TenantId, number: &Address) -> StoreResult<bool> {
        let (tenant, number) = (tenant.clone(), number.clone());
        let deleted = self
            .write(move |tx| {
                let n = tx
                    .exec(
                        "DELETE FROM numbers WHERE number = ?1 AND tenant_id = ?2",
                        params![number.as_str(), tenant.as_str()],
                    )
                    .map_err(db)?;
                Ok(n > 0)
            })
            .await;
        self.routes.invalidate();
        deleted
    }

    async fn number_route(&self, number: &Address) -> StoreResult<Option<NumberRoute>> {
        let ticket = match self.routes.get(&number.as_str().to_owned()) {
            Ok(route) => return Ok(route),
            Err(ticket) => ticket,
        };
        let key = number.as_str().to_owned();
        let route = self
            .read({
                let key = key.clone();
                move |conn| number_route(conn, &key)
            })
            .await?;
        self.routes.put(ticket, key, route.clone());
        Ok(route)
    }

    async fn tenant_numbers(&self, tenant: &TenantId) -> StoreResult<Vec<NumberRoute>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {NUMBER_COLS} FROM numbers WHERE tenant_id = ?1 ORDER BY number"
                ))
                .map_err(db)?;
            let mut rows = stmt.query([tenant.as_str()]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(number_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_api_key(
        &self,
        tenant: &TenantId,
        key: &ApiKeyInfo,
        key_hash: &str,
    ) -> StoreResult<()> {
        let (tenant, key, key_hash) = (tenant.clone(), key.clone(), key_hash.to_owned());
        self.write(move |tx| {
            // Storing the same key again is a no-op; the same hash for another tenant would
            // let one key open two tenants, so it is refused.
            let owner: Option<String> = tx
                .row(
                    "SELECT tenant_id FROM api_keys WHERE key_hash = ?1",
                    [&key_hash],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            match owner {
                Some(owner) if owner != tenant.as_str() => Err(StoreError::Conflict(
                    "API key hash already belongs to another tenant".into(),
                )),
                Some(_) => Ok(()),
                None => {
                    tx.exec(
                        "INSERT INTO api_keys (key_hash, tenant_id, key_id, created_at, name, prefix,
                             role)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![
                            key_hash,
                            tenant.as_str(),
                            key.id,
                            ts(key.created_at.unwrap_or_else(Utc::now)),
                            key.name,
                            key.prefix,
                            key.role.as_str()
                        ],
                    )
                    .map_err(db)?;
                    Ok(())
                }
            }
        })
        .await
    }

    async fn tenant_for_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyOwner>> {
        let key_hash = key_hash.to_owned();
        self.read(move |conn| {
            let owner: Option<(String, String, Option<String>, String)> = conn
                .row(
                    "SELECT tenant_id, key_id, name, role FROM api_keys WHERE key_hash = ?1",
                    [&key_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(db)?;
            owner
                .map(|(t, key_id, name, role)| {
                    Ok(ApiKeyOwner {
                        tenant: TenantId::parse(&t).map_err(|_| corrupt("tenant id"))?,
                        key_id,
                        name,
                        role: parse(&role, "role")?,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn touch_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        key_hash: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (tenant, key_id, key_hash) = (tenant.clone(), key_id.to_owned(), key_hash.to_owned());
        self.write(move |tx| {
            tx.exec(
                "UPDATE api_keys SET last_used_at = ?1
                 WHERE key_hash = ?2 AND tenant_id = ?3 AND key_id = ?4",
                params![ts(at), key_hash, tenant.as_str(), key_id],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> StoreResult<Vec<ApiKeyInfo>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key_id, name, prefix, created_at, last_used_at, role FROM api_keys
                     WHERE tenant_id = ?1 ORDER BY created_at, key_id",
                )
                .map_err(db)?;
            let mut rows = stmt.query([tenant.as_str()]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let created: String = row.get(3).map_err(db)?;
                let used: Option<String> = row.get(4).map_err(db)?;
                out.push(ApiKeyInfo {
                    id: row.get(0).map_err(db)?,
                    name: row.get(1).map_err(db)?,
                    prefix: row.get(2).map_err(db)?,
                    created_at: Some(parse_ts(&created)?),
                    last_used_at: used.as_deref().map(parse_ts).transpose()?,
                    role: parse(&row.get::<_, String>(5).map_err(db)?, "role")?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn revoke_api_key(&self, tenant: &TenantId, key_id: &str) -> StoreResult<bool> {
        let (tenant, key_id) = (tenant.clone(), key_id.to_owned());
        self.write(move |tx| {
            let deleted = tx
                .exec(
                    "DELETE FROM api_keys WHERE tenant_id = ?1 AND key_id = ?2",
                    params![tenant.as_str(), key_id],
                )
                .map_err(db)?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn put_routing(&self, tenant: &TenantId, routing: &Routing) -> StoreResult<()> {
        let tenant = tenant.clone();
        let json = serde_json::to_string(routing)
            .map_err(|e| StoreError::Backend(format!("routing: {e}")))?;
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO routing (tenant_id, routing, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant_id) DO UPDATE SET routing = excluded.routing,
                     updated_at = excluded.updated_at",
                params![tenant.as_str(), json, ts(Utc::now())],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn put_auto_replies(&self, tenant: &TenantId, settings: &AutoReplies) -> StoreResult<()> {
        let tenant = tenant.clone();
        let json = serde_json::to_string(settings)
            .map_err(|e| StoreError::Backend(format!("auto-replies: {e}")))?;
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO auto_replies (tenant_id, settings, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant_id) DO UPDATE SET settings = excluded.settings,
                     updated_at = excluded.updated_at",
                params![tenant.as_str(), json, ts(Utc::now())],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn get_auto_replies(&self, tenant: &TenantId) -> StoreResult<AutoReplies> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let text: Option<String> = conn
                .row(
                    "SELECT settings FROM auto_replies WHERE tenant_id = ?1",
                    [tenant.as_str()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(db)?;
            text.map(|t| serde_json::from_str(&t).map_err(|_| corrupt("auto-replies")))
                .transpose()
                .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn put_livechat(&self, settings: &LivechatSettings) -> StoreResult<()> {
        // Sealed before leaving the caller's task, as carrier credentials are.
        let plaintext = serde_json::to_vec(settings)
            .map_err(|_| StoreError::Backend("livechat settings could not be serialised".into()))?;
        let tenant = settings.tenant_id.clone();
        let (nonce, ciphertext) = self.key.seal(&tenant, ProviderKind::Livechat, &plaintext)?;
        let widget_key = settings.widget_key.to_string();
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO livechat (tenant_id, widget_key, nonce, ciphertext, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id) DO UPDATE SET widget_key = excluded.widget_key,
                     nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                     updated_at = excluded.updated_at",
                params![
                    tenant.as_str(),
                    widget_key,
                    nonce,
                    ciphertext,
                    ts(Utc::now())
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn get_livechat(&self, tenant: &TenantId) -> StoreResult<Option<LivechatSettings>> {
        let t = tenant.clone();
        let sealed: Option<(Vec<u8>, Vec<u8>)> = self
            .read(move |conn| {
                conn.row(
                    "SELECT nonce, ciphertext FROM livechat WHERE tenant_id = ?1",
                    [t.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)
            })
            .await?;
        sealed
            .map(|(nonce, ciphertext)| self.open_livechat(tenant, &nonce, &ciphertext))
            .transpose()
    }

    async fn livechat_by_widget_key(
        &self,
        widget_key: &ChatId,
    ) -> StoreResult<Option<LivechatSettings>> {
        let key = widget_key.to_string();
        let sealed: Option<(String, Vec<u8>, Vec<u8>)> = self
            .read(move |conn| {
                conn.row(
                    "SELECT tenant_id, nonce, ciphertext FROM livechat WHERE widget_key = ?1",
                    [key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)
            })
            .await?;
        let Some((tenant, nonce, ciphertext)) = sealed else {
            return Ok(None);
        };
        let tenant = TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?;
        self.open_livechat(&tenant, &nonce, &ciphertext).map(Some)
    }

    async fn get_routing(&self, tenant: &TenantId) -> StoreResult<Routing> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let text: Option<String> = conn
                .row(
                    "SELECT routing FROM routing WHERE tenant_id = ?1",
                    [tenant.as_str()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(db)?;
            text.map(|t| serde_json::from_str(&t).map_err(|_| corrupt("routing")))
                .transpose()
                .map(Option::unwrap_or_default)
        })
        .await
    }
}

impl SqliteBackend {
    /// Decrypts a stored LiveChat widget of `tenant`.
    fn open_livechat(
        &self,
        tenant: &TenantId,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> StoreResult<LivechatSettings> {
        let plaintext = self
            .key
            .open(tenant, ProviderKind::Livechat, nonce, ciphertext)?;
        let settings: LivechatSettings =
            serde_json::from_slice(&plaintext).map_err(|_| corrupt("livechat settings"))?;
        if &settings.tenant_id != tenant {
            return Err(corrupt("livechat settings stored under another tenant"));
        }
        Ok(settings)
    }
}

#[async_trait]
impl SecretStore for SqliteBackend {
    async fn put_credentials(
        &self,
        tenant: &TenantId,
        credentials: &Credentials,
    ) -> StoreResult<()> {
        let provider = credentials.kind();
        // Encrypt before leaving the caller's task: the plaintext never reaches the database
        // thread, and the error text never includes it.
        let plaintext = serde_json::to_vec(credentials)
            .map_err(|_| StoreError::Backend("credentials could not be serialised".into()))?;
        let (nonce, ciphertext) = self.key.seal(tenant, provider, &plaintext)?;
        let tenant = tenant.clone();
        let stored = self
            .write(move |tx| {
                tx.exec(
                    "INSERT INTO credentials (tenant_id, provider, nonce, ciphertext, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id, provider) DO UPDATE SET nonce = excluded.nonce,
                     ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
                    params![
                        tenant.as_str(),
                        provider.as_str(),
                        nonce,
                        ciphertext,
                        ts(Utc::now())
                    ],
                )
                .map_err(db)?;
                Ok(())
            })
            .await;
        self.credentials.invalidate();
        stored
    }

    async fn get_credentials(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
    ) -> StoreResult<Option<Credentials>> {
        let ticket = match self.credentials.get(&(tenant.clone(), provider)) {
            Ok(credentials) => return Ok(credentials),
            Err(ticket) => ticket,
        };
        let t = tenant.clone();
        let sealed: Option<(Vec<u8>, Vec<u8>)> = self
            .read(move |conn| {
                conn.row(
                    "SELECT nonce, ciphertext FROM credentials
                     WHERE tenant_id = ?1 AND provider = ?2",
                    params![t.as_str(), provider.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)
            })
            .await?;
        let Some((nonce, ciphertext)) = sealed else {
            self.credentials
                .put(ticket, (tenant.clone(), provider), None);
            return Ok(None);
        };
        let plaintext = self.key.open(tenant, provider, &nonce, &ciphertext)?;
        let credentials: Credentials = serde_json::from_slice(&plaintext).map_err(|_| {
            StoreError::Backend(format!(
                "credentials of tenant {tenant} for {provider} could not be decoded"
            ))
        })?;
        if credentials.kind() != provider {
            return Err(corrupt("credentials stored under the wrong provider"));
        }
        self.credentials.put(
            ticket,
            (tenant.clone(), provider),
            Some(credentials.clone()),
        );
        Ok(Some(credentials))
    }

    async fn delete_credentials(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
    ) -> StoreResult<bool> {
        let tenant = tenant.clone();
        let deleted = self
            .write(move |tx| {
                let n = tx
                    .exec(
                        "DELETE FROM credentials WHERE tenant_id = ?1 AND provider = ?2",
                        params![tenant.as_str(), provider.as_str()],
                    )
                    .map_err(db)?;
                Ok(n > 0)
            })
            .await;
        self.credentials.invalidate();
        deleted
    }

    async fn configured_providers(&self, tenant: &TenantId) -> StoreResult<Vec<ProviderKind>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT provider FROM credentials WHERE tenant_id = ?1 ORDER BY provider",
                )
                .map_err(db)?;
            let mut rows = stmt.query([tenant.as_str()]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(parse(&row.get::<_, String>(0).map_err(db)?, "provider")?);
            }
            Ok(out)
        })
        .await
    }

    async fn tenants_with_provider(&self, provider: ProviderKind) -> StoreResult<Vec<TenantId>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT tenant_id FROM credentials WHERE provider = ?1 ORDER BY tenant_id",
                )
                .map_err(db)?;
            let mut rows = stmt.query([provider.as_str()]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let id: String = row.get(0).map_err(db)?;
                out.push(TenantId::parse(&id).map_err(|_| corrupt("tenant id"))?);
            }
            Ok(out)
        })
        .await
    }
}
