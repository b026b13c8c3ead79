//! End-to-end tests: a real gateway in-process on 127.0.0.1:0 in front of real hyper backends.
//! One binary for all of them (one link, shared support code).

/// The OpenID provider, shared with the Apache tests outside this binary.
#[path = "../oidc_support/mod.rs"]
mod oidc_support;
/// Shared with the Redis tests outside this binary.
#[path = "../redis_support/mod.rs"]
mod redis_support;
mod support;

mod analytics;
mod cache;
mod compression;
mod core;
mod framing;
mod h2abuse;
mod hardening;
mod jwt;
mod limits;
mod limits_policy;
mod metrics;
mod own_h1;
mod pipeline;
mod secrets;
mod service_identity;
mod subscription;
mod tls;
mod transforms;
mod upstream;
