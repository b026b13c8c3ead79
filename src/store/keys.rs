//! Subscription keys: generation, the rules for keys an operator supplies, and the hash under
//! which a key is stored and looked up.
//!
//! Keys are stored as SHA-256 digests, never in clear. A fast hash is the right tool here, unlike
//! for passwords: a generated key carries 256 random bits (and an operator-supplied one must be at
//! least [`MIN_LEN`] characters), so a stolen digest cannot be brute-forced whatever the hash
//! speed, while a slow, salted KDF (argon2, bcrypt) would cost milliseconds per request and, being
//! salted per entry, would make the one-lookup index (digest → subscription) impossible.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// Shortest key accepted from an operator: 22 base64url characters hold 128 bits.
pub const MIN_LEN: usize = 22;
/// Longest key accepted anywhere (APIM's limit); longer input is refused before hashing.
pub const MAX_LEN: usize = 256;

/// The SHA-256 digest of a key: what the store keeps and the index is keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The digest the store keeps. The request path computes the same one through the
    /// per-thread memo of presented credentials (`identity::digest`), so a repeated key is not
    /// hashed again.
    pub fn of(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    pub fn from_slice(b: &[u8]) -> Option<KeyHash> {
        <[u8; 32]>::try_from(b).ok().map(KeyHash)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(…)")
    }
}

/// A key in clear, as shown once to the operator. `Debug` does not print it, so a key that ends
/// up in a `tracing` field or an error by mistake stays hidden.
#[derive(Clone, PartialEq, Eq)]
pub struct SubscriptionKey(String);

impl SubscriptionKey {
    /// A new random key: 32 bytes from the operating system's CSPRNG, base64url without padding
    /// (43 characters, URL- and header-safe).
    pub fn generate() -> Result<SubscriptionKey, rand::rand_core::OsError> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
        Ok(SubscriptionKey(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A key an operator supplies (APIM lets one set keys explicitly, e.g. to migrate them).
    pub fn parse(text: &str) -> Result<SubscriptionKey, String> {
        let len = text.len();
        if len < MIN_LEN {
            return Err(format!("a subscription key needs at least {MIN_LEN} characters (it has {len})"));
        }
        if len > MAX_LEN {
            return Err(format!("a subscription key has at most {MAX_LEN} characters (it has {len})"));
        }
        if !is_key_text(text) {
            return Err("a subscription key may only contain letters, digits and - _ . ~".into());
        }
        Ok(SubscriptionKey(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl fmt::Debug for SubscriptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscriptionKey(…)")
    }
}

/// URL-unreserved characters only (RFC 3986 §2.3): such a key needs no escaping in a query
/// string and is always a valid header value. Cheap enough to run on every request before
/// hashing, so garbage never reaches the hash.
pub fn is_key_text(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_LEN
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_url_safe_and_distinct() {
        let a = SubscriptionKey::generate().expect("os rng");
        let b = SubscriptionKey::generate().expect("os rng");
        assert_eq!(a.expose().len(), 43);
        assert!(is_key_text(a.expose()));
        assert_ne!(a, b);
        assert_ne!(a.hash(), b.hash());
        assert!(SubscriptionKey::parse(a.expose()).is_ok());
    }

    #[test]
    fn supplied_keys_are_checked() {
        assert!(SubscriptionKey::parse("short").is_err());
        assert!(SubscriptionKey::parse(&"a".repeat(MAX_LEN + 1)).is_err());
        assert!(SubscriptionKey::parse("0123456789abcdef0123456789/+").is_err());
        assert!(SubscriptionKey::parse("0123456789abcdef0123456789-_.~").is_ok());
    }

    #[test]
    fn keys_do_not_print() {
        let k = SubscriptionKey::parse("0123456789abcdef0123456789").expect("valid");
        assert!(!format!("{k:?} {:?}", k.hash()).contains("0123"));
    }
}
