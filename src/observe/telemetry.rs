//! The `telemetry:` config section and the per-snapshot observability runtime.
//!
//! [`Telemetry`] is what outlives snapshots (the metrics registry), like server health: a reload
//! never resets a counter or an analytics aggregate. [`Observe`] is one snapshot's view: is recording on, where traces
//! and analytics go. The request path calls [`Observe::finish`] once with
//! the facts it gathered; the work happens when the response body ends (see `RequestTail`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

use super::analytics::{Analytics, AnalyticsConfig, AnalyticsSpec};
use super::metrics::{Metrics, RequestFacts};
use super::recent::Recent;
use super::trace::{OtlpSpec, SpanStart, StartInfo, Tracer};
use super::RequestTail;
use crate::config::{ConfigError, Document, PathSeg};

/// `telemetry:` metrics, traces and analytics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Record Prometheus metrics (served at `GET /metrics` on the admin listener).
    #[serde(default = "yes")]
    pub metrics: bool,
    /// Export traces over OTLP/HTTP (protobuf).
    pub otlp: Option<OtlpConfig>,
    /// Per-minute aggregates served at `GET /analytics`.
    #[serde(default)]
    pub analytics: AnalyticsConfig,
}

/// `telemetry.otlp:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// Share of new traces recorded (0.0–1.0); a caller's sampled `traceparent` is always followed.
    #[serde(default = "one")]
    pub sample_ratio: f64,
    #[serde(default = "gatehouse")]
    pub service_name: String,
    #[serde(default = "five_seconds")]
    pub timeout: crate::config::Duration,
    /// Extra request headers for the collector (an API key; `{{secret:NAME}}` keeps it out of the file).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn one() -> f64 {
    1.0
}

fn gatehouse() -> String {
    "gatehouse".into()
}

fn five_seconds() -> crate::config::Duration {
    crate::config::Duration(std::time::Duration::from_secs(5))
}

fn yes() -> bool {
    true
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { metrics: true, otlp: None, analytics: AnalyticsConfig::default() }
    }
}

/// `telemetry:` compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySpec {
    pub metrics: bool,
    pub otlp: Option<OtlpSpec>,
    pub analytics: AnalyticsSpec,
}

impl Default for TelemetrySpec {
    fn default() -> Self {
        TelemetrySpec { metrics: true, otlp: None, analytics: AnalyticsSpec::default() }
    }
}

fn at(keys: &[&str]) -> Vec<PathSeg> {
    std::iter::once("telemetry").chain(keys.iter().copied()).map(|k| PathSeg::Key(k.to_owned())).collect()
}

/// Validates `telemetry:`; errors carry their YAML location.
pub fn compile(cfg: &TelemetryConfig, doc: &Document, errors: &mut Vec<ConfigError>) -> TelemetrySpec {
    let otlp = cfg.otlp.as_ref().and_then(|o| {
        let before = errors.len();
        let endpoint = match o.endpoint.parse::<Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => Some(u),
            Ok(_) => {
                errors.push(doc.error(
                    &at(&["otlp", "endpoint"]),
                    "the OTLP endpoint must be an http:// URL (a local collector), e.g. http://127.0.0.1:4318/v1/traces",
                ));
                None
            }
            Err(e) => {
                errors.push(doc.error(&at(&["otlp", "endpoint"]), format!("not a URL: {e}")));
                None
            }
        };
        if !(0.0..=1.0).contains(&o.sample_ratio) {
            errors.push(doc.error(&at(&["otlp", "sample_ratio"]), "sample_ratio must be between 0.0 and 1.0"));
        }
        let mut headers = Vec::new();
        for (name, value) in &o.headers {
            match (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => errors.push(doc.error(&at(&["otlp", "headers", name]), "not a valid header name and value")),
            }
        }
        if errors.len() != before {
            return None;
        }
        Some(OtlpSpec {
            endpoint: endpoint?,
            sample_ratio: o.sample_ratio,
            service_name: o.service_name.clone(),
            timeout: o.timeout.0,
            headers,
        })
    });
    let analytics = super::analytics::config::compile(&cfg.analytics, doc, errors);
    TelemetrySpec { metrics: cfg.metrics, otlp, analytics }
}

/// What outlives snapshots: the metrics registry, the dashboard's last minutes and the
/// analytics aggregates.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub metrics: Metrics,
    pub recent: Recent,
    pub analytics: Analytics,
}

/// One snapshot's observability runtime (`Active::observe`).
#[derive(Debug)]
pub struct Observe {
    pub telemetry: Arc<Telemetry>,
    pub spec: TelemetrySpec,
    pub tracer: Option<Arc<Tracer>>,
}

impl Observe {
    /// Builds the runtime of `spec`, reusing what `previous` already runs when unchanged (the
    /// trace exporter). Must run on the tokio runtime: it may start the exporter task.
    pub fn build(spec: &TelemetrySpec, telemetry: &Arc<Telemetry>, previous: Option<&Observe>) -> Observe {
        let tracer =
            spec.otlp.as_ref().map(|o| match previous.and_then(|p| p.tracer.clone()).filter(|t| t.spec == *o) {
                Some(t) => t,
                None => Arc::new(Tracer::start(o.clone())),
            });
        Observe { telemetry: telemetry.clone(), spec: spec.clone(), tracer }
    }

    /// Whether anything wants the facts of a request.
    pub fn active(&self) -> bool {
        self.spec.metrics || self.spec.analytics.enabled || self.tracer.is_some()
    }

    /// Starts a request's trace when tracing is on and the request is sampled; the caller then
    /// sends the backend [`SpanStart::backend_traceparent`].
    pub fn begin(&self, info: &StartInfo<'_>) -> Option<Box<SpanStart>> {
        self.tracer.as_ref()?.begin(info)
    }

    /// Hands a request's facts to `tail`, to be recorded when the response body ends, with the
    /// bytes sent and the full duration: returns them (emptied) for the caller to fill in
    /// place, or `None` when nothing records them.
    pub fn finish<'t>(
        self: &Arc<Self>,
        tail: &'t mut RequestTail,
        started: Instant,
        span: Option<Box<SpanStart>>,
    ) -> Option<&'t mut RequestFacts> {
        self.active().then(|| tail.observe_with(Pending { observe: self.clone(), started, span }))
    }
}

/// What records a request's facts when its body ends.
pub struct Pending {
    observe: Arc<Observe>,
    started: Instant,
    span: Option<Box<SpanStart>>,
}

impl Observe {
    /// Records a request the HTTP/1 framing guard refused before any request existed (its
    /// 400/408/413/414/431): unrouted, with its layer, in metrics and analytics.
    pub fn record_refusal(&self, status: u16, layer: crate::respond::Layer, bytes_sent: u64) {
        let facts = RequestFacts { status, layer: Some(layer), bytes_sent, ..RequestFacts::default() };
        let telemetry = &self.telemetry;
        if self.spec.metrics {
            telemetry.metrics.record(&facts);
            telemetry.recent.record(&facts);
        }
        if self.spec.analytics.enabled {
            let series = telemetry.metrics.route_series(None);
            telemetry.analytics.record(series, &facts);
        }
    }
}

impl Pending {
    /// When the request arrived (its duration counts from it).
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// Records the request of `facts`, which ended `duration` after it [started](Pending::started),
    /// at `now`.
    pub(super) fn done(&self, facts: &mut RequestFacts, bytes_sent: u64, duration: std::time::Duration, now: Instant) {
        facts.bytes_sent = bytes_sent;
        facts.duration = duration;
        let telemetry = &self.observe.telemetry;
        let (metrics, analytics) = (self.observe.spec.metrics, self.observe.spec.analytics.enabled);
        // One second for the dashboard and the analytics' minute, mostly without a clock read.
        let now_s = (metrics || analytics).then(|| super::clock::unix_second(now));
        if let (true, Some(now_s)) = (metrics, now_s) {
            telemetry.metrics.record(facts);
            telemetry.recent.record_in_second(now_s, facts);
        }
        if let (true, Some(now_s)) = (analytics, now_s) {
            let series = telemetry.metrics.route_series(facts.route.as_ref());
            telemetry.analytics.record_in_second(now_s, series, facts);
        }
        if let (Some(tracer), Some(span)) = (&self.observe.tracer, &self.span) {
            tracer.end(span, facts);
        }
    }
}
