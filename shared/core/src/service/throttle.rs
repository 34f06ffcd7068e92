//! Slows, then refuses for a while, an address that keeps failing to authenticate: guessing
//! the admin token, API keys or a webhook's URL secret. In memory: per process, and per
//! function instance on Lambda.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::{ProviderKind, TenantId};

/// When failures slow an address down and when they lock it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthThrottlePolicy {
    /// Failures within `window` that lock the address out (0: never).
    pub max_failures: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long a locked-out address is refused (`429`), whatever it presents.
    pub lockout: Duration,
    /// Added to the answer of each failure after the first within the window, up to
    /// [`MAX_DELAY`]: a guesser waits, a mistyping human barely notices.
    pub delay_step: Duration,
}

impl Default for AuthThrottlePolicy {
    fn default() -> Self {
        AuthThrottlePolicy {
            max_failures: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            delay_step: Duration::from_millis(200),
        }
    }
}

/// The longest a failed attempt is held before its answer.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// Addresses tracked at most: past this, entries with nothing left to remember are dropped,
/// and if all still matter the oldest window goes, so a flood of addresses cannot grow memory
/// without bound.
const MAX_TRACKED: usize = 65_536;

/// What an attempt tried to open. Webhooks are counted per tenant: a carrier calls for every
/// tenant from the same few addresses, so one tenant's wrong secret (or a forger guessing it)
/// must not lock out the others.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AuthScope {
    /// `/v1/admin/*`.
    Admin,
    /// A tenant API key or session token (the API and the WebSocket).
    ApiKey,
    /// A webhook of this carrier for this tenant.
    Webhook(ProviderKind, TenantId),
}

#[derive(Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

/// Failure counts per (address, scope).
#[derive(Debug, Default)]
pub struct AuthThrottle {
    entries: Mutex<HashMap<(IpAddr, AuthScope), Entry>>,
}

impl AuthThrottle {
    /// `Err(seconds to wait)` while `client` is locked out of `scope`.
    pub fn check(
        &self,
        policy: &AuthThrottlePolicy,
        client: IpAddr,
        scope: &AuthScope,
    ) -> Result<(), u64> {
        if policy.max_failures == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries
            .get(&(client, scope.clone()))
            .and_then(|e| e.locked_until)
        {
            Some(until) if until > now => Err((until - now).as_secs_f64().ceil() as u64),
            _ => Ok(()),
        }
    }

    /// Counts a failure of `client` on `scope`; how long to hold its answer.
    pub fn failed(
        &self,
        policy: &AuthThrottlePolicy,
        client: IpAddr,
        scope: &AuthScope,
    ) -> Duration {
        if policy.max_failures == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&(client, scope.clone())) {
            prune(&mut entries, policy, now);
        }
        let entry = entries
            .entry((client, scope.clone()))
            .or_insert_with(|| Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
            });
        if now.duration_since(entry.window_start) > policy.window {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= policy.max_failures {
            entry.locked_until = Some(now + policy.lockout);
            // The window starts again once the lockout is over.
            entry.window_start = now + policy.lockout;
            entry.failures = 0;
            tracing::warn!(client = %client, scope = ?scope, "authentication failures: address locked out");
        }
        policy
            .delay_step
            .saturating_mul(entry.failures.saturating_sub(1))
            .min(MAX_DELAY)
    }
}

/// Drops entries whose window and lockout are over; if none is, the one whose window began
/// first.
fn prune(
    entries: &mut HashMap<(IpAddr, AuthScope), Entry>,
    policy: &AuthThrottlePolicy,
    now: Instant,
) {
    entries.retain(|_, e| {
        e.locked_until.is_some_and(|u| u > now)
            || now.duration_since(e.window_start) <= policy.window
    });
    if entries.len() >= MAX_TRACKED {
        if let Some(oldest) = entries
            .iter()
            .min_by_key(|(_, e)| e.window_start)
            .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AuthThrottlePolicy {
        AuthThrottlePolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            delay_step: Duration::from_millis(500),
        }
    }

    #[test]
    fn failures_slow_then_lock_out_one_address_and_scope_only() {
        let (t, p) = (AuthThrottle::default(), policy());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert_eq!(t.failed(&p, a, &AuthScope::Admin), Duration::ZERO);
        assert_eq!(
            t.failed(&p, a, &AuthScope::Admin),
            Duration::from_millis(500)
        );
        assert_eq!(t.check(&p, a, &AuthScope::Admin), Ok(()));
        t.failed(&p, a, &AuthScope::Admin);
        assert_eq!(t.check(&p, a, &AuthScope::Admin), Err(300));
        // Another address, and another scope of the same address, are untouched.
        assert_eq!(t.check(&p, b, &AuthScope::Admin), Ok(()));
        assert_eq!(t.check(&p, a, &AuthScope::ApiKey), Ok(()));
        let north = TenantId::parse("north").unwrap();
        let south = TenantId::parse("south").unwrap();
        for _ in 0..3 {
            t.failed(
                &p,
                a,
                &AuthScope::Webhook(ProviderKind::Voicemeup, north.clone()),
            );
        }
        assert!(t
            .check(&p, a, &AuthScope::Webhook(ProviderKind::Voicemeup, north))
            .is_err());
        assert_eq!(
            t.check(&p, a, &AuthScope::Webhook(ProviderKind::Voicemeup, south)),
            Ok(())
        );
    }

    #[test]
    fn the_delay_is_capped_and_zero_failures_turns_it_off() {
        let t = AuthThrottle::default();
        let p = AuthThrottlePolicy {
            max_failures: 100,
            ..policy()
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let last = (0..20).map(|_| t.failed(&p, a, &AuthScope::ApiKey)).last();
        assert_eq!(last, Some(MAX_DELAY));
        let off = AuthThrottlePolicy {
            max_failures: 0,
            ..policy()
        };
        for _ in 0..10 {
            assert_eq!(t.failed(&off, a, &AuthScope::Admin), Duration::ZERO);
        }
        assert_eq!(t.check(&off, a, &AuthScope::Admin), Ok(()));
    }
}
