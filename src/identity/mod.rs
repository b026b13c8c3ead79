//! Who is calling: identity providers and JWT validation (`jwt`, `providers`).

pub mod jwt;
pub mod providers;
