//! [`Queue`] on a SQLite table, plus the leasing calls the local job runner uses.
//!
//! A leased job is not removed: its `visible_at` moves past the lease, so a runner that dies
//! mid-job lets the job reappear when the lease ends (at-least-once, like SQS). Jobs are rows,
//! so they survive a restart.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use omni_core::domain::{InboundMessage, Priority, TenantId, WebhookEvent};
use omni_core::model::{Conversation, Message};
use omni_core::ports::{Job, Queue, StoreError, StoreResult};
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::{after, db, ms, ts, Cached};
use crate::SqliteBackend;

/// A job handed to a runner until its visibility lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedJob {
    /// The queue row; pass it to [`SqliteBackend::ack_job`] and friends.
    pub id: i64,
    /// The work.
    pub job: Job,
    /// Deliveries so far, this one included.
    pub attempts: u32,
}

/// An inbound message applied to its conversation in the transaction that took its job off
/// the queue ([`SqliteBackend::take_jobs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedInbound {
    /// Whose message it is.
    pub tenant_id: TenantId,
    /// The message as stored.
    pub message: Message,
    /// Its conversation as the apply left it.
    pub conversation: Conversation,
}

/// What one [`SqliteBackend::take_jobs`] took off the queue.
#[derive(Debug, Default)]
pub struct TakenJobs {
    /// Inbound messages applied, their jobs done and gone (a redelivery of a message applied
    /// before is gone too, with nothing here).
    pub applied: Vec<AppliedInbound>,
    /// The other jobs, leased as [`SqliteBackend::lease_jobs`] leases them.
    pub leased: Vec<LeasedJob>,
}

fn encode(job: &Job) -> StoreResult<String> {
    serde_json::to_string(job).map_err(|e| StoreError::Backend(format!("job: {e}")))
}

/// The message a Deliver job is for: the sweeper must not re-enqueue it while it waits here.
fn message_of(job: &Job) -> Option<String> {
    match job {
        Job::Deliver { message_id, .. } => Some(message_id.to_string()),
        Job::Inbound { .. } | Job::Forward { .. } | Job::Webhook { .. } | Job::Fallback { .. } => {
            None
        }
    }
}

fn insert_dead_letter(
    conn: &Connection,
    payload: &str,
    reason: &str,
    attempts: i64,
) -> StoreResult<()> {
    conn.exec(
        "INSERT INTO dead_letters (payload, reason, attempts, created_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![payload, reason, attempts, ts(Utc::now())],
    )
    .map_err(db)?;
    Ok(())
}

#[async_trait]
impl Queue for SqliteBackend {
    async fn enqueue(&self, job: &Job, delay: Duration) -> StoreResult<()> {
        let payload = encode(job)?;
        let message = message_of(job);
        let priority = job.priority().rank();
        self.write_statement(move |tx| {
            let now = Utc::now();
            tx.exec(
                "INSERT INTO jobs (payload, message_id, visible_at_ms, created_at, priority)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![payload, message, ms(after(now, delay)), ts(now), priority],
            )
            .map_err(db)?;
            Ok(())
        })
        .await?;
        // After the commit, so a woken runner finds the row. A stored permit covers a runner
        // that is busy right now and waits again later.
        self.jobs.notify_one();
        if priority == Priority::High.rank() && delay.is_zero() {
            self.urgent.notify_one();
        }
        Ok(())
    }

    async fn dead_letter(&self, job: &Job, reason: &str) -> StoreResult<()> {
        let (payload, reason) = (encode(job)?, reason.to_owned());
        self.write(move |tx| insert_dead_letter(tx, &payload, &reason, 0))
            .await
    }
}

impl SqliteBackend {
    /// Takes up to `max` visible jobs, oldest first, hiding them for `visibility` and counting
    /// the attempt, in one transaction so two runners never get the same job.
    ///
    /// A payload that no longer decodes (written by an incompatible build) cannot succeed: it
    /// is moved to the dead letters with the reason instead of blocking the queue.
    pub async fn lease_jobs(
        &self,
        max: usize,
        visibility: Duration,
    ) -> StoreResult<Vec<LeasedJob>> {
        let taken = self.take_jobs(max, visibility, |_| false).await?;
        Ok(taken.leased)
    }

    /// [`lease_jobs`](Self::lease_jobs), except that an inbound message for which
    /// `apply_alone` holds (applying it to its conversation is all its job asks) is applied
    /// ([`MessageStore::apply_inbound`](omni_core::ports::MessageStore::apply_inbound)) and
    /// its job removed, in the same transaction. A group of messages then costs one write
    /// instead of a lease, an apply and an acknowledgement each. Any failure rolls the whole
    /// group back, leaving the queue as it was: the caller then leases the jobs one by one,
    /// where each fails, is retried or is dead-lettered alone.
    pub async fn take_jobs(
        &self,
        max: usize,
        visibility: Duration,
        apply_alone: impl Fn(&InboundMessage) -> bool + Send + 'static,
    ) -> StoreResult<TakenJobs> {
        self.take(max, visibility, Priority::ALL, apply_alone).await
    }

    /// [`lease_jobs`](Self::lease_jobs) of high-priority jobs only: what the runner takes
    /// beyond its usual number in flight when one arrives.
    pub async fn lease_urgent_jobs(
        &self,
        max: usize,
        visibility: Duration,
    ) -> StoreResult<Vec<LeasedJob>> {
        let taken = self
            .take(max, visibility, &[Priority::High], |_| false)
            .await?;
        Ok(taken.leased)
    }

    async fn take(
        &self,
        max: usize,
        visibility: Duration,
        priorities: &'static [Priority],
        apply_alone: impl Fn(&InboundMessage) -> bool + Send + 'static,
    ) -> StoreResult<TakenJobs> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.write(move |tx| {
            let now = Utc::now();
            // Each priority in turn (one index range each), so a high-priority job is taken
            // before any other however many wait.
            let mut rows: Vec<(i64, String, i64)> = Vec::new();
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, payload, attempts FROM jobs
                     WHERE priority = ?1 AND visible_at_ms <= ?2
                     ORDER BY visible_at_ms, id LIMIT ?3",
                )
                .map_err(db)?;
            for priority in priorities {
                let room = max - rows.len() as i64;
                if room <= 0 {
                    break;
                }
                let found = stmt
                    .query_map(params![priority.rank(), ms(now), room], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(db)?;
                for row in found {
                    rows.push(row.map_err(db)?);
                }
            }
            drop(stmt);
            let hidden_until = ms(after(now, visibility));
            let mut taken = TakenJobs::default();
            for (id, payload, attempts) in rows {
                match serde_json::from_str::<Job>(&payload) {
                    Ok(Job::Inbound {
                        tenant_id,
                        event: WebhookEvent::Message(m),
                    }) if apply_alone(&m) => {
                        if let Some((message, conversation)) =
                            crate::messages::apply_inbound(tx, &tenant_id, &m)?
                        {
                            taken.applied.push(AppliedInbound {
                                tenant_id,
                                message,
                                conversation,
                            });
                        }
                        tx.exec("DELETE FROM jobs WHERE id = ?1", [id])
                            .map_err(db)?;
                    }
                    Ok(job) => {
                        tx.exec(
                            "UPDATE jobs SET visible_at_ms = ?2, attempts = attempts + 1, leased = 1
                             WHERE id = ?1",
                            params![id, hidden_until],
                        )
                        .map_err(db)?;
                        taken.leased.push(LeasedJob {
                            id,
                            job,
                            attempts: u32::try_from(attempts + 1).unwrap_or(u32::MAX),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(job_id = id, "dead-lettering an undecodable job");
                        insert_dead_letter(
                            tx,
                            &payload,
                            &format!("undecodable job payload: {e}"),
                            attempts,
                        )?;
                        tx.exec("DELETE FROM jobs WHERE id = ?1", [id])
                            .map_err(db)?;
                    }
                }
            }
            Ok(taken)
        })
        .await
    }

    /// After a crash or kill, releases what the dead process held: its leased jobs become
    /// visible now and its delivery claims end, so work resumes at once instead of after the
    /// leases run out. Only for start-up: one `omni serve` owns its database. A message whose
    /// carrier call was in flight at the kill may be sent again (at-least-once, as any
    /// carrier without an idempotency key forces). Returns (jobs released, claims released).
    pub async fn recover_after_restart(&self) -> StoreResult<(usize, usize)> {
        self.write(move |tx| {
            let jobs = tx
                .exec(
                    "UPDATE jobs SET visible_at_ms = ?1, leased = 0 WHERE leased = 1",
                    [ms(Utc::now())],
                )
                .map_err(db)?;
            let claims = tx
                .exec(
                    "UPDATE messages SET claim_until = NULL WHERE claim_until IS NOT NULL",
                    [],
                )
                .map_err(db)?;
            Ok((jobs, claims))
        })
        .await
    }

    /// Removes a finished job; false if it was not there (already acknowledged).
    pub async fn ack_job(&self, id: i64) -> StoreResult<bool> {
        self.write(move |tx| {
            let n = tx
                .exec("DELETE FROM jobs WHERE id = ?1", [id])
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    /// Makes a leased job visible again after `delay` (backoff); false if it was not there.
    pub async fn retry_job(&self, id: i64, delay: Duration) -> StoreResult<bool> {
        let changed = self
            .write(move |tx| {
                let n = tx
                    .exec(
                        "UPDATE jobs SET visible_at_ms = ?2, leased = 0 WHERE id = ?1",
                        params![id, ms(after(Utc::now(), delay))],
                    )
                    .map_err(db)?;
                Ok(n > 0)
            })
            .await?;
        if changed {
            self.jobs.notify_one();
        }
        Ok(changed)
    }

    /// Moves a job to the dead letters with `reason`, in one transaction; false if it was
    /// not there.
    pub async fn dead_letter_job(&self, id: i64, reason: &str) -> StoreResult<bool> {
        let reason = reason.to_owned();
        self.write(move |tx| {
            let row: Option<(String, i64)> = tx
                .row(
                    "DELETE FROM jobs WHERE id = ?1 RETURNING payload, attempts",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            let Some((payload, attempts)) = row else {
                return Ok(false);
            };
            insert_dead_letter(tx, &payload, &reason, attempts)?;
            Ok(true)
        })
        .await
    }

    /// Dead-lettered jobs with their reasons, oldest first (operators, tests). Payloads that
    /// no longer decode are left out here; they stay in the table for inspection.
    pub async fn dead_letters(&self) -> StoreResult<Vec<(Job, String)>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT payload, reason FROM dead_letters ORDER BY id")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (payload, reason) = row.map_err(db)?;
                if let Ok(job) = serde_json::from_str(&payload) {
                    out.push((job, reason));
                }
            }
            Ok(out)
        })
        .await
    }
}
