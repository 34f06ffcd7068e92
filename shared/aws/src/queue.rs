//! [`Queue`] on SQS: inbound events go to the conversation updater's queue, deliveries to the
//! delivery worker's (bulk ones to the bulk queue, consumed apart); each has a dead-letter queue that SQS also redrives to after too many
//! receives.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageAttributeValue;
use omni_core::domain::Priority;
use omni_core::ports::{Job, Queue, StoreError, StoreResult};

use crate::{sdk_error, AwsBackend};

/// SQS delays a message by at most 15 minutes; a longer delay is cut to that (the default
/// retry policy never asks for more than 5).
pub const MAX_SQS_DELAY: Duration = Duration::from_secs(900);

fn job_kind(job: &Job) -> &'static str {
    match job {
        Job::Inbound { .. } => "inbound",
        Job::Deliver { .. } => "deliver",
        Job::Forward { .. } => "forward",
        Job::Webhook { .. } => "webhook",
        Job::Fallback { .. } => "fallback",
    }
}

/// A forwarding queue's URL, which only the functions that need it are given.
fn forward_queue(url: &Option<String>) -> StoreResult<&str> {
    url.as_deref().ok_or_else(|| {
        StoreError::Backend("no WhatsApp forwarding queue is configured for this function".into())
    })
}

/// The event webhook queue's URL, which only the functions that need it are given.
fn events_queue(url: &Option<String>) -> StoreResult<&str> {
    url.as_deref().ok_or_else(|| {
        StoreError::Backend("no event webhook queue is configured for this function".into())
    })
}

fn attribute(value: &str) -> StoreResult<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| sdk_error("MessageAttributeValue", e))
}

impl AwsBackend {
    fn queue_for(&self, job: &Job) -> StoreResult<&str> {
        match job {
            Job::Inbound { .. } => Ok(&self.resources.inbound_queue_url),
            Job::Deliver {
                priority: Priority::Bulk,
                ..
            } => Ok(self
                .resources
                .bulk_queue_url
                .as_deref()
                .unwrap_or(&self.resources.delivery_queue_url)),
            Job::Deliver { .. } | Job::Fallback { .. } => Ok(&self.resources.delivery_queue_url),
            Job::Forward { .. } => forward_queue(&self.resources.forward_queue_url),
            Job::Webhook { .. } => events_queue(&self.resources.events_queue_url),
        }
    }

    fn dead_letter_queue_for(&self, job: &Job) -> StoreResult<&str> {
        match job {
            Job::Inbound { .. } => Ok(&self.resources.inbound_dlq_url),
            Job::Deliver { .. } | Job::Fallback { .. } => Ok(&self.resources.delivery_dlq_url),
            Job::Forward { .. } => forward_queue(&self.resources.forward_dlq_url),
            Job::Webhook { .. } => events_queue(&self.resources.events_dlq_url),
        }
    }
}

#[async_trait]
impl Queue for AwsBackend {
    async fn enqueue(&self, job: &Job, delay: Duration) -> StoreResult<()> {
        let body = serde_json::to_string(job).map_err(|e| StoreError::Backend(e.to_string()))?;
        // Round up, so a retry is never early.
        let secs = delay.min(MAX_SQS_DELAY).as_secs_f64().ceil() as i32;
        self.sqs
            .send_message()
            .queue_url(self.queue_for(job)?)
            .message_body(body)
            .delay_seconds(secs)
            .message_attributes("job", attribute(job_kind(job))?)
            .send()
            .await
            .map_err(|e| sdk_error("SendMessage", e))?;
        Ok(())
    }

    async fn dead_letter(&self, job: &Job, reason: &str) -> StoreResult<()> {
        let body = serde_json::to_string(job).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.sqs
            .send_message()
            .queue_url(self.dead_letter_queue_for(job)?)
            .message_body(body)
            .message_attributes("job", attribute(job_kind(job))?)
            .message_attributes("reason", attribute(reason)?)
            .send()
            .await
            .map_err(|e| sdk_error("SendMessage", e))?;
        Ok(())
    }
}

impl AwsBackend {
    /// Makes a received message visible again after `delay` instead of the queue's visibility
    /// timeout: how a consumer schedules the retry of a message it reports as failed (SQS
    /// counts the receive, and redrives to the dead-letter queue after too many).
    pub async fn redeliver_after(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        delay: Duration,
    ) -> StoreResult<()> {
        // SQS allows at most 12 hours.
        let secs = delay.as_secs().min(12 * 3600) as i32;
        self.sqs
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| sdk_error("ChangeMessageVisibility", e))?;
        Ok(())
    }
}
