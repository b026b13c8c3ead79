//! Who is calling, and who the gateway is towards backends: `jwt` (token validation),
//! `providers` (identity providers and their keys), `service` (the gateway's own
//! client-credentials tokens), `subscription` (subscription keys and their in-memory index),
//! `digest` (the SHA-256 both lookups are keyed by, remembered per thread for repeats).

pub mod digest;
pub mod jwt;
pub mod providers;
pub mod service;
pub mod subscription;
