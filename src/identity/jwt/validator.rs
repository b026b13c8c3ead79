//! What one `validate-jwt` policy asks of a token: a provider's signature, then its own issuer,
//! audience, time and required-claim rules.

use std::sync::Arc;

use serde_json::Value;

use super::cache::Entry;
use super::claims::{self, ClaimRule};
use super::provider::Check;
use super::{Invalid, Provider};

/// Why a token was refused: not valid (401) or valid without what this API requires (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Invalid(Invalid),
    /// A required claim is missing or lacks the required values; names the claim.
    Insufficient(Box<str>),
}

impl From<Invalid> for Rejection {
    fn from(i: Invalid) -> Self {
        Rejection::Invalid(i)
    }
}

/// The result of the part that needs no waiting.
pub enum Quick {
    Done(Result<Arc<Value>, Rejection>),
    /// The token names an unknown key: call [`Validator::validate`].
    Wait,
}

#[derive(Debug)]
pub struct Validator {
    pub provider: Arc<Provider>,
    /// Accepted issuers; empty: the provider's issuer (configured or discovered), if any.
    pub issuers: Vec<Box<str>>,
    /// Accepted audiences (any of).
    pub audiences: Vec<Box<str>>,
    pub clock_skew: u64,
    pub require_expiration_time: bool,
    pub required_claims: Vec<ClaimRule>,
}

impl Validator {
    /// The hot path: a cached or known-key token is decided without waiting.
    pub fn validate_now(&self, token: &str, now: u64) -> Quick {
        self.provider.ensure_started();
        match self.provider.check(token, now) {
            Check::Verified(entry) => Quick::Done(self.rules(entry, now)),
            Check::Failed(i) => Quick::Done(Err(i.into())),
            Check::NeedKeys(_) => Quick::Wait,
        }
    }

    /// The full validation, refetching keys when the token names an unknown `kid`.
    pub async fn validate(&self, token: &str, now: u64) -> Result<Arc<Value>, Rejection> {
        let entry = self.provider.verify(token, now).await?;
        self.rules(entry, now)
    }

    fn rules(&self, entry: Entry, now: u64) -> Result<Arc<Value>, Rejection> {
        let claims = entry.claims;
        let Some(map) = claims.as_object() else {
            return Err(Invalid::Malformed.into());
        };
        entry.times.check(now, self.clock_skew, self.require_expiration_time)?;
        if self.issuers.is_empty() {
            if let Some(iss) = self.provider.issuer() {
                claims::check_issuer(map, &[iss.as_str()])?;
            }
        } else {
            let mut accepted: [&str; 8] = [""; 8];
            let n = self.issuers.len().min(accepted.len());
            for (slot, iss) in accepted.iter_mut().zip(&self.issuers) {
                *slot = iss;
            }
            claims::check_issuer(map, &accepted[..n])?;
        }
        claims::check_audience(map, &self.audiences)?;
        for rule in &self.required_claims {
            if !rule.check(map) {
                return Err(Rejection::Insufficient(rule.name.clone()));
            }
        }
        Ok(claims)
    }
}
