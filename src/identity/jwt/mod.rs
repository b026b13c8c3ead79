//! JWT validation (the engine behind the `validate-jwt` policy): a token is parsed without trust
//! ([`token`]), its key chosen from the provider's key set by `kid` and bound to the key's
//! algorithms ([`keys`]), its signature verified once and remembered ([`cache`]), and its claims
//! checked on every request ([`claims`], [`validator`]). [`provider`] keeps each provider's keys
//! fresh: background refresh, single-flight rate-limited refetch on an unknown `kid` with a
//! negative cache, last good keys kept while the provider is down; [`fetch`] is its HTTP client.

pub mod cache;
pub mod claims;
pub mod fetch;
pub mod keys;
pub mod provider;
pub mod token;
pub mod validator;

pub use provider::Provider;
pub use validator::{Rejection, Validator};

/// Why a token is not valid. The [`Invalid::detail`] texts are fixed: they go to clients and
/// logs and never contain token material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    TooLarge,
    Malformed,
    Encrypted,
    Unsigned,
    CriticalHeader,
    Algorithm,
    KeyNotFound,
    KeysUnavailable,
    Signature,
    Expired,
    NoExpiry,
    NotYetValid,
    IssuedInFuture,
    Issuer,
    Audience,
}

impl Invalid {
    pub fn detail(self) -> &'static str {
        match self {
            Invalid::TooLarge => "token too large",
            Invalid::Malformed => "token malformed",
            Invalid::Encrypted => "encrypted tokens are not accepted",
            Invalid::Unsigned => "unsigned tokens are not accepted",
            Invalid::CriticalHeader => "token has critical header parameters",
            Invalid::Algorithm => "token algorithm not accepted",
            Invalid::KeyNotFound => "token signing key not found",
            Invalid::KeysUnavailable => "signing keys of the identity provider are not available",
            Invalid::Signature => "token signature invalid",
            Invalid::Expired => "token expired",
            Invalid::NoExpiry => "token has no expiration time",
            Invalid::NotYetValid => "token not yet valid",
            Invalid::IssuedInFuture => "token issued in the future",
            Invalid::Issuer => "token issuer not accepted",
            Invalid::Audience => "token audience not accepted",
        }
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod testkeys;
#[cfg(test)]
mod tests;
