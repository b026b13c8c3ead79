//! Active health checks: a GET of `health.path` on every server every `interval`. A server goes
//! down after `unhealthy_threshold` consecutive failures and comes back after
//! `healthy_threshold` consecutive successes. The verdict lives in the shared
//! [`super::ServerState`], so it survives reloads.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Backend, HealthSpec};

pub fn spawn(backend: Arc<Backend>, spec: HealthSpec, cancel: CancellationToken) {
    for i in 0..backend.servers.len() {
        let backend = backend.clone();
        let spec = spec.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(spec.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let ok = tokio::select! {
                    _ = cancel.cancelled() => return,
                    ok = backend.probe(i, &spec.path, spec.timeout) => ok,
                };
                apply(&backend, i, ok, &spec);
            }
        });
    }
}

fn apply(backend: &Backend, i: usize, ok: bool, spec: &HealthSpec) {
    let s = &backend.servers[i];
    let url = &backend.spec.servers[i].url;
    if ok {
        s.check_failures.store(0, Ordering::Relaxed);
        let n = s.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
        if !s.up.load(Ordering::Relaxed) && n >= spec.healthy_threshold {
            s.up.store(true, Ordering::Relaxed);
            tracing::info!(backend = %backend.spec.name, server = %url, "Server is healthy again.");
        }
    } else {
        s.check_successes.store(0, Ordering::Relaxed);
        let n = s.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if s.up.load(Ordering::Relaxed) && n >= spec.unhealthy_threshold {
            s.up.store(false, Ordering::Relaxed);
            tracing::warn!(backend = %backend.spec.name, server = %url, failures = n, "Server failed its health checks and was taken out.");
        }
    }
}
