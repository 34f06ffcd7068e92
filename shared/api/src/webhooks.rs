//! Carrier webhooks. No tenant in the path: the called number decides.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use omni_core::domain::ProviderKind;
use omni_core::providers::{
    WebhookHandler, WebhookMethod, WebhookReply, WebhookRequest, WebhookRoute, CARRIERS,
};

use crate::error::ApiError;
use crate::routes::Routes;
use crate::{AppState, ClientAddr};

/// The carrier webhooks as a finished router (the webhook functions on AWS).
pub fn app(state: AppState) -> axum::Router {
    let cors = state.cors.clone();
    crate::routes::finish(routes(state).into_router(), &cors)
}

/// The webhook routes (the `webhook-*` functions on AWS): every route each carrier of
/// [`CARRIERS`] declares, the methods of one path on one route.
pub fn routes(state: AppState) -> Routes {
    let mut routes = Routes::default();
    let mut paths: Vec<&'static str> = Vec::new();
    for carrier in CARRIERS {
        for route in carrier.webhooks {
            if !paths.contains(&route.path) {
                paths.push(route.path);
            }
        }
    }
    for path in paths {
        let mut methods = Vec::new();
        let mut handler = MethodRouter::new();
        for carrier in CARRIERS {
            for route in carrier.webhooks.iter().filter(|r| r.path == path) {
                let method = match route.method {
                    WebhookMethod::Get => Method::GET,
                    WebhookMethod::Post => Method::POST,
                };
                handler = handler.merge(webhook_handler(carrier.kind, route));
                methods.push(method);
            }
        }
        routes = routes.route(path, &methods, handler.with_state(state.clone()));
    }
    routes
}

/// The handler serving one declared route, for its method only.
fn webhook_handler(kind: ProviderKind, route: &WebhookRoute) -> MethodRouter<AppState> {
    let filter = match route.method {
        WebhookMethod::Get => MethodFilter::GET,
        WebhookMethod::Post => MethodFilter::POST,
    };
    let reply = route.reply.content();
    match route.handler {
        WebhookHandler::Adapter => on(filter, move |s, p, b| accept(kind, reply, s, p, b)),
        WebhookHandler::MetaHandshake => on(filter, whatsapp_subscription),
        WebhookHandler::AmazonSns => on(filter, ses_sns),
    }
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
    let (content_type, body) = WebhookReply::Ok.content();
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
