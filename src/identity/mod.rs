//! Who is calling, and who the gateway is towards backends: `service` (the gateway's own
//! client-credentials tokens).

pub mod service;
