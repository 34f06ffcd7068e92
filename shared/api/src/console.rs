//! The dispatcher console: a static page built into the binary (no CDN: dispatch centres
//! may have no internet). It talks to the same public API as any client.

use axum::http::{header, Method};
use axum::routing::get;

use crate::routes::Routes;

const INDEX: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// `/`, `/console/app.js`, `/console/app.css`.
pub fn routes() -> Routes {
    Routes::default()
        .route(
            "/",
            &[Method::GET],
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route(
            "/console/app.js",
            &[Method::GET],
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/console/app.css",
            &[Method::GET],
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }),
        )
}
