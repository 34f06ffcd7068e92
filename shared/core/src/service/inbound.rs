//! Carrier webhooks: parse, route by the called number, verify with that tenant's
//! credentials, keep the raw payload, queue the events. Nothing is stored before the
//! signature checks out.

use std::net::IpAddr;

use chrono::Utc;
use tracing::{info, instrument, warn};

use super::forward::Split;
use super::{AuthScope, ServiceError, Services};
use crate::domain::{InboundMessage, ProviderKind, TenantId, WebhookEvent};
use crate::model::{WebhookLogEntry, WebhookResult};
use crate::ports::{FlushedPart, Job, PartOutcome};
use crate::providers::{whatsapp, WebhookRequest};

/// How long a split message's halves are remembered: long enough to recognise a carrier's
/// redeliveries, after which the records expire.
const SPLIT_PART_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(1);

impl Services {
    /// Handles one carrier webhook end to end, up to the queue, and keeps what became of it
    /// in the inbound webhook log. A successful return means everything it carried is
    /// committed: the caller may answer the carrier 2xx.
    #[instrument(skip_all, fields(provider = %kind, tenant_id))]
    pub async fn handle_webhook(
        &self,
        kind: ProviderKind,
        request: &WebhookRequest,
        client: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let mut tenant = None;
        let outcome = self.take_webhook(kind, request, client, &mut tenant).await;
        self.log_webhook(kind, request, tenant.as_ref(), &outcome)
            .await;
        outcome
    }

    /// Records a webhook's outcome in the log of the tenant it named (or the unattributed
    /// log). A failure to record is logged, never the carrier's problem.
    async fn log_webhook(
        &self,
        kind: ProviderKind,
        request: &WebhookRequest,
        tenant: Option<&TenantId>,
        outcome: &Result<(), ServiceError>,
    ) {
        let reason = match outcome {
            Ok(()) => None,
            // A caller held back for failing too often: a row per attempt would let a flood
            // write the log.
            Err(ServiceError::LockedOut(_)) => return,
            Err(ServiceError::InvalidSignature) => Some("bad_signature"),
            Err(ServiceError::NotFound("number")) => Some("unknown_number"),
            Err(ServiceError::InvalidRequest(_)) => Some("malformed"),
            Err(_) => Some("internal_error"),
        };
        let now = Utc::now();
        let entry = WebhookLogEntry {
            id: uuid::Uuid::now_v7(),
            received_at: now,
            carrier: kind,
            result: match reason {
                None => WebhookResult::Accepted,
                Some(_) => WebhookResult::Rejected,
            },
            reason: reason.map(str::to_owned),
            detail: outcome.as_ref().err().map(|e| match e {
                // Backend failures say nothing to a reader beyond "ours".
                ServiceError::Store(_) => "internal error".into(),
                e => e.to_string(),
            }),
            body: WebhookLogEntry::kept_body(&request.body),
        };
        let expires = now + self.settings.raw_retention;
        if let Err(e) = self
            .messages
            .append_webhook_log(tenant, &entry, expires)
            .await
        {
            warn!(error = %e, "the webhook log entry was not kept");
        }
    }

    /// [`Self::handle_webhook`] without the log: `tenant` is set once the called number
    /// names one.
    async fn take_webhook(
        &self,
        kind: ProviderKind,
        request: &WebhookRequest,
        client: Option<IpAddr>,
        tenant_of: &mut Option<TenantId>,
    ) -> Result<(), ServiceError> {
        let adapter = self
            .providers
            .get(kind)
            .ok_or(ServiceError::NotFound("provider"))?;
        // WhatsApp accounts routed to other environments are queued for them first; what is
        // left is read here, while its signature still covers the bytes as Meta sent them.
        let rest;
        let (request, signed) = match kind {
            ProviderKind::Whatsapp => match self.split_routed(request).await? {
                Split::Local => (request, None),
                Split::Forwarded => return Ok(()),
                Split::Rest(body) => {
                    rest = WebhookRequest {
                        body,
                        ..request.clone()
                    };
                    (&rest, Some(request.body.as_slice()))
                }
            },
            _ => (request, None),
        };
        let events = adapter
            .normalize_inbound(request)
            .map_err(|e| ServiceError::InvalidRequest(e.to_string()))?;
        if kind == ProviderKind::Whatsapp {
            self.apply_template_status_changes(request, signed, client)
                .await?;
        }
        let Some(first) = events.first() else {
            return Ok(());
        };
        let no_number =
            || ServiceError::InvalidRequest("the webhook names no tenant number".into());
        let number = first.tenant_number().ok_or_else(no_number)?;
        let route = self
            .tenants
            .number_route(number)
            .await?
            .ok_or(ServiceError::NotFound("number"))?;
        let tenant = route.tenant_id;
        *tenant_of = Some(tenant.clone());
        tracing::Span::current().record("tenant_id", tenant.as_str());
        let scope = AuthScope::Webhook(kind, tenant.clone());
        self.auth_allowed(client, &scope)?;

        // A number moved to another carrier may still get late callbacks from the old one, so
        // verify with the tenant's credentials for the carrier that called, not the route's.
        let Some(credentials) = self.credentials_for(&tenant, kind).await? else {
            warn!("webhook for a tenant with no credentials for this carrier");
            return Err(ServiceError::InvalidSignature);
        };
        let verified = match signed {
            Some(signed) => whatsapp::verify_signed(signed, request, &credentials),
            None => adapter.verify_inbound(request, &credentials),
        };
        if verified.is_err() {
            warn!("webhook signature rejected");
            self.auth_failed(client, &scope).await;
            return Err(ServiceError::InvalidSignature);
        }
        // Some carriers (Bandwidth) batch several events into one callback, possibly for
        // several numbers: each must be the same tenant's. Checked once the
        // credentials are: a forged webhook costs one number lookup, however many it names.
        let mut routed = vec![number];
        for event in &events {
            let number = event.tenant_number().ok_or_else(no_number)?;
            if routed.contains(&number) {
                continue;
            }
            let other = self
                .tenants
                .number_route(number)
                .await?
                .ok_or(ServiceError::NotFound("number"))?;
            if other.tenant_id != tenant {
                return Err(ServiceError::InvalidRequest(
                    "one webhook may concern one tenant only".into(),
                ));
            }
            routed.push(number);
        }

        let expires = Utc::now() + self.settings.raw_retention;
        // The raw payload and the events are written side by side, not one after the other:
        // the carrier waits for one commit instead of two (on SQLite both land in the same
        // group commit). Either failing fails the webhook and the carrier redelivers; events
        // are queued even for a redelivery, since an earlier attempt may have kept the raw
        // payload and lost the events. The updater is idempotent.
        let (fresh, queued) = tokio::try_join!(
            async {
                self.messages
                    .save_raw_webhook(
                        &tenant,
                        kind,
                        &first.dedupe_key(),
                        signed.unwrap_or(&request.body),
                        expires,
                    )
                    .await
                    .map_err(ServiceError::from)
            },
            async {
                let ready = self.ready_events(&tenant, &events).await?;
                let queued = ready.len();
                self.enqueue_events(&tenant, ready.into_iter()).await?;
                Ok(queued)
            },
        )?;
        info!(
            events = events.len(),
            queued,
            duplicate = !fresh,
            "webhook accepted"
        );
        Ok(())
    }

    /// The events to queue: halves of a split message wait in the store for their other half;
    /// whole messages, merged pairs and halves delivered alone go on.
    async fn ready_events(
        &self,
        tenant: &TenantId,
        events: &[WebhookEvent],
    ) -> Result<Vec<WebhookEvent>, ServiceError> {
        let mut ready = Vec::with_capacity(events.len());
        for event in events {
            match event {
                WebhookEvent::Part(part) => {
                    if let Some(message) = self.put_part(tenant, part).await? {
                        ready.push(WebhookEvent::Message(message));
                    }
                }
                other => ready.push(other.clone()),
            }
        }
        Ok(ready)
    }

    /// Stores one half of a split message; the message to deliver now, if any.
    async fn put_part(
        &self,
        tenant: &TenantId,
        part: &crate::domain::MessagePart,
    ) -> Result<Option<InboundMessage>, ServiceError> {
        let now = Utc::now();
        // A wait too long to represent never flushes rather than panicking.
        let flush_at = chrono::TimeDelta::from_std(self.settings.split_message_wait)
            .ok()
            .and_then(|wait| now.checked_add_signed(wait))
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
        let outcome = self
            .messages
            .put_message_part(tenant, part, flush_at, now + SPLIT_PART_RETENTION)
            .await?;
        Ok(match outcome {
            PartOutcome::Waiting => {
                info!(
                    role = part.role.as_str(),
                    "split message half waits for the other"
                );
                None
            }
            PartOutcome::Complete { text, media } => {
                Some(InboundMessage::merge_parts(&text, &media))
            }
            PartOutcome::Alone(message) => Some(message),
        })
    }

    /// Delivers on its own each half of a split message whose other half did not come within
    /// [`super::ServiceSettings::split_message_wait`]. Driven by the periodic sweep (the
    /// `outbox-sweeper` function, the local sweep loop); returns how many were delivered.
    #[instrument(skip_all)]
    pub async fn flush_split_messages(&self) -> Result<usize, ServiceError> {
        let flushed = self.messages.flush_message_parts(Utc::now(), 500).await?;
        for part in &flushed {
            self.hand_on_flushed(part).await?;
        }
        if !flushed.is_empty() {
            info!(
                count = flushed.len(),
                "delivered split-message halves alone"
            );
        }
        Ok(flushed.len())
    }

    async fn hand_on_flushed(&self, part: &FlushedPart) -> Result<(), ServiceError> {
        let event = WebhookEvent::Message(part.message.clone());
        self.enqueue_events(&part.tenant_id, std::iter::once(event))
            .await?;
        // Confirmed only once queued: a crash before this returns the half again.
        self.messages.confirm_flushed_part(part).await?;
        Ok(())
    }

    pub(super) async fn enqueue_events(
        &self,
        tenant: &TenantId,
        events: impl Iterator<Item = WebhookEvent>,
    ) -> Result<(), ServiceError> {
        for event in events {
            let job = Job::Inbound {
                tenant_id: tenant.clone(),
                event,
            };
            self.queue.enqueue(&job, std::time::Duration::ZERO).await?;
        }
        Ok(())
    }

    /// Answers Meta's webhook subscription handshake (`GET /webhooks/whatsapp`): the
    /// challenge to echo when some tenant's configured verify token matches. The handshake
    /// names no number, so every WhatsApp tenant's token is tried; it happens once per setup.
    #[instrument(skip_all)]
    pub async fn whatsapp_subscription(&self, query: &str) -> Result<Option<String>, ServiceError> {
        for tenant in self
            .secrets
            .tenants_with_provider(ProviderKind::Whatsapp)
            .await?
        {
            if let Some(crate::providers::Credentials::Whatsapp(c)) = self
                .secrets
                .get_credentials(&tenant, ProviderKind::Whatsapp)
                .await?
            {
                if let Some(challenge) =
                    crate::providers::whatsapp::verify_subscription(query, c.verify_token.expose())
                {
                    info!(tenant_id = %tenant, "whatsapp webhook subscription confirmed");
                    return Ok(Some(challenge));
                }
            }
        }
        warn!("whatsapp subscription handshake with no matching verify token");
        Ok(None)
    }

    /// Queues the status an Amazon SES event reports (the `detail` of an EventBridge SES
    /// event); whether one was queued. EventBridge, not a webhook, is what vouches for it (only
    /// AWS publishes `aws.ses` events), so the sender address routes it to the tenant holding
    /// that address, who must use SES. Mail Omni did not send and events that move nothing
    /// queue nothing; an event no retry can route is `InvalidRequest` or `NotFound`.
    #[instrument(skip_all, fields(tenant_id))]
    pub async fn handle_ses_event(&self, detail: &serde_json::Value) -> Result<bool, ServiceError> {
        let Some(update) = crate::providers::ses::status_from_event(detail)
            .map_err(|e| ServiceError::InvalidRequest(e.to_string()))?
        else {
            return Ok(false);
        };
        let event = WebhookEvent::Status(update);
        let tenant = self.status_tenant(&event).await?;
        tracing::Span::current().record("tenant_id", tenant.as_str());
        if self
            .credentials_for(&tenant, ProviderKind::Ses)
            .await?
            .is_none()
        {
            return Err(ServiceError::NotFound("SES credentials"));
        }
        self.enqueue_events(&tenant, std::iter::once(event)).await?;
        Ok(true)
    }

    /// Polls every tenant's signal-cli daemon once and queues what arrived. Signal has no
    /// webhooks: authenticity comes from asking our own daemon.
    #[instrument(skip_all)]
    pub async fn poll_signal(
        &self,
        signal: &crate::providers::signal::SignalAdapter,
    ) -> Result<usize, ServiceError> {
        let mut queued = 0;
        for tenant in self
            .secrets
            .tenants_with_provider(ProviderKind::Signal)
            .await?
        {
            let Some(crate::providers::Credentials::Signal(config)) = self
                .secrets
                .get_credentials(&tenant, ProviderKind::Signal)
                .await?
            else {
                continue;
            };
            // Receiving consumes the daemon's queue, so only poll once the tenant holds a
            // Signal number (the configured account, when there is one): otherwise a
            // message could arrive before its route exists and be lost.
            let routes = self.tenants.tenant_numbers(&tenant).await?;
            let ready = routes.iter().any(|r| {
                r.provider == ProviderKind::Signal
                    && config
                        .account
                        .as_deref()
                        .is_none_or(|a| a == r.number.as_str())
            });
            if !ready {
                continue;
            }
            let events = match signal.receive(&config).await {
                Ok(events) => events,
                Err(e) => {
                    warn!(tenant_id = %tenant, error = %e, "signal poll failed");
                    continue;
                }
            };
            // Only events for numbers this tenant holds are accepted.
            let mut mine = Vec::with_capacity(events.len());
            for event in events {
                let owned = match event.tenant_number() {
                    Some(n) => self
                        .tenants
                        .number_route(n)
                        .await?
                        .is_some_and(|r| r.tenant_id == tenant),
                    None => false,
                };
                if owned {
                    mine.push(event);
                } else {
                    warn!(tenant_id = %tenant, "signal event for a number the tenant does not hold");
                }
            }
            queued += mine.len();
            self.enqueue_events(&tenant, mine.into_iter()).await?;
        }
        Ok(queued)
    }
}
