//! The local stand-ins for SQS consumers and EventBridge schedules: a job runner over the
//! SQLite queue table, the outbox sweeper (with the split-message flush), scheduled sends, the
//! event webhook dispatcher, the raw-payload purge and the Signal poller.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use omni_core::providers::signal::SignalAdapter;
use omni_core::service::{JobError, Services};
use omni_local::{LeasedJob, SqliteBackend, TakenJobs};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::config::ServeConfig;

/// Jobs handled at once (carrier calls wait on the network, not the CPU).
const IN_FLIGHT: usize = 64;
/// High-priority jobs taken beyond [`IN_FLIGHT`] when one arrives with every slot busy.
const URGENT_EXTRA: usize = 16;
/// A job leased but not finished within this time becomes visible again (crash recovery).
const VISIBILITY: Duration = Duration::from_secs(120);
/// How often due scheduled messages are looked for.
const SCHEDULE_EVERY: Duration = Duration::from_secs(1);
/// How often due event webhook deliveries are looked for.
const WEBHOOK_DISPATCH_EVERY: Duration = Duration::from_millis(250);
/// Attempts of one updater job (e.g. a status callback for a message not yet recorded).
const MAX_JOB_ATTEMPTS: u32 = 20;

/// Starts every background loop; they stop when `stop` turns true.
pub fn spawn_all(
    backend: Arc<SqliteBackend>,
    services: Services,
    http: reqwest::Client,
    stop: watch::Receiver<bool>,
    config: &ServeConfig,
) -> Vec<JoinHandle<()>> {
    // Often enough for both the outbox and a lone split-message half to be on time.
    let sweep_every = Duration::from_secs(
        config
            .service
            .sweep_after_secs
            .min(config.service.voicemeup_mms_wait_secs)
            .clamp(1, 10),
    );
    let poll_every = Duration::from_millis(config.signal_poll_ms.max(100));
    vec![
        tokio::spawn(run_jobs(backend.clone(), services.clone(), stop.clone())),
        tokio::spawn(every(sweep_every, stop.clone(), {
            let services = services.clone();
            move || {
                let services = services.clone();
                async move {
                    if let Err(e) = services.sweep_outbox().await {
                        error!(error = %e, "outbox sweep failed");
                    }
                    if let Err(e) = services.flush_split_messages().await {
                        error!(error = %e, "split-message flush failed");
                    }
                }
            }
        })),
        // Scheduled messages join the outbox when due (to the second).
        tokio::spawn(every(SCHEDULE_EVERY, stop.clone(), {
            let services = services.clone();
            move || {
                let services = services.clone();
                async move {
                    if let Err(e) = services.release_scheduled(Duration::ZERO).await {
                        error!(error = %e, "releasing scheduled messages failed");
                    }
                }
            }
        })),
        // The event webhook dispatcher: deliveries written by the changes' own commits are
        // picked up within this, and retries as they come due.
        tokio::spawn(every(WEBHOOK_DISPATCH_EVERY, stop.clone(), {
            let services = services.clone();
            move || {
                let services = services.clone();
                async move {
                    if let Err(e) = services.dispatch_webhooks().await {
                        error!(error = %e, "webhook dispatch failed");
                    }
                }
            }
        })),
        tokio::spawn(every(Duration::from_secs(3600), stop.clone(), {
            let services = services.clone();
            move || {
                let services = services.clone();
                async move {
                    if let Err(e) = services.messages.purge_expired(chrono::Utc::now()).await {
                        error!(error = %e, "raw payload purge failed");
                    }
                }
            }
        })),
        tokio::spawn(every(poll_every, stop, {
            let signal = Arc::new(SignalAdapter::new(http));
            move || {
                let services = services.clone();
                let signal = signal.clone();
                async move {
                    if let Err(e) = services.poll_signal(&signal).await {
                        warn!(error = %e, "signal poll failed");
                    }
                }
            }
        })),
    ]
}

async fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => tick().await,
            _ = stop.changed() => return,
        }
    }
}

/// Keeps up to [`IN_FLIGHT`] jobs running and takes more as soon as half of them are done,
/// instead of waiting for a whole batch: the updater's writes then share every group commit
/// with the webhooks arriving meanwhile. Inbound messages that need nothing but their apply
/// are applied in the transaction that takes them off the queue, as one group
/// ([`SqliteBackend::take_jobs`]), and pushed once it commits; every other job runs alone.
async fn run_jobs(
    backend: Arc<SqliteBackend>,
    services: Services,
    mut stop: watch::Receiver<bool>,
) {
    let notify = backend.job_notify();
    let urgent = backend.urgent_notify();
    let mut running = FuturesUnordered::new();
    loop {
        if *stop.borrow() {
            // Jobs already started finish; their leases cover a kill in between.
            while running.next().await.is_some() {}
            return;
        }
        if running.len() <= IN_FLIGHT / 2 {
            let room = IN_FLIGHT - running.len();
            let Some(taken) = take_jobs(&backend, room).await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let full = taken.applied.len() + taken.leased.len() == room;
            for applied in taken.applied {
                services
                    .inbound_applied(&applied.tenant_id, &applied.message, &applied.conversation)
                    .await;
            }
            for leased in taken.leased {
                running.push(run_job(backend.clone(), services.clone(), leased));
            }
            if full && running.len() <= IN_FLIGHT / 2 {
                continue; // more may be waiting: take them before sleeping
            }
        }
        if running.is_empty() {
            // Woken by an enqueue, or after a short nap for delayed jobs coming due.
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        // One job done, new work announced or delayed work coming due is the moment to top up.
        // A high-priority job is taken at once, beyond the usual number in flight, so it never
        // waits for the bulk jobs running to finish.
        let room = running.len() <= IN_FLIGHT / 2;
        tokio::select! {
            _ = running.next() => {}
            _ = urgent.notified() => {
                match backend.lease_urgent_jobs(URGENT_EXTRA, VISIBILITY).await {
                    Ok(leased) => {
                        for leased in leased {
                            running.push(run_job(backend.clone(), services.clone(), leased));
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot lease urgent jobs"),
                }
            }
            _ = notify.notified(), if room => {}
            _ = tokio::time::sleep(Duration::from_millis(100)), if room => {}
        }
    }
}

/// Up to `max` jobs off the queue, the plain inbound messages among them applied
/// ([`SqliteBackend::take_jobs`]). Should that group fail, the jobs are leased one by one
/// instead, so that each fails, is retried or is dead-lettered alone; `None` when even that
/// fails.
async fn take_jobs(backend: &SqliteBackend, max: usize) -> Option<TakenJobs> {
    match backend
        .take_jobs(max, VISIBILITY, Services::applies_alone)
        .await
    {
        Ok(taken) => return Some(taken),
        Err(e) => warn!(error = %e, "applying a group of jobs failed; running them one by one"),
    }
    match backend.lease_jobs(max, VISIBILITY).await {
        Ok(leased) => Some(TakenJobs {
            applied: Vec::new(),
            leased,
        }),
        Err(e) => {
            error!(error = %e, "cannot lease jobs");
            None
        }
    }
}

async fn run_job(backend: Arc<SqliteBackend>, services: Services, leased: LeasedJob) {
    let outcome = match services.handle_job(&leased.job).await {
        Ok(()) => backend.ack_job(leased.id).await,
        Err(JobError::Retry(delay, reason)) if leased.attempts < MAX_JOB_ATTEMPTS => {
            warn!(reason = %reason, "job will be retried");
            backend.retry_job(leased.id, delay).await
        }
        Err(e) => {
            warn!(reason = %e, "job dead-lettered");
            backend.dead_letter_job(leased.id, &e.to_string()).await
        }
    };
    if let Err(e) = outcome {
        error!(error = %e, "job bookkeeping failed; it will be retried after its lease");
    }
}
