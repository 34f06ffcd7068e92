//! The delivery worker and the outbox sweeper.

use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::schedule::Pace;
use super::updater::JobError;
use super::{ServiceError, Services};
use crate::domain::{
    Address, Channel, OutboundMessage, Priority, ProviderKind, SendError, SendResult, TenantId,
};
use crate::model::{Failover, Message};
use crate::ports::Job;
use crate::providers::{Credentials, MessagingProviderAdapter};

const YEAR: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

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
    /// Its sender number's pace allows no send yet: queued again for the slot booked.
    Deferred,
    /// Failed for good on its channel: queued again on its next fallback channel.
    FellBack,
}

/// The carriers a message may go out through, in order: its sender number's own, then the
/// tenant's listed fallbacks for the channel (once read).
struct Chain {
    carriers: Vec<ProviderKind>,
    complete: bool,
}

/// One carrier a message may go out through, with the sender number it has there.
struct Leg {
    provider: ProviderKind,
    from: Address,
    /// The sender number's pace, if it has one.
    max_per_second: Option<u32>,
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
    ///
    /// No carrier call starts after `calls_until` (see [`Services::handle_job_within`]): the
    /// carriers not reached yet wait for the retry.
    #[instrument(skip_all, fields(tenant_id = %tenant, message_id = %id))]
    pub(super) async fn deliver(
        &self,
        job: &Job,
        tenant: &TenantId,
        id: Uuid,
        calls_until: Option<Instant>,
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
        if message.channel == Channel::Livechat {
            return self
                .deliver_livechat(job, tenant, &message, claim.attempt)
                .await;
        }
        let budget = self.settings.retry.max_attempts.max(1);
        let (own, own_pace) = match self.own_carrier(tenant, &message).await {
            Ok(own) => own,
            Err(error) => {
                return self
                    .after_failure(job, tenant, &message, claim.attempt, budget, error)
                    .await
            }
        };
        // The fallbacks are read only when they may matter (the own carrier passed over, or
        // its budget spent or about to be), so a plain send costs no extra storage read.
        let mut chain = Chain {
            carriers: vec![own],
            complete: false,
        };
        if claim.attempt > budget {
            if let Err(error) = self.complete_chain(tenant, &message, &mut chain).await {
                return self
                    .after_failure(job, tenant, &message, claim.attempt, budget, error)
                    .await;
            }
        }
        // Carriers before `first` have spent their budget on this message.
        let first = ((claim.attempt.max(1) - 1) / budget) as usize;
        let first = first.min(chain.carriers.len() - 1);
        let mut passed_over: Vec<String> = chain.carriers[..first]
            .iter()
            .map(|p| format!("{p}: retry budget of {budget} attempts spent"))
            .collect();
        let mut retry_later = false;
        let mut position = first;
        while position < chain.carriers.len() {
            let provider = chain.carriers[position];
            if calls_until.is_some_and(|until| Instant::now() > until) {
                retry_later = true;
                passed_over.push(format!("{provider}: no time left for a carrier call"));
                break;
            }
            let policy = &self.settings.breaker;
            let skip = if !self
                .breakers
                .allows(tenant, provider, policy, Instant::now())
            {
                retry_later = true;
                Some("circuit open".to_string())
            } else {
                None
            };
            let leg = match skip {
                Some(reason) => Err(reason),
                None => match self
                    .leg(
                        tenant,
                        &message,
                        provider,
                        (position == 0).then_some(own_pace),
                    )
                    .await
                {
                    Ok(leg) => Ok(leg),
                    Err(error) => {
                        retry_later |= error.is_transient();
                        if let Err(e) = self.complete_chain(tenant, &message, &mut chain).await {
                            return self
                                .after_failure(job, tenant, &message, claim.attempt, budget, e)
                                .await;
                        }
                        if chain.carriers.len() == 1 {
                            return self
                                .after_failure(job, tenant, &message, claim.attempt, budget, error)
                                .await;
                        }
                        Err(error.message().to_string())
                    }
                },
            };
            let leg = match leg {
                Ok(leg) => leg,
                Err(reason) => {
                    if let Err(e) = self.complete_chain(tenant, &message, &mut chain).await {
                        return self
                            .after_failure(job, tenant, &message, claim.attempt, budget, e)
                            .await;
                    }
                    passed_over.push(format!("{provider}: {reason}"));
                    position += 1;
                    continue;
                }
            };
            if let Some(per_second) = leg.max_per_second {
                let paced = self
                    .pace(job, tenant, &message, &leg.from, per_second)
                    .await?;
                if matches!(paced, Pace::Later) {
                    return Ok(DeliveryOutcome::Deferred);
                }
            }
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
                        // Whether this was the last attempt depends on the fallbacks.
                        if claim.attempt >= budget {
                            if let Err(e) = self.complete_chain(tenant, &message, &mut chain).await
                            {
                                return self
                                    .after_failure(job, tenant, &message, claim.attempt, budget, e)
                                    .await;
                            }
                        }
                    } else {
                        // The carrier answered: it is up, whatever it thought of the message.
                        self.breakers.record_success(tenant, provider);
                    }
                    let total = budget.saturating_mul(chain.carriers.len() as u32);
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
            self.watch_delivery(tenant, &stored).await;
            return Ok(DeliveryOutcome::Sent);
        }
        // No carrier could be called: wait for a breaker to close if one is open (or storage to
        // answer), otherwise nothing is configured that could ever carry it.
        let total = budget.saturating_mul(chain.carriers.len() as u32);
        let reason = format!("no carrier could take it ({})", passed_over.join("; "));
        let error = if retry_later {
            SendError::transient(reason, None)
        } else {
            SendError::permanent(Some("channel_not_configured".into()), reason)
        };
        self.after_failure(job, tenant, &message, claim.attempt, total, error)
            .await
    }

    /// A reply to a LiveChat visitor: pushed to their sockets, no carrier involved.
    async fn deliver_livechat(
        &self,
        job: &Job,
        tenant: &TenantId,
        message: &Message,
        attempt: u32,
    ) -> Result<DeliveryOutcome, JobError> {
        let budget = self.settings.retry.max_attempts.max(1);
        let result = match self.deliver_to_visitor(tenant, message).await {
            Ok(result) => result,
            Err(ServiceError::Store(e)) => {
                let error = SendError::transient(format!("storage: {e}"), None);
                return self
                    .after_failure(job, tenant, message, attempt, budget, error)
                    .await;
            }
            Err(other) => {
                let error = not_configured(other.to_string());
                return self
                    .after_failure(job, tenant, message, attempt, budget, error)
                    .await;
            }
        };
        let stored = self
            .messages
            .record_sent(tenant, message.id, &result, None)
            .await
            .map_err(ServiceError::from)?;
        info!(status = %stored.status, "livechat reply handed over");
        self.push_message(tenant, "message.status", &stored).await;
        Ok(DeliveryOutcome::Sent)
    }

    /// The carrier of the number the message is sent from, and the number's pace.
    async fn own_carrier(
        &self,
        tenant: &TenantId,
        message: &Message,
    ) -> Result<(ProviderKind, Option<u32>), SendError> {
        match self.tenants.number_route(&message.from).await {
            Ok(Some(r)) if &r.tenant_id == tenant => Ok((r.provider, r.max_per_second)),
            Ok(_) => Err(not_configured(format!(
                "{} is no longer this tenant's number",
                message.from
            ))),
            Err(e) => Err(SendError::transient(format!("storage: {e}"), None)),
        }
    }

    /// Appends the tenant's listed fallbacks for the message's channel to the chain, once.
    async fn complete_chain(
        &self,
        tenant: &TenantId,
        message: &Message,
        chain: &mut Chain,
    ) -> Result<(), SendError> {
        if chain.complete {
            return Ok(());
        }
        let routing = self
            .tenants
            .get_routing(tenant)
            .await
            .map_err(|e| SendError::transient(format!("storage: {e}"), None))?;
        for &p in routing.providers(message.channel) {
            if !chain.carriers.contains(&p) {
                chain.carriers.push(p);
            }
        }
        chain.complete = true;
        Ok(())
    }

    /// Everything a send through `provider` needs: its adapter, the tenant's credentials
    /// there, and the sender: the message's own number on its own carrier (`own` is its
    /// pace), otherwise the tenant's (first) number at that carrier carrying the channel.
    async fn leg(
        &self,
        tenant: &TenantId,
        message: &Message,
        provider: ProviderKind,
        own: Option<Option<u32>>,
    ) -> Result<Leg, SendError> {
        let (from, max_per_second) = if let Some(pace) = own {
            (message.from.clone(), pace)
        } else {
            let numbers = self
                .tenants
                .tenant_numbers(tenant)
                .await
                .map_err(|e| SendError::transient(format!("storage: {e}"), None))?;
            match numbers
                .into_iter()
                .find(|r| r.provider == provider && r.channels.contains(&message.channel))
            {
                Some(r) => (r.number, r.max_per_second),
                // An email address is not leased from a carrier the way a number is: any email
                // service with the address's domain verified sends as it (and refuses for good
                // when it is not), so the same address goes out through the next service.
                None if message.channel == Channel::Email => (message.from.clone(), None),
                None => {
                    return Err(not_configured(format!(
                        "no {} number at {provider}",
                        message.channel
                    )))
                }
            }
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
            max_per_second,
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
        let template = message.template.as_ref().and_then(|t| t.meta()).cloned();
        if template.is_some() && !leg.adapter.sends_templates() {
            return Err(SendError::permanent(
                None,
                format!(
                    "{} cannot send a WhatsApp template; only the WhatsApp Cloud API can",
                    leg.provider
                ),
            ));
        }
        let outbound = OutboundMessage {
            id: message.id,
            tenant_id: tenant.clone(),
            channel: message.channel,
            from: leg.from.clone(),
            to: message.to.clone(),
            body: message.body.clone(),
            media: message.media.clone(),
            template,
            subject: message.subject.clone(),
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
                // Recorded so the sweeper does not mistake a delay longer than its threshold for
                // a lost job (a year bounds a carrier's absurd Retry-After).
                let retry_at =
                    Utc::now() + TimeDelta::from_std(delay.min(YEAR)).unwrap_or(TimeDelta::zero());
                self.messages
                    .record_retry(tenant, message.id, error.code(), error.message(), retry_at)
                    .await
                    .map_err(ServiceError::from)?;
                // A slot booked for this attempt is spent: the retry books its own.
                self.queue
                    .enqueue(&job.without_slot(), delay)
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
        if !message.fallback.is_empty() {
            let why = match error.code() {
                Some(code) => format!("{code} {reason}"),
                None => reason.clone(),
            };
            if self
                .fall_back(tenant, message, message.fallback.len(), &why)
                .await?
                .is_some()
            {
                return Ok(DeliveryOutcome::FellBack);
            }
        }
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
            // Its priority is not known here: a stranded message goes at normal priority.
            let job = Job::Deliver {
                tenant_id: tenant_id.clone(),
                message_id: *message_id,
                priority: Priority::Normal,
                slot: None,
            };
            self.queue.enqueue(&job, std::time::Duration::ZERO).await?;
        }
        if !stranded.is_empty() {
            info!(count = stranded.len(), "re-queued stranded messages");
        }
        Ok(stranded.len())
    }
}
