//! The delivery worker and the outbox sweeper.

use chrono::Utc;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::updater::JobError;
use super::{ServiceError, Services};
use crate::domain::{OutboundMessage, SendError, TenantId};
use crate::model::Message;
use crate::ports::Job;

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

impl Services {
    /// One delivery attempt for a queued message. The carrier is resolved now, from the
    /// sender number's current route, so a carrier change applies to messages still queued.
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
        let result = match self.resolve_and_send(tenant, &message).await {
            Ok(result) => result,
            Err(error) => {
                return self
                    .after_failure(job, tenant, &message, claim.attempt, error)
                    .await
            }
        };
        let stored = self
            .messages
            .record_sent(tenant, id, &result)
            .await
            .map_err(ServiceError::from)?;
        info!(provider = %result.provider, "message sent");
        self.push_message(tenant, "message.status", &stored).await;
        Ok(DeliveryOutcome::Sent)
    }

    async fn resolve_and_send(
        &self,
        tenant: &TenantId,
        message: &Message,
    ) -> Result<crate::domain::SendResult, SendError> {
        let config = |m: String| SendError::permanent(Some("channel_not_configured".into()), m);
        let route = match self.tenants.number_route(&message.from).await {
            Ok(Some(r)) if &r.tenant_id == tenant => r,
            Ok(_) => {
                return Err(config(format!(
                    "{} is no longer this tenant's number",
                    message.from
                )))
            }
            Err(e) => return Err(SendError::transient(format!("storage: {e}"), None)),
        };
        let adapter = self
            .providers
            .get(route.provider)
            .ok_or_else(|| config(format!("provider {} unavailable", route.provider)))?;
        let credentials = match self.credentials_for(tenant, route.provider).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(config(format!("no {} configuration", route.provider))),
            Err(e) => return Err(SendError::transient(format!("storage: {e}"), None)),
        };
        let outbound = OutboundMessage {
            id: message.id,
            tenant_id: tenant.clone(),
            channel: message.channel,
            from: message.from.clone(),
            to: message.to.clone(),
            body: message.body.clone(),
            media: message.media.clone(),
            status_callback: Some(format!(
                "{}/webhooks/{}/status",
                self.settings.public_url.trim_end_matches('/'),
                route.provider
            )),
        };
        adapter.send(&credentials, &outbound).await
    }

    async fn after_failure(
        &self,
        job: &Job,
        tenant: &TenantId,
        message: &Message,
        attempt: u32,
        error: SendError,
    ) -> Result<DeliveryOutcome, JobError> {
        let policy = self.settings.retry;
        if let SendError::Transient { retry_after, .. } = &error {
            if attempt < policy.max_attempts {
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
                "retry budget of {} attempts exhausted: {}",
                policy.max_attempts,
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
