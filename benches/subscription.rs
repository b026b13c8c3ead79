//! Micro-benchmarks of the subscription-key check on the request path.
//!
//! - `subscription/header`: `SubscriptionIndex::authenticate` with the key in the
//!   `Ocp-Apim-Subscription-Key` header (digest, one map lookup, header removal).
//! - `subscription/query`: the same with the key in `?subscription-key=` (the URI is rebuilt
//!   without it).
//! - `subscription/unknown_key`: a well-formed key that no subscription has (the 401 path).
//!
//! The index holds 2,000 subscriptions (4,000 keys) loaded from a real SQLite store, as at
//! start-up. Run with `cargo bench --bench subscription`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gatehouse::config::store::StoreConfig;
use gatehouse::identity::subscription::{ApiAccess, KeyNames, SubscriptionIndex};
use gatehouse::store::{NewSubscription, Scope, Store};

fn setup() -> (Arc<SubscriptionIndex>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (index, key) = rt.block_on(async {
        let cfg = StoreConfig { url: "sqlite://bench.db".into(), ..StoreConfig::default() };
        let store = Store::open(&cfg, dir.path()).await.expect("store");
        let mut key = String::new();
        for i in 0..2000 {
            let scope = if i % 2 == 0 { Scope::Product("starter".into()) } else { Scope::Api(format!("api{i}")) };
            let new = NewSubscription {
                name: format!("s{i}"),
                scope,
                primary_key: None,
                secondary_key: None,
                expires_at: None,
            };
            let (_, keys) = store.create_subscription(new).await.expect("create");
            if i == 1000 {
                key = keys.primary.expect("key").expose().to_owned();
            }
        }
        let index = SubscriptionIndex::load(&store).await.expect("index");
        store.close().await;
        (index, key)
    });
    (index, key, dir)
}

fn request(uri: &str, header: Option<&str>) -> http::request::Parts {
    let mut b = http::Request::builder().uri(uri);
    if let Some(h) = header {
        b = b.header("Ocp-Apim-Subscription-Key", h);
    }
    b.header("host", "api.example.com").header("accept", "application/json").body(()).expect("request").into_parts().0
}

fn bench(c: &mut Criterion) {
    let (index, key, _dir) = setup();
    let names = KeyNames::default();
    let access = ApiAccess { api: "orders".into(), products: vec![Arc::from("starter")].into(), required: true };
    let mut g = c.benchmark_group("subscription");
    g.bench_function("header", |b| {
        b.iter_batched_ref(
            || request("/orders/42?expand=items", Some(&key)),
            |req| black_box(index.authenticate(&access, &names, req)),
            BatchSize::SmallInput,
        )
    });
    let uri = format!("/orders/42?expand=items&subscription-key={key}");
    g.bench_function("query", |b| {
        b.iter_batched_ref(
            || request(&uri, None),
            |req| black_box(index.authenticate(&access, &names, req)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("unknown_key", |b| {
        b.iter_batched_ref(
            || request("/orders/42", Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
            |req| black_box(index.authenticate(&access, &names, req)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
