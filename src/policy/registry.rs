//! The registry: which module builds each policy kind. One line per policy.

use std::sync::Arc;

use super::{
    authentication_basic, authentication_certificate, authentication_managed_identity, return_response, BuildCx, Policy,
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
];

/// Every policy kind this build knows, for the "unknown policy" message.
pub fn kinds() -> impl Iterator<Item = &'static str> {
    POLICIES.iter().map(|(k, _)| *k)
}

/// Builds the policy `kind`; `None` when no module knows that kind.
pub fn build(kind: &str, cx: &BuildCx<'_>) -> Option<Built> {
    POLICIES.iter().find(|(k, _)| *k == kind).map(|(_, f)| f(cx))
}
