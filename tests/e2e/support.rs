//! Test support: in-process gateways on port 0, small hyper backends that record what they
//! received, and clients (hyper for HTTP/1.1 and HTTP/2, raw TCP for framing).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use gatehouse::server::Gateway;

/// What a test backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

pub type Handler = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }
}

pub fn ok_handler() -> Handler {
    Arc::new(|s: &Seen| {
        let mut r = Response::new(Full::new(Bytes::from(format!("backend saw {} {}", s.method, s.uri))));
        r.headers_mut().insert("x-backend", "yes".parse().expect("hv"));
        r
    })
}

pub fn status_handler(status: u16) -> Handler {
    Arc::new(move |_s: &Seen| {
        let mut r = Response::new(Full::new(Bytes::from_static(b"backend error body")));
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        r
    })
}

/// An HTTP/1.1 (and h2c when `h2`) backend on 127.0.0.1:0.
pub async fn backend_with(handler: Handler, h2: bool) -> Backend {
    backend_full(handler, h2, Duration::ZERO).await
}

/// A backend whose every answer takes `delay`.
pub async fn slow_backend(delay: Duration) -> Backend {
    backend_full(ok_handler(), false, delay).await
}

pub async fn backend_full(handler: Handler, h2: bool, delay: Duration) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = seen2.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let s = Seen {
                            method: parts.method,
                            uri: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                            version: parts.version,
                        };
                        seen.lock().push(s.clone());
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let resp = handler(&s);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).with_upgrades().await;
                }
            });
        }
    });
    Backend { addr, seen, task }
}

pub async fn backend() -> Backend {
    backend_with(ok_handler(), false).await
}

pub struct TestGateway {
    pub gw: Arc<Gateway>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gatehouse.yaml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The access log lines written so far.
    pub async fn log_lines(&self) -> Vec<String> {
        if let Some(log) = &self.gw.active().access_log {
            log.flush().await;
        }
        std::fs::read_to_string(self.log_path()).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// How many JSON access log lines so far have this status and layer.
    pub async fn logged(&self, status: u16, layer: &str) -> usize {
        self.log_lines()
            .await
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["status"] == status && v["layer"] == layer)
            .count()
    }

    /// Rewrites the config file and reloads it.
    pub async fn reload_with(&self, yaml: &str) -> Result<u64, gatehouse::server::ReloadError> {
        std::fs::write(self.config_path(), yaml).expect("write config");
        self.gw.reload().await
    }
}

/// Starts a gateway from YAML. `{log}` in the YAML becomes the access-log path of this test.
pub async fn gateway(yaml: &str) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = yaml.replace("{log}", &dir.path().join("access.log").display().to_string());
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, &yaml).expect("write config");
    let snapshot = match gatehouse::snapshot::compile_file(&path) {
        Ok(s) => s,
        Err(errors) => panic!("config errors: {errors:#?}"),
    };
    let gw = Gateway::start(snapshot, Some(path)).await.expect("start");
    let addr = gw.listener_addr("main").await.expect("listener `main`");
    TestGateway { gw, addr, dir }
}

/// A minimal config: listener `main`, a backend `b` at `addr`, API `/api` → `b`.
pub fn simple_config(addr: SocketAddr, extra_backend: &str, edge: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
edge:
  access_log: {{ format: json, path: "{{log}}" }}
{edge}
backends:
  b:
    servers: [ {{ url: "http://{addr}" }} ]
{extra_backend}
apis:
  api:
    path: /api
    backend: b
"#
    )
}

pub type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(client: &Client, req: Request<Full<Bytes>>) -> Got {
    let resp =
        tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.expect("timely").expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got { status: parts.status, headers: parts.headers, body }
}

pub async fn get(url: &str) -> Got {
    send(&client(), Request::get(url).body(Full::default()).expect("req")).await
}

/// Writes raw bytes, then reads until the peer closes (or `wait` passes).
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Asserts a problem+json body with the given status and layer.
pub fn assert_problem(got: &Got, status: u16, layer: &str) -> serde_json::Value {
    assert_eq!(got.status.as_u16(), status, "body: {}", got.text());
    assert_eq!(got.headers["content-type"], "application/problem+json");
    let v = got.json();
    assert_eq!(v["layer"], layer, "{v}");
    assert_eq!(v["status"], status);
    assert!(got.headers.contains_key("x-request-id"));
    assert_eq!(v["request_id"], got.headers["x-request-id"].to_str().expect("ascii"));
    v
}

/// A subscription named `name` to `product` with generated keys: (primary, secondary).
pub async fn subscribe(store: &gatehouse::store::Store, name: &str, product: &str) -> (String, String) {
    use gatehouse::store::{NewSubscription, Scope};
    let (_, keys) = store
        .create_subscription(NewSubscription {
            name: name.into(),
            scope: Scope::Product(product.into()),
            primary_key: None,
            secondary_key: None,
            expires_at: None,
        })
        .await
        .expect("create subscription");
    let key = |k: Option<gatehouse::store::SubscriptionKey>| k.expect("generated").expose().to_owned();
    (key(keys.primary), key(keys.secondary))
}

/// Repeats `call` until it answers `status`, for at most 5 s (a gateway sees a change made in
/// its store within the poll interval); returns the last answer.
pub async fn until_status<F, Fut>(status: u16, call: F) -> Got
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Got>,
{
    let mut got = call().await;
    for _ in 0..50 {
        if got.status == status {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = call().await;
    }
    got
}
