//! The one place errors become HTTP responses: `{"error", "code", "request_id"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use omni_core::service::ServiceError;

/// The request's id, set by the request-id middleware for the duration of the request.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

tokio::task_local! {
    /// The id of the request being handled on this task.
    pub static REQUEST_ID: RequestId;
}

/// An error response of the contract.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header (429 only).
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 `rate_limited` with `Retry-After: retry_after_secs` (at least 1).
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let secs = retry_after_secs.max(1);
        ApiError {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry after {secs} s"),
            )
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than 1 MiB",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use ServiceError::*;
        let (status, code) = match &e {
            InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            InvalidPhoneNumber(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_phone_number"),
            ChannelNotConfigured(_) => (StatusCode::UNPROCESSABLE_ENTITY, "channel_not_configured"),
            RecipientOptedOut => (StatusCode::UNPROCESSABLE_ENTITY, "recipient_opted_out"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            InvalidSignature => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            MediaUnavailable(_) => (StatusCode::BAD_GATEWAY, "media_unavailable"),
            Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            IdentityInvalid => (StatusCode::UNAUTHORIZED, "identity_invalid"),
            UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            TemplateNotFound(_) => (StatusCode::NOT_FOUND, "template_not_found"),
            TemplateNotApproved(_) => (StatusCode::CONFLICT, "template_not_approved"),
            TemplateLanguageUnavailable(_) => {
                (StatusCode::BAD_REQUEST, "template_language_unavailable")
            }
            NotAllowed(_) => (StatusCode::FORBIDDEN, "forbidden"),
            LockedOut(secs) | RateLimited(secs) => return ApiError::rate_limited(*secs),
            Store(source) => {
                // The cause goes to the log only; the client gets the request id to quote.
                tracing::error!(error = %source, "storage failure");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl ApiError {
    /// `{"code", "error"}`: the error where it is one item of a larger answer (a batch's).
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code, "error": self.message})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.body();
        body["request_id"] = REQUEST_ID
            .try_with(|r| r.0.clone())
            .unwrap_or_default()
            .into();
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<omni_core::ports::StoreError> for ApiError {
    fn from(e: omni_core::ports::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::payload_too_large();
        }
        ApiError::invalid(e.body_text())
    }
}
