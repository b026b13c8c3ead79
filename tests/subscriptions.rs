//! Managing subscriptions as an operator does: the `gatehouse subscription …` command as a real
//! process (SQLite and PostgreSQL stores), and the admin API's `/subscriptions` routes over HTTP.
//! What the commands print is checked against an index loaded from the same store, the way a
//! running gateway would judge the keys.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use gatehouse::admin::{router_with, SubscriptionAdmin};
use gatehouse::config::store::StoreConfig;
use gatehouse::identity::subscription::{ApiAccess, Denial, SubscriptionIndex};
use gatehouse::store::{State, Store};

const CONFIG: &str = r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
admin: { bind: "127.0.0.1:0", token: "{{secret:admin-token-not-set-here}}" }
store: { url: "STORE_URL" SCHEMA }
products:
  starter: { subscription_required: true, apis: [ orders ], policies: { inbound: [ { rate-limit: { calls: 5, renewal_period: 60s } } ] } }
apis:
  orders: { path: /orders }
"#;

fn write_config(dir: &Path, url: &str, schema: Option<&str>) -> std::path::PathBuf {
    let schema = schema.map_or(String::new(), |s| format!(", schema: {s}"));
    let path = dir.join("gatehouse.yaml");
    std::fs::write(&path, CONFIG.replace("STORE_URL", url).replace(" SCHEMA", &schema)).expect("write config");
    path
}

fn gatehouse(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.arg("subscription").arg("-c").arg(config).args(args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn gatehouse");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or("").as_bytes()).expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("gatehouse output")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json_of(out: &Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn orders() -> ApiAccess {
    ApiAccess { api: "orders".into(), products: vec![Arc::from("starter")].into(), required: true }
}

/// The whole CLI lifecycle against the store in `config`; `store_cfg` opens the same store.
async fn cli_lifecycle(config: &Path, store_cfg: &StoreConfig) {
    let dir = config.parent().expect("dir");
    // Text output: both keys printed once, with the warning.
    let text = ok(&gatehouse(config, &["create", "--name", "mobile-app", "--product", "starter"], None));
    let key_line = |prefix: &str| -> String {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` in {text}"));
        line[prefix.len()..].trim().to_owned()
    };
    let (primary, secondary) = (key_line("primary key:"), key_line("secondary key:"));
    assert_eq!(primary.len(), 43, "{text}");
    assert!(text.contains("shown only now"), "{text}");

    // JSON output, an API scope and a key supplied on stdin (not echoed).
    let supplied = "supplied-on-stdin-0123456789abcdef";
    let created = json_of(&gatehouse(
        config,
        &["create", "--name", "partner", "--api", "orders", "--primary-key", "-", "--expires", "30d", "--json"],
        Some(&format!("{supplied}\n")),
    ));
    assert_eq!(created["primary_key"], Value::Null, "supplied keys are not printed");
    let partner_secondary = created["secondary_key"].as_str().expect("generated secondary").to_owned();
    assert_eq!(created["subscription"]["scope"], "api:orders");
    assert!(created["subscription"]["expires_at"].as_i64().expect("expiry") > gatehouse::store::unix_now());

    // list and show never print keys.
    let listed = ok(&gatehouse(config, &["list"], None));
    let listed_json = ok(&gatehouse(config, &["list", "--json"], None));
    let shown = ok(&gatehouse(config, &["show", "mobile-app"], None));
    for out in [&listed, &listed_json, &shown] {
        for k in [&primary, &secondary, &partner_secondary, &supplied.to_owned()] {
            assert!(!out.contains(k.as_str()), "a key leaked into: {out}");
        }
    }
    assert!(listed.contains("mobile-app") && listed.contains("product:starter") && listed.contains("api:orders"));
    assert!(shown.contains("state:    active"), "{shown}");

    // The keys printed are the ones the gateway accepts.
    let store = Store::open(store_cfg, dir).await.expect("open the CLI's store");
    let index = SubscriptionIndex::load(&store).await.expect("load");
    for k in [&primary, &secondary, &partner_secondary, &supplied.to_owned()] {
        assert!(index.check(&orders(), Some(k)).is_ok(), "key from the CLI refused");
    }

    // Regenerate the secondary alone: the primary keeps working.
    let regen = json_of(&gatehouse(config, &["regenerate", "mobile-app", "--secondary", "--json"], None));
    let new_secondary = regen["key"].as_str().expect("new key").to_owned();
    index.refresh(&store).await.expect("refresh");
    assert_eq!(index.check(&orders(), Some(&secondary)).err(), Some(Denial::Invalid));
    assert!(index.check(&orders(), Some(&new_secondary)).is_ok());
    assert!(index.check(&orders(), Some(&primary)).is_ok());

    // Suspend, resume, cancel.
    assert!(ok(&gatehouse(config, &["suspend", "mobile-app"], None)).contains("suspended"));
    index.refresh(&store).await.expect("refresh");
    assert_eq!(index.check(&orders(), Some(&primary)).err(), Some(Denial::Inactive(State::Suspended)));
    ok(&gatehouse(config, &["resume", "mobile-app"], None));
    index.refresh(&store).await.expect("refresh");
    assert!(index.check(&orders(), Some(&primary)).is_ok());
    ok(&gatehouse(config, &["expire", "partner", "--at", "2001-01-01T00:00:00Z"], None));
    ok(&gatehouse(config, &["cancel", "mobile-app"], None));
    index.refresh(&store).await.expect("refresh");
    assert_eq!(index.check(&orders(), Some(&primary)).err(), Some(Denial::Inactive(State::Cancelled)));
    assert_eq!(index.check(&orders(), Some(supplied)).err(), Some(Denial::Expired));

    // Input errors exit 1 with a message.
    let again = gatehouse(config, &["resume", "mobile-app"], None);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("cancelled"));
    let bad = gatehouse(config, &["create", "--name", "x", "--product", "gold"], None);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no product `gold`"));
    let short = gatehouse(config, &["create", "--name", "x", "--all-apis", "--primary-key", "short"], None);
    assert_eq!(short.status.code(), Some(1));
    assert_eq!(gatehouse(config, &["show", "nobody"], None).status.code(), Some(1));
    assert_eq!(gatehouse(config, &["create", "--name", "x"], None).status.code(), Some(2), "clap: scope required");
    store.close().await;
}

#[tokio::test]
async fn cli_manages_subscriptions_in_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "sqlite://state/gh.db", None);
    std::fs::create_dir(dir.path().join("state")).expect("dir");
    let cfg = StoreConfig { url: "sqlite://state/gh.db".into(), ..StoreConfig::default() };
    cli_lifecycle(&config, &cfg).await;
    assert!(dir.path().join("state/gh.db").exists(), "relative to the config file");
}

#[tokio::test]
async fn cli_manages_subscriptions_in_postgres() {
    let url = std::env::var("GATEHOUSE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("gh_cli_{}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &url, Some(&schema));
    let cfg = StoreConfig { url: url.clone(), schema: Some(schema.clone()), ..StoreConfig::default() };
    let result =
        futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(cli_lifecycle(&config, &cfg))).await;
    let opts: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
    let mut conn = sqlx::ConnectOptions::connect(&opts).await.expect("PostgreSQL is required");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&mut conn).await.expect("drop");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn cli_reports_an_unreachable_store_as_a_runtime_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "postgres://postgres@127.0.0.1:1/test", None);
    let out = gatehouse(&config, &["list"], None);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

struct Admin {
    addr: std::net::SocketAddr,
    client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Admin {
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let resp = self.client.request(req.body(Full::new(body)).expect("request")).await.expect("response");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn admin_api_manages_subscriptions_behind_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "listeners:\n  - { name: main, bind: \"127.0.0.1:0\" }\nadmin: { bind: \"127.0.0.1:0\", token: \"s3cret-admin-token-0123\" }\n";
    let snapshot = gatehouse::snapshot::compile_str("gw.yaml", yaml, dir.path()).expect("config");
    let gw = gatehouse::server::Gateway::start(snapshot, None).await.expect("start");
    let cfg = StoreConfig { url: "sqlite://admin.db".into(), ..StoreConfig::default() };
    let store = Store::open(&cfg, dir.path()).await.expect("store");
    let index = SubscriptionIndex::load(&store).await.expect("index");
    let state = SubscriptionAdmin { gw: gw.clone(), store: store.clone(), index: Some(index.clone()) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, router_with(gw, Some(state))).await });
    let admin = Admin { addr, client: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http() };
    let t = Some("s3cret-admin-token-0123");

    // Every route needs the token, reads included.
    assert_eq!(admin.call(Method::GET, "/subscriptions", None, None).await.0, 401);
    assert_eq!(admin.call(Method::GET, "/subscriptions", Some("wrong"), None).await.0, 401);
    let create = json!({ "name": "web", "all_apis": true });
    assert_eq!(admin.call(Method::POST, "/subscriptions", Some("nope"), Some(create.clone())).await.0, 401);
    assert_eq!(admin.call(Method::GET, "/healthz", None, None).await.0, 200, "existing routes unchanged");

    let (status, created) = admin.call(Method::POST, "/subscriptions", t, Some(create)).await;
    assert_eq!(status, 201, "{created}");
    let primary = created["primary_key"].as_str().expect("primary").to_owned();
    let secondary = created["secondary_key"].as_str().expect("secondary").to_owned();
    let id = created["subscription"]["id"].as_str().expect("id").to_owned();
    // The node's own index knows the subscription at once (no poll needed).
    assert!(index.check(&orders(), Some(&primary)).is_ok());

    let (status, listed) = admin.call(Method::GET, "/subscriptions", t, None).await;
    assert_eq!(status, 200);
    let text = listed.to_string();
    assert!(text.contains("\"web\"") && !text.contains(&primary) && !text.contains(&secondary), "{text}");
    let (status, shown) = admin.call(Method::GET, &format!("/subscriptions/{id}"), t, None).await;
    assert_eq!((status, shown["state"].as_str()), (200, Some("active")));

    let (status, regen) =
        admin.call(Method::POST, "/subscriptions/web/regenerate", t, Some(json!({ "key": "primary" }))).await;
    assert_eq!(status, 200, "{regen}");
    let new_primary = regen["key"].as_str().expect("new key").to_owned();
    assert_eq!(index.check(&orders(), Some(&primary)).err(), Some(Denial::Invalid));
    assert!(index.check(&orders(), Some(&new_primary)).is_ok());
    assert!(index.check(&orders(), Some(&secondary)).is_ok());

    assert_eq!(admin.call(Method::POST, "/subscriptions/web/suspend", t, None).await.0, 200);
    assert_eq!(index.check(&orders(), Some(&secondary)).err(), Some(Denial::Inactive(State::Suspended)));
    assert_eq!(admin.call(Method::POST, "/subscriptions/web/resume", t, None).await.0, 200);
    assert!(index.check(&orders(), Some(&secondary)).is_ok());
    let (status, _) = admin
        .call(Method::PUT, "/subscriptions/web/expiry", t, Some(json!({ "expires": "2001-01-01T00:00:00Z" })))
        .await;
    assert_eq!(status, 200);
    assert_eq!(index.check(&orders(), Some(&secondary)).err(), Some(Denial::Expired));
    assert_eq!(admin.call(Method::POST, "/subscriptions/web/cancel", t, None).await.0, 200);
    assert_eq!(index.check(&orders(), Some(&secondary)).err(), Some(Denial::Inactive(State::Cancelled)));

    // Errors are problem+json with fitting statuses.
    let (status, p) = admin.call(Method::POST, "/subscriptions/web/resume", t, None).await;
    assert_eq!((status, p["type"].as_str()), (409, Some("urn:gatehouse:error:subscription-conflict")));
    assert_eq!(admin.call(Method::GET, "/subscriptions/nobody", t, None).await.0, 404);
    let both = json!({ "name": "x", "all_apis": true, "api": "orders" });
    assert_eq!(admin.call(Method::POST, "/subscriptions", t, Some(both)).await.0, 400);
    let short = json!({ "name": "x", "all_apis": true, "primary_key": "short" });
    assert_eq!(admin.call(Method::POST, "/subscriptions", t, Some(short)).await.0, 400);
    let (status, p) =
        admin.call(Method::POST, "/subscriptions/web/regenerate", t, Some(json!({ "key": "third" }))).await;
    assert_eq!((status, p["layer"].as_str()), (400, Some("edge")));
    server.abort();
}
