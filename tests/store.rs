//! The store against real databases: every behaviour runs on an embedded SQLite file and on the
//! PostgreSQL at 127.0.0.1:5432 (database `test`; `GATEHOUSE_TEST_PG` overrides the URL). The
//! PostgreSQL tests fail, not skip, when the server is missing. Each PostgreSQL test works in a
//! schema of its own, dropped afterwards (also when the test fails).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use gatehouse::config::store::StoreConfig;
use gatehouse::identity::subscription::{ApiAccess, Denial, SubscriptionIndex};
use gatehouse::store::{KeySlot, NewSubscription, QuotaCounter, Scope, State, Store, StoreError, SubscriptionKey};
use tokio_util::sync::CancellationToken;

fn pg_url() -> String {
    std::env::var("GATEHOUSE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn pg_config() -> StoreConfig {
    let schema = format!("gh_test_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    StoreConfig { url: pg_url(), schema: Some(schema), ..StoreConfig::default() }
}

/// Runs `f` with `n` stores opened on one fresh PostgreSQL schema (separate pools, like separate
/// nodes), then drops the schema whatever happened.
async fn with_pg<F, Fut>(n: usize, f: F)
where
    F: FnOnce(Vec<Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let cfg = pg_config();
    let mut stores = Vec::new();
    for _ in 0..n {
        let s = Store::open(&cfg, std::path::Path::new("."))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is required for these tests: {e}", pg_url()));
        stores.push(s);
    }
    let result = AssertUnwindSafe(f(stores.clone())).catch_unwind().await;
    for s in &stores {
        s.close().await;
    }
    drop_schema(cfg.schema.as_deref().expect("schema")).await;
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

async fn drop_schema(schema: &str) {
    use sqlx::ConnectOptions;
    let opts: sqlx::postgres::PgConnectOptions = pg_url().parse().expect("pg url");
    let mut conn = opts.connect().await.expect("connect to drop the test schema");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&mut conn).await.expect("drop schema");
}

async fn with_sqlite<F, Fut>(n: usize, f: F)
where
    F: FnOnce(Vec<Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig { url: "sqlite://gatehouse.db".into(), ..StoreConfig::default() };
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(Store::open(&cfg, dir.path()).await.expect("open sqlite"));
    }
    assert!(dir.path().join("gatehouse.db").exists(), "the file is created on first use");
    f(stores).await;
}

fn all_apis(required: bool) -> ApiAccess {
    ApiAccess { api: "orders".into(), products: vec![Arc::from("starter")].into(), required }
}

fn new_sub(name: &str, scope: Scope) -> NewSubscription {
    NewSubscription { name: name.into(), scope, primary_key: None, secondary_key: None, expires_at: None }
}

/// Create, list, show, regenerate each key alone, suspend, resume, expiry, cancel — checked
/// through an index loaded from the store, as the gateway sees it.
async fn lifecycle(store: Store) {
    let (sub, keys) =
        store.create_subscription(new_sub("mobile-app", Scope::Product("starter".into()))).await.expect("create");
    let p1 = keys.primary.expect("generated primary").expose().to_owned();
    let s1 = keys.secondary.expect("generated secondary").expose().to_owned();
    assert_ne!(p1, s1);
    assert!(p1.len() >= 43, "≥ 256 bits as base64url");
    assert_eq!(sub.state, State::Active);
    assert!(sub.id.starts_with("sub_"));

    // Keys are never readable again: not in list or show output.
    let listed = serde_json::to_string(&store.list_subscriptions().await.expect("list")).expect("json");
    assert!(listed.contains("mobile-app") && listed.contains("product:starter"));
    assert!(!listed.contains(&p1) && !listed.contains(&s1));
    assert_eq!(store.find_subscription("mobile-app").await.expect("by name"), sub);
    assert_eq!(store.find_subscription(&sub.id).await.expect("by id"), sub);

    let index = SubscriptionIndex::load(&store).await.expect("load");
    let access = all_apis(true);
    let elsewhere = ApiAccess { api: "billing".into(), products: Vec::new().into(), required: true };
    for k in [&p1, &s1] {
        let caller = index.check(&access, Some(k)).expect("both keys valid at once");
        assert_eq!(&*caller.subscription_name, "mobile-app");
        assert_eq!(caller.product.as_deref(), Some("starter"));
        assert_eq!(index.check(&elsewhere, Some(k)).err(), Some(Denial::OutOfScope));
    }

    // Rotate the primary alone: the secondary keeps working throughout.
    let (_, p2) = store.regenerate_key(&sub.id, KeySlot::Primary, None).await.expect("regenerate primary");
    let p2 = p2.expect("generated").expose().to_owned();
    index.refresh(&store).await.expect("refresh");
    assert_eq!(index.check(&access, Some(&p1)).err(), Some(Denial::Invalid), "old primary refused");
    assert!(index.check(&access, Some(&p2)).is_ok());
    assert!(index.check(&access, Some(&s1)).is_ok());
    // Then the secondary alone, to an operator-supplied key.
    let supplied = "supplied-secondary-key-0123456789";
    let (_, echoed) = store
        .regenerate_key("mobile-app", KeySlot::Secondary, Some(SubscriptionKey::parse(supplied).expect("key")))
        .await
        .expect("regenerate secondary");
    assert!(echoed.is_none(), "a supplied key is not echoed");
    index.refresh(&store).await.expect("refresh");
    assert_eq!(index.check(&access, Some(&s1)).err(), Some(Denial::Invalid));
    assert!(index.check(&access, Some(supplied)).is_ok());
    assert!(index.check(&access, Some(&p2)).is_ok());

    // Suspend and resume.
    assert_eq!(store.set_state(&sub.id, State::Suspended).await.expect("suspend").state, State::Suspended);
    index.refresh(&store).await.expect("refresh");
    assert_eq!(index.check(&access, Some(&p2)).err(), Some(Denial::Inactive(State::Suspended)));
    assert_eq!(store.set_state(&sub.id, State::Active).await.expect("resume").state, State::Active);
    index.refresh(&store).await.expect("refresh");
    assert!(index.check(&access, Some(&p2)).is_ok());

    // Expiry in the past, then cleared.
    let past = gatehouse::store::unix_now() - 5;
    assert_eq!(store.set_expiry(&sub.id, Some(past)).await.expect("expire").expires_at, Some(past));
    index.refresh(&store).await.expect("refresh");
    assert_eq!(index.check(&access, Some(supplied)).err(), Some(Denial::Expired));
    store.set_expiry(&sub.id, None).await.expect("clear expiry");
    index.refresh(&store).await.expect("refresh");
    assert!(index.check(&access, Some(supplied)).is_ok());

    // Cancel is final.
    assert_eq!(store.set_state(&sub.id, State::Cancelled).await.expect("cancel").state, State::Cancelled);
    index.refresh(&store).await.expect("refresh");
    assert_eq!(index.check(&access, Some(&p2)).err(), Some(Denial::Inactive(State::Cancelled)));
    assert!(matches!(store.set_state(&sub.id, State::Active).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.regenerate_key(&sub.id, KeySlot::Primary, None).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.find_subscription("nobody").await, Err(StoreError::NotFound(_))));
}

/// Explicit keys, duplicates, and an expiry set at creation.
async fn creation_rules(store: Store) {
    let k1 = SubscriptionKey::parse("explicit-primary-key-0000000001").expect("key");
    let k2 = SubscriptionKey::parse("explicit-secondary-key-000000002").expect("key");
    let mut n = new_sub("partner", Scope::Api("orders".into()));
    n.primary_key = Some(k1.clone());
    n.secondary_key = Some(k2.clone());
    n.expires_at = Some(gatehouse::store::unix_now() + 3600);
    let (sub, issued) = store.create_subscription(n).await.expect("create with keys");
    assert!(issued.primary.is_none() && issued.secondary.is_none(), "supplied keys are not echoed");
    assert_eq!(sub.scope, Scope::Api("orders".into()));

    let index = SubscriptionIndex::load(&store).await.expect("load");
    let orders = ApiAccess { api: "orders".into(), products: Vec::new().into(), required: true };
    let caller = index.check(&orders, Some(k1.expose())).expect("explicit key works");
    assert!(caller.product.is_none());
    assert!(index.check(&orders, Some(k2.expose())).is_ok());

    let dup_name = store.create_subscription(new_sub("partner", Scope::AllApis)).await;
    assert!(matches!(dup_name, Err(StoreError::Conflict(_))), "{dup_name:?}");
    let mut dup_key = new_sub("other", Scope::AllApis);
    dup_key.secondary_key = Some(k1.clone());
    assert!(matches!(store.create_subscription(dup_key).await, Err(StoreError::Conflict(_))));
    let mut same = new_sub("same", Scope::AllApis);
    same.primary_key = Some(k1.clone());
    same.secondary_key = Some(k1);
    assert!(matches!(store.create_subscription(same).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.create_subscription(new_sub("  ", Scope::AllApis)).await, Err(StoreError::Invalid(_))));
    let (all, _) = store.create_subscription(new_sub("ops", Scope::AllApis)).await.expect("all apis");
    assert_eq!(store.list_subscriptions().await.expect("list").len(), 2);
    assert_eq!(all.scope.to_string(), "all-apis");
}

async fn quotas(store: Store) {
    assert_eq!(store.load_quota("sub_1:orders").await.expect("load"), None);
    let c = |calls, bytes, period_start| QuotaCounter { key: "sub_1:orders".into(), period_start, calls, bytes };
    store.save_quotas(&[c(5, 500, 100), QuotaCounter { key: "k2".into(), ..c(1, 1, 100) }]).await.expect("save");
    assert_eq!(store.load_quota("sub_1:orders").await.expect("load"), Some(c(5, 500, 100)));
    store.save_quotas(&[c(7, 700, 100)]).await.expect("overwrite");
    assert_eq!(store.load_quota("sub_1:orders").await.expect("load"), Some(c(7, 700, 100)));
    assert_eq!(store.add_quotas(&[c(3, 30, 100)]).await.expect("add"), vec![c(10, 730, 100)]);
    assert_eq!(
        store.add_quotas(&[c(1, 10, 50)]).await.expect("late"),
        vec![c(10, 730, 100)],
        "an older period is dropped"
    );
    assert_eq!(store.add_quotas(&[c(2, 20, 200)]).await.expect("new period"), vec![c(2, 20, 200)]);
    assert_eq!(store.load_quota("k2").await.expect("load").map(|q| q.calls), Some(1));
}

/// Node B (its own pool and index, polling every second) sees node A's new subscription and
/// its revocation within 2 seconds.
async fn second_node_sees_changes(stores: Vec<Store>) {
    let (a, b) = (stores[0].clone(), stores[1].clone());
    let index_b = SubscriptionIndex::load(&b).await.expect("load b");
    let stop = CancellationToken::new();
    let task = index_b.spawn_refresher(b.clone(), Duration::from_secs(1), stop.clone());
    let access = all_apis(true);

    let (sub, keys) = a.create_subscription(new_sub("new-on-a", Scope::AllApis)).await.expect("create on a");
    let key = keys.primary.expect("key").expose().to_owned();
    let seen = wait_for(|| index_b.check(&access, Some(&key)).is_ok()).await;
    assert!(seen < Duration::from_secs(2), "B saw the new subscription after {seen:?}");

    a.set_state(&sub.id, State::Suspended).await.expect("suspend on a");
    let revoked =
        wait_for(|| index_b.check(&access, Some(&key)).err() == Some(Denial::Inactive(State::Suspended))).await;
    assert!(revoked < Duration::from_secs(2), "B saw the revocation after {revoked:?}");

    a.regenerate_key(&sub.id, KeySlot::Primary, None).await.expect("rotate on a");
    let rotated = wait_for(|| index_b.check(&access, Some(&key)).err() == Some(Denial::Invalid)).await;
    assert!(rotated < Duration::from_secs(2), "B dropped the old key after {rotated:?}");
    stop.cancel();
    task.await.expect("refresher ends");
}

/// Polls `cond` every 20 ms for at most 5 s; returns how long it took (panics on timeout).
async fn wait_for(mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(5), "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn lifecycle_sqlite() {
    with_sqlite(1, |s| lifecycle(s[0].clone())).await;
}

#[tokio::test]
async fn lifecycle_postgres() {
    with_pg(1, |s| lifecycle(s[0].clone())).await;
}

#[tokio::test]
async fn creation_rules_sqlite() {
    with_sqlite(1, |s| creation_rules(s[0].clone())).await;
}

#[tokio::test]
async fn creation_rules_postgres() {
    with_pg(1, |s| creation_rules(s[0].clone())).await;
}

#[tokio::test]
async fn quota_counters_sqlite() {
    with_sqlite(1, |s| quotas(s[0].clone())).await;
}

#[tokio::test]
async fn quota_counters_postgres() {
    with_pg(1, |s| quotas(s[0].clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_node_sees_changes_within_2s_postgres() {
    with_pg(2, second_node_sees_changes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_process_sees_changes_within_2s_sqlite() {
    // Two pools on one file stand for the gateway and the CLI.
    with_sqlite(2, second_node_sees_changes).await;
}

#[tokio::test]
async fn sqlite_reopens_with_its_data_and_migrations_applied_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig { url: "sqlite://sub/dir/../../gh.db".into(), ..StoreConfig::default() };
    std::fs::create_dir_all(dir.path().join("sub/dir")).expect("dirs");
    let store = Store::open(&cfg, dir.path()).await.expect("open");
    store.create_subscription(new_sub("kept", Scope::AllApis)).await.expect("create");
    store.close().await;
    let again = Store::open(&cfg, dir.path()).await.expect("reopen");
    assert_eq!(again.list_subscriptions().await.expect("list")[0].name, "kept");
    assert_eq!(again.kind(), "sqlite");
}

#[tokio::test]
async fn unusable_store_urls_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for url in ["mysql://x/y", "sqlite::memory:", "sqlite://"] {
        let cfg = StoreConfig { url: url.into(), ..StoreConfig::default() };
        assert!(matches!(Store::open(&cfg, dir.path()).await, Err(StoreError::Config(_))), "{url}");
    }
    let cfg = StoreConfig { url: pg_url(), schema: Some("Bad-Name".into()), ..StoreConfig::default() };
    assert!(matches!(Store::open(&cfg, dir.path()).await, Err(StoreError::Config(_))));
}
