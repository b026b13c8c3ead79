//! Who is calling: subscription keys (and, later, tokens).

pub mod subscription;
