//! Gatehouse: an identity-aware API gateway — the edge (Apache httpd's job) and the policy
//! layer (API Management's job) in one binary. See ARCHITECTURE.md for the map; the modules
//! below follow a request's path: listener → edge → route → policy → upstream → respond → observe.

pub mod admin;
pub mod body;
pub mod cache;
pub mod cli;
pub mod compress;
pub mod config;
pub mod edge;
pub mod expr;
pub mod framing;
pub mod hashing;
pub mod hop;
pub mod identity;
pub mod listener;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod respond;
pub mod route;
pub mod secrets;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod upstream;
