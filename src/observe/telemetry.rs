//! The `telemetry:` config section and the per-snapshot observability runtime.
//!
//! [`Telemetry`] is what outlives snapshots (the metrics registry), like server health: a reload
//! never resets a counter. [`Observe`] is one snapshot's view: is recording on, and (later
//! slices) where traces and analytics go. The request path calls [`Observe::finish`] once with
//! the facts it gathered; the work happens when the response body ends (see `RequestTail`).

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use super::metrics::{Metrics, RequestFacts};
use super::RequestTail;
use crate::config::{ConfigError, Document};

/// `telemetry:` metrics, traces and analytics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Record Prometheus metrics (served at `GET /metrics` on the admin listener).
    #[serde(default = "yes")]
    pub metrics: bool,
}

fn yes() -> bool {
    true
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { metrics: true }
    }
}

/// `telemetry:` compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySpec {
    pub metrics: bool,
}

impl Default for TelemetrySpec {
    fn default() -> Self {
        TelemetrySpec { metrics: true }
    }
}

/// Validates `telemetry:`; errors carry their YAML location.
pub fn compile(cfg: &TelemetryConfig, _doc: &Document, _errors: &mut Vec<ConfigError>) -> TelemetrySpec {
    TelemetrySpec { metrics: cfg.metrics }
}

/// What outlives snapshots: the metrics registry.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub metrics: Metrics,
}

/// One snapshot's observability runtime (`Active::observe`).
#[derive(Debug)]
pub struct Observe {
    pub telemetry: Arc<Telemetry>,
    pub spec: TelemetrySpec,
}

impl Observe {
    /// Builds the runtime of `spec`, reusing what `previous` already runs when unchanged.
    pub fn build(spec: &TelemetrySpec, telemetry: &Arc<Telemetry>, _previous: Option<&Observe>) -> Observe {
        Observe { telemetry: telemetry.clone(), spec: spec.clone() }
    }

    /// Whether anything wants the facts of a request.
    pub fn active(&self) -> bool {
        self.spec.metrics
    }

    /// Hands the facts of a request to `tail`; they are recorded when the response body ends,
    /// with the bytes sent and the full duration.
    pub fn finish(self: &Arc<Self>, tail: &mut RequestTail, facts: RequestFacts, started: Instant) {
        if self.active() {
            tail.observe_with(Box::new(Pending { observe: self.clone(), facts, started }));
        }
    }
}

/// A request's facts waiting for its body to end.
pub struct Pending {
    observe: Arc<Observe>,
    facts: RequestFacts,
    started: Instant,
}

impl Pending {
    pub(super) fn done(mut self, bytes_sent: u64) {
        self.facts.bytes_sent = bytes_sent;
        self.facts.duration = self.started.elapsed();
        if self.observe.spec.metrics {
            self.observe.telemetry.metrics.record(&self.facts);
        }
    }
}
