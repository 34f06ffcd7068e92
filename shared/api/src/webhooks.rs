//! Carrier webhooks. No tenant in the path: the called number decides.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, post, MethodFilter};
use omni_core::domain::ProviderKind;
use omni_core::providers::WebhookRequest;

use crate::error::ApiError;
use crate::routes::Routes;
use crate::AppState;

/// The webhook routes (`webhook-twilio` and `webhook-voipms` functions on AWS).
pub fn routes(state: AppState) -> Routes {
    Routes::default()
        .route(
            "/webhooks/twilio",
            &[Method::POST],
            post(twilio).with_state(state.clone()),
        )
        .route(
            "/webhooks/twilio/status",
            &[Method::POST],
            post(twilio).with_state(state.clone()),
        )
        .route(
            "/webhooks/voipms",
            &[Method::GET, Method::POST],
            on(MethodFilter::GET.or(MethodFilter::POST), voipms).with_state(state.clone()),
        )
        .route(
            "/webhooks/whatsapp",
            &[Method::GET, Method::POST],
            get(whatsapp_subscription).post(whatsapp).with_state(state),
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
    let base = state.services.settings.public_url.trim_end_matches('/');
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

async fn twilio(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = webhook_request(&state, &method, &uri, &headers, body);
    state
        .services
        .handle_webhook(ProviderKind::Twilio, &request)
        .await?;
    // Empty TwiML: acknowledged, no auto-reply.
    Ok((
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>",
    )
        .into_response())
}

async fn voipms(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = webhook_request(&state, &method, &uri, &headers, body);
    state
        .services
        .handle_webhook(ProviderKind::Voipms, &request)
        .await?;
    // VoIP.ms retries until the body is exactly `ok`.
    Ok(([(header::CONTENT_TYPE, "text/plain")], "ok").into_response())
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

async fn whatsapp(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = webhook_request(&state, &method, &uri, &headers, body);
    state
        .services
        .handle_webhook(ProviderKind::Whatsapp, &request)
        .await?;
    // Meta only needs a 200; anything else is retried.
    Ok(([(header::CONTENT_TYPE, "text/plain")], "ok").into_response())
}
