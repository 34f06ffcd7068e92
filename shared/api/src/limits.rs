//! Limits a server exposed directly to clients needs (`omni serve`): a deadline for reading a
//! request body, and caps on the URL and header sizes, each answered with the contract's
//! JSON error. On AWS, API Gateway enforces its own limits before a function runs.
//!
//! The deadline for reading the request *head* (slowloris) is the HTTP server's
//! (`omni serve` sets hyper's `header_read_timeout`): no handler runs before the head is in.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::MAX_BODY_BYTES;

/// What one request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The whole body must arrive within this time of the head (else 408).
    pub body_read_timeout: Duration,
    /// Longest request target (path and query), in bytes (else 414).
    pub max_url_bytes: usize,
    /// Largest header section (names, values and separators), in bytes (else 431).
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            body_read_timeout: Duration::from_secs(30),
            max_url_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl HttpLimits {
    /// The read buffer an HTTP/1 server needs so a head just over these limits is still read
    /// and answered in JSON here; a head past it is refused by the server itself (a bare 431).
    pub fn head_buffer_bytes(&self) -> usize {
        (self.max_url_bytes + self.max_header_bytes + 8 * 1024).max(8 * 1024)
    }
}

/// The size of the request target as sent (path and query, or the absolute form).
fn url_bytes(request: &Request) -> usize {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    scheme + authority + target
}

/// The size of the header section as sent (`name: value\r\n` each).
fn header_bytes(request: &Request) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// Refuses oversized URLs (414) and header sections (431), then reads the whole body within
/// the deadline (408, connection closed) and the 1 MiB limit (413) before any handler runs.
pub async fn enforce(
    State(limits): State<Arc<HttpLimits>>,
    request: Request,
    next: Next,
) -> Response {
    if url_bytes(&request) > limits.max_url_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the URL is longer than {} bytes", limits.max_url_bytes),
        )
        .into_response();
    }
    if header_bytes(&request) > limits.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the headers are larger than {} bytes",
                limits.max_header_bytes
            ),
        )
        .into_response();
    }
    // LiveChat uploads and message batches are the larger bodies (their routes have their
    // own limits).
    let cap = match request.uri().path() {
        crate::livechat::UPLOAD_PATH => crate::livechat::UPLOAD_BODY_BYTES,
        crate::dispatch::BATCH_PATH => crate::dispatch::BATCH_BODY_BYTES,
        _ => MAX_BODY_BYTES,
    };
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, cap);
    let bytes = match tokio::time::timeout(limits.body_read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return ApiError::payload_too_large().into_response(),
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    limits.body_read_timeout.as_millis()
                ),
            )
            .into_response();
            // The rest of the body is never read: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn app(limits: HttpLimits) -> Router {
        crate::routes::finish_with(
            Router::new().route("/echo", post(|body: String| async move { body })),
            Some(limits),
            &Default::default(),
        )
    }

    async fn json(response: Response) -> serde_json::Value {
        let body = axum::body::to_bytes(response.into_body(), 65536)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn long_urls_get_414_and_large_headers_431_in_json() {
        let limits = HttpLimits {
            max_url_bytes: 100,
            max_header_bytes: 200,
            ..Default::default()
        };
        let ok = axum::http::Request::post(format!("/echo?{}", "a".repeat(80)))
            .header("x-pad", "b".repeat(150))
            .body(Body::from("hi"))
            .unwrap();
        let response = app(limits).oneshot(ok).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let long = axum::http::Request::post(format!("/echo?{}", "a".repeat(100)))
            .body(Body::empty())
            .unwrap();
        let response = app(limits).oneshot(long).await.unwrap();
        assert_eq!(response.status(), StatusCode::URI_TOO_LONG);
        let body = json(response).await;
        assert_eq!(body["code"], "uri_too_long");
        assert!(!body["request_id"].as_str().unwrap().is_empty());

        let big = axum::http::Request::post("/echo")
            .header("x-pad", "b".repeat(200))
            .body(Body::empty())
            .unwrap();
        let response = app(limits).oneshot(big).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(json(response).await["code"], "headers_too_large");
    }

    #[tokio::test]
    async fn a_body_slower_than_the_deadline_gets_408_and_a_big_one_413() {
        let limits = HttpLimits {
            body_read_timeout: Duration::from_millis(100),
            ..Default::default()
        };
        // A body that never finishes.
        let never = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        let slow = axum::http::Request::post("/echo")
            .body(Body::from_stream(never))
            .unwrap();
        let response = app(limits).oneshot(slow).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(json(response).await["code"], "request_timeout");

        let big = axum::http::Request::post("/echo")
            .body(Body::from(vec![b'x'; MAX_BODY_BYTES + 1]))
            .unwrap();
        let response = app(limits).oneshot(big).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json(response).await["code"], "payload_too_large");
    }
}
