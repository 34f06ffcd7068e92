//! LiveChat: a tenant's widget settings, visitor sessions, a visitor's messages in and the
//! dispatchers' replies out (pushed to the visitor's socket instead of a carrier).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, instrument};
use uuid::Uuid;

use super::{ServiceError, Services};
use crate::domain::{
    Address, Channel, ChatId, DeliveryStatus, Direction, InboundMessage, Media, ProviderKind,
    SendResult, StatusUpdate, TenantId, MAX_CONTACT_NAME_CHARS,
};
use crate::livechat::{
    random_secret, sniff_upload, LivechatSettings, VisitorClaims, MAX_UPLOAD_BYTES, TOKEN_TTL,
    UPLOAD_URL_TTL,
};
use crate::model::{Conversation, Message, StatusApplied};
use crate::ports::VisitorFrame;
use crate::providers::MediaContent;
use crate::team::{Actor, ActorType};

/// Longest visitor message.
pub const MAX_VISITOR_BODY_CHARS: usize = 4096;
/// Most uploads on one visitor message.
pub const MAX_VISITOR_MEDIA: usize = 10;
/// Most messages one visitor session may send in a clock minute.
pub const VISITOR_MESSAGES_PER_MINUTE: u32 = 20;
/// Most origins a widget may list.
const MAX_ORIGINS: usize = 20;
/// Longest title, greeting or offline message.
const MAX_TEXT_CHARS: usize = 1000;
/// Most messages a visitor listing scans for its cursor (a chat, not an archive).
const MAX_SCAN: usize = 2000;
/// How a visitor's upload is named in a stored message (resolved to a signed link when read).
pub const UPLOAD_SCHEME: &str = "livechat-upload:";

/// `PUT /v1/admin/tenants/{t}/livechat`: every field but the origins optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivechatUpdate {
    /// Origins whose pages may use the widget.
    pub allowed_origins: Vec<String>,
    /// The panel's title.
    #[serde(default)]
    pub title: Option<String>,
    /// Shown before the first message.
    #[serde(default)]
    pub greeting: Option<String>,
    /// Shown while the server cannot be reached.
    #[serde(default)]
    pub offline_message: Option<String>,
    /// Whether sessions must prove their user id.
    #[serde(default)]
    pub identity_required: bool,
}

/// `POST /livechat/v1/sessions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The widget's public key.
    pub widget_key: String,
    /// What the visitor says about themself.
    #[serde(default)]
    pub visitor: Option<VisitorProfile>,
    /// The embedding site's id of a signed-in user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Lower-case hex HMAC-SHA256 of `user_id` under the identity secret.
    #[serde(default)]
    pub user_hash: Option<String>,
}

/// A visitor's name, e-mail and phone, as they gave them (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorProfile {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone.
    #[serde(default)]
    pub phone: Option<String>,
}

/// A started (or refreshed) visitor session.
#[derive(Debug, Clone, Serialize)]
pub struct VisitorSession {
    /// The signed token (`Authorization: Bearer`, `?token=` on the socket).
    pub token: String,
    /// The visitor (what dispatchers reply `to`).
    pub visitor_id: ChatId,
    /// The visitor's conversation.
    pub conversation_id: Uuid,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// What the widget shows: the tenant's title, greeting and offline message.
    pub widget: WidgetText,
    /// Where the widget opens the visitor socket (appending `token=`), when it is not the
    /// server's own `/livechat/v1/ws`: on AWS, the WebSocket API's stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_url: Option<String>,
}

/// The tenant's words the widget shows.
#[derive(Debug, Clone, Serialize)]
pub struct WidgetText {
    /// The panel's title.
    pub title: Option<String>,
    /// Shown before the first message.
    pub greeting: Option<String>,
    /// Shown while the server cannot be reached.
    pub offline_message: Option<String>,
}

/// `POST /livechat/v1/messages`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorMessageRequest {
    /// Text.
    #[serde(default)]
    pub body: Option<String>,
    /// Upload ids (`POST /livechat/v1/media`).
    #[serde(default)]
    pub media: Vec<String>,
    /// Makes retries safe: the same id returns the same message.
    #[serde(default)]
    pub client_message_id: Option<String>,
}

/// A message as its visitor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorMessage {
    /// Omni's id.
    pub id: Uuid,
    /// `inbound` (the visitor's) or `outbound` (a reply).
    pub direction: Direction,
    /// Text.
    pub body: Option<String>,
    /// Attachments, with short-lived links.
    pub media: Vec<Media>,
    /// Where it is.
    pub status: DeliveryStatus,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Who wrote it: the dispatcher for replies, the visitor's name for theirs.
    pub sender_name: Option<String>,
}

/// One page of a visitor's conversation, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct VisitorPage {
    /// The messages.
    pub items: Vec<VisitorMessage>,
    /// Pass as `after` for the next page; none at the end.
    pub next_cursor: Option<String>,
}

/// A verified visitor: their tenant's widget and their token's claims.
#[derive(Debug, Clone)]
pub struct Visitor {
    /// The widget.
    pub settings: LivechatSettings,
    /// The token's claims.
    pub claims: VisitorClaims,
}

impl Visitor {
    /// The visitor's conversation.
    pub fn conversation_id(&self) -> Uuid {
        Conversation::id_for(&self.claims.tenant, Channel::Livechat, &self.address())
    }

    fn address(&self) -> Address {
        Address::Chat(self.claims.visitor.clone())
    }
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidRequest(message.into())
}

/// An origin as browsers send it: `scheme://host[:port]`, http(s), nothing else.
fn check_origin(origin: &str) -> Result<(), ServiceError> {
    let parsed = url::Url::parse(origin)
        .map_err(|_| invalid(format!("allowed_origins: {origin:?} is not an origin")))?;
    let canonical = parsed.origin().ascii_serialization();
    if !matches!(parsed.scheme(), "http" | "https") || canonical != origin {
        return Err(invalid(format!(
            "allowed_origins: {origin:?} is not an origin like https://example.org"
        )));
    }
    Ok(())
}

fn optional_text(field: &str, value: Option<String>) -> Result<Option<String>, ServiceError> {
    match value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    {
        Some(v) if v.chars().count() > MAX_TEXT_CHARS => Err(invalid(format!(
            "{field} is longer than {MAX_TEXT_CHARS} characters"
        ))),
        other => Ok(other),
    }
}

impl Services {
    /// Creates or replaces a tenant's widget; the key and the secrets of an existing widget
    /// stay. True when it was created (its identity secret is then shown, once).
    #[instrument(skip_all, fields(tenant_id = %tenant))]
    pub async fn put_livechat(
        &self,
        tenant: &TenantId,
        update: LivechatUpdate,
        actor: &Actor,
    ) -> Result<(LivechatSettings, bool), ServiceError> {
        if update.allowed_origins.len() > MAX_ORIGINS {
            return Err(invalid(format!(
                "allowed_origins: at most {MAX_ORIGINS} origins"
            )));
        }
        for origin in &update.allowed_origins {
            check_origin(origin)?;
        }
        let title = optional_text("title", update.title)?;
        let greeting = optional_text("greeting", update.greeting)?;
        let offline_message = optional_text("offline_message", update.offline_message)?;
        self.tenants
            .get_tenant(tenant)
            .await?
            .ok_or(ServiceError::NotFound("tenant"))?;
        let now = Utc::now();
        let existing = self.tenants.get_livechat(tenant).await?;
        let created = existing.is_none();
        let settings = match existing {
            Some(old) => LivechatSettings {
                allowed_origins: update.allowed_origins,
                title,
                greeting,
                offline_message,
                identity_required: update.identity_required,
                updated_at: now,
                ..old
            },
            None => LivechatSettings {
                tenant_id: tenant.clone(),
                widget_key: ChatId::from_bytes(ChatId::WIDGET, rand::random()),
                allowed_origins: update.allowed_origins,
                title,
                greeting,
                offline_message,
                identity_required: update.identity_required,
                identity_secret: random_secret(),
                signing_key: random_secret(),
                created_at: now,
                updated_at: now,
            },
        };
        self.tenants.put_livechat(&settings).await?;
        info!(
            created,
            origins = settings.allowed_origins.len(),
            "livechat settings saved"
        );
        self.audit(
            tenant,
            actor,
            "livechat.put",
            Some("livechat".into()),
            json!({
                "allowed_origins": settings.allowed_origins,
                "identity_required": settings.identity_required,
                "created": created,
            }),
        )
        .await;
        Ok((settings, created))
    }

    /// A tenant's widget.
    pub async fn livechat(&self, tenant: &TenantId) -> Result<LivechatSettings, ServiceError> {
        self.tenants
            .get_livechat(tenant)
            .await?
            .ok_or(ServiceError::NotFound("livechat settings"))
    }

    /// Replaces a widget's identity secret (the old one stops verifying at once).
    #[instrument(skip_all, fields(tenant_id = %tenant))]
    pub async fn rotate_livechat_secret(
        &self,
        tenant: &TenantId,
        actor: &Actor,
    ) -> Result<LivechatSettings, ServiceError> {
        let settings = LivechatSettings {
            identity_secret: random_secret(),
            updated_at: Utc::now(),
            ..self.livechat(tenant).await?
        };
        self.tenants.put_livechat(&settings).await?;
        info!("livechat identity secret rotated");
        self.audit(
            tenant,
            actor,
            "livechat.rotate_secret",
            Some("livechat".into()),
            json!({}),
        )
        .await;
        Ok(settings)
    }

    /// The widget a visitor's page names; an unknown (or malformed) key is not found.
    pub async fn widget(&self, widget_key: &str) -> Result<LivechatSettings, ServiceError> {
        let key = ChatId::parse(widget_key)
            .ok()
            .filter(|k| !k.is_visitor())
            .ok_or(ServiceError::NotFound("widget"))?;
        self.tenants
            .livechat_by_widget_key(&key)
            .await?
            .ok_or(ServiceError::NotFound("widget"))
    }

    /// Starts a visitor session on `settings`' widget: a new anonymous visitor, or the
    /// visitor of a verified `user_id` (the same in every browser).
    pub async fn start_visitor_session(
        &self,
        settings: &LivechatSettings,
        request: SessionRequest,
    ) -> Result<VisitorSession, ServiceError> {
        let visitor = match (&request.user_id, &request.user_hash) {
            (Some(user_id), Some(hash)) => {
                if user_id.is_empty() || user_id.len() > 256 {
                    return Err(invalid("user_id must be 1 to 256 characters"));
                }
                if !settings.identity_matches(user_id, hash) {
                    return Err(ServiceError::IdentityInvalid);
                }
                settings.visitor_for_user(user_id)
            }
            (_, Some(_)) => return Err(invalid("user_hash needs user_id")),
            _ if settings.identity_required => return Err(ServiceError::IdentityInvalid),
            _ => ChatId::from_bytes(ChatId::VISITOR, rand::random()),
        };
        let profile = request.visitor.unwrap_or_default();
        let name = [profile.name, profile.email, profile.phone]
            .into_iter()
            .flatten()
            .map(|v| {
                v.trim()
                    .chars()
                    .take(MAX_CONTACT_NAME_CHARS)
                    .collect::<String>()
            })
            .find(|v| !v.is_empty());
        let claims = VisitorClaims {
            tenant: settings.tenant_id.clone(),
            visitor,
            session: Uuid::now_v7(),
            name,
            expires: (Utc::now() + TOKEN_TTL).timestamp(),
        };
        Ok(self.session_of(settings, claims))
    }

    /// A new token for a visitor's session, 24 hours from now.
    pub fn refresh_visitor_session(&self, visitor: &Visitor) -> VisitorSession {
        let claims = VisitorClaims {
            expires: (Utc::now() + TOKEN_TTL).timestamp(),
            ..visitor.claims.clone()
        };
        self.session_of(&visitor.settings, claims)
    }

    fn session_of(&self, settings: &LivechatSettings, claims: VisitorClaims) -> VisitorSession {
        let conversation_id = Conversation::id_for(
            &claims.tenant,
            Channel::Livechat,
            &Address::Chat(claims.visitor.clone()),
        );
        VisitorSession {
            token: settings.sign_token(&claims),
            visitor_id: claims.visitor.clone(),
            conversation_id,
            expires_at: claims.expires_at(),
            widget: WidgetText {
                title: settings.title.clone(),
                greeting: settings.greeting.clone(),
                offline_message: settings.offline_message.clone(),
            },
            socket_url: self.settings.livechat_socket_url.clone(),
        }
    }

    /// The widget whose key must have signed a visitor token (read from the token unverified:
    /// the caller checks the page's origin against it, then [`Self::verify_visitor`]).
    pub async fn token_widget(&self, token: &str) -> Result<LivechatSettings, ServiceError> {
        let peeked = VisitorClaims::peek(token).ok_or(ServiceError::Unauthorized)?;
        self.tenants
            .get_livechat(&peeked.tenant)
            .await?
            .ok_or(ServiceError::Unauthorized)
    }

    /// The visitor of a token the widget signed that has not expired; anything else is
    /// [`ServiceError::Unauthorized`].
    pub fn verify_visitor(
        &self,
        settings: LivechatSettings,
        token: &str,
    ) -> Result<Visitor, ServiceError> {
        let claims = settings
            .verify_token(token, Utc::now())
            .ok_or(ServiceError::Unauthorized)?;
        Ok(Visitor { settings, claims })
    }

    /// A visitor's message: its raw request kept, applied to the visitor's conversation and
    /// pushed to the tenant's dashboards. With a `client_message_id` seen before, the first
    /// message, stored once.
    #[instrument(skip_all, fields(tenant_id = %visitor.claims.tenant))]
    pub async fn post_visitor_message(
        &self,
        visitor: &Visitor,
        request: VisitorMessageRequest,
    ) -> Result<VisitorMessage, ServiceError> {
        let tenant = &visitor.claims.tenant;
        let body = request.body.filter(|b| !b.trim().is_empty());
        if body.is_none() && request.media.is_empty() {
            return Err(invalid("a message needs a body or media"));
        }
        if body
            .as_ref()
            .is_some_and(|b| b.chars().count() > MAX_VISITOR_BODY_CHARS)
        {
            return Err(invalid(format!(
                "body is longer than {MAX_VISITOR_BODY_CHARS} characters"
            )));
        }
        if request.media.len() > MAX_VISITOR_MEDIA {
            return Err(invalid(format!("at most {MAX_VISITOR_MEDIA} media")));
        }
        if let Some(id) = &request.client_message_id {
            if id.is_empty() || id.len() > 100 {
                return Err(invalid("client_message_id must be 1 to 100 characters"));
            }
        }
        // Counted before anything is stored: a refused message leaves nothing behind.
        self.count_visitor_message(visitor).await?;
        let media = self.visitor_media(tenant, &request.media).await?;
        // A client id makes the message id too, so a retry finds the first one in one read.
        let (id, carrier_id) = match &request.client_message_id {
            Some(client) => {
                let carrier_id = format!("{}:{client}", visitor.claims.visitor);
                let id = Uuid::new_v5(
                    &visitor.conversation_id(),
                    format!("client\n{client}").as_bytes(),
                );
                (id, carrier_id)
            }
            None => {
                let id = Uuid::now_v7();
                (id, format!("{}:{id}", visitor.claims.visitor))
            }
        };
        let now = Utc::now();
        let inbound = InboundMessage {
            id,
            provider: ProviderKind::Livechat,
            provider_message_id: carrier_id.clone(),
            channel: Channel::Livechat,
            from: visitor.address(),
            to: Address::Chat(visitor.settings.widget_key.clone()),
            body,
            media,
            profile_name: visitor.claims.name.clone(),
            received_at: now,
            auto_submitted: false,
        };
        let raw = serde_json::to_vec(&inbound).unwrap_or_default();
        self.messages
            .save_raw_webhook(
                tenant,
                ProviderKind::Livechat,
                &carrier_id,
                &raw,
                now + self.settings.raw_retention,
            )
            .await?;
        let message = match self.messages.apply_inbound(tenant, &inbound).await? {
            Some((message, conversation)) => {
                self.inbound_applied(tenant, &message, &conversation).await;
                message
            }
            None => self
                .messages
                .get_message(tenant, id)
                .await?
                .ok_or_else(|| ServiceError::Conflict("client_message_id was used".into()))?,
        };
        self.visitor_view(&visitor.settings, &message, visitor.claims.name.as_deref())
            .await
    }

    /// Counts a message against its session's minute in the store, so the limit holds across
    /// processes and Lambda instances: past [`VISITOR_MESSAGES_PER_MINUTE`] within a minute of
    /// the window's first message it is [`ServiceError::RateLimited`] until that minute ends.
    async fn count_visitor_message(&self, visitor: &Visitor) -> Result<(), ServiceError> {
        let now = Utc::now();
        let window = TimeDelta::minutes(1);
        let (count, since) = self
            .messages
            .count_visitor_message(&visitor.claims.tenant, visitor.claims.session, now, window)
            .await?;
        if count > VISITOR_MESSAGES_PER_MINUTE {
            let wait = (since + window - now).num_milliseconds().max(0);
            // Whole seconds, rounded up: a client waiting that long finds a new window.
            return Err(ServiceError::RateLimited(
                u64::try_from(wait).unwrap_or(0).div_ceil(1000),
            ));
        }
        Ok(())
    }

    /// Checks that every upload id is one of the tenant's uploads; their stored form.
    async fn visitor_media(
        &self,
        tenant: &TenantId,
        ids: &[String],
    ) -> Result<Vec<Media>, ServiceError> {
        let mut media = Vec::with_capacity(ids.len());
        for raw in ids {
            let id = Uuid::parse_str(raw)
                .map_err(|_| invalid(format!("media: {raw:?} is not an upload id")))?;
            let uploads = self
                .uploads
                .as_ref()
                .ok_or_else(|| invalid("this server takes no uploads"))?;
            let content_type = uploads
                .upload_type(tenant, id)
                .await?
                .ok_or_else(|| invalid(format!("media: no upload {id}")))?;
            media.push(Media {
                url: format!("{UPLOAD_SCHEME}{id}"),
                content_type: Some(content_type),
            });
        }
        Ok(media)
    }

    /// A visitor's conversation, oldest first, after the message `after` names.
    pub async fn visitor_messages(
        &self,
        visitor: &Visitor,
        after: Option<&str>,
        limit: usize,
    ) -> Result<VisitorPage, ServiceError> {
        let after = after
            .map(|a| Uuid::parse_str(a).map_err(|_| invalid("invalid cursor")))
            .transpose()?;
        let tenant = &visitor.claims.tenant;
        let conversation = visitor.conversation_id();
        // Newest first from the store, down to the cursor.
        let mut newest_first = Vec::new();
        let mut cursor: Option<String> = None;
        'pages: loop {
            let page = self
                .messages
                .list_messages(tenant, conversation, 100, cursor.as_deref())
                .await?;
            for m in page.items {
                if Some(m.id) == after || newest_first.len() >= MAX_SCAN {
                    break 'pages;
                }
                newest_first.push(m);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let more = newest_first.len() > limit;
        let mut items = Vec::with_capacity(limit.min(newest_first.len()));
        for m in newest_first.iter().rev().take(limit) {
            items.push(
                self.visitor_view(&visitor.settings, m, visitor.claims.name.as_deref())
                    .await?,
            );
        }
        let next_cursor = more
            .then(|| items.last().map(|m| m.id.to_string()))
            .flatten();
        Ok(VisitorPage { items, next_cursor })
    }

    /// A message as its visitor sees it: uploads as short-lived signed links.
    pub async fn visitor_view(
        &self,
        settings: &LivechatSettings,
        message: &Message,
        visitor_name: Option<&str>,
    ) -> Result<VisitorMessage, ServiceError> {
        let mut media = Vec::with_capacity(message.media.len());
        for m in &message.media {
            let url = match m.url.strip_prefix(UPLOAD_SCHEME) {
                Some(id) => {
                    let id = Uuid::parse_str(id).map_err(|_| invalid("stored upload id"))?;
                    self.upload_url(settings, id).await?
                }
                None => m.url.clone(),
            };
            media.push(Media {
                url,
                content_type: m.content_type.clone(),
            });
        }
        Ok(VisitorMessage {
            id: message.id,
            direction: message.direction,
            body: message.body.clone(),
            media,
            status: message.status,
            created_at: message.created_at,
            sender_name: match message.direction {
                // A dispatcher's name; never an API key's (its id is the tenant's business).
                Direction::Outbound => message
                    .sent_by
                    .as_ref()
                    .filter(|a| a.kind == ActorType::User)
                    .map(|a| a.name.clone()),
                Direction::Inbound => visitor_name.map(str::to_owned),
            },
        })
    }

    /// Marks the replies up to `up_to` (a reply of the visitor's conversation) read; the
    /// dashboards are pushed each change.
    pub async fn visitor_read(&self, visitor: &Visitor, up_to: Uuid) -> Result<(), ServiceError> {
        let tenant = &visitor.claims.tenant;
        let last = self
            .messages
            .get_message(tenant, up_to)
            .await?
            .filter(|m| m.conversation_id == visitor.conversation_id())
            .ok_or(ServiceError::NotFound("message"))?;
        self.advance_replies(visitor, DeliveryStatus::Read, Some(&last))
            .await
    }

    /// A visitor's socket opened: replies that only reached `sent` (no socket was open) are
    /// delivered now (the socket is then sent the conversation by the widget's own fetch).
    pub async fn visitor_connected(&self, visitor: &Visitor) -> Result<(), ServiceError> {
        self.advance_replies(visitor, DeliveryStatus::Delivered, None)
            .await
    }

    /// Moves the conversation's replies (up to `last`, when given) to `status`.
    async fn advance_replies(
        &self,
        visitor: &Visitor,
        status: DeliveryStatus,
        last: Option<&Message>,
    ) -> Result<(), ServiceError> {
        let tenant = &visitor.claims.tenant;
        let page = self
            .messages
            .list_messages(tenant, visitor.conversation_id(), 100, None)
            .await?;
        for m in page.items {
            let reached = last.is_none_or(|l| (m.created_at, m.id) <= (l.created_at, l.id));
            let Some(carrier_id) = m.provider_message_id.clone() else {
                continue;
            };
            if m.direction != Direction::Outbound || !reached || m.status.merge(status) == m.status
            {
                continue;
            }
            let update = StatusUpdate {
                provider: ProviderKind::Livechat,
                provider_message_id: carrier_id,
                status,
                raw_status: status.as_str().into(),
                error_code: None,
                error_message: None,
                tenant_number: None,
                at: Utc::now(),
            };
            if let StatusApplied::Changed(changed) =
                self.messages.apply_status(tenant, &update).await?
            {
                self.push_message(tenant, "message.status", &changed).await;
                self.push_to_visitor(&visitor.settings, "message.status", &changed)
                    .await;
            }
        }
        Ok(())
    }

    /// Sends a frame about `message` to its visitor's open sockets; whether one was open.
    pub(super) async fn push_to_visitor(
        &self,
        settings: &LivechatSettings,
        kind: &str,
        message: &Message,
    ) -> bool {
        let view = match self.visitor_view(settings, message, None).await {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!(error = %e, "visitor frame not built");
                return false;
            }
        };
        let frame = VisitorFrame {
            kind: kind.into(),
            conversation_id: message.conversation_id,
            message: Some(view),
            at: Utc::now(),
        };
        match self
            .push
            .push_visitor(&settings.tenant_id, message.conversation_id, &frame)
            .await
        {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e, "visitor push failed");
                false
            }
        }
    }

    /// The reply's delivery: pushed to the visitor's open sockets it is `delivered`, with
    /// none open it stays `sent` until the visitor comes back.
    pub(super) async fn deliver_to_visitor(
        &self,
        tenant: &TenantId,
        message: &Message,
    ) -> Result<SendResult, ServiceError> {
        let settings = self.livechat(tenant).await?;
        let pushed = self
            .push_to_visitor(&settings, "message.created", message)
            .await;
        Ok(SendResult {
            provider: ProviderKind::Livechat,
            provider_message_id: message.id.to_string(),
            status: if pushed {
                DeliveryStatus::Delivered
            } else {
                DeliveryStatus::Sent
            },
            raw_status: if pushed { "pushed" } else { "no open socket" }.into(),
        })
    }

    /// Where a reply to a visitor goes from: the tenant's widget; the visitor must have a
    /// conversation with it.
    pub(super) async fn livechat_sender(
        &self,
        tenant: &TenantId,
        to: &Address,
    ) -> Result<Address, ServiceError> {
        let settings = self.tenants.get_livechat(tenant).await?.ok_or_else(|| {
            ServiceError::ChannelNotConfigured("this tenant has no LiveChat widget".into())
        })?;
        let conversation = Conversation::id_for(tenant, Channel::Livechat, to);
        self.messages
            .get_conversation(tenant, conversation)
            .await?
            .ok_or(ServiceError::NotFound("visitor"))?;
        Ok(Address::Chat(settings.widget_key))
    }
}

/// A stored upload, as `POST /livechat/v1/media` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    /// What a message's `media` names.
    pub id: Uuid,
    /// A short-lived signed link to it.
    pub url: String,
    /// Its type, read from its bytes.
    pub content_type: String,
    /// Bytes.
    pub size: usize,
}

impl Services {
    /// Keeps a visitor's upload: at most [`MAX_UPLOAD_BYTES`], of a type read from its bytes.
    #[instrument(skip_all, fields(tenant_id = %visitor.claims.tenant))]
    pub async fn upload(&self, visitor: &Visitor, bytes: Vec<u8>) -> Result<Upload, ServiceError> {
        if bytes.len() > MAX_UPLOAD_BYTES {
            return Err(ServiceError::PayloadTooLarge(format!(
                "uploads are at most {} MiB",
                MAX_UPLOAD_BYTES / (1024 * 1024)
            )));
        }
        let content_type = sniff_upload(&bytes).ok_or_else(|| {
            ServiceError::UnsupportedMediaType("uploads must be JPEG, PNG, GIF, WebP or PDF".into())
        })?;
        let uploads = self
            .uploads
            .as_ref()
            .ok_or_else(|| invalid("this server takes no uploads"))?;
        let id = Uuid::new_v4();
        let size = bytes.len();
        let content = MediaContent {
            content_type: Some(content_type.into()),
            bytes,
        };
        uploads
            .put_upload(&visitor.claims.tenant, id, &content)
            .await?;
        info!(size, content_type, "livechat upload stored");
        Ok(Upload {
            id,
            url: self.upload_url(&visitor.settings, id).await?,
            content_type: content_type.into(),
            size,
        })
    }

    /// A short-lived link to an upload: the store's own signed URL (S3), or this server's
    /// `/livechat/v1/media/{id}` signed with the widget's key.
    pub async fn upload_url(
        &self,
        settings: &LivechatSettings,
        id: Uuid,
    ) -> Result<String, ServiceError> {
        let ttl = UPLOAD_URL_TTL.to_std().unwrap_or_default();
        if let Some(uploads) = &self.uploads {
            if let Some(url) = uploads.signed_url(&settings.tenant_id, id, ttl).await? {
                return Ok(url);
            }
        }
        let expires = (Utc::now() + UPLOAD_URL_TTL).timestamp();
        Ok(format!(
            "{}/livechat/v1/media/{id}?tenant={}&expires={expires}&signature={}",
            self.settings.public_url.trim_end_matches('/'),
            settings.tenant_id,
            settings.upload_signature(id, expires)
        ))
    }

    /// An upload through a link [`Self::upload_url`] signed.
    pub async fn signed_upload(
        &self,
        tenant: &str,
        id: Uuid,
        expires: i64,
        signature: &str,
    ) -> Result<MediaContent, ServiceError> {
        let tenant = TenantId::parse(tenant).map_err(|_| ServiceError::NotFound("upload"))?;
        let settings = self
            .livechat(&tenant)
            .await
            .map_err(|_| ServiceError::NotFound("upload"))?;
        if !settings.upload_signature_valid(id, expires, signature, Utc::now()) {
            return Err(ServiceError::NotFound("upload"));
        }
        self.stored_upload(&tenant, id).await
    }

    /// An upload of the tenant's (a dashboard reading a visitor's message).
    pub(super) async fn stored_upload(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<MediaContent, ServiceError> {
        let uploads = self
            .uploads
            .as_ref()
            .ok_or(ServiceError::NotFound("upload"))?;
        uploads
            .get_upload(tenant, id)
            .await?
            .ok_or(ServiceError::NotFound("upload"))
    }
}
