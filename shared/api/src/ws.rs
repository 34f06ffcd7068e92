//! The dashboard feed: `GET /v1/ws?token=<api key>` and the in-process hub that implements
//! the [`Push`] port for `omni serve`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::get;
use axum::Extension;
use futures::{SinkExt, StreamExt};
use omni_core::domain::TenantId;
use omni_core::model::ApiKeyOwner;
use omni_core::ports::{Push, PushEvent, StoreError, StoreResult};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::dispatch::bearer;
use crate::error::ApiError;
use crate::routes::Routes;
use crate::{AppState, ClientAddr};

/// Frames a slow dashboard may have waiting before it is dropped (it resyncs on reconnect).
const CONNECTION_BUFFER: usize = 256;

type Sender = mpsc::Sender<Arc<str>>;

/// One connected dashboard: its id in the hub, the key that opened it, its outbox.
struct Connection {
    id: u64,
    key_id: String,
    sender: Sender,
}

/// Every connected dashboard, by tenant.
#[derive(Default)]
pub struct WsHub {
    connections: RwLock<HashMap<TenantId, Vec<Connection>>>,
    next_id: AtomicU64,
}

impl WsHub {
    fn register(&self, tenant: &TenantId, key_id: &str, sender: Sender) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.connections.write().unwrap_or_else(|p| p.into_inner());
        map.entry(tenant.clone()).or_default().push(Connection {
            id,
            key_id: key_id.to_owned(),
            sender,
        });
        id
    }

    /// Forgets the connections `drop` picks; dropping their senders ends their sockets.
    fn unregister_where(&self, tenant: &TenantId, drop: impl Fn(&Connection) -> bool) {
        let mut map = self.connections.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(tenant) {
            list.retain(|c| !drop(c));
            if list.is_empty() {
                map.remove(tenant);
            }
        }
    }
}

#[async_trait]
impl Push for WsHub {
    async fn push(&self, event: &PushEvent) -> StoreResult<()> {
        let frame: Arc<str> = serde_json::to_string(event)
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .into();
        let map = self.connections.read().unwrap_or_else(|p| p.into_inner());
        for connection in map.get(&event.tenant_id).into_iter().flatten() {
            // A full or closed connection misses this frame rather than slowing every flow.
            let _ = connection.sender.try_send(frame.clone());
        }
        Ok(())
    }

    /// Closes the key's dashboards: their outboxes end, and each socket is closed with
    /// [`REVOKED`].
    async fn disconnect_api_key(&self, tenant: &TenantId, key_id: &str) -> StoreResult<()> {
        self.unregister_where(tenant, |c| c.key_id == key_id);
        Ok(())
    }
}

/// The close code a dashboard gets when its key is revoked (1008: policy violation).
pub const REVOKED: u16 = 1008;

/// The WebSocket route (API Gateway's WebSocket API plays this part on AWS).
pub fn routes(state: AppState, hub: Arc<WsHub>) -> Routes {
    Routes::default().route(
        "/v1/ws",
        &[Method::GET],
        get(move |state, query, headers, client, upgrade| {
            connect(state, query, headers, client, upgrade, hub.clone())
        })
        .with_state(state),
    )
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn connect(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    upgrade: WebSocketUpgrade,
    hub: Arc<WsHub>,
) -> Result<Response, ApiError> {
    let token = query
        .token
        .as_deref()
        .or_else(|| bearer(&headers))
        .unwrap_or_default();
    let owner = state
        .services
        .authenticate_key(token, client.map(|Extension(c)| c.0))
        .await?;
    Ok(upgrade.on_upgrade(move |socket| serve(socket, owner, hub)))
}

async fn serve(socket: WebSocket, owner: ApiKeyOwner, hub: Arc<WsHub>) {
    let (tx, mut rx) = mpsc::channel(CONNECTION_BUFFER);
    let tenant = owner.tenant;
    let id = hub.register(&tenant, &owner.key_id, tx);
    info!(tenant_id = %tenant, "dashboard connected");
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(frame) => if sink.send(WsMessage::Text(frame.as_ref().into())).await.is_err() { break },
                // Only the hub drops the sender: the key was revoked.
                None => {
                    let close = CloseFrame { code: REVOKED, reason: "API key revoked".into() };
                    let _ = sink.send(WsMessage::Close(Some(close))).await;
                    break;
                }
            },
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(other)) => debug!(kind = ?std::mem::discriminant(&other), "ignoring client frame"),
            },
        }
    }
    hub.unregister_where(&tenant, |c| c.id == id);
    info!(tenant_id = %tenant, "dashboard disconnected");
}
