//! Signed event webhooks to a tenant's own systems (CRM, CAD, data platform): the endpoints a
//! tenant registers, the deliveries written to an outbox in the same commit as the change
//! that caused them, their retry schedule, and their signatures, which follow the Standard
//! Webhooks specification (<https://www.standardwebhooks.com>) so receivers can check them
//! with its official libraries.
//!
//! The flow lives in the services, the storage behind [`crate::ports::WebhookStore`].

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::{string_enum, TenantId};
use crate::ports::PushEvent;
use crate::providers::Secret;

string_enum!(
    /// What an endpoint can subscribe to.
    EventType, "webhook event type" {
        /// An inbound message was stored.
        MessageReceived => "message.received",
        /// A carrier accepted an outbound message.
        MessageSent => "message.sent",
        /// A message's delivery status changed.
        MessageStatus => "message.status",
        /// A conversation changed (a new message, resolved or reopened).
        ConversationUpdated => "conversation.updated",
        /// A conversation was assigned or unassigned.
        ConversationAssigned => "conversation.assigned",
    }
);

/// The type of the delivery `POST /v1/webhooks/{id}/test` sends (no endpoint subscribes to
/// it: it goes to the one endpoint tested).
pub const TEST_EVENT: &str = "webhook.test";

/// Every secret starts with this, as the Standard Webhooks libraries expect.
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// Longest endpoint description accepted.
pub const MAX_DESCRIPTION_CHARS: usize = 200;

/// Endpoints one tenant may have.
pub const MAX_ENDPOINTS: usize = 20;

/// How long one delivery attempt may take before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The delays before the second to the eighth attempt; after the eighth failure a delivery is
/// given up on (about 28 hours after the first).
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// An endpoint that has failed every attempt for this long is disabled.
pub const DISABLE_AFTER: TimeDelta = TimeDelta::days(5);

/// A tenant's endpoint, as the API shows it (its secret is kept apart and never listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// UUID v7.
    pub id: Uuid,
    /// Where deliveries are posted (HTTPS).
    pub url: String,
    /// What it subscribes to.
    pub events: Vec<EventType>,
    /// What it is for.
    pub description: Option<String>,
    /// Whether deliveries are made; an endpoint failing for [`DISABLE_AFTER`] is turned off.
    pub enabled: bool,
    /// Since when every attempt to it has failed (none after a success).
    pub failing_since: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    /// Whether a change of this type goes to the endpoint.
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled && self.events.iter().any(|e| e.as_str() == event_type)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Succeeded,
    /// Given up on after the last attempt (a retry through the API starts it again).
    Failed,
}

impl DeliveryState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Failed => "failed",
        }
    }

    /// The state of a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// One try at a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// When it started.
    pub at: DateTime<Utc>,
    /// The endpoint's HTTP status; none when no answer came (refused target, timeout).
    pub status_code: Option<u16>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Why it failed, when it did (never the URL nor a secret).
    pub error: Option<String>,
}

/// One event for one endpoint: its body is fixed when the change is committed, and its id is
/// the `webhook-id` of every attempt (receivers deduplicate on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// UUID v7, the `webhook-id` header.
    pub id: Uuid,
    /// Whose it is.
    #[serde(skip_serializing)]
    pub tenant_id: TenantId,
    /// The endpoint it goes to.
    pub endpoint_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryState,
    /// Every try so far, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
    /// When the next attempt is due (none once it succeeded or was given up on).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the change happened.
    pub created_at: DateTime<Utc>,
    /// The signed body: `{"type","timestamp","data"}`.
    #[serde(skip_serializing)]
    pub payload: String,
}

impl WebhookDelivery {
    /// A delivery of `payload` to `endpoint`, due now.
    pub fn new(
        tenant: &TenantId,
        endpoint: Uuid,
        event_type: &str,
        payload: String,
        now: DateTime<Utc>,
    ) -> Self {
        WebhookDelivery {
            id: Uuid::now_v7(),
            tenant_id: tenant.clone(),
            endpoint_id: endpoint,
            event_type: event_type.to_owned(),
            status: DeliveryState::Pending,
            attempts: Vec::new(),
            next_attempt_at: Some(now),
            created_at: now,
            payload,
        }
    }

    /// Records an attempt: succeeded on a 2xx, otherwise due again after the next step of
    /// [`RETRY_DELAYS`], or failed once they are spent.
    pub fn record(&mut self, attempt: DeliveryAttempt) {
        let ok = attempt.error.is_none();
        let at = attempt.at + TimeDelta::milliseconds(attempt.duration_ms as i64);
        self.attempts.push(attempt);
        if ok {
            self.status = DeliveryState::Succeeded;
            self.next_attempt_at = None;
            return;
        }
        match RETRY_DELAYS.get(self.attempts.len() - 1) {
            Some(delay) => {
                self.status = DeliveryState::Pending;
                self.next_attempt_at = Some(at + *delay);
            }
            None => {
                self.status = DeliveryState::Failed;
                self.next_attempt_at = None;
            }
        }
    }
}

/// The body of a delivery: `{"type","timestamp","data"}`, `data` being the WebSocket frame
/// dashboards are pushed for the same change.
pub fn event_body(event: &PushEvent) -> String {
    serde_json::json!({
        "type": event.kind,
        "timestamp": event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": event,
    })
    .to_string()
}

/// The deliveries of `events` to the endpoints that subscribe to them: what a store writes in
/// the commit that made the change (the outbox).
pub fn deliveries_for(
    tenant: &TenantId,
    endpoints: &[WebhookEndpoint],
    events: &[PushEvent],
    now: DateTime<Utc>,
) -> Vec<WebhookDelivery> {
    let mut out = Vec::new();
    for event in events {
        let wanted: Vec<&WebhookEndpoint> =
            endpoints.iter().filter(|e| e.wants(&event.kind)).collect();
        if wanted.is_empty() {
            continue;
        }
        let body = event_body(event);
        for endpoint in wanted {
            out.push(WebhookDelivery::new(
                tenant,
                endpoint.id,
                &event.kind,
                body.clone(),
                now,
            ));
        }
    }
    out
}

/// A new signing secret: [`SECRET_PREFIX`] and the base64 of random bytes.
pub fn generate_secret() -> Secret {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::new(format!("{SECRET_PREFIX}{}", B64.encode(bytes)))
}

/// The `webhook-signature` header of a delivery: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under the secret's decoded bytes. `None` for a secret that is
/// not [`SECRET_PREFIX`] and base64 (never one Omni issued).
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let raw = secret.expose().strip_prefix(SECRET_PREFIX)?;
    let key = B64.decode(raw).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published example
    /// (github.com/standard-webhooks/standard-webhooks, libraries' test vectors).
    #[test]
    fn signatures_match_the_specifications_test_vector() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(sign(&Secret::new("MfKQ9r8GKYqr"), "m", 1, body), None);
        assert_eq!(sign(&Secret::new("whsec_!!"), "m", 1, body), None);
    }

    #[test]
    fn secrets_are_prefixed_random_base64() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a.expose(), b.expose());
        let raw = a.expose().strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(B64.decode(raw).unwrap().len(), SECRET_BYTES);
    }

    #[test]
    fn failed_attempts_follow_the_schedule_then_give_up() {
        let tenant = TenantId::parse("t1").unwrap();
        let start = Utc::now();
        let mut d =
            WebhookDelivery::new(&tenant, Uuid::now_v7(), "message.sent", "{}".into(), start);
        let fail = |at| DeliveryAttempt {
            at,
            status_code: Some(500),
            duration_ms: 0,
            error: Some("HTTP 500".into()),
        };
        for delay in RETRY_DELAYS {
            let at = d.next_attempt_at.unwrap();
            d.record(fail(at));
            assert_eq!(d.status, DeliveryState::Pending);
            assert_eq!(d.next_attempt_at, Some(at + delay));
        }
        let at = d.next_attempt_at.unwrap();
        d.record(fail(at));
        assert_eq!(d.status, DeliveryState::Failed);
        assert_eq!(d.next_attempt_at, None);
        assert_eq!(d.attempts.len(), RETRY_DELAYS.len() + 1);
        d.record(DeliveryAttempt {
            at,
            status_code: Some(204),
            duration_ms: 3,
            error: None,
        });
        assert_eq!(d.status, DeliveryState::Succeeded);
    }

    #[test]
    fn only_enabled_subscribers_get_a_delivery_with_the_websocket_frame() {
        let tenant = TenantId::parse("t1").unwrap();
        let now = Utc::now();
        let endpoint = |events: Vec<EventType>, enabled| WebhookEndpoint {
            id: Uuid::now_v7(),
            url: "https://crm.example.org/hook".into(),
            events,
            description: None,
            enabled,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let endpoints = [
            endpoint(vec![EventType::ConversationAssigned], true),
            endpoint(vec![EventType::ConversationAssigned], false),
            endpoint(vec![EventType::MessageReceived], true),
        ];
        let event = PushEvent::about("conversation.assigned", &tenant, Uuid::now_v7());
        let out = deliveries_for(&tenant, &endpoints, std::slice::from_ref(&event), now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].endpoint_id, endpoints[0].id);
        let body: serde_json::Value = serde_json::from_str(&out[0].payload).unwrap();
        assert_eq!(body["type"], "conversation.assigned");
        assert_eq!(body["data"], serde_json::to_value(&event).unwrap());
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
