//! The per-tenant token bucket on the send API (`POST /v1/messages`).
//!
//! The bucket lives in memory, in the send router ([`crate::dispatch::send_routes`]) that
//! builds it: one per `omni serve` process, and one per Lambda function *instance* on AWS. A
//! tenant hitting several warm instances of the `send` function at once gets `burst` from
//! each, so on Lambda this bounds the rate per instance, not across the fleet (reserved
//! concurrency on the function bounds the fleet).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use omni_core::domain::TenantId;
use omni_core::service::SendRateLimit;

use crate::error::ApiError;

/// Sends allowed per tenant: `burst` at once, refilled at `per_second`.
pub struct SendLimiter {
    limiter: Option<DefaultKeyedRateLimiter<TenantId>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for SendLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendLimiter")
            .field("enabled", &self.limiter.is_some())
            .finish()
    }
}

impl SendLimiter {
    /// A limiter with `limit` (`per_second` 0: every send is allowed).
    pub fn new(limit: SendRateLimit) -> Self {
        // One token every 1/rate seconds; NaN, negative and 0 mean no limit, and a rate too
        // small to represent waits a day.
        let period = (limit.per_second.is_finite() && limit.per_second > 0.0).then(|| {
            Duration::try_from_secs_f64(1.0 / limit.per_second)
                .unwrap_or(Duration::from_secs(86_400))
                .clamp(Duration::from_nanos(1), Duration::from_secs(86_400))
        });
        let limiter = period.and_then(Quota::with_period).map(|quota| {
            let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(quota.allow_burst(burst))
        });
        SendLimiter {
            limiter,
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token of `tenant`'s bucket, or says how long until one is there.
    pub fn check(&self, tenant: &TenantId) -> Result<(), RateLimited> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(tenant).map_err(|not_until| RateLimited {
            wait: not_until.wait_time_from(self.clock.now()),
        })
    }
}

/// A send refused by the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// How long until the tenant's next token.
    pub wait: Duration,
}

impl RateLimited {
    /// `Retry-After` in whole seconds, rounded up and at least 1 (a client retrying after
    /// that many seconds finds a token).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl From<RateLimited> for ApiError {
    /// 429 `rate_limited` with `Retry-After`.
    fn from(limited: RateLimited) -> Self {
        ApiError::rate_limited(limited.retry_after_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    #[test]
    fn the_bucket_holds_burst_sends_per_tenant() {
        let limiter = SendLimiter::new(SendRateLimit {
            per_second: 1.0,
            burst: 3,
        });
        for _ in 0..3 {
            limiter.check(&tenant("north")).unwrap();
        }
        let refused = limiter.check(&tenant("north")).unwrap_err();
        assert!(refused.wait > Duration::ZERO && refused.wait <= Duration::from_secs(1));
        assert_eq!(refused.retry_after_secs(), 1);
        // Another tenant has a bucket of its own.
        limiter.check(&tenant("south")).unwrap();
    }

    #[test]
    fn fractional_rates_refill_slowly() {
        let limiter = SendLimiter::new(SendRateLimit {
            per_second: 0.1,
            burst: 1,
        });
        limiter.check(&tenant("north")).unwrap();
        let refused = limiter.check(&tenant("north")).unwrap_err();
        assert!(refused.wait > Duration::from_secs(9), "{refused:?}");
        assert_eq!(refused.retry_after_secs(), 10);
    }

    #[test]
    fn rate_zero_turns_the_limit_off() {
        let limiter = SendLimiter::new(SendRateLimit {
            per_second: 0.0,
            burst: 1,
        });
        for _ in 0..1000 {
            limiter.check(&tenant("north")).unwrap();
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let secs = |ms| {
            RateLimited {
                wait: Duration::from_millis(ms),
            }
            .retry_after_secs()
        };
        assert_eq!(secs(0), 1);
        assert_eq!(secs(1), 1);
        assert_eq!(secs(1000), 1);
        assert_eq!(secs(1001), 2);
        assert_eq!(secs(59_500), 60);
    }

    #[tokio::test]
    async fn the_refusal_is_a_429_with_retry_after_and_the_json_error() {
        use axum::http::{header, StatusCode};
        use axum::response::IntoResponse;
        let response = ApiError::from(RateLimited {
            wait: Duration::from_millis(2500),
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "rate_limited");
        assert!(body["error"].as_str().is_some());
        assert!(body.get("request_id").is_some());
    }
}
