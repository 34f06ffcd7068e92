//! The conversation updater: applies queued inbound events to conversations and messages
//! and pushes the changes to the tenant's dashboards.

use std::time::Duration;

use tracing::{info, instrument, warn};

use super::keywords::Keyword;
use super::outbound::SendRequest;
use super::{ServiceError, Services};
use crate::domain::{InboundMessage, StatusUpdate, TenantId, WebhookEvent};
use crate::model::{Conversation, Message, StatusApplied};
use crate::ports::{Job, PushEvent};
use crate::team::{Actor, ActorType};

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Try again after the delay (e.g. a status callback that beat our own send record).
    #[error("retry in {0:?}: {1}")]
    Retry(Duration, String),
    /// Retrying cannot help; dead-letter it with this reason.
    #[error("{0}")]
    Fatal(String),
}

impl From<ServiceError> for JobError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(s) => JobError::Retry(Duration::from_secs(1), s.to_string()),
            other => JobError::Fatal(other.to_string()),
        }
    }
}

const GENERIC_HELP: &str = "You are texting a dispatch service. Reply STOP to opt out, START to opt back in. In an emergency call 911.";

impl Services {
    /// Runs one queued job (conversation updater or delivery worker).
    pub async fn handle_job(&self, job: &Job) -> Result<(), JobError> {
        self.handle_job_within(job, None).await
    }

    /// Runs one queued job in a process that is stopped at a deadline (a Lambda invocation):
    /// a delivery starts no carrier call after `calls_until`, since a call cut off by the
    /// stop may have reached the carrier without its answer being recorded (a second send);
    /// the message is retried instead.
    pub async fn handle_job_within(
        &self,
        job: &Job,
        calls_until: Option<std::time::Instant>,
    ) -> Result<(), JobError> {
        match job {
            Job::Inbound {
                tenant_id,
                event: WebhookEvent::Message(m),
            } => self.apply_inbound(tenant_id, m).await,
            Job::Inbound {
                tenant_id,
                event: WebhookEvent::Status(s),
            } => self.apply_status(tenant_id, s).await,
            // Webhook handling merges halves before queuing; a queued half is a bug upstream.
            Job::Inbound {
                event: WebhookEvent::Part(_),
                ..
            } => Err(JobError::Fatal(
                "a split-message half was queued unmerged".into(),
            )),
            Job::Deliver {
                tenant_id,
                message_id,
                ..
            } => self
                .deliver(job, tenant_id, *message_id, calls_until)
                .await
                .map(|_| ()),
            Job::Forward {
                waba_id,
                body,
                signature,
                received_at,
                attempts,
            } => {
                self.forward(job, waba_id, body, signature, *received_at, *attempts)
                    .await
            }
            Job::Webhook {
                tenant_id,
                endpoint_id,
                delivery_id,
            } => {
                self.webhook_job(tenant_id, *endpoint_id, *delivery_id)
                    .await
            }
            Job::Fallback {
                tenant_id,
                message_id,
                remaining,
                due,
            } => {
                self.fallback_due(tenant_id, *message_id, *remaining, *due)
                    .await
            }
        }
    }

    #[instrument(skip_all, fields(tenant_id = %tenant))]
    async fn apply_inbound(
        &self,
        tenant: &TenantId,
        message: &InboundMessage,
    ) -> Result<(), JobError> {
        let Some((stored, conversation)) = self
            .messages
            .apply_inbound(tenant, message)
            .await
            .map_err(ServiceError::from)?
        else {
            return Ok(()); // applied before: a redelivery
        };
        self.push_applied(tenant, &stored, &conversation).await;

        match Keyword::detect(message.body.as_deref()) {
            Some(Keyword::OptOut) => self.set_opt_out(tenant, message, true).await?,
            Some(Keyword::OptIn) => self.set_opt_out(tenant, message, false).await?,
            Some(Keyword::Help) => {
                let tenant_record = self
                    .tenants
                    .get_tenant(tenant)
                    .await
                    .map_err(ServiceError::from)?;
                let text = tenant_record
                    .and_then(|t| t.help_text)
                    .unwrap_or_else(|| GENERIC_HELP.to_string());
                let reply = SendRequest {
                    channel: message.channel.thread(),
                    to: message.from.to_string(),
                    from: Some(message.to.to_string()),
                    body: Some(text),
                    media_urls: vec![],
                    template: None,
                    subject: None,
                    // One help reply per inbound message, however often it is redelivered.
                    idempotency_key: Some(format!("help:{}", message.provider_message_id)),
                    // Someone who just wrote is waiting: never behind a campaign.
                    priority: crate::domain::Priority::High,
                    send_at: None,
                    fallback: Some(Vec::new()),
                };
                let by = Actor {
                    kind: ActorType::AutoReply,
                    id: "help".into(),
                    name: "HELP reply".into(),
                };
                if let Err(e) = self.send_message(tenant, reply, by).await {
                    warn!(error = %e, "help reply not sent");
                }
            }
            // Machine-sent email is never answered automatically (two auto-responders would
            // answer each other).
            None if message.auto_submitted => {}
            None => self.auto_reply(tenant, &stored, &conversation).await,
        }
        Ok(())
    }

    /// Whether applying an inbound message to its conversation (and pushing it) is all its
    /// job asks: no keyword to act on (STOP, START, HELP), and not machine-sent (which no
    /// auto-reply answers). A runner may then have the store apply a group of them at once
    /// and call [`inbound_applied`](Self::inbound_applied) for each, instead of
    /// [`handle_job`](Self::handle_job).
    pub fn applies_alone(message: &InboundMessage) -> bool {
        Keyword::detect(message.body.as_deref()).is_none() && !message.auto_submitted
    }

    /// What follows an inbound message's apply: `message.received` and
    /// `conversation.updated` pushed to the tenant's dashboards, then the tenant's
    /// auto-reply, if one is due.
    pub async fn inbound_applied(
        &self,
        tenant: &TenantId,
        message: &Message,
        conversation: &Conversation,
    ) {
        self.push_applied(tenant, message, conversation).await;
        self.auto_reply(tenant, message, conversation).await;
    }

    /// `message.received` and `conversation.updated` to the tenant's dashboards.
    async fn push_applied(
        &self,
        tenant: &TenantId,
        message: &Message,
        conversation: &Conversation,
    ) {
        self.push_message_and_conversation(tenant, "message.received", message, conversation)
            .await;
        info!(tenant_id = %tenant, conversation_id = %conversation.id, "inbound message applied");
    }

    async fn set_opt_out(
        &self,
        tenant: &TenantId,
        message: &InboundMessage,
        out: bool,
    ) -> Result<(), JobError> {
        self.messages
            .set_opt_out(tenant, &message.from, out)
            .await
            .map_err(ServiceError::from)?;
        info!(opted_out = out, "contact opt-out changed");
        Ok(())
    }

    #[instrument(skip_all, fields(tenant_id = %tenant))]
    async fn apply_status(&self, tenant: &TenantId, update: &StatusUpdate) -> Result<(), JobError> {
        match self
            .messages
            .apply_status(tenant, update)
            .await
            .map_err(ServiceError::from)?
        {
            StatusApplied::Changed(message) => {
                self.push_message(tenant, "message.status", &message).await;
                // A carrier's late refusal (WhatsApp's 131047 or 131026 arrive this way).
                if message.status.is_failure() && !message.fallback.is_empty() {
                    let reason = format!(
                        "{} {}",
                        message
                            .error_code
                            .as_deref()
                            .unwrap_or(message.status.as_str()),
                        message.error_message.as_deref().unwrap_or_default()
                    );
                    self.fall_back(tenant, &message, message.fallback.len(), reason.trim())
                        .await?;
                }
                Ok(())
            }
            StatusApplied::Unchanged(_) => Ok(()),
            // The carrier can call back before our worker has recorded its answer.
            StatusApplied::NotFound => Err(JobError::Retry(
                Duration::from_secs(2),
                "status for an unknown message".into(),
            )),
        }
    }

    /// Pushes a message event; a push failure never fails the flow (dashboards resync).
    pub(super) async fn push_message(&self, tenant: &TenantId, kind: &str, message: &Message) {
        self.push_events(&[message_event(tenant, kind, message)])
            .await;
    }

    /// Pushes `conversation.updated`.
    pub async fn push_conversation(&self, tenant: &TenantId, conversation: &Conversation) {
        self.push_events(&[conversation_event(
            tenant,
            "conversation.updated",
            conversation,
        )])
        .await;
    }

    /// Pushes a message event and then its conversation's `conversation.updated`, as one
    /// flow's events (the dashboards are looked up once).
    pub(super) async fn push_message_and_conversation(
        &self,
        tenant: &TenantId,
        kind: &str,
        message: &Message,
        conversation: &Conversation,
    ) {
        self.push_events(&[
            message_event(tenant, kind, message),
            conversation_event(tenant, "conversation.updated", conversation),
        ])
        .await;
    }

    pub(super) async fn push_events(&self, events: &[PushEvent]) {
        if let Err(e) = self.push.push_all(events).await {
            warn!(error = %e, "push failed");
        }
    }
}

fn message_event(tenant: &TenantId, kind: &str, message: &Message) -> PushEvent {
    PushEvent::for_message(kind, tenant, message)
}

/// A conversation event of `kind` (`conversation.updated`, `.assigned`, `.status`).
pub(super) fn conversation_event(
    tenant: &TenantId,
    kind: &str,
    conversation: &Conversation,
) -> PushEvent {
    PushEvent::for_conversation(kind, tenant, conversation)
}
