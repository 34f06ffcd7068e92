//! Halves of split messages on DynamoDB (see [`MessageStore::put_message_part`]).
//!
//! One item per pair: `pk` `MP#<tenant>#<provider>#<key>`, `sk` `MP`, the halves as JSON in
//! `part_text` / `part_media`, the half given up on in `part_flushed`, TTL on `ttl`. While
//! the sweep must look at it (a lone half, or a flushed one not yet confirmed) the item is in
//! the sparse `gsi2` partition `PARTS`, sorted by when it is due. Every state change is one
//! conditional write whose condition is the state it starts from, so two Lambda invocations
//! receiving the two halves at once cannot both complete the pair (the second condition sees
//! the first write), nor can a flush and a late half both win.
//!
//! [`MessageStore::put_message_part`]: omni_core::ports::MessageStore::put_message_part

use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};
use omni_core::domain::{InboundMessage, MessagePart, PartRole, ProviderKind, TenantId};
use omni_core::ports::{FlushedPart, PartOutcome, StoreResult, StoredPair};

use crate::item::{corrupt, get_n, get_s, json, key, n, opt_s, s, ts, values, Item};
use crate::messages::millis;
use crate::tenants::is_condition_failure;
use crate::{sdk_error, AwsBackend};

/// The index partition of pairs the sweep must look at.
const PARTS: &str = "PARTS";
/// Rounds of the write protocol before giving up (each lost race moves the pair forward, so
/// a few always suffice).
const ATTEMPTS: usize = 6;

fn pair_key(tenant: &TenantId, provider: ProviderKind, part_key: &str) -> Item {
    key(format!("MP#{tenant}#{provider}#{part_key}"), "MP")
}

fn attribute(role: PartRole) -> &'static str {
    match role {
        PartRole::Text => "part_text",
        PartRole::Media => "part_media",
    }
}

fn half(item: &Item, role: PartRole) -> StoreResult<Option<InboundMessage>> {
    opt_s(item, attribute(role))
        .map(|j| serde_json::from_str(j).map_err(|_| corrupt("message part")))
        .transpose()
}

fn stored_pair(item: &Item) -> StoreResult<StoredPair> {
    let flushed = match opt_s(item, "part_flushed") {
        None => None,
        Some("text") => Some(PartRole::Text),
        Some("media") => Some(PartRole::Media),
        Some(_) => return Err(corrupt("part_flushed")),
    };
    Ok(StoredPair {
        text: half(item, PartRole::Text)?,
        media: half(item, PartRole::Media)?,
        flushed,
    })
}

impl AwsBackend {
    pub(crate) async fn put_part(
        &self,
        tenant: &TenantId,
        part: &MessagePart,
        flush_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<PartOutcome> {
        let provider = part.message.provider;
        let key = pair_key(tenant, provider, &part.key);
        let slot = attribute(part.role);
        let message = json(&part.message)?;
        for _ in 0..ATTEMPTS {
            let now = n(millis(Utc::now()));
            // 1. The first half creates the pair (over an expired one TTL has not removed).
            let mut item = key.clone();
            item.extend(values([
                ("tenant", s(tenant.as_str())),
                ("provider", s(provider.as_str())),
                ("part_key", s(&part.key)),
                (slot, message.clone()),
                ("part_due", n(millis(flush_at))),
                ("expires_at", n(millis(expires_at))),
                ("ttl", n(expires_at.timestamp())),
                ("gsi2pk", s(PARTS)),
                (
                    "gsi2sk",
                    s(format!("{}#{tenant}#{provider}#{}", ts(flush_at), part.key)),
                ),
            ]));
            let created = self
                .ddb
                .put_item()
                .table_name(&self.resources.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
                .set_expression_attribute_values(Some(values([(":now", now.clone())])))
                .send()
                .await;
            match created {
                Ok(_) => return Ok(PartOutcome::Waiting),
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(sdk_error("PutItem", e)),
            }
            // 2. The second half completes a pair nobody gave up on; it leaves the sweep's
            //    view in the same write.
            // 3. Or it joins a pair whose first half was already delivered alone.
            for (update, condition) in [
                (
                    "SET #slot = :m REMOVE gsi2pk, gsi2sk",
                    "attribute_exists(pk) AND expires_at > :now \
                     AND attribute_not_exists(#slot) AND attribute_not_exists(part_flushed)",
                ),
                (
                    "SET #slot = :m",
                    "attribute_exists(pk) AND expires_at > :now \
                     AND attribute_not_exists(#slot) AND attribute_exists(part_flushed)",
                ),
            ] {
                let joined = self
                    .ddb
                    .update_item()
                    .table_name(&self.resources.table)
                    .set_key(Some(key.clone()))
                    .update_expression(update)
                    .condition_expression(condition)
                    .expression_attribute_names("#slot", slot)
                    .set_expression_attribute_values(Some(values([
                        (":m", message.clone()),
                        (":now", now.clone()),
                    ])))
                    .return_values(ReturnValue::AllNew)
                    .send()
                    .await;
                match joined {
                    Ok(out) => {
                        let item = out.attributes.ok_or_else(|| corrupt("message part"))?;
                        return Ok(stored_pair(&item)?.outcome(part));
                    }
                    Err(e) if is_condition_failure(&e) => {}
                    Err(e) => return Err(sdk_error("UpdateItem", e)),
                }
            }
            // 4. The slot is taken: a redelivery, or another message colliding on the key.
            if let Some(item) = self.get_item(key.clone()).await? {
                let live = get_n(&item, "expires_at")? > millis(Utc::now());
                if live && item.contains_key(slot) {
                    return Ok(stored_pair(&item)?.outcome(part));
                }
            }
            // The pair changed between the steps (expired, removed): go round again.
        }
        Err(corrupt("message part kept changing"))
    }

    pub(crate) async fn flush_parts(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<FlushedPart>> {
        let mut out = Vec::new();
        let mut start = None;
        // '$' sorts right after '#': every key due at or before `now` is below it.
        let upto = format!("{}$", ts(now));
        while out.len() < limit {
            let page = self
                .ddb
                .query()
                .table_name(&self.resources.table)
                .index_name("gsi2")
                .key_condition_expression("gsi2pk = :p AND gsi2sk < :upto")
                .set_expression_attribute_values(Some(values([
                    (":p", s(PARTS)),
                    (":upto", s(&upto)),
                ])))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                if out.len() >= limit {
                    break;
                }
                if let Some(part) = self.flush_one(&item).await? {
                    out.push(part);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Gives up on the lone half of an index entry (the index may trail the table: every
    /// write here is conditional on the state it reads).
    async fn flush_one(&self, item: &Item) -> StoreResult<Option<FlushedPart>> {
        let tenant = TenantId::parse(get_s(item, "tenant")?).map_err(|_| corrupt("tenant"))?;
        let provider: ProviderKind = get_s(item, "provider")?
            .parse()
            .map_err(|_| corrupt("provider"))?;
        let part_key = get_s(item, "part_key")?.to_owned();
        let key = pair_key(&tenant, provider, &part_key);
        let pair = stored_pair(item)?;
        let Some(lone) = pair.lone() else {
            // Complete, but its index entry outlived the write that completed it.
            self.leave_index(key, "attribute_not_exists(part_flushed)")
                .await?;
            return Ok(None);
        };
        if pair.flushed.is_none() {
            let flushed = self
                .ddb
                .update_item()
                .table_name(&self.resources.table)
                .set_key(Some(key))
                .update_expression("SET part_flushed = :role")
                .condition_expression(
                    "attribute_exists(#mine) AND attribute_not_exists(#other) \
                     AND attribute_not_exists(part_flushed)",
                )
                .expression_attribute_names("#mine", attribute(lone))
                .expression_attribute_names("#other", attribute(lone.other()))
                .set_expression_attribute_values(Some(values([(":role", s(lone.as_str()))])))
                .send()
                .await;
            match flushed {
                Ok(_) => {}
                // The other half came meanwhile: the pair was merged, not flushed.
                Err(e) if is_condition_failure(&e) => return Ok(None),
                Err(e) => return Err(sdk_error("UpdateItem", e)),
            }
        }
        let message = pair
            .half(lone)
            .cloned()
            .ok_or_else(|| corrupt("flushed part"))?;
        Ok(Some(FlushedPart {
            tenant_id: tenant,
            key: part_key,
            message,
        }))
    }

    pub(crate) async fn confirm_part(&self, part: &FlushedPart) -> StoreResult<()> {
        let key = pair_key(&part.tenant_id, part.message.provider, &part.key);
        self.leave_index(key, "attribute_exists(part_flushed)")
            .await
    }

    /// Takes a pair out of the sweep's view when `condition` holds (and it exists).
    async fn leave_index(&self, key: Item, condition: &str) -> StoreResult<()> {
        let out = self
            .ddb
            .update_item()
            .table_name(&self.resources.table)
            .set_key(Some(key))
            .update_expression("REMOVE gsi2pk, gsi2sk")
            .condition_expression(format!("attribute_exists(pk) AND {condition}"))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }
}
