//! Per-request cost of observability: what a finished request costs the metrics registry
//! (`Metrics::record`), with and without a product label, for an unrouted request, and with the
//! facts boxed as the request tail holds them; and what the analytics aggregator adds
//! (`Analytics::record`: one sharded lock, a hash lookup by borrowed names, a histogram bucket). Compare with the ~20 CPU-µs a proxied request costs
//! in total (BENCHMARKS.md): the budget for metrics and logs together is 5 %, about 1 µs.
//!
//! Run with `cargo bench --bench metrics`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::observe::analytics::Analytics;
use gatehouse::observe::metrics::{Metrics, RequestFacts};
use gatehouse::policy::Chain;
use gatehouse::route::{Api, Route};

fn route() -> Arc<Route> {
    Arc::new(Route {
        api: Arc::new(Api {
            name: "orders".into(),
            prefix: "/orders".into(),
            backend: Some("orders".into()),
            server_timing: false,
        }),
        operation: Some("get-order".into()),
        chain: Arc::new(Chain::default()),
        metrics: Default::default(),
    })
}

fn facts(route: Option<Arc<Route>>, product: Option<&str>) -> RequestFacts {
    RequestFacts {
        backend: route.as_ref().map(|_| Arc::from("orders")),
        route,
        product: product.map(Arc::from),
        status: 200,
        time_edge: Duration::from_micros(12),
        time_policy: Some(Duration::from_micros(3)),
        time_backend: Some(Duration::from_micros(450)),
        duration: Duration::from_micros(480),
        bytes_sent: 100,
        ..RequestFacts::default()
    }
}

fn bench(c: &mut Criterion) {
    let metrics = Metrics::default();
    let mut g = c.benchmark_group("metrics");
    let routed = facts(Some(route()), None);
    g.bench_function("record/route", |b| b.iter(|| metrics.record(black_box(&routed))));
    let with_product = facts(Some(route()), Some("starter"));
    metrics.record(&with_product);
    g.bench_function("record/route+product", |b| b.iter(|| metrics.record(black_box(&with_product))));
    let unrouted = RequestFacts { status: 404, ..RequestFacts::default() };
    g.bench_function("record/unrouted", |b| b.iter(|| metrics.record(black_box(&unrouted))));
    g.bench_function("record/boxed-facts", |b| {
        b.iter(|| {
            let boxed = Box::new(black_box(routed.clone()));
            metrics.record(&boxed);
        })
    });
    g.bench_function("render/3-routes", |b| b.iter(|| black_box(metrics.render(&[], &[]))));
    g.finish();

    let analytics = Analytics::default();
    let mut g = c.benchmark_group("analytics");
    let record = |f: &RequestFacts| analytics.record(metrics.route_series(f.route.as_ref()), f);
    g.bench_function("record/route", |b| b.iter(|| record(black_box(&routed))));
    let subscribed = RequestFacts { subscription: Some(Arc::from("mobile-app")), ..with_product.clone() };
    g.bench_function("record/route+product+subscription", |b| b.iter(|| record(black_box(&subscribed))));
    g.bench_function("record/unrouted", |b| b.iter(|| record(black_box(&unrouted))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
