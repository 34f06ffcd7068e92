//! Carrier webhooks: parse, route by the called number, verify with that tenant's
//! credentials, keep the raw payload, queue the events. Nothing is stored before the
//! signature checks out.

use chrono::Utc;
use tracing::{info, instrument, warn};

use super::{ServiceError, Services};
use crate::domain::{ProviderKind, TenantId, WebhookEvent};
use crate::ports::Job;
use crate::providers::WebhookRequest;

impl Services {
    /// Handles one carrier webhook end to end, up to the queue. A successful return means
    /// everything it carried is committed: the caller may answer the carrier 2xx.
    #[instrument(skip_all, fields(provider = %kind, tenant_id))]
    pub async fn handle_webhook(
        &self,
        kind: ProviderKind,
        request: &WebhookRequest,
    ) -> Result<(), ServiceError> {
        let adapter = self
            .providers
            .get(kind)
            .ok_or(ServiceError::NotFound("provider"))?;
        let events = adapter
            .normalize_inbound(request)
            .map_err(|e| ServiceError::InvalidRequest(e.to_string()))?;
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
        tracing::Span::current().record("tenant_id", tenant.as_str());

        // A number moved to another carrier may still get late callbacks from the old one, so
        // verify with the tenant's credentials for the carrier that called, not the route's.
        let Some(credentials) = self.credentials_for(&tenant, kind).await? else {
            warn!("webhook for a tenant with no credentials for this carrier");
            return Err(ServiceError::InvalidSignature);
        };
        if adapter.verify_inbound(request, &credentials).is_err() {
            warn!("webhook signature rejected");
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
        let (fresh, ()) = tokio::try_join!(
            async {
                self.messages
                    .save_raw_webhook(&tenant, kind, &first.dedupe_key(), &request.body, expires)
                    .await
                    .map_err(ServiceError::from)
            },
            self.enqueue_events(&tenant, events.iter().cloned()),
        )?;
        info!(
            events = events.len(),
            duplicate = !fresh,
            "webhook accepted"
        );
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
