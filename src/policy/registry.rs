//! The registry: which module builds each policy kind. One line per policy.

use std::sync::Arc;

use super::{
    authentication_basic, authentication_certificate, authentication_managed_identity, authorize, forward_identity,
    limit_concurrency, quota, rate_limit, rate_limit_by_key, return_response, validate_jwt, BuildCx, Policy,
};
use crate::config::ConfigError;

type Built = Result<Arc<dyn Policy>, Vec<ConfigError>>;
type Builder = fn(&BuildCx<'_>) -> Built;

fn arc<P: Policy + 'static>(p: P) -> Arc<dyn Policy> {
    Arc::new(p)
}

/// Every policy kind and its builder.
const POLICIES: &[(&str, Builder)] = &[
    ("return-response", |cx| return_response::ReturnResponse::build(cx).map(arc)),
    ("authentication-basic", |cx| authentication_basic::AuthenticationBasic::build(cx).map(arc)),
    ("authentication-certificate", |cx| authentication_certificate::AuthenticationCertificate::build(cx).map(arc)),
    ("authentication-managed-identity", |cx| {
        authentication_managed_identity::AuthenticationManagedIdentity::build(cx).map(arc)
    }),
    ("validate-jwt", |cx| validate_jwt::ValidateJwt::build(cx).map(arc)),
    ("authorize", |cx| authorize::Authorize::build(cx).map(arc)),
    ("forward-identity", |cx| forward_identity::ForwardIdentity::build(cx).map(arc)),
    ("rate-limit", |cx| rate_limit::RateLimit::build(cx).map(arc)),
    ("rate-limit-by-key", |cx| rate_limit_by_key::RateLimitByKey::build(cx).map(arc)),
    ("quota", |cx| quota::Quota::build_quota(cx).map(arc)),
    ("quota-by-key", |cx| quota::Quota::build_by_key(cx).map(arc)),
    ("limit-concurrency", |cx| limit_concurrency::LimitConcurrency::build(cx).map(arc)),
];

/// Every policy kind this build knows, for the "unknown policy" message.
pub fn kinds() -> impl Iterator<Item = &'static str> {
    POLICIES.iter().map(|(k, _)| *k)
}

/// Builds the policy `kind`; `None` when no module knows that kind.
pub fn build(kind: &str, cx: &BuildCx<'_>) -> Option<Built> {
    POLICIES.iter().find(|(k, _)| *k == kind).map(|(_, f)| f(cx))
}
