//! Scheduled sends (`send_at`), their cancellation, and the pace of numbers with a
//! `max_per_second`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::{ServiceError, Services};
use crate::domain::{Address, TenantId};
use crate::model::Message;
use crate::ports::{BookedSlot, Job};

/// How far ahead a message may be scheduled.
pub const MAX_SCHEDULE_AHEAD: TimeDelta = TimeDelta::days(35);
/// A `send_at` this far in the past is taken for "now" (the client's clock may lag ours);
/// further back is refused.
const PAST_TOLERANCE: TimeDelta = TimeDelta::seconds(60);
/// Scheduled messages moved to the outbox by one pass; the next pass takes the rest.
const RELEASE_BATCH: usize = 500;
/// A booked send this close is waited for in place: a trip through the queue is less
/// precise (SQS delays in whole seconds, the local runner wakes every 100 ms when idle), so a
/// job deferred further comes back this much early and waits the rest.
const PACE_WAIT_IN_PLACE: TimeDelta = TimeDelta::seconds(1);

/// When a message asked to be sent at `send_at` is scheduled for: `None` to send now.
pub(super) fn schedule(
    send_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ServiceError> {
    match send_at {
        None => Ok(None),
        Some(at) if at < now - PAST_TOLERANCE => Err(ServiceError::InvalidRequest(
            "send_at is in the past".into(),
        )),
        Some(at) if at > now + MAX_SCHEDULE_AHEAD => Err(ServiceError::InvalidRequest(
            "send_at is more than 35 days ahead".into(),
        )),
        Some(at) if at <= now => Ok(None),
        Some(at) => Ok(Some(at)),
    }
}

/// Whether the delivery worker sends now or later.
pub(super) enum Pace {
    /// The number's pace allows it now.
    Now,
    /// Booked for later: the message went back to the outbox and its job comes back then.
    Later,
}

impl Services {
    /// Moves the scheduled messages due within `lookahead` into the outbox and queues each for
    /// its `send_at` (a queue delay; `omni serve` looks every second with no lookahead, the
    /// AWS sweeper every minute with a minute's). Returns how many. Dashboards hear of them
    /// when they are sent (a moment later): the sweeper has no dashboard connections to push to.
    #[instrument(skip_all)]
    pub async fn release_scheduled(&self, lookahead: Duration) -> Result<usize, ServiceError> {
        let now = Utc::now();
        let until = now + TimeDelta::from_std(lookahead).unwrap_or(TimeDelta::zero());
        let released = self
            .messages
            .release_scheduled(until, RELEASE_BATCH)
            .await?;
        for message in &released {
            let delay = message
                .send_at
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .unwrap_or_default();
            // If this enqueue is lost, the sweeper finds the queued message after its time.
            if let Err(e) = self.queue.enqueue(&Job::deliver(message)?, delay).await {
                warn!(error = %e, "enqueue failed; the sweeper will pick the message up");
            }
        }
        if !released.is_empty() {
            info!(count = released.len(), "scheduled messages due");
        }
        Ok(released.len())
    }

    /// `DELETE /v1/messages/{id}`: cancels a message before sending begins (scheduled, or
    /// queued and never tried); `409` once it has.
    #[instrument(skip_all, fields(tenant_id = %tenant, message_id = %id))]
    pub async fn cancel_message(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Message, ServiceError> {
        let message = self
            .messages
            .cancel_message(tenant, id)
            .await?
            .ok_or(ServiceError::NotFound("message"))?;
        self.push_message(tenant, "message.status", &message).await;
        Ok(message)
    }

    /// Keeps the sends from `from` to `per_second`: uses the slot the job booked before, or
    /// books the next one. A slot within a second is waited for here; a later one sends the
    /// message back to the outbox (the attempt not counted) with its job queued to come back
    /// just before the slot.
    pub(super) async fn pace(
        &self,
        job: &Job,
        tenant: &TenantId,
        message: &Message,
        from: &Address,
        per_second: u32,
    ) -> Result<Pace, ServiceError> {
        let now = Utc::now();
        let booked = match job {
            Job::Deliver {
                slot: Some(slot), ..
            } if &slot.from == from => slot.at,
            _ => {
                let interval = Duration::from_nanos(1_000_000_000 / u64::from(per_second.max(1)));
                self.messages.book_send_slot(from, interval, now).await?
            }
        };
        if booked <= now + PACE_WAIT_IN_PLACE {
            if let Ok(wait) = (booked - now).to_std() {
                tokio::time::sleep(wait).await;
            }
            return Ok(Pace::Now);
        }
        self.messages
            .defer_delivery(tenant, message.id, booked)
            .await?;
        let job = Job::Deliver {
            tenant_id: tenant.clone(),
            message_id: message.id,
            priority: message.priority,
            slot: Some(BookedSlot {
                from: from.clone(),
                at: booked,
            }),
        };
        let delay = (booked - now - PACE_WAIT_IN_PLACE)
            .to_std()
            .unwrap_or_default();
        self.queue.enqueue(&job, delay).await?;
        info!(from = %from, delay_ms = delay.as_millis() as u64, "paced: sending later");
        Ok(Pace::Later)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_at_is_now_or_later_up_to_35_days() {
        let now = Utc::now();
        assert_eq!(schedule(None, now).unwrap(), None);
        let soon = now + TimeDelta::minutes(5);
        assert_eq!(schedule(Some(soon), now).unwrap(), Some(soon));
        // A lagging client clock: sent now.
        assert_eq!(
            schedule(Some(now - TimeDelta::seconds(10)), now).unwrap(),
            None
        );
        let err = |at| schedule(Some(at), now).unwrap_err().to_string();
        assert!(err(now - TimeDelta::minutes(5)).contains("in the past"));
        assert!(err(now + TimeDelta::days(36)).contains("35 days"));
        assert!(schedule(Some(now + TimeDelta::days(35)), now).is_ok());
    }
}
