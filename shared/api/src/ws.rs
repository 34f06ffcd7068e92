//! The dashboard feed: `GET /v1/ws?token=<api key or session token>` and the in-process hub that implements
//! the [`Push`] port for `omni serve`.
//!
//! A dashboard mostly listens: besides control frames it sends only small presence frames
//! (`conversation.viewing`, `conversation.typing`), relayed to its tenant's other dashboards.
//! So the hub caps how many sockets a key, a tenant and the whole server hold ([`WsLimits`]), refuses frames and
//! messages larger than the protocol needs, pings every socket and closes one that stays
//! silent, so no client can hold the memory or file descriptors carriers' webhooks need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Extension;
use futures::{SinkExt, StreamExt};
use omni_core::domain::TenantId;
use omni_core::ports::{PresenceUser, Push, PushEvent, StoreError, StoreResult, VisitorFrame};
use omni_core::service::Caller;
use omni_core::team::Permission;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};
use uuid::Uuid;

use crate::dispatch::bearer;
use crate::error::ApiError;
use crate::routes::Routes;
use crate::{AppState, ClientAddr};

/// Frames a slow dashboard may have waiting before it is dropped (it resyncs on reconnect).
const CONNECTION_BUFFER: usize = 256;

/// The close code a dashboard gets when its key is revoked (1008: policy violation).
pub const REVOKED: u16 = 1008;

/// The close code of a dashboard that stayed silent past the idle timeout (1001: going away).
pub const IDLE: u16 = 1001;

type Sender = mpsc::Sender<Arc<str>>;

/// How many dashboards may connect and what they may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Sockets one API key may hold open.
    pub per_key: usize,
    /// Sockets one tenant may hold open, all keys together.
    pub per_tenant: usize,
    /// Sockets the whole process holds open.
    pub total: usize,
    /// Largest frame and largest message a dashboard may send (it sends only pings, pongs
    /// and close frames).
    pub max_message_bytes: usize,
    /// How often the server pings each dashboard.
    pub ping_every: Duration,
    /// A dashboard that sends nothing (not even a pong) this long is closed.
    pub idle_timeout: Duration,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            per_key: 50,
            per_tenant: 200,
            total: 2000,
            max_message_bytes: 4096,
            ping_every: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
        }
    }
}

/// One connected dashboard: its id in the hub, the key that opened it, its outbox.
struct Connection {
    id: u64,
    key_id: String,
    sender: Sender,
}

/// A LiveChat visitor socket: its id in the hub and its outbox.
type VisitorSocket = (u64, Sender);

/// Sockets one LiveChat conversation may hold open (a visitor's tabs).
pub const VISITOR_SOCKETS_PER_CONVERSATION: usize = 5;

/// Every connected dashboard, by tenant, and every LiveChat visitor socket, by conversation.
#[derive(Default)]
pub struct WsHub {
    connections: RwLock<HashMap<TenantId, Vec<Connection>>>,
    visitors: RwLock<HashMap<(TenantId, Uuid), Vec<VisitorSocket>>>,
    next_id: AtomicU64,
    limits: WsLimits,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Key,
    Tenant,
    Server,
}

/// A dashboard's place in the hub, from before the upgrade: dropped (the socket closed, or
/// the upgrade never happened), it frees the place.
struct Registration {
    hub: Arc<WsHub>,
    tenant: TenantId,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let id = self.id;
        self.hub.unregister_where(&self.tenant, |c| c.id == id);
    }
}

impl WsHub {
    /// A hub enforcing `limits`.
    pub fn new(limits: WsLimits) -> Self {
        WsHub {
            limits,
            ..WsHub::default()
        }
    }

    /// The hub's limits.
    pub fn limits(&self) -> &WsLimits {
        &self.limits
    }

    /// Takes a place for a dashboard of `tenant` opened with `key_id`, if every cap allows.
    fn register(
        self: &Arc<Self>,
        tenant: &TenantId,
        key_id: &str,
        sender: Sender,
    ) -> Result<Registration, Full> {
        let mut map = self.connections.write().unwrap_or_else(|p| p.into_inner());
        let total: usize = map.values().map(Vec::len).sum();
        if total >= self.limits.total {
            return Err(Full::Server);
        }
        let list = map.entry(tenant.clone()).or_default();
        if list.len() >= self.limits.per_tenant {
            return Err(Full::Tenant);
        }
        if list.iter().filter(|c| c.key_id == key_id).count() >= self.limits.per_key {
            return Err(Full::Key);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push(Connection {
            id,
            key_id: key_id.to_owned(),
            sender,
        });
        Ok(Registration {
            hub: self.clone(),
            tenant: tenant.clone(),
            id,
        })
    }

    /// Takes a place for a visitor socket on a conversation, if the caps allow.
    fn register_visitor(
        self: &Arc<Self>,
        tenant: &TenantId,
        conversation: Uuid,
        sender: Sender,
    ) -> Option<VisitorRegistration> {
        let total: usize = self
            .connections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum();
        let mut map = self.visitors.write().unwrap_or_else(|p| p.into_inner());
        let visitors: usize = map.values().map(Vec::len).sum();
        let list = map.entry((tenant.clone(), conversation)).or_default();
        if total + visitors >= self.limits.total || list.len() >= VISITOR_SOCKETS_PER_CONVERSATION {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push((id, sender));
        Some(VisitorRegistration {
            hub: self.clone(),
            key: (tenant.clone(), conversation),
            id,
        })
    }

    /// Relays a dashboard's presence to its tenant's other dashboards, and its typing to the
    /// conversation's visitor.
    fn relay(&self, from: &Registration, event: &PushEvent) {
        if let Some(frame) = VisitorFrame::typing(event) {
            self.send_visitor(&event.tenant_id, event.conversation_id, &frame);
        }
        let Ok(frame) = serde_json::to_string(event) else {
            return;
        };
        let frame: Arc<str> = frame.into();
        let map = self.connections.read().unwrap_or_else(|p| p.into_inner());
        for connection in map.get(&from.tenant).into_iter().flatten() {
            if connection.id != from.id {
                let _ = connection.sender.try_send(frame.clone());
            }
        }
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

impl WsHub {
    /// Sends a frame to a conversation's visitor sockets; whether one was open.
    fn send_visitor(&self, tenant: &TenantId, conversation: Uuid, frame: &VisitorFrame) -> bool {
        let Ok(text) = serde_json::to_string(frame) else {
            return false;
        };
        let text: Arc<str> = text.into();
        let map = self.visitors.read().unwrap_or_else(|p| p.into_inner());
        let mut reached = false;
        for (_, sender) in map
            .get(&(tenant.clone(), conversation))
            .into_iter()
            .flatten()
        {
            reached |= sender.try_send(text.clone()).is_ok();
        }
        reached
    }
}

/// A visitor socket's place in the hub; dropped, it frees it.
struct VisitorRegistration {
    hub: Arc<WsHub>,
    key: (TenantId, Uuid),
    id: u64,
}

impl Drop for VisitorRegistration {
    fn drop(&mut self) {
        let mut map = self.hub.visitors.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

#[async_trait]
impl Push for WsHub {
    async fn push_visitor(
        &self,
        tenant: &TenantId,
        conversation: Uuid,
        frame: &VisitorFrame,
    ) -> StoreResult<bool> {
        Ok(self.send_visitor(tenant, conversation, frame))
    }

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

/// What a dashboard may say: it is viewing or typing in a conversation.
#[derive(Deserialize)]
struct PresenceFrame {
    #[serde(rename = "type")]
    kind: String,
    conversation_id: uuid::Uuid,
}

/// The event a dashboard's presence frame becomes for the tenant's other dashboards, with
/// who it is and when; `None` for anything else (ignored).
pub fn presence(text: &str, tenant: &TenantId, user: &PresenceUser) -> Option<PushEvent> {
    let frame: PresenceFrame = serde_json::from_str(text).ok()?;
    if !PRESENCE_TYPES.contains(&frame.kind.as_str()) {
        return None;
    }
    Some(PushEvent {
        user: Some(user.clone()),
        ..PushEvent::about(&frame.kind, tenant, frame.conversation_id)
    })
}

/// Least time between two presence frames of one dashboard that are relayed.
const PRESENCE_EVERY: Duration = Duration::from_millis(250);

/// The presence frames a dashboard may send.
pub const PRESENCE_TYPES: [&str; 2] = ["conversation.viewing", "conversation.typing"];

/// Sends `first` and the frames already waiting behind it with one flush: a burst of events
/// (a group of messages applied together pushes two each) is one write to the socket, not one
/// per frame. The outbox holds at most [`CONNECTION_BUFFER`] frames, so the burst is bounded.
async fn send_waiting(
    sink: &mut futures::stream::SplitSink<WebSocket, WsMessage>,
    rx: &mut mpsc::Receiver<Arc<str>>,
    first: Arc<str>,
) -> Result<(), axum::Error> {
    let text = |frame: Arc<str>| WsMessage::Text(frame.as_ref().into());
    sink.feed(text(first)).await?;
    while let Ok(frame) = rx.try_recv() {
        sink.feed(text(frame)).await?;
    }
    sink.flush().await
}

/// The WebSocket routes: dashboards and LiveChat visitors (API Gateway's WebSocket API plays
/// this part on AWS).
pub fn routes(state: AppState, hub: Arc<WsHub>) -> Routes {
    let visitors = hub.clone();
    Routes::default()
        .route(
            "/v1/ws",
            &[Method::GET],
            get(move |state, query, headers, client, upgrade| {
                connect(state, query, headers, client, upgrade, hub.clone())
            })
            .with_state(state.clone()),
        )
        .route(
            "/livechat/v1/ws",
            &[Method::GET, Method::OPTIONS],
            get(move |state, query, headers, upgrade| {
                connect_visitor(state, query, headers, upgrade, visitors.clone())
            })
            .options(crate::livechat::preflight)
            .with_state(state),
        )
}

/// A LiveChat visitor's socket: `?token=` checked, the page's origin checked against the
/// widget's; replies that waited for it are delivered at once.
async fn connect_visitor(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    hub: Arc<WsHub>,
) -> Result<Response, ApiError> {
    let token = query.token.as_deref().unwrap_or_default();
    let visitor = crate::livechat::visitor(&state, &headers, token).await?;
    let upgrade =
        upgrade.map_err(|e| ApiError::new(e.status(), "invalid_request", e.body_text()))?;
    let conversation = visitor.conversation_id();
    let (tx, rx) = mpsc::channel(CONNECTION_BUFFER);
    let registration = hub
        .register_visitor(&visitor.claims.tenant, conversation, tx)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "this chat has as many sockets open as it may",
            )
        })?;
    let limits = *hub.limits();
    Ok(upgrade
        .max_frame_size(limits.max_message_bytes)
        .max_message_size(limits.max_message_bytes)
        .on_upgrade(move |socket| serve_visitor(socket, state, visitor, registration, rx, limits)))
}

async fn serve_visitor(
    socket: WebSocket,
    state: AppState,
    visitor: omni_core::service::Visitor,
    registration: VisitorRegistration,
    mut rx: mpsc::Receiver<Arc<str>>,
    limits: WsLimits,
) {
    let tenant = visitor.claims.tenant.clone();
    info!(tenant_id = %tenant, "visitor connected");
    // Registered before this: a reply sent from now on is pushed, one sent before is
    // delivered here.
    if let Err(e) = state.services.visitor_connected(&visitor).await {
        tracing::warn!(error = %e, "waiting replies not marked delivered");
    }
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_every, limits.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    loop {
        let silent_until = heard + limits.idle_timeout;
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(frame) => if send_waiting(&mut sink, &mut rx, frame).await.is_err() { break },
                None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => heard = Instant::now(),
            },
            _ = ping.tick() => if sink.send(WsMessage::Ping(Default::default())).await.is_err() { break },
            _ = tokio::time::sleep_until(silent_until) => {
                let _ = sink.send(WsMessage::Close(Some(CloseFrame { code: IDLE, reason: "no pong".into() }))).await;
                break;
            }
        }
    }
    drop(registration);
    info!(tenant_id = %tenant, "visitor disconnected");
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
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    hub: Arc<WsHub>,
) -> Result<Response, ApiError> {
    let token = query
        .token
        .as_deref()
        .or_else(|| bearer(&headers))
        .unwrap_or_default();
    // Who it is before what it sent: a caller without the right hears 401 or 403 first.
    let caller = state
        .services
        .authenticate_caller(token, client.map(|Extension(c)| c.0))
        .await?;
    caller.require(Permission::ConversationsRead)?;
    let upgrade =
        upgrade.map_err(|e| ApiError::new(e.status(), "invalid_request", e.body_text()))?;
    let owner = caller.connection_owner();
    let (tx, rx) = mpsc::channel(CONNECTION_BUFFER);
    // The place is taken before the upgrade, so the caps hold however many upgrades race.
    let registration = hub.register(&caller.tenant, &owner, tx).map_err(|full| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            match full {
                Full::Key => "this API key or user has as many dashboards open as it may",
                Full::Tenant => "this tenant has as many dashboards open as it may",
                Full::Server => "the server has as many dashboards open as it may",
            },
        )
    })?;
    let limits = *hub.limits();
    Ok(upgrade
        .max_frame_size(limits.max_message_bytes)
        .max_message_size(limits.max_message_bytes)
        .on_upgrade(move |socket| serve(socket, caller, registration, rx, limits)))
}

async fn serve(
    socket: WebSocket,
    caller: Caller,
    registration: Registration,
    mut rx: mpsc::Receiver<Arc<str>>,
    limits: WsLimits,
) {
    let tenant = caller.tenant.clone();
    let user = PresenceUser {
        id: caller.actor.id.clone(),
        name: caller.actor.name.clone(),
    };
    info!(tenant_id = %tenant, "dashboard connected");
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_every, limits.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let mut last_presence = heard - PRESENCE_EVERY;
    let close = |code: u16, reason: &'static str| {
        WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        let silent_until = heard + limits.idle_timeout;
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(frame) => if send_waiting(&mut sink, &mut rx, frame).await.is_err() { break },
                // Only the hub drops the sender: the key was revoked.
                None => {
                    let _ = sink.send(close(REVOKED, "API key revoked")).await;
                    break;
                }
            },
            incoming = stream.next() => match incoming {
                // Too large a frame or message ends here too, as an error.
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(WsMessage::Text(text))) => {
                    heard = Instant::now();
                    // A console says it at most every few seconds; more is dropped, so one
                    // dashboard cannot flood its tenant's others.
                    if heard.duration_since(last_presence) >= PRESENCE_EVERY {
                        if let Some(event) = presence(&text, &tenant, &user) {
                            last_presence = heard;
                            registration.hub.relay(&registration, &event);
                        }
                    }
                }
                Some(Ok(other)) => {
                    heard = Instant::now();
                    debug!(kind = ?std::mem::discriminant(&other), "client frame");
                }
            },
            _ = ping.tick() => if sink.send(WsMessage::Ping(Default::default())).await.is_err() { break },
            _ = tokio::time::sleep_until(silent_until) => {
                let _ = sink.send(close(IDLE, "no pong")).await;
                break;
            }
        }
    }
    drop(registration);
    info!(tenant_id = %tenant, "dashboard disconnected");
}
