//! What one `validate-jwt` policy asks of a token: a provider's signature, then its own issuer,
//! audience, time and required-claim rules.

use std::sync::Arc;

use super::claims::{ClaimRule, Verified};
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
    Done(Result<Arc<Verified>, Rejection>),
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
    /// The hot path of a repeated token: the verdict when the token is in the provider's
    /// verified-token cache, `None` otherwise (then [`Validator::validate_now`]). The same
    /// verdict `validate_now` gives: only the signature check is skipped, as there.
    pub fn validate_cached(&self, token: &[u8], now: u64) -> Option<Result<Arc<Verified>, Rejection>> {
        self.provider.ensure_started();
        self.provider.cached(token, now, |v| self.rules(v, now).map(|()| v.clone()))
    }

    /// The part that needs no waiting: a cached or known-key token is decided here.
    pub fn validate_now(&self, token: &str, now: u64) -> Quick {
        self.provider.ensure_started();
        match self.provider.check(token, now) {
            Check::Verified(entry) => Quick::Done(self.rules(&entry.verified, now).map(|()| entry.verified)),
            Check::Failed(i) => Quick::Done(Err(i.into())),
            Check::NeedKeys(_) => Quick::Wait,
        }
    }

    /// The full validation, refetching keys when the token names an unknown `kid`.
    pub async fn validate(&self, token: &str, now: u64) -> Result<Arc<Verified>, Rejection> {
        let entry = self.provider.verify(token, now).await?;
        self.rules(&entry.verified, now)?;
        Ok(entry.verified)
    }

    fn rules(&self, v: &Verified, now: u64) -> Result<(), Rejection> {
        let Some(map) = v.map() else {
            return Err(Invalid::Malformed.into());
        };
        v.times.check(now, self.clock_skew, self.require_expiration_time)?;
        if self.issuers.is_empty() {
            self.provider.with_issuer(|iss| match iss {
                Some(iss) => v.check_issuer(&[iss]),
                None => Ok(()),
            })?;
        } else {
            let mut accepted: [&str; 8] = [""; 8];
            let n = self.issuers.len().min(accepted.len());
            for (slot, iss) in accepted.iter_mut().zip(&self.issuers) {
                *slot = iss;
            }
            v.check_issuer(&accepted[..n])?;
        }
        v.check_audience(&self.audiences)?;
        for rule in &self.required_claims {
            if !rule.check(map) {
                return Err(Rejection::Insufficient(rule.name.clone()));
            }
        }
        Ok(())
    }
}
