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
    ("set-header", |cx| super::set_header::SetHeader::build(cx).map(arc)),
    ("set-variable", |cx| super::set_variable::SetVariable::build(cx).map(arc)),
    ("set-query-parameter", |cx| super::set_query_parameter::SetQueryParameter::build(cx).map(arc)),
    ("rewrite-uri", |cx| super::rewrite_uri::RewriteUri::build(cx).map(arc)),
    ("set-body", |cx| super::set_body::SetBody::build(cx).map(arc)),
    ("find-and-replace", |cx| super::find_and_replace::FindAndReplace::build(cx).map(arc)),
    ("mock-response", |cx| super::mock_response::MockResponse::build(cx).map(arc)),
    ("set-method", |cx| super::set_method::SetMethod::build(cx).map(arc)),
    ("set-status", |cx| super::set_status::SetStatus::build(cx).map(arc)),
    ("set-backend-service", |cx| super::set_backend_service::SetBackendService::build(cx).map(arc)),
    ("forward-request", |cx| super::forward_request::ForwardRequest::build(cx).map(arc)),
    ("retry", |cx| super::retry::Retry::build(cx).map(arc)),
    ("check-header", |cx| super::check_header::CheckHeader::build(cx).map(arc)),
    ("choose", |cx| super::choose::Choose::build(cx).map(arc)),
    ("cors", |cx| super::cors::Cors::build(cx).map(arc)),
    ("ip-filter", |cx| super::ip_filter::IpFilter::build(cx).map(arc)),
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
    ("cache-lookup", |cx| super::cache_lookup::CacheLookup::build(cx).map(arc)),
    ("cache-store", |cx| super::cache_store::CacheStore::build(cx).map(arc)),
    ("cache-lookup-value", |cx| super::cache_value::LookupValue::build(cx).map(arc)),
    ("cache-store-value", |cx| super::cache_value::StoreValue::build(cx).map(arc)),
    ("cache-remove-value", |cx| super::cache_value::RemoveValue::build(cx).map(arc)),
];

/// Every policy kind this build knows, for the "unknown policy" message.
pub fn kinds() -> impl Iterator<Item = &'static str> {
    POLICIES.iter().map(|(k, _)| *k)
}

/// Builds the policy `kind`; `None` when no module knows that kind.
pub fn build(kind: &str, cx: &BuildCx<'_>) -> Option<Built> {
    POLICIES.iter().find(|(k, _)| *k == kind).map(|(_, f)| f(cx))
}
