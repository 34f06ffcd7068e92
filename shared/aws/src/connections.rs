//! Dashboards and LiveChat visitors connected through the API Gateway WebSocket API:
//! dashboards' connections kept per tenant in the table, visitors' per conversation (with a
//! TTL, as API Gateway drops a connection after two hours), and [`Push`] through
//! `PostToConnection`, forgetting connections that answer 410 Gone.

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use omni_core::domain::TenantId;
use omni_core::ports::{PresenceUser, Push, PushEvent, StoreError, StoreResult, VisitorFrame};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::item::{get_s, key, n, s, values};
use crate::{error_code, sdk_error, AwsBackend};

/// API Gateway closes a WebSocket connection after two hours at most.
const CONNECTION_TTL: TimeDelta = TimeDelta::hours(2);

fn tenant_connections(tenant: &TenantId) -> String {
    format!("WS#{tenant}")
}

/// The visitor sockets open on one LiveChat conversation.
fn visitor_connections_pk(tenant: &TenantId, conversation: Uuid) -> String {
    format!("LCWS#{tenant}#{conversation}")
}

/// Whose a connection is: a dashboard's tenant and user, or a visitor's tenant and
/// conversation (`conversation` set).
fn owner_key(connection_id: &str) -> crate::item::Item {
    key(format!("WSC#{connection_id}"), "WSC")
}

/// The item listing a connection under its owner: the tenant's dashboards, or the
/// conversation's visitor sockets.
fn listing_key(
    owner: &crate::item::Item,
    tenant: &TenantId,
    connection_id: &str,
) -> StoreResult<crate::item::Item> {
    Ok(match crate::item::opt_s(owner, "conversation") {
        Some(conversation) => {
            let conversation =
                Uuid::parse_str(conversation).map_err(|_| crate::item::corrupt("conversation"))?;
            key(visitor_connections_pk(tenant, conversation), connection_id)
        }
        None => key(tenant_connections(tenant), connection_id),
    })
}

impl AwsBackend {
    /// Records a dashboard connection of `tenant` opened with its key `key_id` (or by a user,
    /// `user:<id>`), named `user` in its presence events (the `$connect` route, after
    /// authentication): revoking the key closes it.
    pub async fn add_connection(
        &self,
        tenant: &TenantId,
        key_id: &str,
        user: &PresenceUser,
        connection_id: &str,
    ) -> StoreResult<()> {
        let mut by_tenant = key(tenant_connections(tenant), connection_id);
        by_tenant.insert("key_id".into(), s(key_id));
        let mut owner = owner_key(connection_id);
        owner.extend(values([
            ("tenant", s(tenant.as_str())),
            ("user_id", s(&user.id)),
            ("user_name", s(&user.name)),
        ]));
        self.record_connection(by_tenant, owner).await
    }

    /// Writes a connection's listing and owner items together, both expiring when API
    /// Gateway would have closed it.
    async fn record_connection(
        &self,
        mut listed: crate::item::Item,
        mut owner: crate::item::Item,
    ) -> StoreResult<()> {
        let expires = n((Utc::now() + CONNECTION_TTL).timestamp());
        listed.insert("ttl".into(), expires.clone());
        owner.insert("ttl".into(), expires);
        let ops = vec![
            self.put_op(listed, None, None)?,
            self.put_op(owner, None, None)?,
        ];
        if self.transact(ops).await? {
            Ok(())
        } else {
            Err(StoreError::Backend("connection write was cancelled".into()))
        }
    }

    /// Forgets a connection (the `$disconnect` route, or a 410 from API Gateway); the tenant it
    /// belonged to, if it was known.
    pub async fn remove_connection(&self, connection_id: &str) -> StoreResult<Option<TenantId>> {
        let Some(owner) = self.get_item(owner_key(connection_id)).await? else {
            return Ok(None);
        };
        let tenant = TenantId::parse(get_s(&owner, "tenant")?)
            .map_err(|_| crate::item::corrupt("tenant id"))?;
        let ops = vec![
            self.delete_op(owner_key(connection_id), None, None)?,
            self.delete_op(listing_key(&owner, &tenant, connection_id)?, None, None)?,
        ];
        self.transact(ops).await?;
        Ok(Some(tenant))
    }

    /// The tenant of a dashboard's connection and who opened it, for its presence frames;
    /// none for a visitor's (a visitor's frames are only pings).
    pub async fn connection_user(
        &self,
        connection_id: &str,
    ) -> StoreResult<Option<(TenantId, PresenceUser)>> {
        let Some(owner) = self
            .get_item(owner_key(connection_id))
            .await?
            .filter(|o| crate::item::opt_s(o, "conversation").is_none())
        else {
            return Ok(None);
        };
        let tenant = TenantId::parse(get_s(&owner, "tenant")?)
            .map_err(|_| crate::item::corrupt("tenant id"))?;
        let user = PresenceUser {
            id: get_s(&owner, "user_id")?.to_owned(),
            name: get_s(&owner, "user_name")?.to_owned(),
        };
        Ok(Some((tenant, user)))
    }

    /// The connection ids of a tenant's dashboards.
    pub async fn connections(&self, tenant: &TenantId) -> StoreResult<Vec<String>> {
        self.connections_where(tenant, |_| true).await
    }

    /// The connection ids of a tenant's dashboards opened with its key `key_id`.
    pub async fn key_connections(
        &self,
        tenant: &TenantId,
        key_id: &str,
    ) -> StoreResult<Vec<String>> {
        self.connections_where(tenant, |i| get_s(i, "key_id").is_ok_and(|k| k == key_id))
            .await
    }

    /// How many dashboards the tenant holds open, and how many of them its key `key_id`
    /// opened (one query).
    pub async fn connection_counts(
        &self,
        tenant: &TenantId,
        key_id: &str,
    ) -> StoreResult<(usize, usize)> {
        let now = Utc::now().timestamp();
        let live: Vec<_> = self
            .query_prefix(&tenant_connections(tenant), "")
            .await?
            .into_iter()
            .filter(|i| crate::item::get_n(i, "ttl").is_ok_and(|t| t > now))
            .collect();
        let of_key = live
            .iter()
            .filter(|i| get_s(i, "key_id").is_ok_and(|k| k == key_id))
            .count();
        Ok((live.len(), of_key))
    }

    /// Records a LiveChat visitor's socket on their conversation (the `$connect` route, once
    /// the visitor's token and page were checked).
    pub async fn add_visitor_connection(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        connection_id: &str,
    ) -> StoreResult<()> {
        let listed = key(visitor_connections_pk(tenant, conversation), connection_id);
        let mut owner = owner_key(connection_id);
        owner.extend(values([
            ("tenant", s(tenant.as_str())),
            ("conversation", s(conversation.to_string())),
        ]));
        self.record_connection(listed, owner).await
    }

    /// The connection ids of the visitor sockets open on a conversation.
    pub async fn visitor_connections(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
    ) -> StoreResult<Vec<String>> {
        self.live_connections(&visitor_connections_pk(tenant, conversation), |_| true)
            .await
    }

    async fn connections_where(
        &self,
        tenant: &TenantId,
        keep: impl Fn(&crate::item::Item) -> bool,
    ) -> StoreResult<Vec<String>> {
        self.live_connections(&tenant_connections(tenant), keep)
            .await
    }

    /// The unexpired connection ids listed under `pk` that `keep` keeps.
    async fn live_connections(
        &self,
        pk: &str,
        keep: impl Fn(&crate::item::Item) -> bool,
    ) -> StoreResult<Vec<String>> {
        let now = Utc::now().timestamp();
        Ok(self
            .query_prefix(pk, "")
            .await?
            .iter()
            // TTL deletion lags; an expired connection is gone already.
            .filter(|i| crate::item::get_n(i, "ttl").is_ok_and(|t| t > now))
            .filter(|i| keep(i))
            .filter_map(|i| get_s(i, "sk").ok().map(str::to_owned))
            .collect())
    }
}

/// [`Push`] to a tenant's dashboards through the API Gateway management API.
#[derive(Debug, Clone)]
pub struct ApiGatewayPush {
    backend: AwsBackend,
    client: aws_sdk_apigatewaymanagement::Client,
}

impl ApiGatewayPush {
    /// Pushes through the WebSocket API stage at `endpoint`
    /// (`https://<api id>.execute-api.<region>.amazonaws.com/<stage>`).
    pub fn new(config: &crate::SdkConfig, backend: AwsBackend, endpoint: &str) -> Self {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(config)
            .endpoint_url(endpoint)
            .build();
        ApiGatewayPush {
            backend,
            client: aws_sdk_apigatewaymanagement::Client::from_conf(conf),
        }
    }
}

#[async_trait]
impl Push for ApiGatewayPush {
    async fn push(&self, event: &PushEvent) -> StoreResult<()> {
        self.push_all(std::slice::from_ref(event)).await
    }

    /// The tenant's connections are read once for all the events (one flow's, one tenant's).
    async fn push_all(&self, events: &[PushEvent]) -> StoreResult<()> {
        self.push_except(events, None).await
    }

    /// Posts the frame to every socket recorded on the conversation, forgetting those gone.
    async fn push_visitor(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        frame: &VisitorFrame,
    ) -> StoreResult<bool> {
        let data = serde_json::to_vec(frame).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut reached = false;
        let mut failed = None;
        for connection in self
            .backend
            .visitor_connections(tenant, conversation)
            .await?
        {
            match self.post(&connection, &data).await {
                Ok(delivered) => reached |= delivered,
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        // A visitor reached is what matters (the reply is then delivered), even if another
        // of their sockets failed.
        match failed {
            Some(e) if !reached => Err(e),
            _ => Ok(reached),
        }
    }

    /// `DeleteConnection` on every connection recorded for the key; one already gone is
    /// forgotten like the rest.
    async fn disconnect_api_key(&self, tenant: &TenantId, key_id: &str) -> StoreResult<()> {
        let mut failed = None;
        for connection in self.backend.key_connections(tenant, key_id).await? {
            let closed = self
                .client
                .delete_connection()
                .connection_id(&connection)
                .send()
                .await;
            match closed {
                Ok(_) => debug!(connection, "closed the revoked key's connection"),
                Err(e) if error_code(&e) == Some("GoneException") => {}
                Err(e) => {
                    let error = sdk_error("DeleteConnection", e);
                    warn!(connection, error = %error, "could not close a revoked key's connection");
                    failed.get_or_insert(error);
                    continue;
                }
            }
            self.backend.remove_connection(&connection).await?;
        }
        failed.map_or(Ok(()), Err)
    }
}

impl ApiGatewayPush {
    /// Relays a dashboard's presence event to its tenant's other dashboards, and its typing
    /// to the conversation's visitor.
    pub async fn relay(&self, from_connection: &str, event: &PushEvent) -> StoreResult<()> {
        if let Some(frame) = VisitorFrame::typing(event) {
            if let Err(e) = self
                .push_visitor(&event.tenant_id, event.conversation_id, &frame)
                .await
            {
                warn!(error = %e, "typing not relayed to the visitor");
            }
        }
        self.push_except(std::slice::from_ref(event), Some(from_connection))
            .await
    }

    /// Posts `data` to one connection: true once it is sent, false (and the connection
    /// forgotten) when API Gateway says it is gone.
    async fn post(&self, connection: &str, data: &[u8]) -> StoreResult<bool> {
        let sent = self
            .client
            .post_to_connection()
            .connection_id(connection)
            .data(data.to_vec().into())
            .send()
            .await;
        match sent {
            Ok(_) => {
                debug!(connection, "pushed");
                Ok(true)
            }
            Err(e) if error_code(&e) == Some("GoneException") => {
                debug!(connection, "connection gone, forgetting it");
                self.backend.remove_connection(connection).await?;
                Ok(false)
            }
            Err(e) => {
                let error = sdk_error("PostToConnection", e);
                warn!(connection, error = %error, "push failed");
                Err(error)
            }
        }
    }

    /// Pushes one tenant's events to its dashboards but `except`, reading them once.
    async fn push_except(&self, events: &[PushEvent], except: Option<&str>) -> StoreResult<()> {
        let Some(tenant) = events.first().map(|e| e.tenant_id.clone()) else {
            return Ok(());
        };
        debug_assert!(events.iter().all(|e| e.tenant_id == tenant));
        let mut connections = self.backend.connections(&tenant).await?;
        connections.retain(|c| Some(c.as_str()) != except);
        let mut failed = None;
        for event in events {
            let frame =
                serde_json::to_vec(event).map_err(|e| StoreError::Backend(e.to_string()))?;
            let mut gone = Vec::new();
            for connection in &connections {
                match self.post(connection, &frame).await {
                    Ok(true) => {}
                    Ok(false) => gone.push(connection.clone()),
                    // One broken dashboard must not keep the others from hearing: try them
                    // all, then report the failure.
                    Err(error) => {
                        failed.get_or_insert(error);
                    }
                }
            }
            connections.retain(|c| !gone.contains(c));
        }
        failed.map_or(Ok(()), Err)
    }
}
