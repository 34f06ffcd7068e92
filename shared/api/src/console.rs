//! The dispatcher console: a static page built into the binary (no CDN: dispatch centres
//! may have no internet). It talks to the same public API as any client.
//!
//! Served with a strict Content-Security-Policy: its own script and style only (no inline
//! script, so injected markup cannot run), pictures and media from itself, its blobs and
//! carriers' HTTPS links, requests to itself only, and never inside a frame.

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::routes::Routes;

const INDEX: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// The console's Content-Security-Policy.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: https:; media-src 'self' blob: https:; connect-src 'self'; \
     form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'";

/// A console file with the headers every one of them carries.
fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONSOLE_CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // For browsers that predate frame-ancestors.
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, body)
}

/// `/`, `/console/app.js`, `/console/app.css`.
pub fn routes() -> Routes {
    Routes::default()
        .route(
            "/",
            &[Method::GET],
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/app.js",
            &[Method::GET],
            get(|| async { file("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/app.css",
            &[Method::GET],
            get(|| async { file("text/css; charset=utf-8", APP_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    /// The console used to be served with no policy at all.
    #[tokio::test]
    async fn every_console_file_carries_the_strict_policy_and_headers() {
        let app = routes().into_router();
        for path in ["/", "/console/app.js", "/console/app.css"] {
            let response = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let h = response.headers();
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe"), "{path}: {csp}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{path}");
        }
        // Nothing in the page needs what the policy forbids: inline script, handlers, style.
        for inline in ["<script>", "onclick=", "onsubmit=", "onload=", "style="] {
            assert!(!INDEX.contains(inline), "index.html has {inline}");
        }
    }
}
