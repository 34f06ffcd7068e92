//! The dashboard feed: `GET /v1/ws?token=<api key>` and the in-process hub that implements
//! the [`Push`] port for `omni serve`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::get;
use axum::Extension;
use futures::{SinkExt, StreamExt};
use omni_core::domain::TenantId;
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

/// Every connected dashboard, by tenant.
#[derive(Default)]
pub struct WsHub {
    connections: RwLock<HashMap<TenantId, Vec<(u64, Sender)>>>,
    next_id: AtomicU64,
}

impl WsHub {
    fn register(&self, tenant: &TenantId, sender: Sender) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.connections.write().unwrap_or_else(|p| p.into_inner());
        map.entry(tenant.clone()).or_default().push((id, sender));
        id
    }

    fn unregister(&self, tenant: &TenantId, id: u64) {
        let mut map = self.connections.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(tenant) {
            list.retain(|(i, _)| *i != id);
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
        for (_, sender) in map.get(&event.tenant_id).into_iter().flatten() {
            // A full or closed connection misses this frame rather than slowing every flow.
            let _ = sender.try_send(frame.clone());
        }
        Ok(())
    }
}

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
    let tenant = state
        .services
        .authenticate(token, client.map(|Extension(c)| c.0))
        .await?;
    Ok(upgrade.on_upgrade(move |socket| serve(socket, tenant, hub)))
}

async fn serve(socket: WebSocket, tenant: TenantId, hub: Arc<WsHub>) {
    let (tx, mut rx) = mpsc::channel(CONNECTION_BUFFER);
    let id = hub.register(&tenant, tx);
    info!(tenant_id = %tenant, "dashboard connected");
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(frame) => if sink.send(WsMessage::Text(frame.as_ref().into())).await.is_err() { break },
                None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(other)) => debug!(kind = ?std::mem::discriminant(&other), "ignoring client frame"),
            },
        }
    }
    hub.unregister(&tenant, id);
    info!(tenant_id = %tenant, "dashboard disconnected");
}
