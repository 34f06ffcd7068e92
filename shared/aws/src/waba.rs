//! [`WabaRouteStore`] on DynamoDB and Secrets Manager: one item per business account under
//! the partition `WABA` (counters moved with atomic `ADD`s), its app secret a secret named
//! `<prefix>_waba/<id>` (no tenant id has `_`, so it cannot meet a tenant's).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use omni_core::ports::{StoreResult, WabaRouteStore};
use omni_core::providers::Secret;
use omni_core::waba::{ForwardCount, WabaId, WabaRoute};

use crate::item::{get_n, get_s, key, n, opt_s, parse_ts, s, ts, values, Item};
use crate::tenants::is_condition_failure;
use crate::{sdk_error, AwsBackend};

const PK: &str = "WABA";

fn route_key(waba_id: &WabaId) -> Item {
    key(PK, waba_id.as_str())
}

fn route_of(item: &Item) -> StoreResult<WabaRoute> {
    let count = |name: &str| get_n(item, name).map(|v| v.max(0) as u64);
    Ok(WabaRoute {
        waba_id: WabaId::parse(get_s(item, "sk")?)
            .ok_or_else(|| crate::item::corrupt("waba id"))?,
        url: get_s(item, "url")?.to_owned(),
        note: opt_s(item, "note").map(str::to_owned),
        forwarded: count("forwarded")?,
        pending: count("pending")?,
        failed: count("failed")?,
        last_forwarded_at: opt_s(item, "last_forwarded_at").map(parse_ts).transpose()?,
        created_at: parse_ts(get_s(item, "created_at")?)?,
        updated_at: parse_ts(get_s(item, "updated_at")?)?,
    })
}

impl AwsBackend {
    fn waba_secret_name(&self, waba_id: &WabaId) -> String {
        format!("{}_waba/{waba_id}", self.resources.secret_prefix)
    }
}

#[async_trait]
impl WabaRouteStore for AwsBackend {
    async fn put_waba_route(
        &self,
        route: &WabaRoute,
        app_secret: &Secret,
    ) -> StoreResult<WabaRoute> {
        let name = self.waba_secret_name(&route.waba_id);
        self.write_secret(&name, app_secret.expose().to_owned())
            .await?;
        let mut set = "SET #url = :url, secret_id = :sid, updated_at = :t, \
                       created_at = if_not_exists(created_at, :t), \
                       forwarded = if_not_exists(forwarded, :zero), \
                       pending = if_not_exists(pending, :zero), \
                       failed = if_not_exists(failed, :zero)"
            .to_owned();
        let mut vals = values([
            (":url", s(&route.url)),
            (":sid", s(&name)),
            (":t", s(ts(route.updated_at))),
            (":zero", n(0)),
        ]);
        match &route.note {
            Some(note) => {
                set.push_str(", note = :note");
                vals.insert(":note".into(), s(note));
            }
            None => set.push_str(" REMOVE note"),
        }
        let out = self
            .ddb
            .update_item()
            .table_name(&self.resources.table)
            .set_key(Some(route_key(&route.waba_id)))
            .update_expression(set)
            .expression_attribute_names("#url", "url")
            .set_expression_attribute_values(Some(vals))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem", e))?;
        route_of(&out.attributes.unwrap_or_default())
    }

    async fn get_waba_route(&self, waba_id: &WabaId) -> StoreResult<Option<(WabaRoute, Secret)>> {
        let Some(item) = self.get_item(route_key(waba_id)).await? else {
            return Ok(None);
        };
        let route = route_of(&item)?;
        let secret = self.platform_secret(get_s(&item, "secret_id")?).await?;
        Ok(Some((route, secret)))
    }

    async fn list_waba_routes(&self) -> StoreResult<Vec<WabaRoute>> {
        let mut routes = self
            .query_prefix(PK, "")
            .await?
            .iter()
            .map(route_of)
            .collect::<StoreResult<Vec<_>>>()?;
        routes.sort_by(|a, b| a.waba_id.cmp(&b.waba_id));
        Ok(routes)
    }

    async fn delete_waba_route(&self, waba_id: &WabaId) -> StoreResult<bool> {
        let out = self
            .ddb
            .delete_item()
            .table_name(&self.resources.table)
            .set_key(Some(route_key(waba_id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        match out.attributes {
            Some(old) => self.delete_secret_of(&old).await.map(|()| true),
            None => Ok(false),
        }
    }

    async fn count_forward(&self, waba_id: &WabaId, count: ForwardCount) -> StoreResult<()> {
        let (update, vals) = match count {
            ForwardCount::Queued => ("ADD pending :one", values([(":one", n(1))])),
            ForwardCount::Forwarded(at) => (
                "ADD pending :minus, forwarded :one SET last_forwarded_at = :at",
                values([(":one", n(1)), (":minus", n(-1)), (":at", s(ts(at)))]),
            ),
            ForwardCount::Failed => (
                "ADD pending :minus, failed :one",
                values([(":one", n(1)), (":minus", n(-1))]),
            ),
        };
        let out = self
            .ddb
            .update_item()
            .table_name(&self.resources.table)
            .set_key(Some(route_key(waba_id)))
            .update_expression(update)
            // A removed route is not brought back by a late count.
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_values(Some(vals))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }
}
