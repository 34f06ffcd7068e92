//! Cross-origin calls from browser-based dispatch integrations (`OMNI_CORS_ORIGINS`).
//!
//! Only the listed origins ever meet tower-http's [`CorsLayer`]: their preflights are
//! answered on every route and their requests get the CORS headers. A request from any
//! other origin passes by untouched, so it gets no CORS header at all (not even the
//! allowed methods on a preflight), and the browser keeps its response from the page.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The browser origins allowed to call the API, as `scheme://host[:port]`; empty (the
/// default) allows none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsOrigins(Arc<[HeaderValue]>);

impl CorsOrigins {
    /// Reads a comma-separated list of origins (blanks around commas ignored). Each must be
    /// `http` or `https`, a host and an optional port, with no path, query or trailing
    /// slash: that is the form browsers send in `Origin`, which is compared byte for byte.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut origins = Vec::new();
        for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .ok_or_else(|| {
                    format!("CORS origin {origin:?} must start with https:// or http://")
                })?;
            let host_ok = !rest.is_empty()
                && rest.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                });
            if !host_ok {
                return Err(format!(
                    "CORS origin {origin:?} must be scheme://host[:port], without a path or a trailing slash"
                ));
            }
            let value = HeaderValue::from_str(&origin.to_ascii_lowercase())
                .map_err(|_| format!("CORS origin {origin:?} is not a valid header value"))?;
            if !origins.contains(&value) {
                origins.push(value);
            }
        }
        Ok(CorsOrigins(origins.into()))
    }

    /// Whether no origin is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.0.iter().any(|o| o == origin)
    }
}

impl std::str::FromStr for CorsOrigins {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        CorsOrigins::parse(raw)
    }
}

/// `router` answering the allowed origins' preflights and marking their responses; the
/// router itself when no origin is allowed.
pub fn apply(router: Router, origins: &CorsOrigins) -> Router {
    if origins.is_empty() {
        return router;
    }
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.0.iter().cloned()))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::LOCATION,
        ])
        .max_age(Duration::from_secs(600));
    router.layer(middleware::from_fn_with_state(
        (origins.clone(), cors),
        only_allowed,
    ))
}

/// Sends a request from an allowed origin through the CORS layer, any other straight on.
async fn only_allowed(
    State((origins, cors)): State<(CorsOrigins, CorsLayer)>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| origins.allows(o));
    if !allowed {
        return next.run(request).await;
    }
    match cors.layer(next).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;

    use super::*;

    const ALLOWED: &str = "https://dispatch.example.org";

    fn app(origins: &str) -> Router {
        let router = Router::new().route("/v1/things", get(|| async { "things" }));
        crate::routes::finish(router, &CorsOrigins::parse(origins).unwrap())
    }

    fn preflight(origin: &str) -> Request {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/things")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    }

    fn actual(origin: &str) -> Request {
        Request::builder()
            .uri("/v1/things")
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    }

    fn cors_headers(response: &Response) -> Vec<String> {
        response
            .headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k.starts_with("access-control-"))
            .collect()
    }

    #[tokio::test]
    async fn an_allowed_origin_gets_its_preflight_answered_and_its_request_marked() {
        let app = app(&format!("https://other.example, {ALLOWED}"));
        let response = app.clone().oneshot(preflight(ALLOWED)).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let h = response.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], ALLOWED);
        let methods = h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let headers = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
        assert!(headers.contains("authorization"), "{headers}");

        // Any path, even one the router does not serve, answers the preflight.
        let mut unknown = preflight(ALLOWED);
        *unknown.uri_mut() = "/v1/admin/whatever/else".parse().unwrap();
        let response = app.clone().oneshot(unknown).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            ALLOWED
        );

        let response = app.oneshot(actual(ALLOWED)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            ALLOWED
        );
        let exposed = response.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap();
        assert!(exposed.contains("x-request-id"), "{exposed}");
    }

    #[tokio::test]
    async fn another_origin_gets_no_cors_header_at_all() {
        let app = app(ALLOWED);
        for origin in [
            "https://evil.example",
            "https://dispatch.example.org.evil",
            "null",
        ] {
            let response = app.clone().oneshot(preflight(origin)).await.unwrap();
            assert!(
                !response.status().is_success(),
                "{origin}: {}",
                response.status()
            );
            assert_eq!(cors_headers(&response), Vec::<String>::new(), "{origin}");
            let response = app.clone().oneshot(actual(origin)).await.unwrap();
            // The request itself is served (CORS is the browser's rule, not an auth check);
            // without the header the browser keeps the answer from the page.
            assert_eq!(response.status(), 200);
            assert_eq!(cors_headers(&response), Vec::<String>::new(), "{origin}");
        }
    }

    #[tokio::test]
    async fn with_no_origin_configured_nothing_is_allowed() {
        let response = app("").oneshot(preflight(ALLOWED)).await.unwrap();
        assert!(!response.status().is_success());
        assert_eq!(cors_headers(&response), Vec::<String>::new());
    }

    #[test]
    fn origins_are_parsed_and_checked() {
        let parsed = CorsOrigins::parse(" https://A.example , http://localhost:3000,,").unwrap();
        assert_eq!(
            parsed.0.as_ref(),
            [
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("http://localhost:3000")
            ]
        );
        assert!(CorsOrigins::parse("").unwrap().is_empty());
        for bad in [
            "dispatch.example.org",
            "https://a.example/",
            "https://a.example/path",
            "ftp://a.example",
            "https://",
            "*",
        ] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad}");
        }
    }
}
