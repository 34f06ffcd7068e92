//! Signed event webhooks: a tenant's endpoints (`/v1/webhooks`), and the dispatcher that
//! posts each delivery of the outbox, signed as the Standard Webhooks specification says,
//! retrying on the schedule of [`crate::webhook::RETRY_DELAYS`] and disabling an endpoint
//! that has failed for [`DISABLE_AFTER`].

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use futures::future::join_all;
use serde_json::json;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::forward::{post_to_target, resolve};
use super::{Caller, JobError, ServiceError, Services};
use crate::domain::TenantId;
use crate::model::Page;
use crate::ports::Job;
use crate::providers::Secret;
use crate::team::{Actor, ActorType};
use crate::webhook::{
    generate_secret, sign, DeliveryAttempt, DeliveryState, EventType, WebhookDelivery,
    WebhookEndpoint, ATTEMPT_TIMEOUT, DISABLE_AFTER, MAX_DESCRIPTION_CHARS, MAX_ENDPOINTS,
    TEST_EVENT,
};

/// How long a claimed delivery is held before another dispatcher may take it: longer than an
/// attempt, so only a crashed dispatcher's deliveries come due again.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Deliveries one dispatch pass claims.
const DISPATCH_BATCH: usize = 32;

/// A queued delivery this close to its time is attempted rather than queued again.
const QUEUE_EARLY: TimeDelta = TimeDelta::seconds(CLAIM_LEASE.as_secs() as i64);

/// A delivery due this long ago is taken to have lost its job (AWS).
const STRANDED_AFTER: TimeDelta = TimeDelta::minutes(2);

/// The job that attempts a delivery (AWS).
pub fn delivery_job(delivery: &WebhookDelivery) -> Job {
    Job::Webhook {
        tenant_id: delivery.tenant_id.clone(),
        endpoint_id: delivery.endpoint_id,
        delivery_id: delivery.id,
    }
}

/// What `PATCH /v1/webhooks/{id}` may change; unset fields stay.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    /// A new URL (checked like a new endpoint's).
    pub url: Option<String>,
    /// New subscriptions.
    pub events: Option<Vec<EventType>>,
    /// A new description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// Turns deliveries on or off; turning a disabled endpoint on forgets its failures.
    pub enabled: Option<bool>,
}

impl Services {
    /// Adds an endpoint (`POST /v1/webhooks`); its new secret is returned this once.
    #[instrument(skip_all, fields(tenant_id = %caller.tenant))]
    pub async fn create_webhook(
        &self,
        caller: &Caller,
        url: &str,
        events: Vec<EventType>,
        description: Option<String>,
    ) -> Result<(WebhookEndpoint, Secret), ServiceError> {
        let tenant = &caller.tenant;
        if self.webhooks.list_webhooks(tenant).await?.len() >= MAX_ENDPOINTS {
            return Err(ServiceError::Conflict(format!(
                "a tenant may have at most {MAX_ENDPOINTS} webhook endpoints"
            )));
        }
        let now = Utc::now();
        let endpoint = WebhookEndpoint {
            id: Uuid::now_v7(),
            url: self.checked_webhook_url(url).await?,
            events: checked_events(events)?,
            description: checked_description(description)?,
            enabled: true,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let secret = generate_secret();
        self.webhooks
            .create_webhook(tenant, &endpoint, &secret)
            .await?;
        self.audit_webhook(caller, "webhook.create", &endpoint)
            .await;
        info!(webhook_id = %endpoint.id, "webhook endpoint created");
        Ok((endpoint, secret))
    }

    /// The tenant's endpoints (no secrets).
    pub async fn list_webhooks(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<WebhookEndpoint>, ServiceError> {
        Ok(self.webhooks.list_webhooks(tenant).await?)
    }

    /// One endpoint of the tenant's (no secret).
    pub async fn get_webhook(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<WebhookEndpoint, ServiceError> {
        Ok(self.endpoint(tenant, id).await?.0)
    }

    /// Changes an endpoint (`PATCH /v1/webhooks/{id}`).
    #[instrument(skip_all, fields(tenant_id = %caller.tenant, webhook_id = %id))]
    pub async fn update_webhook(
        &self,
        caller: &Caller,
        id: Uuid,
        change: WebhookChange,
    ) -> Result<WebhookEndpoint, ServiceError> {
        let (mut endpoint, _) = self.endpoint(&caller.tenant, id).await?;
        if let Some(url) = change.url {
            endpoint.url = self.checked_webhook_url(&url).await?;
        }
        if let Some(events) = change.events {
            endpoint.events = checked_events(events)?;
        }
        if let Some(description) = change.description {
            endpoint.description = checked_description(description)?;
        }
        if let Some(enabled) = change.enabled {
            if enabled && !endpoint.enabled {
                endpoint.failing_since = None;
            }
            endpoint.enabled = enabled;
        }
        endpoint.updated_at = Utc::now();
        if !self
            .webhooks
            .update_webhook(&caller.tenant, &endpoint)
            .await?
        {
            return Err(ServiceError::NotFound("webhook"));
        }
        self.audit_webhook(caller, "webhook.update", &endpoint)
            .await;
        Ok(endpoint)
    }

    /// Removes an endpoint and its deliveries.
    pub async fn delete_webhook(&self, caller: &Caller, id: Uuid) -> Result<(), ServiceError> {
        let (endpoint, _) = self.endpoint(&caller.tenant, id).await?;
        if !self.webhooks.delete_webhook(&caller.tenant, id).await? {
            return Err(ServiceError::NotFound("webhook"));
        }
        self.audit_webhook(caller, "webhook.delete", &endpoint)
            .await;
        Ok(())
    }

    /// Gives an endpoint a new secret, returned this once; deliveries are signed with it from
    /// now on.
    pub async fn rotate_webhook_secret(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<(WebhookEndpoint, Secret), ServiceError> {
        let (endpoint, _) = self.endpoint(&caller.tenant, id).await?;
        let secret = generate_secret();
        if !self
            .webhooks
            .set_webhook_secret(&caller.tenant, id, &secret)
            .await?
        {
            return Err(ServiceError::NotFound("webhook"));
        }
        self.audit_webhook(caller, "webhook.rotate_secret", &endpoint)
            .await;
        Ok((endpoint, secret))
    }

    /// Sends a `webhook.test` event to the endpoint now, and returns its delivery with that
    /// attempt; a failed test is retried like any delivery.
    pub async fn test_webhook(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<WebhookDelivery, ServiceError> {
        let (endpoint, secret) = self.endpoint(&caller.tenant, id).await?;
        let now = Utc::now();
        let body = json!({
            "type": TEST_EVENT,
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": {"tenant_id": caller.tenant, "webhook_id": endpoint.id, "at": now},
        });
        let mut delivery =
            WebhookDelivery::new(&caller.tenant, id, TEST_EVENT, body.to_string(), now);
        // Held by a lease like a claimed one, so a dispatch pass does not send it as well.
        delivery.next_attempt_at = Some(now + CLAIM_LEASE);
        self.webhooks
            .add_deliveries(std::slice::from_ref(&delivery))
            .await?;
        self.attempt(&endpoint, &secret, &mut delivery).await?;
        Ok(delivery)
    }

    /// An endpoint's deliveries, newest first, with their attempts.
    pub async fn list_webhook_deliveries(
        &self,
        tenant: &TenantId,
        id: Uuid,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<WebhookDelivery>, ServiceError> {
        self.endpoint(tenant, id).await?;
        Ok(self
            .webhooks
            .list_deliveries(tenant, id, limit, cursor)
            .await?)
    }

    /// Attempts a delivery again now, whatever its state, and returns it with that attempt
    /// added to its history; should it fail, its schedule goes on from the attempts it has
    /// (one past the last step stays failed).
    pub async fn retry_webhook_delivery(
        &self,
        caller: &Caller,
        id: Uuid,
        delivery: Uuid,
    ) -> Result<WebhookDelivery, ServiceError> {
        let (endpoint, secret) = self.endpoint(&caller.tenant, id).await?;
        if !endpoint.enabled {
            return Err(ServiceError::Conflict(
                "the webhook endpoint is disabled; enable it first".into(),
            ));
        }
        let mut delivery = self
            .webhooks
            .get_delivery(&caller.tenant, id, delivery)
            .await?
            .ok_or(ServiceError::NotFound("delivery"))?;
        self.attempt(&endpoint, &secret, &mut delivery).await?;
        Ok(delivery)
    }

    /// One dispatcher pass: claims the deliveries due now and attempts each (at once, each
    /// bounded by [`ATTEMPT_TIMEOUT`]). How many were attempted.
    pub async fn dispatch_webhooks(&self) -> Result<usize, ServiceError> {
        let due = self
            .webhooks
            .claim_deliveries(Utc::now(), CLAIM_LEASE, DISPATCH_BATCH)
            .await?;
        let count = due.len();
        let results = join_all(due.into_iter().map(|d| self.dispatch_one(d))).await;
        for result in results {
            if let Err(e) = result {
                // Its lease runs out and it is claimed again.
                warn!(error = %e, "webhook delivery not recorded");
            }
        }
        Ok(count)
    }

    /// A queued delivery (AWS): attempted when due, then queued again for its next attempt
    /// while it is pending. One queued before it is due (a delay longer than the queue's
    /// longest) is queued again for the rest of it.
    pub(super) async fn webhook_job(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        id: Uuid,
    ) -> Result<(), JobError> {
        // Gone with its endpoint, or done (a duplicate of its job): nothing to do.
        let Some((delivery, at)) = self.pending_delivery(tenant, endpoint, id).await? else {
            return Ok(());
        };
        if at > Utc::now() + QUEUE_EARLY {
            return self.queue_webhook(&delivery, at).await;
        }
        self.dispatch_one(delivery).await?;
        match self.pending_delivery(tenant, endpoint, id).await? {
            Some((delivery, at)) => self.queue_webhook(&delivery, at).await,
            None => Ok(()),
        }
    }

    /// A delivery still pending, with when its next attempt is due.
    async fn pending_delivery(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        id: Uuid,
    ) -> Result<Option<(WebhookDelivery, chrono::DateTime<Utc>)>, ServiceError> {
        let delivery = self.webhooks.get_delivery(tenant, endpoint, id).await?;
        Ok(delivery.and_then(|d| {
            let at = d
                .next_attempt_at
                .filter(|_| d.status == DeliveryState::Pending)?;
            Some((d, at))
        }))
    }

    async fn queue_webhook(
        &self,
        delivery: &WebhookDelivery,
        at: chrono::DateTime<Utc>,
    ) -> Result<(), JobError> {
        let delay = (at - Utc::now()).to_std().unwrap_or_default();
        self.queue
            .enqueue(&delivery_job(delivery), delay)
            .await
            .map_err(ServiceError::from)?;
        Ok(())
    }

    /// Deliveries whose time came [`STRANDED_AFTER`] ago and more, queued again (AWS: their job
    /// was lost, e.g. the process stopped between the commit and queuing it). How many.
    pub async fn sweep_webhooks(&self) -> Result<usize, ServiceError> {
        let stranded = self
            .webhooks
            .claim_deliveries(Utc::now() - STRANDED_AFTER, CLAIM_LEASE, DISPATCH_BATCH)
            .await?;
        for delivery in &stranded {
            self.queue
                .enqueue(&delivery_job(delivery), Duration::ZERO)
                .await?;
        }
        Ok(stranded.len())
    }

    async fn dispatch_one(&self, mut delivery: WebhookDelivery) -> Result<(), ServiceError> {
        let Some((endpoint, secret)) = self
            .webhooks
            .get_webhook(&delivery.tenant_id, delivery.endpoint_id)
            .await?
        else {
            // The endpoint was deleted with its deliveries after this one was claimed.
            return Ok(());
        };
        if !endpoint.enabled {
            delivery.status = DeliveryState::Failed;
            delivery.next_attempt_at = None;
            return Ok(self.webhooks.update_delivery(&delivery).await?);
        }
        self.attempt(&endpoint, &secret, &mut delivery).await
    }

    /// Posts a delivery once, records the attempt, and keeps the endpoint's failing time:
    /// cleared by a success, set by the first failure, and the endpoint disabled (audited)
    /// once it has failed for [`DISABLE_AFTER`].
    #[instrument(skip_all, fields(tenant_id = %delivery.tenant_id, webhook_id = %endpoint.id, delivery_id = %delivery.id))]
    async fn attempt(
        &self,
        endpoint: &WebhookEndpoint,
        secret: &Secret,
        delivery: &mut WebhookDelivery,
    ) -> Result<(), ServiceError> {
        let at = Utc::now();
        let started = Instant::now();
        let id = delivery.id.to_string();
        let timestamp = at.timestamp();
        let signature = sign(secret, &id, timestamp, &delivery.payload)
            .ok_or_else(|| ServiceError::Upstream("webhook secret is malformed".into()))?;
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        let outcome = post_to_target(
            &self.settings.webhook_targets,
            &endpoint.url,
            ATTEMPT_TIMEOUT,
            &headers,
            delivery.payload.clone().into_bytes(),
        )
        .await;
        let (status_code, error) = match outcome {
            Ok(code) if (200..300).contains(&code) => (Some(code), None),
            Ok(code) => (Some(code), Some(format!("endpoint answered HTTP {code}"))),
            Err(e) => (None, Some(e)),
        };
        let failed = error.is_some();
        delivery.record(DeliveryAttempt {
            at,
            status_code,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
        });
        self.webhooks.update_delivery(delivery).await?;
        if failed {
            warn!(status = ?status_code, "webhook delivery failed");
        } else {
            info!("webhook delivered");
        }
        self.track_failures(&delivery.tenant_id, endpoint.id, failed)
            .await
    }

    async fn track_failures(
        &self,
        tenant: &TenantId,
        id: Uuid,
        failed: bool,
    ) -> Result<(), ServiceError> {
        // Read again: another attempt may have changed it meanwhile.
        let Some((mut endpoint, _)) = self.webhooks.get_webhook(tenant, id).await? else {
            return Ok(());
        };
        let now = Utc::now();
        let mut disabled = false;
        match (failed, endpoint.failing_since) {
            (false, None) => return Ok(()),
            (false, Some(_)) => endpoint.failing_since = None,
            (true, None) => endpoint.failing_since = Some(now),
            (true, Some(since)) if endpoint.enabled && now - since >= DISABLE_AFTER => {
                endpoint.enabled = false;
                disabled = true;
            }
            (true, Some(_)) => return Ok(()),
        }
        endpoint.updated_at = now;
        self.webhooks.update_webhook(tenant, &endpoint).await?;
        if disabled {
            warn!(webhook_id = %id, "webhook endpoint disabled after failing for 5 days");
            let system = Actor {
                kind: ActorType::System,
                id: "webhooks".into(),
                name: "webhook dispatcher".into(),
            };
            self.audit(
                tenant,
                &system,
                "webhook.disable",
                Some(format!("webhook:{id}")),
                json!({"reason": "failing for 5 days", "failing_since": endpoint.failing_since}),
            )
            .await;
        }
        Ok(())
    }

    async fn endpoint(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<(WebhookEndpoint, Secret), ServiceError> {
        self.webhooks
            .get_webhook(tenant, id)
            .await?
            .ok_or(ServiceError::NotFound("webhook"))
    }

    /// A URL that may be saved: HTTPS (or what the test switch allows), its host resolving
    /// only to allowed addresses now (and checked again at each delivery).
    async fn checked_webhook_url(&self, raw: &str) -> Result<String, ServiceError> {
        let policy = &self.settings.webhook_targets;
        let url = policy.check_url(raw.trim())?;
        resolve(policy, &url).await?;
        Ok(url.to_string())
    }

    async fn audit_webhook(&self, caller: &Caller, action: &str, endpoint: &WebhookEndpoint) {
        // The URL may carry a token in its query: only the host is kept.
        let host = url::Url::parse(&endpoint.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        self.audit(
            &caller.tenant,
            &caller.actor,
            action,
            Some(format!("webhook:{}", endpoint.id)),
            json!({"host": host, "events": endpoint.events, "enabled": endpoint.enabled}),
        )
        .await;
    }
}

fn checked_events(mut events: Vec<EventType>) -> Result<Vec<EventType>, ServiceError> {
    events.sort();
    events.dedup();
    if events.is_empty() {
        return Err(ServiceError::InvalidRequest(
            "events must name at least one event type".into(),
        ));
    }
    Ok(events)
}

fn checked_description(description: Option<String>) -> Result<Option<String>, ServiceError> {
    let description = description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(ServiceError::InvalidRequest(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(description)
}
