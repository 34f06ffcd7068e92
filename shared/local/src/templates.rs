//! [`TemplateStore`] on SQLite: one row per template holding every version as JSON, written
//! only over the revision it was read at; one row per language of Meta's statuses.

use async_trait::async_trait;
use omni_core::domain::TenantId;
use omni_core::ports::{StoreError, StoreResult, TemplateStore};
use omni_core::templates::{MetaStatus, MetaTemplateStatus, StoredTemplate};
use rusqlite::{params, OptionalExtension, Row};

use crate::db::{corrupt, db, parse_ts, ts, Cached};
use crate::SqliteBackend;

fn template_row(row: &Row) -> StoreResult<StoredTemplate> {
    let revision: i64 = row.get(0).map_err(db)?;
    let doc: String = row.get(1).map_err(db)?;
    let mut template: StoredTemplate =
        serde_json::from_str(&doc).map_err(|_| corrupt("template"))?;
    template.revision = u64::try_from(revision).map_err(|_| corrupt("template revision"))?;
    Ok(template)
}

#[async_trait]
impl TemplateStore for SqliteBackend {
    async fn get_template(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> StoreResult<Option<StoredTemplate>> {
        let (tenant, name) = (tenant.clone(), name.to_owned());
        self.read(move |conn| {
            conn.row(
                "SELECT revision, doc FROM templates WHERE tenant_id = ?1 AND name = ?2",
                params![tenant.as_str(), name],
                |r| Ok(template_row(r)),
            )
            .optional()
            .map_err(db)?
            .transpose()
        })
        .await
    }

    async fn list_templates(&self, tenant: &TenantId) -> StoreResult<Vec<StoredTemplate>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT revision, doc FROM templates WHERE tenant_id = ?1 ORDER BY name",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([tenant.as_str()], |r| Ok(template_row(r)))
                .map_err(db)?;
            rows.map(|r| r.map_err(db)?).collect()
        })
        .await
    }

    async fn put_template(
        &self,
        tenant: &TenantId,
        template: &StoredTemplate,
    ) -> StoreResult<StoredTemplate> {
        let tenant = tenant.clone();
        let mut next = template.clone();
        next.revision = template.revision + 1;
        let doc =
            serde_json::to_string(&next).map_err(|e| StoreError::Backend(format!("json: {e}")))?;
        let expected = i64::try_from(template.revision)
            .map_err(|_| StoreError::Backend("template revision".into()))?;
        let name = next.name.clone();
        self.write_statement(move |conn| {
            // The insert happens only for a new template; the update only over the revision
            // read. Either way, no row changed means someone else wrote first.
            let changed = if expected == 0 {
                conn.exec(
                    "INSERT INTO templates (tenant_id, name, revision, doc) VALUES (?1, ?2, 1, ?3)
                     ON CONFLICT (tenant_id, name) DO NOTHING",
                    params![tenant.as_str(), name, doc],
                )
            } else {
                conn.exec(
                    "UPDATE templates SET revision = ?3 + 1, doc = ?4
                     WHERE tenant_id = ?1 AND name = ?2 AND revision = ?3",
                    params![tenant.as_str(), name, expected, doc],
                )
            }
            .map_err(db)?;
            if changed == 0 {
                return Err(StoreError::Conflict(format!(
                    "template {name} was changed meanwhile; read it again"
                )));
            }
            Ok(())
        })
        .await?;
        Ok(next)
    }

    async fn put_meta_status(
        &self,
        tenant: &TenantId,
        status: &MetaTemplateStatus,
    ) -> StoreResult<()> {
        let tenant = tenant.clone();
        let value = status.status.as_str();
        let status = status.clone();
        self.write_statement(move |conn| {
            conn.exec(
                "INSERT INTO meta_template_statuses (tenant_id, name, language, status, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id, name, language) DO UPDATE SET status = excluded.status,
                     updated_at = excluded.updated_at",
                params![
                    tenant.as_str(),
                    status.name,
                    status.language,
                    value,
                    ts(status.updated_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn meta_statuses(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> StoreResult<Vec<MetaTemplateStatus>> {
        let (tenant, name) = (tenant.clone(), name.to_owned());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, language, status, updated_at FROM meta_template_statuses
                     WHERE tenant_id = ?1 AND name = ?2 ORDER BY language",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![tenant.as_str(), name], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(db)?;
            rows.map(|r| {
                let (name, language, status, at) = r.map_err(db)?;
                Ok(MetaTemplateStatus {
                    name,
                    language,
                    status: MetaStatus::from_meta(&status),
                    updated_at: parse_ts(&at)?,
                })
            })
            .collect()
        })
        .await
    }
}
