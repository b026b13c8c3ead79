//! Micro-benchmarks of transformation and control policies on the per-request path.
//!
//! What is measured, and why:
//! - `set_header/*`: a static value (a `HeaderValue` built at compile time, cloned per request)
//!   and a two-placeholder template (`{jwt.sub ?? 'anon'}/{request.header.X-Tier}`), which
//!   renders into one `String` per request. This is the most common policy.
//! - `ip_filter/*`: 100 CIDR ranges (IPv4) and 100 IPv6 ranges, a listed and an unlisted
//!   client. The ranges are merged into sorted intervals at compile time, so a check is a binary
//!   search and should not grow with the list.
//! - `choose/*`: a two-branch `choose` whose chosen branch sets a header: condition evaluation
//!   plus one nested policy, without allocation for the branch itself.
//!
//! Run with `cargo bench --bench policies`.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::body::UpstreamBody;
use gatehouse::config::{ConfigError, Document, PathSeg};
use gatehouse::policy::{BackendPlan, BuildCx, Chain, Exchange, Outcome, Policy, PolicyEnv, Stage, Step};
use gatehouse::route::{Api, Route};

fn build<P>(yaml: &str, f: fn(&BuildCx<'_>) -> Result<P, Vec<ConfigError>>) -> P {
    let doc = Document::parse("bench.yaml", &format!("p: {yaml}\n")).expect("yaml");
    let env = PolicyEnv::new();
    let cx = BuildCx {
        doc: &doc,
        path: vec![PathSeg::Key("p".into())],
        stage: Stage::Inbound,
        scope: "api:bench".into(),
        params: &[],
        vars: &[],
        env: &env,
        pending: RefCell::new(Vec::new()),
    };
    match f(&cx) {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    }
}

fn exchange() -> Exchange {
    let (mut request, ()) = http::Request::get("/orders/7?x=1").body(()).expect("request").into_parts();
    request.headers.insert("x-tier", http::HeaderValue::from_static("gold"));
    request.headers.insert("user-agent", http::HeaderValue::from_static("bench/1.0"));
    Exchange {
        stage: Stage::Inbound,
        request,
        body: UpstreamBody::empty(),
        path: "/orders/7".into(),
        params: Vec::new(),
        client_ip: "192.0.2.1".parse().expect("ip"),
        request_id: http::HeaderValue::from_static("rid"),
        route: Arc::new(Route {
            api: Arc::new(Api {
                name: "orders".into(),
                prefix: "/orders".into(),
                backend: Some("b".into()),
                server_timing: false,
            }),
            operation: None,
            chain: Arc::new(Chain::default()),
            metrics: Default::default(),
        }),
        vars: Vec::new(),
        jwt: match serde_json::json!({ "sub": "alice" }) {
            serde_json::Value::Object(m) => Some(Arc::new(gatehouse::identity::jwt::claims::Verified::new(m))),
            _ => None,
        },
        caller: None,
        backend: BackendPlan::default(),
        response: None,
        error: None,
        extra_response_headers: http::HeaderMap::new(),
        deferred: Vec::new(),
        on_sent: Vec::new(),
        body_limit: 1 << 20,
        routed_at: std::time::Instant::now(),
        cache: None,
    }
}

fn run(p: &dyn Policy, x: &mut Exchange) -> bool {
    match p.run(x) {
        Step::Ready(Outcome::Continue) => true,
        Step::Ready(_) => false,
        Step::Wait(_) => panic!("waited"),
    }
}

fn set_header(c: &mut Criterion) {
    use gatehouse::policy::set_header::SetHeader;
    let mut g = c.benchmark_group("set_header");
    let fixed = build("{ name: X-Gateway, value: gatehouse }", SetHeader::build);
    let templated = build("{ name: X-User, value: \"{jwt.sub ?? 'anon'}/{request.header.X-Tier}\" }", SetHeader::build);
    let mut x = exchange();
    g.bench_function("static", |b| b.iter(|| black_box(run(&fixed, &mut x))));
    g.bench_function("template", |b| b.iter(|| black_box(run(&templated, &mut x))));
    assert_eq!(x.request.headers["x-user"], "alice/gold");
    g.finish();
}

fn ip_filter(c: &mut Criterion) {
    use gatehouse::policy::ip_filter::IpFilter;
    let mut g = c.benchmark_group("ip_filter");
    // 100 disjoint /24s spread over 10.0.0.0/8, and 100 IPv6 /48s.
    let v4: Vec<String> = (0..100).map(|i| format!("\"10.{}.{}.0/24\"", i * 2, i)).collect();
    let v6: Vec<String> = (0..100).map(|i| format!("\"2001:db8:{:x}::/48\"", i * 3)).collect();
    let f4 = build(&format!("{{ action: allow, addresses: [{}] }}", v4.join(", ")), IpFilter::build);
    let f6 = build(&format!("{{ action: allow, addresses: [{}] }}", v6.join(", ")), IpFilter::build);
    let mut x = exchange();
    for (name, f, ip, listed) in [
        ("v4_100_cidrs_listed", &f4, "10.100.50.9", true),
        ("v4_100_cidrs_unlisted", &f4, "192.0.2.1", false),
        ("v6_100_cidrs_listed", &f6, "2001:db8:129::1", true),
        ("v6_100_cidrs_unlisted", &f6, "2001:db9::1", false),
    ] {
        x.client_ip = ip.parse().expect("ip");
        assert_eq!(run(f, &mut x), listed, "{name}");
        g.bench_function(name, |b| b.iter(|| black_box(run(f, &mut x))));
    }
    g.finish();
}

fn choose(c: &mut Criterion) {
    use gatehouse::policy::choose::Choose;
    let p = build(
        "{ when: [ { condition: \"request.header.X-Tier == 'gold' && request.method == 'GET'\", \
         policies: [ { set-header: { name: X-Lane, value: fast } } ] } ], \
         otherwise: [ { set-header: { name: X-Lane, value: slow } } ] }",
        Choose::build,
    );
    let mut x = exchange();
    c.bench_function("choose/two_branches_set_header", |b| b.iter(|| black_box(run(&p, &mut x))));
    assert_eq!(x.request.headers["x-lane"], "fast");
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = set_header, ip_filter, choose
}
criterion_main!(benches);
