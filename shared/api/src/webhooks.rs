//! Carrier webhooks. No tenant in the path: the called number decides.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, post, MethodFilter};
use omni_core::domain::ProviderKind;
use omni_core::providers::WebhookRequest;

use crate::error::ApiError;
use crate::routes::Routes;
use crate::{AppState, ClientAddr};

/// The carrier webhooks as a finished router (the webhook functions on AWS).
pub fn app(state: AppState) -> axum::Router {
    crate::routes::finish(routes(state).into_router())
}

/// The webhook routes (the `webhook-*` functions on AWS).
pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/webhooks/twilio",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Twilio, TWIML, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/twilio/status",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Twilio, TWIML, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/voipms",
            &[Method::GET, Method::POST],
            on(MethodFilter::GET.or(MethodFilter::POST), |s, p, b| {
                accept(ProviderKind::Voipms, OK, s, p, b)
            })
            .with_state(state.clone()),
        )
        .route(
            "/webhooks/telnyx",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Telnyx, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/telnyx/status",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Telnyx, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/bandwidth",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Bandwidth, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/bandwidth/status",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Bandwidth, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/sinch",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Sinch, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/sinch/status",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Sinch, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/voicemeup",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Voicemeup, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/vonage",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Vonage, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/vonage/status",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Vonage, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/sendgrid",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Sendgrid, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/sendgrid/events",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Sendgrid, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/bird",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Bird, OK, s, p, b)).with_state(state.clone()),
        )
        .route(
            "/webhooks/inteliquent",
            &[Method::POST],
            post(|s, p, b| accept(ProviderKind::Inteliquent, OK, s, p, b))
                .with_state(state.clone()),
        )
        .route(
            "/webhooks/ses",
            &[Method::POST],
            post(ses_sns).with_state(state.clone()),
        )
        .route(
            "/webhooks/messagebird",
            &[Method::GET, Method::POST],
            on(MethodFilter::GET.or(MethodFilter::POST), |s, p, b| {
                accept(ProviderKind::MessageBird, OK, s, p, b)
            })
            .with_state(state.clone()),
        )
        .route(
            "/webhooks/messagebird/status",
            &[Method::GET, Method::POST],
            on(MethodFilter::GET.or(MethodFilter::POST), |s, p, b| {
                accept(ProviderKind::MessageBird, OK, s, p, b)
            })
            .with_state(state.clone()),
        )
        .route(
            "/webhooks/whatsapp",
            &[Method::GET, Method::POST],
            get(whatsapp_subscription)
                .post(|s, p, b| accept(ProviderKind::Whatsapp, OK, s, p, b))
                .with_state(state),
        )
}

/// The request as the carrier made it, with the URL it called as our public URL says: behind
/// a TLS-terminating proxy the Host header and scheme are not what the carrier signed.
fn webhook_request(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> WebhookRequest {
    let configured = state.services.settings.public_url.trim_end_matches('/');
    // Unset on Lambda behind API Gateway's own domain (the template cannot name it without a
    // cycle): the gateway terminates TLS and passes the domain as Host.
    let derived;
    let base = if configured.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        derived = format!("https://{host}");
        derived.as_str()
    } else {
        configured
    };
    let url = match uri.query() {
        Some(q) => format!("{base}{}?{q}", uri.path()),
        None => format!("{base}{}", uri.path()),
    };
    WebhookRequest {
        method: method.as_str().to_string(),
        url,
        headers: headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), v.to_string()))
            })
            .collect(),
        body: body.to_vec(),
    }
}

/// What a carrier expects back: (content type, body).
type Reply = (&'static str, &'static str);
/// Twilio: empty TwiML, acknowledged with no auto-reply.
const TWIML: Reply = (
    "text/xml",
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>",
);
/// VoIP.ms retries until the body is exactly `ok`; Meta, Telnyx, Bandwidth, Sinch and VoiceMeUp only
/// need a 2xx.
/// VoIP.ms retries until the body is exactly `ok`; Meta, Telnyx, Bandwidth, Sinch and Vonage
/// only need a 2xx.
const OK: Reply = ("text/plain", "ok");

/// Accepts one carrier webhook and answers in the carrier's form once it is committed.
async fn accept(
    kind: ProviderKind,
    reply: Reply,
    State(state): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = webhook_request(&state, &parts.method, &parts.uri, &parts.headers, body);
    state
        .services
        .handle_webhook(kind, &request, ClientAddr::of(&parts.extensions))
        .await?;
    Ok(([(header::CONTENT_TYPE, reply.0)], reply.1).into_response())
}

/// Meta's subscription handshake: echo `hub.challenge` when the verify token is a tenant's.
async fn whatsapp_subscription(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Response, ApiError> {
    match state
        .services
        .whatsapp_subscription(uri.query().unwrap_or(""))
        .await?
    {
        Some(challenge) => Ok(([(header::CONTENT_TYPE, "text/plain")], challenge).into_response()),
        None => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "verify token does not match",
        )),
    }
}

/// Amazon SES over SNS: subscription handshakes, received email and SES events. SNS only needs
/// a 2xx; it redelivers on anything else.
async fn ses_sns(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    state.services.handle_ses_sns(&body).await?;
    Ok(([(header::CONTENT_TYPE, OK.0)], OK.1).into_response())
}
