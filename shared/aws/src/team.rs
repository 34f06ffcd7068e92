//! [`TeamStore`] on DynamoDB: users (with an e-mail guard item that keeps addresses unique
//! per tenant), invites and sessions (both expire through the table's TTL as well as by
//! their own expiry).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, TimeDelta, Utc};
use omni_core::domain::TenantId;
use omni_core::ports::{StoreError, StoreResult, TeamStore};
use omni_core::team::{Invite, Session, User, UserRecord};
use uuid::Uuid;

use crate::item::{
    corrupt, doc, get_n, get_s, get_uuid, json, key, n, opt_s, parse_ts, s, ts, values, Item,
};
use crate::{sdk_error, AwsBackend};

/// A tenant's users live in their own partition, so the tenant's settings partition (read
/// on every send) does not grow with its team.
fn team_pk(tenant: &TenantId) -> String {
    format!("U#{tenant}")
}

fn user_key(tenant: &TenantId, id: Uuid) -> Item {
    key(team_pk(tenant), format!("U#{id}"))
}

fn email_key(tenant: &TenantId, email: &str) -> Item {
    key(team_pk(tenant), format!("E#{email}"))
}

fn invite_key(token_hash: &str) -> Item {
    key(format!("INV#{token_hash}"), "INV")
}

fn session_key(token_hash: &str) -> Item {
    key(format!("SES#{token_hash}"), "SES")
}

fn tenant_of(user: &User) -> StoreResult<&TenantId> {
    user.tenant_id
        .as_ref()
        .ok_or_else(|| StoreError::Backend("a user must name its tenant".into()))
}

fn tenant_attr(item: &Item) -> StoreResult<TenantId> {
    TenantId::parse(get_s(item, "tenant")?).map_err(|_| corrupt("tenant id"))
}

fn user_item(record: &UserRecord) -> StoreResult<Item> {
    let tenant = tenant_of(&record.user)?;
    let mut item = user_key(tenant, record.user.id);
    item.extend(values([
        ("tenant", s(tenant.as_str())),
        ("doc", json(&record.user)?),
        ("gen", n(record.generation)),
    ]));
    if let Some(hash) = &record.password_hash {
        item.insert("pw".into(), s(hash));
    }
    Ok(item)
}

fn user_from(item: &Item) -> StoreResult<UserRecord> {
    let mut user: User = doc(item, "doc")?;
    user.tenant_id = Some(tenant_attr(item)?);
    let password_hash = opt_s(item, "pw").map(str::to_owned);
    user.active = password_hash.is_some();
    Ok(UserRecord {
        user,
        password_hash,
        generation: get_n(item, "gen")?,
    })
}

fn expiring(mut item: Item, expires_at: DateTime<Utc>) -> Item {
    item.insert("expires".into(), s(ts(expires_at)));
    item.insert("ttl".into(), n(expires_at.timestamp()));
    item
}

#[async_trait]
impl TeamStore for AwsBackend {
    async fn create_user(&self, record: &UserRecord) -> StoreResult<()> {
        let user = &record.user;
        let tenant = tenant_of(user)?;
        let mut guard = email_key(tenant, &user.email);
        guard.insert("user_id".into(), s(user.id.to_string()));
        let ops = vec![
            self.put_op(guard, Some("attribute_not_exists(pk)"), None)?,
            self.put_op(user_item(record)?, Some("attribute_not_exists(pk)"), None)?,
        ];
        if self.transact(ops).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(
                "the tenant already has a user with that email".into(),
            ))
        }
    }

    async fn get_user(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<UserRecord>> {
        self.get_item(user_key(tenant, id))
            .await?
            .map(|i| user_from(&i))
            .transpose()
    }

    async fn user_by_email(
        &self,
        tenant: &TenantId,
        email: &str,
    ) -> StoreResult<Option<UserRecord>> {
        let Some(guard) = self.get_item(email_key(tenant, email)).await? else {
            return Ok(None);
        };
        self.get_user(tenant, get_uuid(&guard, "user_id")?).await
    }

    async fn list_users(&self, tenant: &TenantId) -> StoreResult<Vec<User>> {
        self.query_prefix(&team_pk(tenant), "U#")
            .await?
            .iter()
            .map(|i| user_from(i).map(|r| r.user))
            .collect()
    }

    async fn update_user(&self, record: &UserRecord) -> StoreResult<()> {
        self.put_item(user_item(record)?).await
    }

    async fn put_invite(&self, invite: &Invite) -> StoreResult<()> {
        let mut item = invite_key(&invite.token_hash);
        item.extend(values([
            ("tenant", s(invite.tenant_id.as_str())),
            ("user_id", s(invite.user_id.to_string())),
        ]));
        self.put_item(expiring(item, invite.expires_at)).await
    }

    async fn take_invite(&self, token_hash: &str) -> StoreResult<Option<Invite>> {
        let out = self
            .ddb
            .delete_item()
            .table_name(&self.resources.table)
            .set_key(Some(invite_key(token_hash)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        out.attributes
            .map(|item| {
                Ok(Invite {
                    token_hash: token_hash.to_owned(),
                    tenant_id: tenant_attr(&item)?,
                    user_id: get_uuid(&item, "user_id")?,
                    expires_at: parse_ts(get_s(&item, "expires")?)?,
                })
            })
            .transpose()
    }

    async fn put_session(&self, session: &Session) -> StoreResult<()> {
        let mut item = session_key(&session.token_hash);
        item.extend(values([
            ("tenant", s(session.tenant_id.as_str())),
            ("user_id", s(session.user_id.to_string())),
            ("gen", n(session.generation)),
        ]));
        self.put_item(expiring(item, session.expires_at)).await
    }

    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        self.get_item(session_key(token_hash))
            .await?
            .map(|item| {
                Ok(Session {
                    token_hash: token_hash.to_owned(),
                    tenant_id: tenant_attr(&item)?,
                    user_id: get_uuid(&item, "user_id")?,
                    generation: get_n(&item, "gen")?,
                    expires_at: parse_ts(get_s(&item, "expires")?)?,
                })
            })
            .transpose()
    }

    async fn touch_session(&self, token_hash: &str, expires_at: DateTime<Utc>) -> StoreResult<()> {
        // Only a session still there: a touch racing a logout must not bring it back.
        let result = self
            .ddb
            .update_item()
            .table_name(&self.resources.table)
            .set_key(Some(session_key(token_hash)))
            .update_expression("SET expires = :e, #ttl = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#ttl", "ttl")
            .set_expression_attribute_values(Some(values([
                (":e", s(ts(expires_at))),
                (":t", n(expires_at.timestamp())),
            ])))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if crate::tenants::is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        self.ddb
            .delete_item()
            .table_name(&self.resources.table)
            .set_key(Some(session_key(token_hash)))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        Ok(())
    }

    async fn count_login_failure(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> StoreResult<(u32, DateTime<Utc>)> {
        // One more in the open window; none open: a new window. Two first failures racing
        // may both start one and count one failure less, which a lockout can afford.
        let counted = self
            .ddb
            .update_item()
            .table_name(&self.resources.table)
            .set_key(Some(failures_key(subject)))
            .update_expression("ADD cnt :one")
            .condition_expression("since > :cutoff")
            .set_expression_attribute_values(Some(values([
                (":one", n(1)),
                (":cutoff", s(ts(now - window))),
            ])))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match counted {
            Ok(out) => {
                let item = out.attributes.ok_or_else(|| corrupt("login failures"))?;
                failures_from(&item)
            }
            Err(e) if crate::tenants::is_condition_failure(&e) => {
                let mut item = failures_key(subject);
                item.extend(values([
                    ("since", s(ts(now))),
                    ("cnt", n(1)),
                    ("ttl", n((now + window).timestamp())),
                ]));
                self.put_item(item).await?;
                Ok((1, now))
            }
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    async fn login_failures(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        window: TimeDelta,
    ) -> StoreResult<Option<(u32, DateTime<Utc>)>> {
        let Some(item) = self.get_item(failures_key(subject)).await? else {
            return Ok(None);
        };
        let (failures, since) = failures_from(&item)?;
        Ok((since > now - window).then_some((failures, since)))
    }
}

/// Failed sign-ins of an account or an address: `since` (the window's start), `cnt`.
fn failures_key(subject: &str) -> Item {
    key(format!("LF#{subject}"), "LF")
}

fn failures_from(item: &Item) -> StoreResult<(u32, DateTime<Utc>)> {
    let failures = u32::try_from(get_n(item, "cnt")?).map_err(|_| corrupt("cnt"))?;
    Ok((failures, parse_ts(get_s(item, "since")?)?))
}
