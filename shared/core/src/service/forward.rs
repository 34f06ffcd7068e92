//! WhatsApp routing by business account: the platform's routes, the split of an incoming
//! webhook into what other environments own and what is handled here, and the forwarder
//! that hands each routed webhook over, exactly as Meta sent it, retrying for up to a day.

use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{JobError, ServiceError, Services};
use crate::domain::TenantId;
use crate::ports::Job;
use crate::providers::whatsapp;
use crate::providers::{Secret, WebhookRequest, MIN_WEBHOOK_SECRET_CHARS};
use crate::team::Actor;
use crate::waba::{
    account_ids, without_accounts, ForwardCount, TargetError, TargetPolicy, WabaId, WabaRoute,
    FORWARDED_HEADER, MAX_NOTE_CHARS,
};

/// How long a routed webhook is retried before it is dead-lettered.
pub const FORWARD_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How long one forwarding call may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// What is left to handle here of a WhatsApp webhook once routed accounts are taken out.
pub(super) enum Split {
    /// No routed account: handle it all, as before routes existed.
    Local,
    /// Every account it names is routed elsewhere: nothing is left here.
    Forwarded,
    /// The body without the routed accounts' entries, to read (its signature covers the
    /// original bytes).
    Rest(Vec<u8>),
}

impl From<TargetError> for ServiceError {
    fn from(e: TargetError) -> Self {
        ServiceError::InvalidRequest(e.to_string())
    }
}

impl Services {
    /// Saves the route of a business account (`PUT /v1/admin/whatsapp/waba-routes/{id}`):
    /// the target must be a public HTTPS URL (its host is resolved now, and again at each
    /// send), and the app secret as strong as any webhook secret. Counters survive a change.
    /// Audited in the platform's log (routes belong to no tenant), never with the secret.
    #[instrument(skip_all, fields(waba_id = raw_id))]
    pub async fn put_waba_route(
        &self,
        raw_id: &str,
        url: &str,
        app_secret: Secret,
        note: Option<String>,
        actor: &Actor,
    ) -> Result<WabaRoute, ServiceError> {
        let waba_id = parse_id(raw_id)?;
        let target = self.settings.forward_targets.check_url(url)?;
        resolve(&self.settings.forward_targets, &target).await?;
        if app_secret.expose().chars().count() < MIN_WEBHOOK_SECRET_CHARS {
            return Err(ServiceError::InvalidRequest(format!(
                "app_secret must be at least {MIN_WEBHOOK_SECRET_CHARS} characters"
            )));
        }
        let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if note
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
        {
            return Err(ServiceError::InvalidRequest(format!(
                "note must be at most {MAX_NOTE_CHARS} characters"
            )));
        }
        let route = WabaRoute::new(waba_id, target.to_string(), note, Utc::now());
        let stored = self.waba.put_waba_route(&route, &app_secret).await?;
        info!("whatsapp business account route saved");
        self.audit(
            &TenantId::platform(),
            actor,
            "waba_route.put",
            Some(stored.waba_id.to_string()),
            json!({ "url": stored.url, "note": stored.note }),
        )
        .await;
        Ok(stored)
    }

    /// Every route, with its counters (no secrets).
    pub async fn list_waba_routes(&self) -> Result<Vec<WabaRoute>, ServiceError> {
        Ok(self.waba.list_waba_routes().await?)
    }

    /// Removes a route; `NotFound` when there was none. Webhooks still queued for it are
    /// dropped when their turn comes. Audited in the platform's log.
    pub async fn delete_waba_route(&self, raw_id: &str, actor: &Actor) -> Result<(), ServiceError> {
        let waba_id = parse_id(raw_id).map_err(|_| ServiceError::NotFound("route"))?;
        if !self.waba.delete_waba_route(&waba_id).await? {
            return Err(ServiceError::NotFound("route"));
        }
        info!(waba_id = %waba_id, "whatsapp business account route removed");
        self.audit(
            &TenantId::platform(),
            actor,
            "waba_route.delete",
            Some(waba_id.to_string()),
            json!({}),
        )
        .await;
        Ok(())
    }

    /// Takes the routed accounts out of a WhatsApp webhook: each routed account's app secret
    /// must match `X-Hub-Signature-256` (else nothing is forwarded nor handled), and the
    /// webhook is queued once per routed account before this returns, so the caller may
    /// acknowledge it. A webhook that was forwarded to us is never forwarded again.
    pub(super) async fn split_routed(
        &self,
        request: &WebhookRequest,
    ) -> Result<Split, ServiceError> {
        if request.header(FORWARDED_HEADER).is_some() {
            return Ok(Split::Local);
        }
        let mut routed = Vec::new();
        for id in account_ids(&request.body) {
            if let Some((_, secret)) = self.waba.get_waba_route(&id).await? {
                routed.push((id, secret));
            }
        }
        if routed.is_empty() {
            return Ok(Split::Local);
        }
        let signature = request
            .header("x-hub-signature-256")
            .ok_or(ServiceError::InvalidSignature)?;
        for (id, secret) in &routed {
            if !whatsapp::signature_matches(&request.body, signature, secret.expose()) {
                warn!(waba_id = %id, "routed whatsapp webhook signature rejected");
                return Err(ServiceError::InvalidSignature);
            }
        }
        let received_at = Utc::now();
        let body = B64.encode(&request.body);
        for (id, _) in &routed {
            let job = Job::Forward {
                waba_id: id.clone(),
                body: body.clone(),
                signature: signature.to_owned(),
                received_at,
                attempts: 0,
            };
            self.queue.enqueue(&job, Duration::ZERO).await?;
            // The webhook is durably queued: a lost count must not make Meta send it again.
            if let Err(e) = self.waba.count_forward(id, ForwardCount::Queued).await {
                warn!(waba_id = %id, error = %e, "forward counter not updated");
            }
        }
        info!(
            accounts = routed.len(),
            "whatsapp webhook queued for forwarding"
        );
        let ids: Vec<WabaId> = routed.into_iter().map(|(id, _)| id).collect();
        Ok(match without_accounts(&request.body, &ids) {
            Some(rest) => Split::Rest(rest),
            None => Split::Forwarded,
        })
    }

    /// One attempt at handing a routed webhook to its account's environment: on a 2xx it is
    /// counted forwarded; on any other answer, a timeout or a refused target it is queued
    /// again with backoff (`OMNI_RETRY_BASE_MS` doubling up to `OMNI_RETRY_MAX_MS`), until
    /// [`FORWARD_WINDOW`] after it arrived, when it is dead-lettered and counted failed.
    #[instrument(skip_all, fields(waba_id = %waba_id, attempts))]
    pub(super) async fn forward(
        &self,
        job: &Job,
        waba_id: &WabaId,
        body: &str,
        signature: &str,
        received_at: DateTime<Utc>,
        attempts: u32,
    ) -> Result<(), JobError> {
        let Some((route, _)) = self
            .waba
            .get_waba_route(waba_id)
            .await
            .map_err(ServiceError::from)?
        else {
            warn!("route removed; queued webhook dropped");
            return Ok(());
        };
        let raw = B64
            .decode(body)
            .map_err(|_| JobError::Fatal("forwarded body is not base64".into()))?;
        let error = match self.send_forward(&route.url, raw, signature).await {
            Ok(()) => {
                self.waba
                    .count_forward(waba_id, ForwardCount::Forwarded(Utc::now()))
                    .await
                    .map_err(ServiceError::from)?;
                info!("whatsapp webhook forwarded");
                return Ok(());
            }
            Err(error) => error,
        };
        let attempts = attempts + 1;
        let delay = self.settings.retry.delay(attempts, None);
        let give_up = received_at + FORWARD_WINDOW;
        if Utc::now() + delay > give_up {
            warn!(%error, "whatsapp webhook forwarding given up");
            self.queue
                .dead_letter(job, &format!("forwarding failed for 24 h: {error}"))
                .await
                .map_err(ServiceError::from)?;
            self.waba
                .count_forward(waba_id, ForwardCount::Failed)
                .await
                .map_err(ServiceError::from)?;
            return Ok(());
        }
        warn!(%error, retry_in_ms = delay.as_millis() as u64, "whatsapp webhook forwarding failed");
        let mut next = job.clone();
        if let Job::Forward { attempts: a, .. } = &mut next {
            *a = attempts;
        }
        self.queue
            .enqueue(&next, delay)
            .await
            .map_err(ServiceError::from)?;
        Ok(())
    }

    /// Posts the body to the target with Meta's signature (see [`post_to_target`]).
    async fn send_forward(&self, url: &str, body: Vec<u8>, signature: &str) -> Result<(), String> {
        let headers = [
            ("x-hub-signature-256", signature.to_owned()),
            (FORWARDED_HEADER, "1".to_owned()),
        ];
        let policy = &self.settings.forward_targets;
        let status = post_to_target(policy, url, FORWARD_TIMEOUT, &headers, body).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("target answered HTTP {status}"))
        }
    }
}

/// Posts a JSON body to a target URL checked again now (its host resolved, every address
/// allowed by `policy`) and pinned to the addresses checked, so DNS cannot move it in
/// between; no redirect is followed. The answer's status, or why none came (never the URL,
/// which may carry a token).
pub(super) async fn post_to_target(
    policy: &TargetPolicy,
    url: &str,
    timeout: Duration,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<u16, String> {
    let target = policy.check_url(url).map_err(|e| e.to_string())?;
    let addrs = resolve(policy, &target).await.map_err(|e| e.to_string())?;
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout);
    if let Some(url::Host::Domain(host)) = target.host() {
        client = client.resolve_to_addrs(host, &addrs);
    }
    let client = client.build().map_err(|e| format!("client: {e}"))?;
    let mut request = client
        .post(target)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", without_url(&e)))?;
    Ok(response.status().as_u16())
}

fn parse_id(raw: &str) -> Result<WabaId, ServiceError> {
    WabaId::parse(raw).ok_or_else(|| {
        ServiceError::InvalidRequest(
            "waba_id must be a WhatsApp Business Account id (digits)".into(),
        )
    })
}

/// The addresses a target's host resolves to, all allowed by `policy`.
pub(super) async fn resolve(
    policy: &TargetPolicy,
    target: &url::Url,
) -> Result<Vec<SocketAddr>, TargetError> {
    let port = target.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match target.host() {
        Some(url::Host::Domain(host)) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| TargetError::Unresolved)?
            .collect(),
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        None => Vec::new(),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolved);
    }
    for addr in &addrs {
        policy.check_addr(addr.ip())?;
    }
    Ok(addrs)
}

/// A reqwest error's text without its URL (a target URL may carry a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    kind.to_owned()
}
