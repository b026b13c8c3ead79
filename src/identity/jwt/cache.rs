//! The verified-token cache: a repeated token costs a map lookup (its SHA-256 is remembered
//! per thread, `identity::digest`), not a signature check.
//!
//! Keyed by the SHA-256 of the token (the token itself is never stored), bounded, sharded so
//! workers rarely meet on a lock. An entry remembers which key verified it; it is used only
//! while that key is still published, and only until the token's `exp` (tokens without one for
//! at most [`NO_EXP_TTL`] seconds). Claim checks still run on every hit.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::claims::Verified;
use super::keys::VerifyKey;

const SHARDS: usize = 16;
/// Tokens without `exp` (when a policy allows them) are re-verified after this many seconds.
pub const NO_EXP_TTL: u64 = 600;
/// Entries outlive `exp` by the largest clock skew a policy may allow, so a lenient policy
/// still finds them; the policy's own time check decides.
pub const MAX_SKEW: u64 = 300;

pub type Digest = [u8; 32];

#[derive(Clone)]
pub struct Entry {
    /// The payload, with its times, issuer and audiences read once.
    pub verified: Arc<Verified>,
    pub key: Arc<VerifyKey>,
    /// Unix seconds after which the entry is dropped.
    pub until: u64,
}

type Shard = RwLock<HashMap<Digest, Entry, crate::hashing::BuildPrecomputed>>;

pub struct TokenCache {
    shards: Box<[Shard]>,
    per_shard: usize,
}

impl TokenCache {
    /// `capacity` 0 turns caching off.
    pub fn new(capacity: usize) -> TokenCache {
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = (0..SHARDS).map(|_| RwLock::new(HashMap::default())).collect();
        TokenCache { shards, per_shard }
    }

    pub fn digest(token: &[u8]) -> Digest {
        crate::identity::digest::sha256(crate::identity::digest::Kind::Token, token)
    }

    fn shard(&self, d: &Digest) -> &Shard {
        &self.shards[d[31] as usize % SHARDS]
    }

    pub fn get(&self, d: &Digest, now: u64) -> Option<Entry> {
        self.with(d, now, Entry::clone)
    }

    /// `f` of the live entry under `d`, called under the shard's read lock: a hit costs no
    /// reference-count traffic beyond what `f` takes.
    pub fn with<R>(&self, d: &Digest, now: u64, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self.shard(d).read();
        shard.get(d).filter(|e| now <= e.until).map(f)
    }

    pub fn insert(&self, d: Digest, entry: Entry, now: u64) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&d).write();
        if shard.len() >= self.per_shard && !shard.contains_key(&d) {
            shard.retain(|_, e| now <= e.until);
            if shard.len() >= self.per_shard {
                // Still full of live tokens: drop an arbitrary one (HashMap order is as good as
                // random here, and cheaper than tracking recency on every hit).
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(d, entry);
    }

    pub fn remove(&self, d: &Digest) {
        self.shard(d).write().remove(d);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::jwt::keys::{AlgSet, VerifyKey};

    fn entry(until: u64) -> Entry {
        let key = Arc::new(VerifyKey::hmac(&[7u8; 32], AlgSet::HMAC));
        Entry { verified: Arc::new(Verified::new(serde_json::Map::new())), key, until }
    }

    #[test]
    fn bounded_and_expiring() {
        let cache = TokenCache::new(32);
        for i in 0..200 {
            cache.insert(TokenCache::digest(format!("token-{i}").as_bytes()), entry(1000), 10);
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
        let d = TokenCache::digest(b"fresh");
        cache.insert(d, entry(100), 10);
        assert!(cache.get(&d, 100).is_some());
        assert!(cache.get(&d, 101).is_none(), "expired entries are not returned");
        assert!(cache.get(&TokenCache::digest(b"other"), 10).is_none());
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = TokenCache::new(0);
        let d = TokenCache::digest(b"t");
        cache.insert(d, entry(1000), 1);
        assert!(cache.get(&d, 1).is_none());
    }
}
