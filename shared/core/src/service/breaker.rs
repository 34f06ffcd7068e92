//! Circuit breakers per (tenant, carrier), in memory: after `threshold` consecutive transient
//! failures within `window` a carrier is left alone for `cooldown`, so a carrier outage costs
//! one round of failures instead of one per message, and sends go straight to the fallback.
//!
//! After the cooldown one call is let through as a trial (the breaker re-arms for another
//! cooldown as it grants it): success closes the breaker, a transient failure keeps it open.
//! The state lives in the process (one Lambda instance, or `omni serve`): an instance that
//! starts fresh relearns an outage within `threshold` failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::{ProviderKind, TenantId};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive transient failures that open the breaker (at least 1).
    pub threshold: u32,
    /// They must fall within this span of the first of them.
    pub window: Duration,
    /// How long an open breaker keeps calls away.
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            threshold: 5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    failures: u32,
    first_failure: Instant,
    /// Set once the breaker has opened; calls are refused until then.
    open_until: Option<Instant>,
}

/// Every (tenant, carrier) breaker of this process.
#[derive(Debug, Default)]
pub struct CircuitBreakers {
    states: Mutex<HashMap<(TenantId, ProviderKind), State>>,
}

impl CircuitBreakers {
    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, ProviderKind), State>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call to `provider` for `tenant` may go ahead now. An open breaker whose
    /// cooldown has passed lets this one call through as its trial and stays open for the
    /// others, until the trial's outcome is recorded.
    pub fn allows(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
        policy: &BreakerPolicy,
        now: Instant,
    ) -> bool {
        let mut states = self.states();
        let Some(state) = states.get_mut(&(tenant.clone(), provider)) else {
            return true;
        };
        match state.open_until {
            Some(until) if now < until => false,
            Some(_) => {
                state.open_until = Some(now + policy.cooldown);
                true
            }
            None => true,
        }
    }

    /// Whether the breaker is open now (for reporting; does not grant a trial).
    pub fn is_open(&self, tenant: &TenantId, provider: ProviderKind, now: Instant) -> bool {
        self.states()
            .get(&(tenant.clone(), provider))
            .and_then(|s| s.open_until)
            .is_some_and(|until| now < until)
    }

    /// The carrier answered (accepted, or refused the message itself): it is up.
    pub fn record_success(&self, tenant: &TenantId, provider: ProviderKind) {
        self.states().remove(&(tenant.clone(), provider));
    }

    /// A transient failure (5xx, 429, timeout, connection refused). Returns true when this
    /// failure opened (or re-opened) the breaker.
    pub fn record_failure(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
        policy: &BreakerPolicy,
        now: Instant,
    ) -> bool {
        let mut states = self.states();
        let state = states.entry((tenant.clone(), provider)).or_insert(State {
            failures: 0,
            first_failure: now,
            open_until: None,
        });
        if state.open_until.is_some() {
            // A failed trial (or a call that was in flight when the breaker opened).
            state.open_until = Some(now + policy.cooldown);
            return true;
        }
        if state.failures == 0 || now.duration_since(state.first_failure) > policy.window {
            state.failures = 0;
            state.first_failure = now;
        }
        state.failures += 1;
        if state.failures >= policy.threshold.max(1) {
            state.open_until = Some(now + policy.cooldown);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        threshold: 3,
        window: Duration::from_secs(60),
        cooldown: Duration::from_secs(30),
    };

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    #[test]
    fn opens_after_consecutive_failures_and_reopens_on_a_failed_trial() {
        let b = CircuitBreakers::default();
        let (north, t0) = (tenant("north"), Instant::now());
        let twilio = ProviderKind::Twilio;
        assert!(b.allows(&north, twilio, &POLICY, t0));
        assert!(!b.record_failure(&north, twilio, &POLICY, t0));
        assert!(!b.record_failure(&north, twilio, &POLICY, t0 + Duration::from_secs(1)));
        assert!(b.allows(&north, twilio, &POLICY, t0 + Duration::from_secs(1)));
        assert!(b.record_failure(&north, twilio, &POLICY, t0 + Duration::from_secs(2)));
        // Open: no call until the cooldown has passed.
        let opened = t0 + Duration::from_secs(2);
        for later in [0, 1, 29] {
            let at = opened + Duration::from_secs(later);
            assert!(!b.allows(&north, twilio, &POLICY, at), "{later}s");
            assert!(b.is_open(&north, twilio, at));
        }
        // Other carriers and other tenants are unaffected.
        assert!(b.allows(&north, ProviderKind::Voipms, &POLICY, opened));
        assert!(b.allows(&tenant("south"), twilio, &POLICY, opened));
        // After the cooldown exactly one trial goes through; the others wait for it.
        let after = opened + Duration::from_secs(31);
        assert!(b.allows(&north, twilio, &POLICY, after));
        assert!(!b.allows(&north, twilio, &POLICY, after));
        // The trial fails: open for another full cooldown.
        assert!(b.record_failure(&north, twilio, &POLICY, after));
        assert!(!b.allows(&north, twilio, &POLICY, after + Duration::from_secs(29)));
        let second = after + Duration::from_secs(31);
        assert!(b.allows(&north, twilio, &POLICY, second));
        // The next trial succeeds: closed, and failures count from zero again.
        b.record_success(&north, twilio);
        assert!(!b.is_open(&north, twilio, second));
        assert!(b.allows(&north, twilio, &POLICY, second));
        assert!(b.allows(&north, twilio, &POLICY, second));
        assert!(!b.record_failure(&north, twilio, &POLICY, second));
        assert!(!b.record_failure(&north, twilio, &POLICY, second));
    }

    #[test]
    fn failures_outside_the_window_or_broken_by_a_success_do_not_add_up() {
        let b = CircuitBreakers::default();
        let (north, t0) = (tenant("north"), Instant::now());
        let twilio = ProviderKind::Twilio;
        b.record_failure(&north, twilio, &POLICY, t0);
        b.record_failure(&north, twilio, &POLICY, t0 + Duration::from_secs(1));
        // The third comes after the window: it starts a new run instead of opening.
        let late = t0 + Duration::from_secs(61);
        assert!(!b.record_failure(&north, twilio, &POLICY, late));
        assert!(b.allows(&north, twilio, &POLICY, late));
        b.record_failure(&north, twilio, &POLICY, late);
        b.record_success(&north, twilio);
        assert!(!b.record_failure(&north, twilio, &POLICY, late));
        assert!(!b.record_failure(&north, twilio, &POLICY, late));
        assert!(b.record_failure(&north, twilio, &POLICY, late));
    }

    #[test]
    fn a_zero_threshold_opens_on_the_first_failure() {
        let b = CircuitBreakers::default();
        let policy = BreakerPolicy {
            threshold: 0,
            ..POLICY
        };
        let now = Instant::now();
        assert!(b.record_failure(&tenant("north"), ProviderKind::Telnyx, &policy, now));
        assert!(!b.allows(&tenant("north"), ProviderKind::Telnyx, &policy, now));
    }
}
