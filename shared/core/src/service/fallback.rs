//! Fallback to another channel: a message whose channel fails for good, or has not
//! delivered within the step's `after_secs`, goes to the same contact on the next channel, as
//! a new attempt of the same message.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::updater::JobError;
use super::{ServiceError, Services};
use crate::domain::{Address, Channel, DeliveryStatus, TenantId};
use crate::model::{FallbackStep, Message, NumberRoute, Tenant};
use crate::ports::Job;

/// Most fallback steps on one message.
const MAX_STEPS: usize = 3;
/// Longest wait for a delivery before falling back: a day.
const MAX_AFTER_SECS: u64 = 86_400;

/// Channels a phone number can be reached on, so a fallback between them reaches the same
/// contact.
fn reaches_a_phone(channel: Channel) -> bool {
    !matches!(channel, Channel::Email | Channel::Livechat)
}

impl Services {
    /// A send's fallback steps: those it gives, else the tenant's default for its channel;
    /// each must reach the same contact on a channel one of the tenant's numbers carries (a
    /// default naming a channel none carries is passed over rather than refusing the send).
    pub(super) fn fallback_for(
        &self,
        channel: Channel,
        given: Option<Vec<FallbackStep>>,
        tenant: &Tenant,
        numbers: &[NumberRoute],
    ) -> Result<Vec<FallbackStep>, ServiceError> {
        let Some(steps) = given else {
            let defaults = tenant.fallback.get(&channel).cloned().unwrap_or_default();
            return Ok(defaults
                .into_iter()
                .filter(|s| sender(numbers, s.channel).is_some())
                .collect());
        };
        self.check_fallback(channel, &steps)?;
        if let Some(missing) = steps.iter().find(|s| sender(numbers, s.channel).is_none()) {
            return Err(ServiceError::ChannelNotConfigured(format!(
                "fallback: no number of this tenant is set up for {}",
                missing.channel
            )));
        }
        Ok(steps)
    }

    /// Whether `steps` may follow a message on `channel`: at most three, each to another
    /// channel reaching the same phone number, waiting 1 s to a day.
    pub fn check_fallback(
        &self,
        channel: Channel,
        steps: &[FallbackStep],
    ) -> Result<(), ServiceError> {
        let invalid = |why: String| Err(ServiceError::InvalidRequest(format!("fallback: {why}")));
        if steps.len() > MAX_STEPS {
            return invalid(format!("at most {MAX_STEPS} steps"));
        }
        if !steps.is_empty() && !reaches_a_phone(channel) {
            return invalid(format!(
                "a {channel} message cannot fall back to another channel"
            ));
        }
        let mut tried = vec![channel];
        for step in steps {
            if !reaches_a_phone(step.channel) {
                return invalid(format!("{} does not reach a phone number", step.channel));
            }
            if tried.contains(&step.channel) {
                return invalid(format!("{} is tried already", step.channel));
            }
            if step.after_secs == 0 || step.after_secs > MAX_AFTER_SECS {
                return invalid(format!("after_secs must be 1 to {MAX_AFTER_SECS}"));
            }
            tried.push(step.channel);
        }
        Ok(())
    }

    /// After a send is accepted by a carrier: when the message has fallback steps, checks
    /// back after the next step's `after_secs` whether it has been delivered.
    pub(super) async fn watch_delivery(&self, tenant: &TenantId, message: &Message) {
        let Some(step) = message.fallback.first() else {
            return;
        };
        let wait = Duration::from_secs(step.after_secs);
        let job = Job::Fallback {
            tenant_id: tenant.clone(),
            message_id: message.id,
            remaining: message.fallback.len(),
            due: Utc::now() + TimeDelta::from_std(wait).unwrap_or(TimeDelta::zero()),
        };
        if let Err(e) = self.queue.enqueue(&job, wait).await {
            // The message then stays on its channel: it is sent, not lost.
            warn!(error = %e, "cannot set the fallback check");
        }
    }

    /// The check set by [`Self::watch_delivery`]: falls back unless the message has delivered
    /// (or moved on) meanwhile. A queue whose delays are shorter (SQS: 15 minutes) hands it
    /// back early; it is queued again for the rest.
    #[instrument(skip_all, fields(tenant_id = %tenant, message_id = %id))]
    pub(super) async fn fallback_due(
        &self,
        tenant: &TenantId,
        id: Uuid,
        remaining: usize,
        due: DateTime<Utc>,
    ) -> Result<(), JobError> {
        if let Ok(left) = (due - Utc::now()).to_std() {
            let job = Job::Fallback {
                tenant_id: tenant.clone(),
                message_id: id,
                remaining,
                due,
            };
            self.queue
                .enqueue(&job, left)
                .await
                .map_err(ServiceError::from)?;
            return Ok(());
        }
        let Some(message) = self
            .messages
            .get_message(tenant, id)
            .await
            .map_err(ServiceError::from)?
        else {
            return Ok(());
        };
        if matches!(
            message.status,
            DeliveryStatus::Delivered | DeliveryStatus::Read
        ) {
            return Ok(());
        }
        let waited = message.fallback.first().map_or(0, |s| s.after_secs);
        let reason = format!("not delivered within {waited} s");
        self.fall_back(tenant, &message, remaining, &reason).await?;
        Ok(())
    }

    /// Moves `message` to its next fallback channel, sent from the tenant's first number
    /// carrying it, and queues it; `None` when it cannot or need not (delivered, moved on
    /// already, or no number carries the channel any more).
    pub(super) async fn fall_back(
        &self,
        tenant: &TenantId,
        message: &Message,
        remaining: usize,
        reason: &str,
    ) -> Result<Option<Message>, ServiceError> {
        let Some(step) = message.fallback.first() else {
            return Ok(None);
        };
        let numbers = self.tenants.tenant_numbers(tenant).await?;
        let from = match sender(&numbers, step.channel) {
            Some(from) => from,
            None => {
                warn!(channel = %step.channel, "no number carries the fallback channel");
                return Ok(None);
            }
        };
        let Some(moved) = self
            .messages
            .fall_back_message(tenant, message.id, remaining, &from, reason)
            .await?
        else {
            return Ok(None);
        };
        info!(channel = %moved.channel, "message falls back to another channel");
        self.queue
            .enqueue(&Job::deliver(&moved)?, Duration::ZERO)
            .await?;
        self.push_message(tenant, "message.status", &moved).await;
        Ok(Some(moved))
    }
}

/// The number a fallback goes out from: the tenant's first one carrying the channel.
fn sender(numbers: &[NumberRoute], channel: Channel) -> Option<Address> {
    numbers
        .iter()
        .find(|r| {
            r.channels.contains(&channel)
                || (channel == Channel::Mms && r.channels.contains(&Channel::Sms))
        })
        .map(|r| r.number.clone())
}
