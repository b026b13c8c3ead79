//! Prometheus metrics: the counters and histograms behind `GET /metrics` on the admin listener.
//!
//! Hand-written atomics with a text exposition rather than a metrics library, because the hot
//! path must not look label sets up: every route interns its series once (by API and operation
//! name, in a registry that outlives snapshots so reloads keep the counts) and keeps an `Arc` to
//! them in its [`RouteCell`]. Recording a request is then a few array-indexed relaxed atomic adds:
//! no label string is formatted or hashed per request. The product label is a short list per
//! route, searched by comparing names (products are config names; the list is capped).
//!
//! Cardinality is bounded by construction: label values come only from config names (API,
//! operation, product, backend, server, policy kind) and fixed enums (status class, layer).
//! Requests that matched no route share one series with `api=""`, so distinct paths, keys or
//! client addresses never create series.
//!
//! `events` holds the process-wide counters that other rooms increment (JWKS fetches, cache
//! lookups, rate-limit decisions) through free functions such as [`jwks_fetch`].

mod events;
pub mod histogram;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use events::{cache_lookup, jwks_fetch, rate_limit_decision, response_cache_lookup, CacheResult};
pub use histogram::Histogram;

use crate::respond::Layer;
use crate::route::Route;

/// `status_class` label values, indexed by `status / 100 - 1`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// `layer` label values: which layer failed; `""` when none did (the backend or a policy answered).
pub const LAYERS: [&str; 5] = ["", "edge", "policy", "backend", "gateway"];
/// Per-layer duration histograms, in this order.
pub const TIMED_LAYERS: [&str; 3] = ["edge", "policy", "backend"];
/// Products seen per route before further ones share the `~other` series (a safety net: products
/// are config names, so this is only reached by a config with more products than this).
const MAX_PRODUCTS_PER_ROUTE: usize = 64;
const OTHER: &str = "~other";

pub fn status_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

pub fn layer_index(layer: Option<Layer>) -> usize {
    match layer {
        None => 0,
        Some(Layer::Edge) => 1,
        Some(Layer::Policy) => 2,
        Some(Layer::Backend) => 3,
        Some(Layer::Gateway) => 4,
    }
}

/// What the metrics (and analytics and traces) need to know about one finished request.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// `None`: the request matched no route (an edge error before routing).
    pub route: Option<Arc<Route>>,
    pub product: Option<Arc<str>>,
    pub subscription: Option<Arc<str>>,
    /// The backend that was called, when one was.
    pub backend: Option<Arc<str>>,
    pub status: u16,
    /// The layer that failed; `None` when nothing did.
    pub layer: Option<Layer>,
    /// The policy that answered or rejected.
    pub policy: Option<&'static str>,
    /// The backend's status, when it answered.
    pub upstream_status: Option<u16>,
    pub time_edge: Duration,
    /// `None` when no policy ran.
    pub time_policy: Option<Duration>,
    /// `None` when no backend was called.
    pub time_backend: Option<Duration>,
    /// Until the last byte of the response was sent (or the client went away).
    pub duration: Duration,
    pub bytes_sent: u64,
}

impl RequestFacts {
    /// Makes the facts equal to the default again, field by field (building a default and
    /// moving it in copies the whole struct): reused facts must not keep a reloaded-away route
    /// alive, nor tell anything of the last request.
    pub(crate) fn reset(&mut self) {
        self.route = None;
        self.product = None;
        self.subscription = None;
        self.backend = None;
        self.status = 0;
        self.layer = None;
        self.policy = None;
        self.upstream_status = None;
        self.time_edge = Duration::ZERO;
        self.time_policy = None;
        self.time_backend = None;
        self.duration = Duration::ZERO;
        self.bytes_sent = 0;
    }
}

/// Request counts of one label set, by status class and layer.
#[derive(Debug, Default)]
pub struct Cells {
    requests: [[AtomicU64; 5]; 5],
}

impl Cells {
    fn add(&self, status: usize, layer: usize) {
        self.requests[status][layer].fetch_add(1, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.requests.iter().flatten().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Failed requests by layer (indexes of [`LAYERS`]).
    pub fn by_layer(&self) -> [u64; 5] {
        let mut out = [0; 5];
        for row in &self.requests {
            for (l, c) in row.iter().enumerate() {
                out[l] += c.load(Ordering::Relaxed);
            }
        }
        out
    }
}

/// The series of one (API, operation).
#[derive(Debug)]
pub struct RouteSeries {
    pub api: Arc<str>,
    pub operation: Arc<str>,
    /// `api="…",operation="…"`, escaped once.
    labels: String,
    /// No product (no subscription, or one scoped to an API).
    plain: Cells,
    products: ArcSwap<Vec<(Arc<str>, Arc<Cells>)>>,
    grow: Mutex<()>,
    duration: Histogram,
    layers: [Histogram; 3],
    /// The backend histogram this route used last, so the usual case needs no lookup. Behind a
    /// lock rather than an `ArcSwap`: an uncontended lock costs a third of a load from one.
    backend: Mutex<Option<(Arc<str>, Arc<Histogram>)>>,
}

impl RouteSeries {
    fn new(api: &str, operation: &str) -> RouteSeries {
        let mut labels = String::new();
        label(&mut labels, "api", api);
        labels.push(',');
        label(&mut labels, "operation", operation);
        RouteSeries {
            api: api.into(),
            operation: operation.into(),
            labels,
            plain: Cells::default(),
            products: ArcSwap::from_pointee(Vec::new()),
            grow: Mutex::new(()),
            duration: Histogram::default(),
            layers: Default::default(),
            backend: Mutex::new(None),
        }
    }

    fn count(&self, product: Option<&str>, status: usize, layer: usize) {
        let Some(p) = product else {
            self.plain.add(status, layer);
            return;
        };
        let list = self.products.load();
        if let Some((_, cells)) = list.iter().find(|(n, _)| &**n == p) {
            cells.add(status, layer);
            return;
        }
        drop(list);
        self.product_cells(p).add(status, layer);
    }

    /// Adds a product's cells (first request of that product on this route).
    fn product_cells(&self, p: &str) -> Arc<Cells> {
        let _g = self.grow.lock();
        let list = self.products.load_full();
        let name = if list.len() >= MAX_PRODUCTS_PER_ROUTE { OTHER } else { p };
        if let Some((_, c)) = list.iter().find(|(n, _)| &**n == name) {
            return c.clone();
        }
        let cells = Arc::new(Cells::default());
        let mut next = (*list).clone();
        next.push((name.into(), cells.clone()));
        self.products.store(Arc::new(next));
        cells
    }

    /// All requests of this route, every product.
    pub fn totals(&self) -> (u64, [u64; 5]) {
        let mut total = self.plain.total();
        let mut layers = self.plain.by_layer();
        for (_, c) in self.products.load().iter() {
            total += c.total();
            for (a, b) in layers.iter_mut().zip(c.by_layer()) {
                *a += b;
            }
        }
        (total, layers)
    }
}

/// Where a route keeps its interned series (a field of [`Route`]; empty until its first request).
#[derive(Debug, Default)]
pub struct RouteCell(OnceLock<Arc<RouteSeries>>);

/// (API, operation) names.
type RouteKey = (Arc<str>, Arc<str>);

/// The registry of one gateway; it lives as long as the gateway, across reloads.
#[derive(Debug)]
pub struct Metrics {
    routes: Mutex<HashMap<RouteKey, Arc<RouteSeries>>>,
    unrouted: Arc<RouteSeries>,
    backends: Mutex<HashMap<Arc<str>, Arc<Histogram>>>,
    rejections: ArcSwap<Vec<(&'static str, Arc<AtomicU64>)>>,
    rejections_grow: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            routes: Mutex::default(),
            unrouted: Arc::new(RouteSeries::new("", "")),
            backends: Mutex::default(),
            rejections: ArcSwap::from_pointee(Vec::new()),
            rejections_grow: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// The series of `route`, interned on its first request.
    pub fn series<'r>(&self, route: &'r Route) -> &'r Arc<RouteSeries> {
        route.metrics.0.get_or_init(|| self.intern(&route.api.name, route.operation.as_deref().unwrap_or("")))
    }

    /// The series of a request's route, or the unrouted one.
    pub fn route_series<'a>(&'a self, route: Option<&'a Arc<Route>>) -> &'a RouteSeries {
        match route {
            Some(r) => self.series(r),
            None => &self.unrouted,
        }
    }

    fn intern(&self, api: &str, operation: &str) -> Arc<RouteSeries> {
        let mut map = self.routes.lock();
        let key: RouteKey = (api.into(), operation.into());
        map.entry(key).or_insert_with(|| Arc::new(RouteSeries::new(api, operation))).clone()
    }

    fn backend_histogram(&self, name: &Arc<str>) -> Arc<Histogram> {
        self.backends.lock().entry(name.clone()).or_default().clone()
    }

    /// Records one finished request. Cheap: see the module docs.
    pub fn record(&self, f: &RequestFacts) {
        let series = self.route_series(f.route.as_ref());
        series.count(f.product.as_deref(), status_index(f.status), layer_index(f.layer));
        series.duration.observe(f.duration);
        series.layers[0].observe(f.time_edge);
        if let Some(t) = f.time_policy {
            series.layers[1].observe(t);
        }
        if let Some(t) = f.time_backend {
            // One bucket search for the layer's and the backend's histogram.
            let t = histogram::Sample::of(t);
            series.layers[2].add(t);
            if let Some(name) = &f.backend {
                let mut cached = series.backend.lock();
                match &*cached {
                    Some((n, h)) if Arc::ptr_eq(n, name) || n == name => h.add(t),
                    // Under the route's lock, then the registry's: nothing takes them the other
                    // way round.
                    _ => {
                        let h = self.backend_histogram(name);
                        h.add(t);
                        *cached = Some((name.clone(), h));
                    }
                }
            }
        }
        if let (Some(Layer::Policy), Some(policy)) = (f.layer, f.policy) {
            self.rejection(policy);
        }
    }

    fn rejection(&self, policy: &'static str) {
        let list = self.rejections.load();
        if let Some((_, c)) = list.iter().find(|(n, _)| std::ptr::eq(*n, policy) || *n == policy) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(list);
        let _g = self.rejections_grow.lock();
        let list = self.rejections.load_full();
        if let Some((_, c)) = list.iter().find(|(n, _)| *n == policy) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut next = (*list).clone();
        next.push((policy, Arc::new(AtomicU64::new(1))));
        self.rejections.store(Arc::new(next));
    }

    /// Every route's series, the unrouted one first.
    pub fn all_series(&self) -> Vec<Arc<RouteSeries>> {
        let mut v = vec![self.unrouted.clone()];
        let mut routes: Vec<_> = self.routes.lock().values().cloned().collect();
        routes.sort_by(|a, b| (&a.api, &a.operation).cmp(&(&b.api, &b.operation)));
        v.extend(routes);
        v
    }

    /// The Prometheus text exposition (format 0.0.4). `servers` lists every backend server as
    /// (backend, server URL, up).
    pub fn render(&self, servers: &[(String, String, bool)], extra: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let series = self.all_series();

        header(
            &mut out,
            "gatehouse_requests_total",
            "counter",
            "Requests by API, operation, product, status class and the layer that failed (layer=\"\": none failed).",
        );
        for s in &series {
            let mut cells: Vec<(&str, &Cells)> = vec![("", &s.plain)];
            let products = s.products.load();
            cells.extend(products.iter().map(|(n, c)| (&**n, &**c)));
            for (product, c) in cells {
                for (si, class) in STATUS_CLASSES.iter().enumerate() {
                    for (li, layer) in LAYERS.iter().enumerate() {
                        let n = c.requests[si][li].load(Ordering::Relaxed);
                        if n == 0 {
                            continue;
                        }
                        out.push_str("gatehouse_requests_total{");
                        out.push_str(&s.labels);
                        out.push(',');
                        label(&mut out, "product", product);
                        let _ = writeln!(out, ",status_class=\"{class}\",layer=\"{layer}\"}} {n}");
                    }
                }
            }
        }

        header(
            &mut out,
            "gatehouse_request_duration_seconds",
            "histogram",
            "Time from the request head to the last byte of the response, by API and operation.",
        );
        for s in series.iter().filter(|s| s.duration.count() > 0) {
            s.duration.render("gatehouse_request_duration_seconds", &s.labels, &mut out);
        }

        header(
            &mut out,
            "gatehouse_layer_duration_seconds",
            "histogram",
            "Time spent in each layer (edge, policy, backend), by API and operation.",
        );
        for s in &series {
            for (h, layer) in s.layers.iter().zip(TIMED_LAYERS) {
                if h.count() > 0 {
                    h.render("gatehouse_layer_duration_seconds", &format!("{},layer=\"{layer}\"", s.labels), &mut out);
                }
            }
        }

        header(
            &mut out,
            "gatehouse_backend_duration_seconds",
            "histogram",
            "Time until a backend's response head arrived (retries included), by backend.",
        );
        let mut backends: Vec<_> = self.backends.lock().iter().map(|(n, h)| (n.clone(), h.clone())).collect();
        backends.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, h) in backends {
            let mut l = String::new();
            label(&mut l, "backend", &name);
            h.render("gatehouse_backend_duration_seconds", &l, &mut out);
        }

        header(&mut out, "gatehouse_policy_rejections_total", "counter", "Requests a policy rejected, by policy kind.");
        let mut rejections: Vec<_> =
            self.rejections.load().iter().map(|(n, c)| (*n, c.load(Ordering::Relaxed))).collect();
        rejections.sort();
        for (policy, n) in rejections {
            out.push_str("gatehouse_policy_rejections_total{");
            label(&mut out, "policy", policy);
            let _ = writeln!(out, "}} {n}");
        }

        header(
            &mut out,
            "gatehouse_backend_server_up",
            "gauge",
            "1 when a backend server passes its health checks, 0 when it is out.",
        );
        for (backend, server, up) in servers {
            out.push_str("gatehouse_backend_server_up{");
            label(&mut out, "backend", backend);
            out.push(',');
            label(&mut out, "server", server);
            let _ = writeln!(out, "}} {}", u8::from(*up));
        }

        events::render(&mut out);
        for (name, help, value) in extra {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `name="value"` with the exposition format's escaping.
pub(crate) fn label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        label(&mut s, "api", "a\"b\\c\nd");
        assert_eq!(s, r#"api="a\"b\\c\nd""#);
    }

    #[test]
    fn status_and_layer_indexes() {
        assert_eq!(STATUS_CLASSES[status_index(404)], "4xx");
        assert_eq!(STATUS_CLASSES[status_index(999)], "5xx");
        assert_eq!(STATUS_CLASSES[status_index(0)], "1xx");
        assert_eq!(LAYERS[layer_index(Some(Layer::Backend))], "backend");
    }

    #[test]
    fn products_beyond_the_cap_share_one_series() {
        let s = RouteSeries::new("a", "");
        for i in 0..(MAX_PRODUCTS_PER_ROUTE + 10) {
            s.count(Some(&format!("p{i}")), 1, 0);
        }
        let products = s.products.load();
        assert_eq!(products.len(), MAX_PRODUCTS_PER_ROUTE + 1);
        assert_eq!(&*products[MAX_PRODUCTS_PER_ROUTE].0, OTHER);
        assert_eq!(products[MAX_PRODUCTS_PER_ROUTE].1.total(), 10);
    }
}
