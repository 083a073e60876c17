//! Credential reuse for the proxy's listeners: a credential issued to a caller is used again
//! for the same caller's next requests or connections, for a while, so that a client that
//! sends many requests, or a pool that reconnects, does not cost an issuance (a minted token,
//! an OAuth token fetched, a PostgreSQL role made) each time.
//!
//! Only the issuance is spared: every request or connection is still attested, decided and
//! recorded. Entries are keyed by the caller's evidence, the target, the credential's name and
//! the bundle that decided, so a new token or a reload starts afresh. In: what an issuance gave, with
//! when it expires. Out: the same value again, until the earliest of the listener's reuse
//! window, 30 s before the credential's expiry, and the expiry of the caller's evidence.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::credentials::Zeroizing;

/// The most credentials one listener keeps for reuse; past it, expired ones are dropped, then
/// all.
const MAX_REUSED: usize = 10_000;

/// A credential is not reused within this many seconds of its expiry.
const REUSE_MARGIN_S: i64 = 30;

/// Credentials issued to callers, kept for their next requests: by the caller's evidence, the
/// credential and the bundle that decided (a reload starts afresh). `V` is what a listener
/// needs to use one again; the HTTP proxy keeps the value alone.
pub(super) struct CredentialReuse<V = Zeroizing<String>> {
    entries: Mutex<HashMap<ReuseKey, Reusable<V>>>,
}

impl<V> Default for CredentialReuse<V> {
    fn default() -> Self {
        CredentialReuse {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct ReuseKey {
    /// The SHA-256 of the caller's token.
    pub(super) evidence: [u8; 32],
    /// The target decided: a forward-mode listener serves many, and a credential (a minted
    /// token names its target) is issued for one.
    pub(super) target: String,
    pub(super) credential: String,
    pub(super) bundle: String,
}

struct Reusable<V> {
    value: V,
    /// Unix seconds.
    until: i64,
}

impl<V: Clone> CredentialReuse<V> {
    /// The credential kept under `key`, unless its time is up.
    pub(super) fn get(&self, key: &ReuseKey, now: i64) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|kept| now < kept.until)
            .map(|kept| kept.value.clone())
    }

    /// Keeps `value` under `key` until `until` (Unix seconds), unless that has passed.
    pub(super) fn keep(&self, key: ReuseKey, value: &V, until: i64, now: i64) {
        if until <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_REUSED {
            entries.retain(|_, kept| now < kept.until);
            if entries.len() >= MAX_REUSED {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Reusable {
                value: value.clone(),
                until,
            },
        );
    }

    /// Drops the credential kept under `key`: the target no longer takes it.
    pub(super) fn forget(&self, key: &ReuseKey) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(key);
    }
}

/// Until when (Unix seconds) a credential issued at `now` may be used again: the listener's
/// `reuse_s` from now, but never within [`REUSE_MARGIN_S`] of the credential's expiry nor past
/// the caller's evidence's. `now` itself, which keeps nothing, when any of them has passed.
pub(super) fn reuse_until(
    now: i64,
    reuse_s: u64,
    credential_expires_at: Option<i64>,
    evidence_expires_at: Option<i64>,
) -> i64 {
    let reuse_s = i64::try_from(reuse_s).unwrap_or(i64::MAX);
    [
        Some(now.saturating_add(reuse_s)),
        credential_expires_at.map(|at| at.saturating_sub(REUSE_MARGIN_S)),
        evidence_expires_at,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(credential: &str) -> ReuseKey {
        ReuseKey {
            evidence: [7; 32],
            target: "t1".to_owned(),
            credential: credential.to_owned(),
            bundle: "b1".to_owned(),
        }
    }

    #[test]
    fn a_credential_is_reused_until_the_earliest_of_its_limits() {
        assert_eq!(reuse_until(1_000, 60, None, None), 1_060);
        assert_eq!(reuse_until(1_000, 60, Some(1_050), None), 1_020);
        assert_eq!(reuse_until(1_000, 60, Some(1_500), Some(1_010)), 1_010);
        assert_eq!(reuse_until(1_000, 0, Some(1_500), None), 1_000);
        assert_eq!(reuse_until(1_000, 60, Some(1_020), None), 990);
    }

    #[test]
    fn kept_credentials_are_found_by_their_key_until_their_time_is_up() {
        let reuse: CredentialReuse = CredentialReuse::default();
        let value = Zeroizing::new("secret".to_owned());
        reuse.keep(key("reader"), &value, 1_060, 1_000);
        let kept = reuse.get(&key("reader"), 1_059);
        assert_eq!(kept.as_deref().map(String::as_str), Some("secret"));
        assert_eq!(reuse.get(&key("reader"), 1_060), None);
        assert_eq!(reuse.get(&key("writer"), 1_000), None);
        reuse.forget(&key("reader"));
        assert_eq!(reuse.get(&key("reader"), 1_000), None);
        // A time already past keeps nothing.
        reuse.keep(key("writer"), &value, 1_000, 1_000);
        assert_eq!(reuse.get(&key("writer"), 999), None);
    }
}
