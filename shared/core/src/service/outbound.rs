//! Accepting a message to send: validate, resolve the sender, persist as queued (the
//! outbox), hand to the delivery worker.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tracing::{instrument, warn};
use uuid::Uuid;

use super::{ServiceError, Services};
use crate::domain::{
    Address, Channel, ChatId, EmailAddress, Media, Priority, ProviderKind, TenantId, E164,
};
use crate::model::{FallbackStep, Message, NumberRoute};
use crate::ports::Job;
use crate::team::Actor;

/// Longest text accepted (Twilio's limit; longer texts are refused, not truncated).
const MAX_BODY_CHARS: usize = 1600;
/// Most attachments on one message.
const MAX_MEDIA: usize = 10;
/// Longest subject line: RFC 5322's limit on a header line.
const MAX_SUBJECT_CHARS: usize = 998;

/// `POST /v1/messages` as the client sent it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Channel to send on.
    pub channel: Channel,
    /// Recipient in any common format; read with the tenant's region.
    pub to: String,
    /// Sender: one of the tenant's numbers; chosen by channel when absent.
    #[serde(default)]
    pub from: Option<String>,
    /// Text.
    #[serde(default)]
    pub body: Option<String>,
    /// Media URLs (https).
    #[serde(default)]
    pub media_urls: Vec<String>,
    /// One of the tenant's templates, `{"name", "language", "variables"}`, rendered into the
    /// message; or Meta's template object given inline (whatsapp channel only). Either
    /// instead of a body and media.
    #[serde(default)]
    pub template: Option<serde_json::Value>,
    /// The subject line (email channel only); `Message from <tenant name>` when absent.
    #[serde(default)]
    pub subject: Option<String>,
    /// Makes retries of this request safe: the same key returns the first message.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// `high`, `normal` (the default) or `bulk`: a high message never waits behind bulk ones.
    #[serde(default)]
    pub priority: Priority,
    /// When to send it (RFC 3339, up to 35 days ahead): `scheduled` until then.
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
    /// The channels to try next, in order, when this one fails for good or has not
    /// delivered in time; the tenant's default for the channel when absent.
    #[serde(default)]
    pub fallback: Option<Vec<FallbackStep>>,
}

impl Services {
    /// Validates and queues an outbound message sent by `sent_by`; returns it and whether it
    /// is new.
    #[instrument(skip_all, fields(tenant_id = %tenant, channel = %request.channel))]
    pub async fn send_message(
        &self,
        tenant: &TenantId,
        request: SendRequest,
        sent_by: Actor,
    ) -> Result<(Message, bool), ServiceError> {
        let (tenant_record, numbers) = self
            .tenants
            .tenant_with_numbers(tenant)
            .await?
            .ok_or(ServiceError::NotFound("tenant"))?;
        let region = tenant_record.default_region;
        let to = recipient(request.channel, &request.to, region)?;
        let now = Utc::now();
        let send_at = super::schedule::schedule(request.send_at, now)?;
        let mut body = request.body.filter(|b| !b.trim().is_empty());
        let mut given_subject = request.subject;
        let template = match request.template {
            Some(template) => {
                // A template message is made of the template only: no text or attachment
                // of the sender's goes with it.
                if body.is_some() || !request.media_urls.is_empty() {
                    return Err(ServiceError::InvalidRequest(
                        "template: a template message carries no body or media_urls".into(),
                    ));
                }
                let prepared = self
                    .prepare_template(tenant, request.channel, template)
                    .await?;
                body = prepared.body;
                given_subject = given_subject.or(prepared.subject);
                Some(prepared.sent)
            }
            None if body.is_none() && request.media_urls.is_empty() => {
                return Err(ServiceError::InvalidRequest(
                    "a message needs a body or media_urls".into(),
                ));
            }
            None => None,
        };
        let subject = subject(
            request.channel,
            given_subject.as_deref(),
            &tenant_record.name,
        )?;
        if body
            .as_ref()
            .is_some_and(|b| b.chars().count() > MAX_BODY_CHARS)
        {
            return Err(ServiceError::InvalidRequest(format!(
                "body is longer than {MAX_BODY_CHARS} characters"
            )));
        }
        if request.media_urls.len() > MAX_MEDIA {
            return Err(ServiceError::InvalidRequest(format!(
                "at most {MAX_MEDIA} media_urls"
            )));
        }
        let media = request
            .media_urls
            .iter()
            .map(|u| match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "https" | "http") => Ok(Media {
                    url: u.clone(),
                    content_type: None,
                }),
                _ => Err(ServiceError::InvalidRequest(
                    "media_urls must be http(s) URLs".into(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(key) = &request.idempotency_key {
            if key.is_empty() || key.len() > 255 {
                return Err(ServiceError::InvalidRequest(
                    "idempotency_key must be 1 to 255 characters".into(),
                ));
            }
        }
        // An SMS with attachments is an MMS.
        let channel = if request.channel == Channel::Sms && !media.is_empty() {
            Channel::Mms
        } else {
            request.channel
        };

        let fallback = self.fallback_for(channel, request.fallback, &tenant_record, &numbers)?;
        let from = if channel == Channel::Livechat {
            // A reply to a visitor goes from the tenant's widget, never through a carrier.
            let widget = self.livechat_sender(tenant, &to).await?;
            if request
                .from
                .as_deref()
                .is_some_and(|f| f != widget.as_str())
            {
                return Err(ServiceError::InvalidRequest(
                    "from: a LiveChat reply goes from the tenant's widget key".into(),
                ));
            }
            widget
        } else {
            let route = self.sender_route(numbers, channel, request.from.as_deref(), region)?;
            let provider = self.ensure_sendable(tenant, &route, channel).await?;
            if template.as_ref().and_then(|t| t.meta()).is_some()
                && !self
                    .providers
                    .get(provider)
                    .is_some_and(|a| a.sends_templates())
            {
                return Err(ServiceError::InvalidRequest(format!(
                    "template: {} cannot send WhatsApp templates, only the WhatsApp Cloud API can",
                    route.number
                )));
            }
            route.number
        };

        let new = crate::model::NewOutbound {
            id: Uuid::now_v7(),
            channel,
            from,
            to,
            body,
            media,
            template,
            subject,
            idempotency_key: request.idempotency_key,
            at: now,
            sent_by: Some(sent_by),
            priority: request.priority,
            send_at,
            fallback,
        };
        // Refused there when the recipient opted out (the store reads the opt-out with the
        // conversation).
        let (message, conversation) = self
            .messages
            .create_outbound_with_conversation(tenant, &new)
            .await?;
        let created = conversation.is_some();
        if let Some(conversation) = conversation {
            // A scheduled message waits in the store until it is due (release_scheduled).
            if send_at.is_none() {
                // If this enqueue is lost (crash), the sweeper finds the queued message.
                let job = Job::deliver(&message)?;
                if let Err(e) = self.queue.enqueue(&job, std::time::Duration::ZERO).await {
                    warn!(error = %e, "enqueue failed; the sweeper will pick the message up");
                }
            }
            self.push_message_and_conversation(tenant, "message.status", &message, &conversation)
                .await;
        }
        Ok((message, created))
    }

    /// Sends a `failed` or `undelivered` message again as a new attempt of the same message
    /// (the delivery log's retry): back in the outbox, queued for the delivery worker, and
    /// pushed to dashboards.
    #[instrument(skip_all, fields(tenant_id = %tenant, message_id = %id))]
    pub async fn retry_message(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Message, ServiceError> {
        let message = self
            .messages
            .requeue_message(tenant, id)
            .await?
            .ok_or(ServiceError::NotFound("message"))?;
        let job = Job::deliver(&message)?;
        // If this enqueue is lost, the sweeper finds the queued message.
        if let Err(e) = self.queue.enqueue(&job, std::time::Duration::ZERO).await {
            warn!(error = %e, "enqueue failed; the sweeper will pick the message up");
        }
        self.push_message(tenant, "message.status", &message).await;
        Ok(message)
    }

    /// The tenant number to send from: the one asked for, or the first that carries the channel.
    fn sender_route(
        &self,
        numbers: Vec<NumberRoute>,
        channel: Channel,
        from: Option<&str>,
        region: crate::domain::Region,
    ) -> Result<NumberRoute, ServiceError> {
        let carries = |r: &NumberRoute| {
            r.channels.contains(&channel)
                || (channel == Channel::Mms && r.channels.contains(&Channel::Sms))
        };
        match from {
            Some(from) => {
                let from = Address::parse(from, region)?;
                let route = numbers
                    .into_iter()
                    .find(|r| r.number == from)
                    .ok_or_else(|| {
                        ServiceError::InvalidRequest(
                            "from is not one of this tenant's numbers".into(),
                        )
                    })?;
                if !carries(&route) {
                    return Err(ServiceError::ChannelNotConfigured(format!(
                        "{} is not set up for {channel}",
                        route.number
                    )));
                }
                Ok(route)
            }
            None => numbers.into_iter().find(carries).ok_or_else(|| {
                ServiceError::ChannelNotConfigured(format!(
                    "no number of this tenant is set up for {channel}"
                ))
            }),
        }
    }

    /// The carrier behind `route` must carry the channel and have credentials.
    async fn ensure_sendable(
        &self,
        tenant: &TenantId,
        route: &NumberRoute,
        channel: Channel,
    ) -> Result<ProviderKind, ServiceError> {
        let adapter = self.providers.get(route.provider).ok_or_else(|| {
            ServiceError::ChannelNotConfigured(format!(
                "provider {} is not available",
                route.provider
            ))
        })?;
        if !adapter.channels().contains(&channel) {
            return Err(ServiceError::ChannelNotConfigured(format!(
                "{} does not carry {channel}",
                route.provider
            )));
        }
        if self
            .credentials_for(tenant, route.provider)
            .await?
            .is_none()
        {
            return Err(ServiceError::ChannelNotConfigured(format!(
                "no {} configuration for this tenant",
                route.provider
            )));
        }
        Ok(route.provider)
    }
}

/// The recipient for the channel: an email address for email, a phone number otherwise.
fn recipient(
    channel: Channel,
    to: &str,
    region: crate::domain::Region,
) -> Result<Address, ServiceError> {
    if channel == Channel::Email {
        EmailAddress::parse(to)
            .map(Address::Email)
            .map_err(|e| ServiceError::InvalidRequest(format!("to: {e}")))
    } else if channel == Channel::Livechat {
        ChatId::parse(to)
            .ok()
            .filter(ChatId::is_visitor)
            .map(Address::Chat)
            .ok_or_else(|| ServiceError::InvalidRequest("to: not a LiveChat visitor id".into()))
    } else {
        Ok(E164::parse(to, region)?.into())
    }
}

/// The subject line: the one given (email only, one line), or the tenant's default on email.
fn subject(
    channel: Channel,
    given: Option<&str>,
    tenant_name: &str,
) -> Result<Option<String>, ServiceError> {
    let invalid = |why: &str| Err(ServiceError::InvalidRequest(format!("subject: {why}")));
    match given {
        Some(_) if channel != Channel::Email => invalid("only the email channel has a subject"),
        // A line break would let the caller write further mail headers.
        Some(s) if s.contains(['\r', '\n']) => invalid("must be one line"),
        Some(s) if s.chars().count() > MAX_SUBJECT_CHARS => {
            invalid(&format!("is longer than {MAX_SUBJECT_CHARS} characters"))
        }
        Some(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        _ if channel == Channel::Email => Ok(Some(format!("Message from {tenant_name}"))),
        _ => Ok(None),
    }
}
