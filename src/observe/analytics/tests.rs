use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::observe::metrics::Metrics;
use crate::policy::Chain;
use crate::respond::Layer;
use crate::route::{Api, Route};

const M: i64 = 1_749_999_960;

fn route(api: &str, op: &str) -> Arc<Route> {
    Arc::new(Route {
        api: Arc::new(Api { name: api.into(), prefix: format!("/{api}"), backend: None, server_timing: false }),
        operation: Some(op.into()),
        chain: Arc::new(Chain::default()),
        metrics: Default::default(),
    })
}

fn facts(route: Option<&Arc<Route>>, sub: Option<&str>, status: u16, layer: Option<Layer>, ms: u64) -> RequestFacts {
    RequestFacts {
        route: route.cloned(),
        product: sub.map(|_| Arc::from("starter")),
        subscription: sub.map(Arc::from),
        status,
        layer,
        duration: Duration::from_millis(ms),
        bytes_sent: 100,
        ..RequestFacts::default()
    }
}

fn rows(a: &Analytics) -> Vec<Row> {
    a.finish_minutes(None);
    a.peek(usize::MAX).1
}

#[test]
fn requests_add_up_per_minute_and_key() {
    let (metrics, a) = (Metrics::default(), Analytics::default());
    let orders = route("orders", "list");
    let record = |f: &RequestFacts, minute: i64| a.record_at(minute, metrics.route_series(f.route.as_ref()), f);
    for _ in 0..10 {
        record(&facts(Some(&orders), Some("web"), 200, None, 4), M);
    }
    record(&facts(Some(&orders), Some("web"), 502, Some(Layer::Backend), 30), M);
    record(&facts(Some(&orders), None, 200, None, 4), M);
    record(&facts(None, None, 404, Some(Layer::Edge), 1), M);
    record(&facts(Some(&orders), Some("web"), 200, None, 4), M + 60);

    // Only the minutes before the current one are finished.
    assert_eq!(a.finish_minutes(Some(M + 60)), 4);
    let (seq, done) = a.peek(100);
    assert_eq!((seq, done.len()), (0, 4));
    let ok = done.iter().find(|r| r.key.subscription.is_some() && r.key.status == 1).expect("2xx of web");
    assert_eq!((ok.minute, &*ok.key.api, &*ok.key.operation), (M, "orders", "list"));
    assert_eq!((ok.agg.requests, ok.agg.bytes_sent, ok.agg.latency.count()), (10, 1000, 10));
    assert_eq!(ok.key.product.as_deref(), Some("starter"));
    let failed = done.iter().find(|r| r.key.layer == 3).expect("backend failure");
    assert!(failed.key.is_error() && !ok.key.is_error());
    let unrouted = done.iter().find(|r| r.key.api.is_empty()).expect("unrouted");
    assert_eq!((unrouted.key.layer, unrouted.agg.requests), (1, 1));

    // Queries see finished and live minutes alike.
    let mut seen = 0;
    a.visit(M, M + 120, |_, _, agg| seen += agg.requests);
    assert_eq!(seen, 14);
    let mut late = 0;
    a.visit(M + 60, M + 120, |_, _, agg| late += agg.requests);
    assert_eq!(late, 1);

    a.confirm(seq, 4);
    assert_eq!(a.queued(), 0);
    assert_eq!(rows(&a).len(), 1, "the last minute, at shutdown");
}

#[test]
fn keys_beyond_the_cap_fold_into_other_and_keep_their_counts() {
    let metrics = Metrics::default();
    let a = Analytics::with_limits(64, 1000);
    let api = route("orders", "get");
    for i in 0..1000 {
        let f = facts(Some(&api), Some(&format!("sub-{i}")), 200, None, 2);
        a.record_at(M, metrics.route_series(f.route.as_ref()), &f);
    }
    let rows = rows(&a);
    assert!(rows.len() <= 64 + SHARDS, "{} rows", rows.len());
    assert_eq!(rows.iter().map(|r| r.agg.requests).sum::<u64>(), 1000);
    let other: u64 = rows.iter().filter(|r| &*r.key.api == OTHER).map(|r| r.agg.requests).sum();
    assert!(other >= 1000 - 64, "{other}");
    assert_eq!(a.overflowed.load(Ordering::Relaxed), other);
}

#[test]
fn the_backlog_is_bounded_and_confirming_survives_drops() {
    let metrics = Metrics::default();
    let a = Analytics::with_limits(1000, 5);
    let api = route("orders", "get");
    let record = |i: i64| {
        let f = facts(Some(&api), None, 200, None, 2);
        a.record_at(M + 60 * i, metrics.route_series(f.route.as_ref()), &f);
    };
    for i in 0..3 {
        record(i);
    }
    a.finish_minutes(None);
    // The writer takes the first three; meanwhile four more minutes end and two old ones drop.
    let (seq, batch) = a.peek(10);
    assert_eq!(batch.len(), 3);
    for i in 3..7 {
        record(i);
    }
    a.finish_minutes(None);
    assert_eq!(a.queued(), 5);
    assert_eq!(a.dropped.load(Ordering::Relaxed), 2);
    a.confirm(seq, batch.len());
    let (_, left) = a.peek(10);
    assert_eq!(left.iter().map(|r| r.minute).collect::<Vec<_>>(), (3..7).map(|i| M + 60 * i).collect::<Vec<_>>());
    a.forget_before(M + 60 * 5);
    assert_eq!(a.queued(), 2);
}

#[test]
fn minutes_are_whole_and_in_utc() {
    let m = current_minute();
    assert_eq!(m % 60, 0);
    assert!(m > 1_700_000_000);
}
