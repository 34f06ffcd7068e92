//! What every webhook reads, kept in memory: the route of the called number and the tenant's
//! decrypted credentials for the carrier. Reading them from SQLite (and decrypting) was a tenth
//! of a webhook's CPU time.
//!
//! One `omni serve` owns its database, so every change to these tables goes through this
//! backend, which empties the cache once the change is committed. A generation counter keeps a
//! read that raced such a change from putting the old value back.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use omni_core::domain::{ProviderKind, TenantId};
use omni_core::model::NumberRoute;
use omni_core::providers::Credentials;

/// Entries kept before the cache starts over (lookups of unknown numbers are cached too, and
/// anyone can send webhooks naming random numbers).
const CAPACITY: usize = 10_000;

/// A map that is emptied on every change to what it mirrors.
pub(crate) struct Cache<K, V> {
    inner: Mutex<Generation<K, V>>,
}

struct Generation<K, V> {
    number: u64,
    entries: HashMap<K, V>,
}

/// The generation a read started in; its result is kept only if no change came since.
#[derive(Clone, Copy)]
pub(crate) struct Ticket(u64);

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    /// The cached value, or a ticket to store the value read from the database.
    pub(crate) fn get(&self, key: &K) -> Result<V, Ticket> {
        let inner = self.lock();
        inner.entries.get(key).cloned().ok_or(Ticket(inner.number))
    }

    /// Keeps `value` unless a change was committed since the ticket was taken.
    pub(crate) fn put(&self, ticket: Ticket, key: K, value: V) {
        let mut inner = self.lock();
        if inner.number != ticket.0 {
            return;
        }
        if inner.entries.len() >= CAPACITY {
            inner.entries.clear();
        }
        inner.entries.insert(key, value);
    }

    /// Forgets everything; called after a change is committed.
    pub(crate) fn invalidate(&self) {
        let mut inner = self.lock();
        inner.number += 1;
        inner.entries.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generation<K, V>> {
        // Nothing here can panic half-way through a change, so a poisoned lock is still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache {
            inner: Mutex::new(Generation {
                number: 0,
                entries: HashMap::new(),
            }),
        }
    }
}

/// Number routes by number.
pub(crate) type RouteCache = Cache<String, Option<NumberRoute>>;

/// Decrypted credentials by tenant and carrier.
pub(crate) type CredentialCache = Cache<(TenantId, ProviderKind), Option<Credentials>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let cache: Cache<&str, u32> = Cache::default();
        let Err(ticket) = cache.get(&"a") else {
            panic!("empty cache")
        };
        cache.invalidate(); // a change committed while the read ran
        cache.put(ticket, "a", 1);
        assert!(cache.get(&"a").is_err(), "the stale value was kept");
        let Err(ticket) = cache.get(&"a") else {
            panic!("empty cache")
        };
        cache.put(ticket, "a", 2);
        assert_eq!(cache.get(&"a").ok(), Some(2));
        cache.invalidate();
        assert!(cache.get(&"a").is_err());
    }

    #[test]
    fn it_starts_over_when_full() {
        let cache: Cache<usize, usize> = Cache::default();
        for i in 0..=CAPACITY {
            let Err(ticket) = cache.get(&i) else {
                panic!("{i} was cached")
            };
            cache.put(ticket, i, i);
        }
        assert!(cache.get(&0).is_err());
        assert_eq!(cache.get(&CAPACITY).ok(), Some(CAPACITY));
    }
}
