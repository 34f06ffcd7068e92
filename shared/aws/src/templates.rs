//! [`TemplateStore`] on DynamoDB: a tenant's templates in their own partition, one item per
//! template holding every version (written with a condition on the revision read), and one
//! item per language of Meta's statuses beside them.

use async_trait::async_trait;
use omni_core::domain::TenantId;
use omni_core::ports::{StoreError, StoreResult, TemplateStore};
use omni_core::templates::{MetaStatus, MetaTemplateStatus, StoredTemplate};

use crate::item::{corrupt, doc, get_n, get_s, json, key, n, parse_ts, s, ts, Item};
use crate::tenants::is_condition_failure;
use crate::{sdk_error, AwsBackend};

/// The partition of a tenant's templates: listing them never reads its other items.
fn templates_pk(tenant: &TenantId) -> String {
    format!("TPL#{tenant}")
}

/// Template names have no `#`, so a template's sort key cannot meet a status's.
fn template_key(tenant: &TenantId, name: &str) -> Item {
    key(templates_pk(tenant), format!("T#{name}"))
}

fn status_key(tenant: &TenantId, name: &str, language: &str) -> Item {
    key(templates_pk(tenant), format!("W#{name}#{language}"))
}

fn template_from(item: &Item) -> StoreResult<StoredTemplate> {
    let mut template: StoredTemplate = doc(item, "doc")?;
    template.revision = u64::try_from(get_n(item, "rev")?).map_err(|_| corrupt("revision"))?;
    Ok(template)
}

fn status_from(item: &Item) -> StoreResult<MetaTemplateStatus> {
    Ok(MetaTemplateStatus {
        name: get_s(item, "name")?.to_owned(),
        language: get_s(item, "language")?.to_owned(),
        status: MetaStatus::from_meta(get_s(item, "status")?),
        updated_at: parse_ts(get_s(item, "updated_at")?)?,
    })
}

fn revision(r: u64) -> StoreResult<i64> {
    i64::try_from(r).map_err(|_| StoreError::Backend("template revision".into()))
}

#[async_trait]
impl TemplateStore for AwsBackend {
    async fn get_template(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> StoreResult<Option<StoredTemplate>> {
        self.get_item(template_key(tenant, name))
            .await?
            .map(|i| template_from(&i))
            .transpose()
    }

    async fn list_templates(&self, tenant: &TenantId) -> StoreResult<Vec<StoredTemplate>> {
        self.query_prefix(&templates_pk(tenant), "T#")
            .await?
            .iter()
            .map(template_from)
            .collect()
    }

    async fn put_template(
        &self,
        tenant: &TenantId,
        template: &StoredTemplate,
    ) -> StoreResult<StoredTemplate> {
        let mut next = template.clone();
        next.revision = template.revision + 1;
        let mut item = template_key(tenant, &next.name);
        item.insert("doc".into(), json(&next)?);
        item.insert("rev".into(), n(revision(next.revision)?));
        let put = self
            .ddb
            .put_item()
            .table_name(&self.resources.table)
            .set_item(Some(item));
        let put = if template.revision == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("rev = :rev")
                .expression_attribute_values(":rev", n(revision(template.revision)?))
        };
        match put.send().await {
            Ok(_) => Ok(next),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                Err(StoreError::Conflict(format!(
                    "template {} was changed meanwhile; read it again",
                    next.name
                )))
            }
            Err(e) => Err(sdk_error("PutItem", e)),
        }
    }

    async fn put_meta_status(
        &self,
        tenant: &TenantId,
        status: &MetaTemplateStatus,
    ) -> StoreResult<()> {
        let mut item = status_key(tenant, &status.name, &status.language);
        item.extend([
            ("name".to_owned(), s(&status.name)),
            ("language".to_owned(), s(&status.language)),
            ("status".to_owned(), s(status.status.as_str())),
            ("updated_at".to_owned(), s(ts(status.updated_at))),
        ]);
        self.put_item(item).await
    }

    async fn meta_statuses(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> StoreResult<Vec<MetaTemplateStatus>> {
        self.query_prefix(&templates_pk(tenant), &format!("W#{name}#"))
            .await?
            .iter()
            .map(status_from)
            .collect()
    }
}
