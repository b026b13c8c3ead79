//! Subcommands that manage state rather than serve traffic (`gatehouse subscription …`). They
//! read the same config file as `run` for what they need (the store URL, product and API names)
//! and talk to the store directly, so they work whether or not a gateway is running; a running
//! gateway picks their changes up within its `store.poll_interval`.

pub mod subscription;
