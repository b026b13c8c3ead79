//! End-to-end tests: a real gateway in-process on 127.0.0.1:0 in front of real hyper backends.
//! One binary for all of them (one link, shared support code).

mod support;

mod core;
mod framing;
mod h2abuse;
mod limits;
mod metrics;
mod pipeline;
mod secrets;
mod service_identity;
mod tls;
mod upstream;
