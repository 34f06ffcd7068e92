//! The delivery worker and the outbox sweeper.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::updater::JobError;
use super::{ServiceError, Services};
use crate::domain::{OutboundMessage, ProviderKind, SendError, SendResult, TenantId, E164};
use crate::model::{Failover, Message};
use crate::ports::Job;
use crate::providers::{Credentials, MessagingProviderAdapter};

fn not_configured(message: String) -> SendError {
    SendError::permanent(Some("channel_not_configured".into()), message)
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The carrier accepted it.
    Sent,
    /// Queued again after a transient error.
    Retrying,
    /// Failed for good (permanent error, or the retry budget is spent).
    Failed,
    /// Nothing to do: already sent, or another worker holds it.
    Skipped,
}

/// One carrier a message may go out through, with the sender number it has there.
struct Leg {
    provider: ProviderKind,
    from: E164,
    adapter: Arc<dyn MessagingProviderAdapter>,
    credentials: Credentials,
}

impl Services {
    /// One delivery attempt for a queued message. The carrier is resolved now, from the
    /// sender number's current route, so a carrier change applies to messages still queued.
    ///
    /// With the tenant's routing listing fallbacks for the channel, the carriers form a
    /// chain: the sender number's own carrier first, then the listed ones in order. Each gets
    /// the retry budget (`max_attempts` attempts) before the message moves on to the next;
    /// a carrier whose circuit breaker is open, or where the tenant has no number or
    /// configuration for the channel, is passed over without a call. The switch is noted in
    /// the message's `sent` event, and its `from` becomes the number it went out from.
    #[instrument(skip_all, fields(tenant_id = %tenant, message_id = %id))]
    pub(super) async fn deliver(
        &self,
        job: &Job,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<DeliveryOutcome, JobError> {
        let Some(claim) = self
            .messages
            .claim_delivery(tenant, id, self.settings.claim_lease)
            .await
            .map_err(ServiceError::from)?
        else {
            return Ok(DeliveryOutcome::Skipped);
        };
        let message = claim.message;
        let budget = self.settings.retry.max_attempts.max(1);
        let chain = match self.carrier_chain(tenant, &message).await {
            Ok(chain) => chain,
            Err(error) => {
                return self
                    .after_failure(job, tenant, &message, claim.attempt, budget, error)
                    .await
            }
        };
        let total = budget.saturating_mul(chain.len() as u32);
        // Carriers before `first` have spent their budget on this message.
        let first = ((claim.attempt.max(1) - 1) / budget) as usize;
        let first = first.min(chain.len() - 1);
        let mut passed_over: Vec<String> = chain[..first]
            .iter()
            .map(|p| format!("{p}: retry budget of {budget} attempts spent"))
            .collect();
        let mut retry_later = false;
        for (position, &provider) in chain.iter().enumerate().skip(first) {
            let policy = &self.settings.breaker;
            if !self
                .breakers
                .allows(tenant, provider, policy, Instant::now())
            {
                retry_later = true;
                passed_over.push(format!("{provider}: circuit open"));
                continue;
            }
            let leg = match self.leg(tenant, &message, provider, position == 0).await {
                Ok(leg) => leg,
                Err(error) if chain.len() == 1 => {
                    return self
                        .after_failure(job, tenant, &message, claim.attempt, total, error)
                        .await
                }
                Err(error) => {
                    retry_later |= error.is_transient();
                    passed_over.push(format!("{provider}: {}", error.message()));
                    continue;
                }
            };
            let result = match self.send_leg(tenant, &message, &leg).await {
                Ok(result) => result,
                Err(error) => {
                    if error.is_transient() {
                        if self
                            .breakers
                            .record_failure(tenant, provider, policy, Instant::now())
                        {
                            warn!(provider = %provider, "carrier circuit breaker open");
                        }
                    } else {
                        // The carrier answered: it is up, whatever it thought of the message.
                        self.breakers.record_success(tenant, provider);
                    }
                    return self
                        .after_failure(job, tenant, &message, claim.attempt, total, error)
                        .await;
                }
            };
            self.breakers.record_success(tenant, provider);
            let failover = (leg.from != message.from || position > 0).then(|| Failover {
                note: format!(
                    "failover to {provider} from {}: {}",
                    leg.from,
                    passed_over.join("; ")
                ),
                from: leg.from.clone(),
            });
            let stored = self
                .messages
                .record_sent(tenant, id, &result, failover.as_ref())
                .await
                .map_err(ServiceError::from)?;
            info!(provider = %result.provider, failover = failover.is_some(), "message sent");
            self.push_message(tenant, "message.status", &stored).await;
            return Ok(DeliveryOutcome::Sent);
        }
        // No carrier could be called: wait for a breaker to close if one is open (or storage to
        // answer), otherwise nothing is configured that could ever carry it.
        let reason = format!("no carrier could take it ({})", passed_over.join("; "));
        let error = if retry_later {
            SendError::transient(reason, None)
        } else {
            SendError::permanent(Some("channel_not_configured".into()), reason)
        };
        self.after_failure(job, tenant, &message, claim.attempt, total, error)
            .await
    }

    /// The carriers a message may go out through, in order: its sender number's own, then
    /// the tenant's listed fallbacks for the channel.
    async fn carrier_chain(
        &self,
        tenant: &TenantId,
        message: &Message,
    ) -> Result<Vec<ProviderKind>, SendError> {
        let route = match self.tenants.number_route(&message.from).await {
            Ok(Some(r)) if &r.tenant_id == tenant => r,
            Ok(_) => {
                return Err(not_configured(format!(
                    "{} is no longer this tenant's number",
                    message.from
                )))
            }
            Err(e) => return Err(SendError::transient(format!("storage: {e}"), None)),
        };
        let routing = self
            .tenants
            .get_routing(tenant)
            .await
            .map_err(|e| SendError::transient(format!("storage: {e}"), None))?;
        let mut chain = vec![route.provider];
        for &p in routing.providers(message.channel) {
            if !chain.contains(&p) {
                chain.push(p);
            }
        }
        Ok(chain)
    }

    /// Everything a send through `provider` needs: its adapter, the tenant's credentials
    /// there, and the sender: the message's own number on its own carrier, otherwise the
    /// tenant's (first) number at that carrier carrying the channel.
    async fn leg(
        &self,
        tenant: &TenantId,
        message: &Message,
        provider: ProviderKind,
        own: bool,
    ) -> Result<Leg, SendError> {
        let from = if own {
            message.from.clone()
        } else {
            let numbers = self
                .tenants
                .tenant_numbers(tenant)
                .await
                .map_err(|e| SendError::transient(format!("storage: {e}"), None))?;
            numbers
                .into_iter()
                .find(|r| r.provider == provider && r.channels.contains(&message.channel))
                .map(|r| r.number)
                .ok_or_else(|| {
                    not_configured(format!("no {} number at {provider}", message.channel))
                })?
        };
        let adapter = self
            .providers
            .get(provider)
            .ok_or_else(|| not_configured(format!("provider {provider} unavailable")))?;
        let credentials = match self.credentials_for(tenant, provider).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(not_configured(format!("no {provider} configuration"))),
            Err(e) => return Err(SendError::transient(format!("storage: {e}"), None)),
        };
        Ok(Leg {
            provider,
            from,
            adapter,
            credentials,
        })
    }

    async fn send_leg(
        &self,
        tenant: &TenantId,
        message: &Message,
        leg: &Leg,
    ) -> Result<SendResult, SendError> {
        let outbound = OutboundMessage {
            id: message.id,
            tenant_id: tenant.clone(),
            channel: message.channel,
            from: leg.from.clone(),
            to: message.to.clone(),
            body: message.body.clone(),
            media: message.media.clone(),
            status_callback: Some(format!(
                "{}/webhooks/{}/status",
                self.settings.public_url.trim_end_matches('/'),
                leg.provider
            )),
        };
        leg.adapter.send(&leg.credentials, &outbound).await
    }

    async fn after_failure(
        &self,
        job: &Job,
        tenant: &TenantId,
        message: &Message,
        attempt: u32,
        max_attempts: u32,
        error: SendError,
    ) -> Result<DeliveryOutcome, JobError> {
        let policy = self.settings.retry;
        if let SendError::Transient { retry_after, .. } = &error {
            if attempt < max_attempts {
                let delay = policy.delay(attempt, *retry_after);
                self.messages
                    .record_retry(tenant, message.id, error.code(), error.message())
                    .await
                    .map_err(ServiceError::from)?;
                self.queue
                    .enqueue(job, delay)
                    .await
                    .map_err(ServiceError::from)?;
                warn!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "transient carrier error, retrying");
                return Ok(DeliveryOutcome::Retrying);
            }
        }
        let reason = if error.is_transient() {
            format!(
                "retry budget of {max_attempts} attempts exhausted: {}",
                error.message()
            )
        } else {
            error.message().to_string()
        };
        let stored = self
            .messages
            .record_failed(tenant, message.id, error.code(), &reason)
            .await
            .map_err(ServiceError::from)?;
        if error.is_transient() {
            self.queue
                .dead_letter(job, &reason)
                .await
                .map_err(ServiceError::from)?;
        }
        warn!(attempt, code = error.code().unwrap_or(""), "message failed");
        self.push_message(tenant, "message.status", &stored).await;
        Ok(DeliveryOutcome::Failed)
    }

    /// Re-queues messages accepted but never handed to the worker (a crash between the two).
    #[instrument(skip_all)]
    pub async fn sweep_outbox(&self) -> Result<usize, ServiceError> {
        let before = Utc::now() - self.settings.sweep_after;
        let stranded = self.messages.stranded_outbound(before, 500).await?;
        for (tenant_id, message_id) in &stranded {
            let job = Job::Deliver {
                tenant_id: tenant_id.clone(),
                message_id: *message_id,
            };
            self.queue.enqueue(&job, std::time::Duration::ZERO).await?;
        }
        if !stranded.is_empty() {
            info!(count = stranded.len(), "re-queued stranded messages");
        }
        Ok(stranded.len())
    }
}
