//! Who is calling, and who the gateway is towards backends: `jwt` (token validation),
//! `providers` (identity providers and their keys), `service` (the gateway's own
//! client-credentials tokens).

pub mod jwt;
pub mod providers;
pub mod service;
