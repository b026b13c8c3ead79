//! The layered deployment, for real (issue 6): a client → Apache httpd from Debian (mod_ssl,
//! mod_security2 with the OWASP CRS in blocking mode, mod_headers, mod_unique_id, mod_proxy_http
//! with ProxyPreserveHost) → Gatehouse → real backends; and the same checks against Gatehouse
//! alone with TLS at Gatehouse (standalone equivalence).
//!
//! Apache runs as its own process, started here with its own ServerRoot, config
//! (`tests/apache/httpd.conf`), port and PidFile in a temporary directory, and stopped by PID.
//! These tests FAIL when `apache2` is missing: run `.ci/setup-apache.sh` (as root) first.
//!
//! Everything is on loopback, so the client connects from 127.0.0.2: Apache (127.0.0.1) is the
//! only trusted proxy, and the client's address differs from it, as it would in production.
//!
//! Also through Apache: a token from a real OpenID provider (panva/oidc-provider in `tests/oidc`,
//! installed by `.ci/setup-oidc.sh`, as in `tests/e2e/jwt.rs`) passes both layers and reaches
//! the backend with `Authorization` byte for byte, and bad tokens get Gatehouse's `validate-jwt`
//! 401 unchanged; `ip-filter` and `rate-limit-by-key` on `{request.ip}` act on the real client
//! address (127.0.0.2, and 127.0.0.3 as a second client), not on Apache's or a spoofed
//! `X-Forwarded-For`, and their 403 and 429 (with `Retry-After`) reach the client unchanged.

#[path = "oidc_support/mod.rs"]
mod oidc_support;
#[allow(dead_code)]
#[path = "e2e/support.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use oidc_support::Idp;
use support::{backend, status_handler, Backend, TestGateway};

/// The client's own address: not Apache's, not trusted.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TOKEN: &str =
    "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImF1ZCI6ImFwaSJ9.c2lnbmF0dXJlLWJ5dGVz";

// ---------------------------------------------------------------------------------------------
// Certificates

struct Cert {
    pem: String,
    key: String,
    der: CertificateDer<'static>,
}

fn cert() -> Cert {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["apache.test".to_owned(), "gw.test".to_owned()]).expect("params");
    let c = params.self_signed(&key).expect("self-signed");
    Cert { pem: c.pem(), key: key.serialize_pem(), der: c.der().clone() }
}

// ---------------------------------------------------------------------------------------------
// Apache

struct Apache {
    child: Child,
    root: tempfile::TempDir,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Apache {
    /// Starts `apache2` in the foreground (our child) in front of Gatehouse at `gatehouse`.
    fn start(gatehouse: SocketAddr, cert: &Cert) -> Apache {
        let binary = ["/usr/sbin/apache2", "/usr/local/sbin/apache2"].into_iter().find(|p| Path::new(p).exists());
        let Some(binary) = binary else {
            panic!("apache2 is not installed: run .ci/setup-apache.sh (Debian packages apache2, libapache2-mod-security2, modsecurity-crs)");
        };
        for needed in [
            "/usr/lib/apache2/modules/mod_security2.so",
            "/usr/share/modsecurity-crs/rules",
            "/etc/modsecurity/crs/crs-setup.conf",
        ] {
            assert!(Path::new(needed).exists(), "{needed} is missing: run .ci/setup-apache.sh");
        }
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path();
        let port = free_port();
        let conf = include_str!("apache/httpd.conf")
            .replace("{root}", &dir.display().to_string())
            .replace("{port}", &port.to_string())
            .replace("{gatehouse}", &gatehouse.port().to_string())
            .replace("{nogate}", &free_port().to_string());
        std::fs::write(dir.join("httpd.conf"), conf).expect("conf");
        std::fs::write(dir.join("apache.pem"), &cert.pem).expect("pem");
        std::fs::write(dir.join("apache.key"), &cert.key).expect("key");
        std::fs::create_dir(dir.join("modsec")).expect("modsec dir");
        // Apache's workers run as www-data: they read nothing here but write ModSecurity's files.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(dir.join("modsec"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let child = Command::new(binary)
            .arg("-d")
            .arg(dir)
            .arg("-f")
            .arg(dir.join("httpd.conf"))
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn apache2");
        let mut apache = Apache { child, root, port };
        apache.wait_ready();
        apache
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                panic!("apache2 exited ({status}): {stderr}\nerror.log: {}", self.error_log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("apache2 did not listen on {} within 20 s: {}", self.port, self.error_log());
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.path("error.log")).unwrap_or_default()
    }

    /// Apache's access log: `client "request line" status unique-id`.
    fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("access.log")).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // Our child, by PID: SIGTERM makes the parent stop its workers and exit.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The client: HTTPS from 127.0.0.2, one request per connection.

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn problem(&self) -> Option<serde_json::Value> {
        (self.header("content-type") == Some("application/problem+json"))
            .then(|| serde_json::from_slice(&self.body).ok())
            .flatten()
    }
}

async fn https(to: SocketAddr, trust: &CertificateDer<'static>, req: Request<Full<Bytes>>) -> Got {
    https_from(CLIENT_IP, to, trust, req).await
}

/// The same from another loopback address (a second client).
async fn https_from(from: Ipv4Addr, to: SocketAddr, trust: &CertificateDer<'static>, req: Request<Full<Bytes>>) -> Got {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).expect("trust");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).expect("bind a loopback client address");
    let tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(to)).await.expect("timely").expect("connect");
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("apache.test").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("h1");
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("timely")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got { status: parts.status, headers: parts.headers, body }
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path).header("host", "apache.test")
}

// ---------------------------------------------------------------------------------------------
// The deployment under test: Gatehouse (plain behind Apache, or TLS alone) and its backends.

struct Deployment {
    /// Where the client connects: Apache, or Gatehouse's TLS listener.
    front: SocketAddr,
    apache: Option<Apache>,
    gw: TestGateway,
    api: Backend,
    cert: Cert,
    _unhealthy: Backend,
    /// Gatehouse's certificate files (standalone).
    _files: Option<tempfile::TempDir>,
}

/// Gatehouse's config: `/api` → a recording backend; `/down` → nothing listening (502);
/// `/unhealthy` → a backend whose health check fails (503); `/guarded` → a policy's 401.
/// `top` is added at the top level (say `identity_providers:`), `apis` to the `apis:` map.
fn gatehouse_config(
    api: SocketAddr,
    unhealthy: SocketAddr,
    listener: &str,
    trusted: &str,
    top: &str,
    apis: &str,
) -> String {
    let closed = free_port();
    format!(
        r#"
listeners:
  - {listener}
edge:
  trusted_proxies: [ {trusted} ]
  access_log: {{ format: json, path: "{{log}}" }}
{top}
backends:
  api: {{ servers: [ {{ url: "http://{api}" }} ] }}
  down: {{ servers: [ {{ url: "http://127.0.0.1:{closed}" }} ] }}
  unhealthy:
    servers: [ {{ url: "http://{unhealthy}" }} ]
    health: {{ path: /health, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1 }}
apis:
  api: {{ path: /api, backend: api }}
  down: {{ path: /down, backend: down }}
  unhealthy: {{ path: /unhealthy, backend: unhealthy }}
  guarded:
    path: /guarded
    backend: api
    policies:
      inbound:
        - return-response:
            status: 401
            headers: {{ content-type: application/problem+json, www-authenticate: 'Bearer realm="api"' }}
            body: '{{"type":"urn:gatehouse:error:unauthorized","title":"Unauthorized","status":401,"layer":"policy"}}'
{apis}
"#
    )
}

impl Deployment {
    /// Apache (TLS, WAF) → Gatehouse (plain, Apache trusted) → backends.
    async fn layered() -> Deployment {
        Deployment::layered_with("", "").await
    }

    /// The same with more config: `top` at the top level, `apis` in the `apis:` map.
    async fn layered_with(top: &str, apis: &str) -> Deployment {
        let api = backend().await;
        let unhealthy = support::backend_with(status_handler(500), false).await;
        let gw = support::gateway(&gatehouse_config(
            api.addr,
            unhealthy.addr,
            r#"{ name: main, bind: "127.0.0.1:0" }"#,
            r#""127.0.0.1/32""#,
            top,
            apis,
        ))
        .await;
        let cert = cert();
        let apache = Apache::start(gw.addr, &cert);
        Deployment { front: apache.addr(), apache: Some(apache), gw, api, cert, _unhealthy: unhealthy, _files: None }
    }

    /// Gatehouse alone, TLS at Gatehouse, no trusted proxies.
    async fn standalone() -> Deployment {
        let api = backend().await;
        let unhealthy = support::backend_with(status_handler(500), false).await;
        let cert = cert();
        let dir = tempfile::tempdir().expect("tempdir");
        let (pem, key) = (dir.path().join("gw.pem"), dir.path().join("gw.key"));
        std::fs::write(&pem, &cert.pem).expect("pem");
        std::fs::write(&key, &cert.key).expect("key");
        let listener = format!(
            r#"{{ name: main, bind: "127.0.0.1:0", tls: {{ certificates: [ {{ cert: "{}", key: "{}" }} ] }} }}"#,
            pem.display(),
            key.display()
        );
        let gw = support::gateway(&gatehouse_config(api.addr, unhealthy.addr, &listener, "", "", "")).await;
        Deployment { front: gw.addr, apache: None, gw, api, cert, _unhealthy: unhealthy, _files: Some(dir) }
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Got {
        https(self.front, &self.cert.der, req).await
    }

    async fn send_from(&self, from: Ipv4Addr, req: Request<Full<Bytes>>) -> Got {
        https_from(from, self.front, &self.cert.der, req).await
    }

    /// Gatehouse's access log as JSON.
    async fn gatehouse_log(&self) -> Vec<serde_json::Value> {
        self.gw.log_lines().await.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn name(&self) -> &'static str {
        if self.apache.is_some() {
            "behind Apache"
        } else {
            "standalone TLS"
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The functional checks both deployments must pass.

/// A request with spoofing headers: the backend gets the real client address, the request id
/// the front generated, `Authorization` byte for byte, and `https`.
async fn check_identity_headers(d: &Deployment) {
    let what = d.name();
    let got = d
        .send(
            get("/api/orders/7?x=1")
                .header("authorization", TOKEN)
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-host", "evil.test")
                .header("forwarded", "for=6.6.6.6;host=evil.test")
                .header("x-forwarded-proto", "http")
                .header("x-request-id", "client-chosen-id")
                .body(Full::default())
                .expect("req"),
        )
        .await;
    assert_eq!(got.status, 200, "{what}: {}", got.text());
    assert_eq!(got.text(), "backend saw GET /orders/7?x=1", "{what}");
    let rid = got.header("x-request-id").expect("x-request-id").to_owned();
    assert_ne!(rid, "client-chosen-id", "{what}: the client chose the request id");
    let seen = d.api.requests().pop().expect("the backend saw the request");
    assert_eq!(seen.headers["authorization"].as_bytes(), TOKEN.as_bytes(), "{what}: Authorization changed");
    assert_eq!(seen.headers["x-request-id"], rid.as_str(), "{what}");
    assert_eq!(seen.headers["x-forwarded-proto"], "https", "{what}");
    let xff = seen.headers["x-forwarded-for"].to_str().expect("ascii");
    let xfh = seen.headers.get("x-forwarded-host").map(|v| v.to_str().expect("ascii").to_owned());
    let fwd = seen.headers.get("forwarded").map(|v| v.to_str().expect("ascii").to_owned()).unwrap_or_default();
    assert!(!xfh.as_deref().unwrap_or_default().contains("evil"), "{what}: X-Forwarded-Host {xfh:?}");
    assert!(!fwd.contains("evil"), "{what}: Forwarded {fwd:?}");
    assert!(
        seen.headers["host"].to_str().expect("ascii").starts_with("apache.test"),
        "{what}: {:?}",
        seen.headers["host"]
    );
    // Gatehouse believed the real client, not the spoofed address.
    let log = d.gatehouse_log().await;
    let line = log
        .iter()
        .rev()
        .find(|l| l["request_id"] == rid.as_str())
        .unwrap_or_else(|| panic!("{what}: no log line for {rid}: {log:?}"));
    assert_eq!(line["client_ip"], CLIENT_IP.to_string(), "{what}: {line}");
    assert_eq!(line["status"], 200);
    if let Some(apache) = &d.apache {
        // Apache appended the client; Gatehouse appended Apache; the spoof stays on the left.
        assert_eq!(xff, "6.6.6.6, 127.0.0.2, 127.0.0.1", "{what}");
        // The same id is in Apache's access log, for the same request.
        let ours = apache_line(apache, &rid).await;
        assert!(ours.starts_with("127.0.0.2 \"GET /api/orders/7?x=1 HTTP/1.1\" 200 "), "{ours}");
    } else {
        assert_eq!(xff, "127.0.0.2", "{what}");
    }
}

/// Gatehouse's own errors keep their status, problem+json body, layer and request id; a
/// policy's 401 keeps its headers and body byte for byte.
async fn check_errors(d: &Deployment) -> Vec<(String, u16, serde_json::Value)> {
    let what = d.name();
    // The health check needs a moment to take the unhealthy backend out.
    let started = Instant::now();
    loop {
        let got = d.send(get("/unhealthy/x").body(Full::default()).expect("req")).await;
        if got.status == 503 || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    for (path, status, layer) in [
        ("/nowhere", 404, "edge"),
        ("/down/x", 502, "backend"),
        ("/unhealthy/x", 503, "backend"),
        ("/api/x?y", 200, ""),
    ] {
        let got = d.send(get(path).body(Full::default()).expect("req")).await;
        assert_eq!(got.status.as_u16(), status, "{what} {path}: {}", got.text());
        if status == 200 {
            continue;
        }
        let p = got
            .problem()
            .unwrap_or_else(|| panic!("{what} {path}: not problem+json: {:?} {}", got.headers, got.text()));
        assert_eq!(p["layer"], layer, "{what} {path}: {p}");
        assert_eq!(p["status"], status, "{what} {path}");
        assert_eq!(p["request_id"], got.header("x-request-id").expect("x-request-id"), "{what} {path}");
        if layer == "backend" {
            assert!(
                got.header("proxy-status").is_some_and(|v| v.starts_with("gatehouse; error=")),
                "{what} {path}: {:?}",
                got.headers
            );
        }
        // What must not depend on the front: kind, title, status, layer (details name ports).
        let same =
            serde_json::json!({ "type": p["type"], "title": p["title"], "status": p["status"], "layer": p["layer"] });
        out.push((path.to_owned(), status, same));
    }
    let got = d.send(get("/guarded/x").body(Full::default()).expect("req")).await;
    assert_eq!(got.status, 401, "{what}: {}", got.text());
    assert_eq!(got.header("www-authenticate"), Some("Bearer realm=\"api\""), "{what}");
    assert_eq!(got.header("content-type"), Some("application/problem+json"), "{what}");
    let p = got.problem().expect("problem");
    assert_eq!(p["layer"], "policy", "{what}");
    out.push(("/guarded/x".to_owned(), 401, p));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_apache_the_gateway_sees_the_real_client_and_apaches_request_id() {
    let d = Deployment::layered().await;
    check_identity_headers(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apaches_waf_blocks_sql_injection_before_the_gateway() {
    let d = Deployment::layered().await;
    let apache = d.apache.as_ref().expect("apache");
    // A control request passes both layers.
    let got = d.send(get("/api/items?id=42").body(Full::default()).expect("req")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let before_log = d.gatehouse_log().await.len();
    let before_backend = d.api.count();
    for attack in
        ["/api/items?id=1%27%20OR%20%271%27%3D%271", "/api/items?id=1%20UNION%20SELECT%20password%20FROM%20users--"]
    {
        let got = d.send(get(attack).body(Full::default()).expect("req")).await;
        assert_eq!(got.status, 403, "{attack}: {}", got.text());
        // Apache's own answer: HTML, no problem+json, no layer, no Gatehouse request id echo.
        assert!(got.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{:?}", got.headers);
        assert!(got.problem().is_none());
        assert!(got.header("x-request-id").is_none(), "Gatehouse answered: {:?}", got.headers);
        // Apache writes its log line once the answer is out: give it a moment.
        let started = Instant::now();
        while !apache.access_log().iter().any(|l| l.contains(&attack[..20]))
            && started.elapsed() < Duration::from_secs(3)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let logged = apache.access_log().into_iter().rev().find(|l| l.contains(&attack[..20]));
        assert!(logged.as_deref().is_some_and(|l| l.contains("\" 403 ")), "{:?}", apache.access_log());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = d.gatehouse_log().await;
    assert_eq!(log.len(), before_log, "Gatehouse logged a blocked request: {:?}", &log[before_log..]);
    assert_eq!(d.api.count(), before_backend, "the backend saw a blocked request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_pass_through_apache_unchanged_and_differ_from_apaches_own() {
    let layered = Deployment::layered().await;
    let standalone = Deployment::standalone().await;
    let through_apache = check_errors(&layered).await;
    let alone = check_errors(&standalone).await;
    // The same answers, field for field (request ids aside), with or without Apache in front.
    assert_eq!(through_apache, alone);
    // Apache's own error when its upstream (here not Gatehouse: a closed port) is unreachable
    // — mod_proxy says 503 — is not a Gatehouse error: HTML, no layer, no Proxy-Status.
    let got = layered.send(get("/nogate/x").body(Full::default()).expect("req")).await;
    assert!(got.status == 502 || got.status == 503, "{}", got.text());
    assert!(got.problem().is_none() && got.header("proxy-status").is_none(), "{:?} {}", got.headers, got.text());
    assert!(got.header("content-type").is_some_and(|c| c.starts_with("text/html")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_tls_gateway_passes_the_same_functional_checks() {
    let d = Deployment::standalone().await;
    check_identity_headers(&d).await;
    // Without Apache there is no WAF: the same SQL-injection request reaches the backend (a WAF
    // policy is opt-in per route, see docs/behind-apache.md).
    let got = d.send(get("/api/items?id=1%27%20OR%20%271%27%3D%271").body(Full::default()).expect("req")).await;
    assert_eq!(got.status, 200);
}

/// Apache's access-log line for Gatehouse's request id (Apache's UNIQUE_ID), once written.
async fn apache_line(apache: &Apache, rid: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(l) = apache.access_log().into_iter().find(|l| l.ends_with(&format!(" {rid}"))) {
            return l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "Apache's log has no line for {rid}: {:?}",
            apache.access_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A real OpenID provider (as in tests/e2e/jwt.rs): panva/oidc-provider, on loopback.

/// The answer without what differs per request (its id).
fn without_request_id(mut p: serde_json::Value) -> serde_json::Value {
    p.as_object_mut().expect("object").remove("request_id");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_providers_token_passes_both_layers_and_bad_ones_get_gatehouses_401() {
    let idp = Idp::start();
    let top = format!(r#"identity_providers: {{ corp: {{ openid_configuration: "{}" }} }}"#, idp.discovery());
    let apis = r#"
  jwt:
    path: /jwt
    backend: api
    policies:
      inbound:
        - validate-jwt: { provider: corp, audiences: [ "api://orders" ] }
"#;
    let d = Deployment::layered_with(&top, apis).await;
    let apache = d.apache.as_ref().expect("apache");

    // A valid token: through Apache's WAF and Gatehouse's validate-jwt to the backend, as sent.
    let token = idp.token("api://orders", "orders.read orders.write").await;
    let authorization = format!("Bearer {token}");
    let got =
        d.send(get("/jwt/orders/1").header("authorization", &authorization).body(Full::default()).expect("req")).await;
    assert_eq!(got.status, 200, "{:?} {}", got.headers, got.text());
    assert_eq!(got.text(), "backend saw GET /orders/1");
    let seen = d.api.requests().pop().expect("the backend saw the request");
    assert_eq!(seen.headers["authorization"].as_bytes(), authorization.as_bytes(), "Authorization changed on the way");
    let rid = got.header("x-request-id").expect("x-request-id").to_owned();
    assert_eq!(seen.headers["x-request-id"], rid.as_str());
    assert!(apache_line(apache, &rid).await.starts_with("127.0.0.2 \"GET /jwt/orders/1 HTTP/1.1\" 200 "));

    // Bad tokens: Gatehouse's 401, through Apache exactly as Gatehouse answers it directly.
    let mut forged = token.clone().into_bytes();
    let middle = token.rfind('.').expect("signature") + 40;
    forged[middle] = if forged[middle] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let wrong_aud = idp.token("api://payments", "payments.read").await;
    let before = d.api.count();
    for (auth, kind, detail, challenge) in [
        (
            Some(format!("Bearer {forged}")),
            "jwt-invalid",
            Some("token signature invalid"),
            "Bearer error=\"invalid_token\"",
        ),
        (
            Some(format!("Bearer {wrong_aud}")),
            "jwt-invalid",
            Some("token audience not accepted"),
            "Bearer error=\"invalid_token\"",
        ),
        (None, "jwt-missing", None, "Bearer"),
    ] {
        let request = || {
            let mut r = get("/jwt/orders/1");
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.body(Full::default()).expect("req")
        };
        let got = d.send(request()).await;
        let what = format!("{kind} {detail:?}");
        assert_eq!(got.status, 401, "{what}: {}", got.text());
        let p = got.problem().unwrap_or_else(|| panic!("{what}: not problem+json: {:?} {}", got.headers, got.text()));
        assert_eq!(p["layer"], "policy", "{what}: {p}");
        assert_eq!(p["policy"], "validate-jwt", "{what}: {p}");
        assert_eq!(p["scope"], "api:jwt", "{what}: {p}");
        assert_eq!(p["type"], format!("urn:gatehouse:error:{kind}"), "{what}: {p}");
        if let Some(detail) = detail {
            assert_eq!(p["detail"], detail, "{what}: {p}");
        }
        let rid = got.header("x-request-id").expect("x-request-id").to_owned();
        assert_eq!(p["request_id"], rid.as_str(), "{what}");
        let www = got.header("www-authenticate").expect("www-authenticate").to_owned();
        assert!(www.starts_with(challenge), "{what}: {www}");
        assert!(apache_line(apache, &rid).await.contains("\" 401 "), "{what}");

        // Gatehouse asked directly (no Apache): the same status, challenge and problem.
        let mut direct = Request::get(d.gw.url("/jwt/orders/1"));
        if let Some(a) = &auth {
            direct = direct.header("authorization", a);
        }
        let direct = support::send(&support::client(), direct.body(Full::default()).expect("req")).await;
        assert_eq!(direct.status, 401, "{what}");
        assert_eq!(direct.headers["content-type"], "application/problem+json", "{what}");
        assert_eq!(direct.headers["www-authenticate"], www.as_str(), "{what}");
        assert_eq!(without_request_id(direct.json()), without_request_id(p), "{what}");
    }
    assert_eq!(d.api.count(), before, "the backend saw a request with a bad token");
}

/// `ip-filter` on the client address Gatehouse decides behind Apache (X-Forwarded-For, right-most
/// untrusted): the real client, not Apache, and not what the client writes in the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_acts_on_the_real_client_behind_apache_and_its_403_passes_through() {
    let apis = r#"
  client-only:
    path: /client-only
    backend: api
    policies: { inbound: [ { ip-filter: { action: allow, addresses: [ 127.0.0.2 ] } } ] }
  proxy-only:
    path: /proxy-only
    backend: api
    policies: { inbound: [ { ip-filter: { action: allow, addresses: [ 127.0.0.1 ] } } ] }
  client-forbidden:
    path: /client-forbidden
    backend: api
    policies: { inbound: [ { ip-filter: { action: forbid, addresses: [ 127.0.0.2/32 ] } } ] }
  spoof-forbidden:
    path: /spoof-forbidden
    backend: api
    policies: { inbound: [ { ip-filter: { action: forbid, addresses: [ 6.6.6.6 ] } } ] }
"#;
    let d = Deployment::layered_with("", apis).await;
    let apache = d.apache.as_ref().expect("apache");
    // Each with and without a spoofed X-Forwarded-For naming an address that would flip the decision.
    for (path, spoof, status) in [
        ("/client-only/x", None, 200),
        ("/client-only/x", Some("6.6.6.6"), 200),
        ("/proxy-only/x", None, 403),
        ("/proxy-only/x", Some("127.0.0.1"), 403),
        ("/client-forbidden/x", None, 403),
        ("/client-forbidden/x", Some("6.6.6.6"), 403),
        ("/client-forbidden/x", Some("6.6.6.6, 10.1.2.3"), 403),
        ("/spoof-forbidden/x", Some("6.6.6.6"), 200),
    ] {
        let what = format!("{path} X-Forwarded-For {spoof:?}");
        let mut req = get(path);
        if let Some(s) = spoof {
            req = req.header("x-forwarded-for", s);
        }
        let before = d.api.count();
        let got = d.send(req.body(Full::default()).expect("req")).await;
        assert_eq!(got.status.as_u16(), status, "{what}: {}", got.text());
        let rid = got.header("x-request-id").expect("x-request-id").to_owned();
        assert!(apache_line(apache, &rid).await.starts_with("127.0.0.2 "), "{what}");
        if status == 200 {
            assert_eq!(d.api.count(), before + 1, "{what}");
            continue;
        }
        assert_eq!(d.api.count(), before, "{what}: the backend saw a refused request");
        let p = got.problem().unwrap_or_else(|| panic!("{what}: not problem+json: {:?} {}", got.headers, got.text()));
        assert_eq!(p["status"], 403, "{what}: {p}");
        assert_eq!(p["layer"], "edge", "{what}: {p}");
        assert_eq!(p["policy"], "ip-filter", "{what}: {p}");
        assert_eq!(p["type"], "urn:gatehouse:error:ip-forbidden", "{what}: {p}");
        assert_eq!(p["request_id"], rid.as_str(), "{what}");
        assert!(apache_line(apache, &rid).await.contains("\" 403 "), "{what}");
    }
    // Gatehouse logged the real client for every one of them.
    let log = d.gatehouse_log().await;
    assert!(log.len() >= 8, "{log:?}");
    assert!(log.iter().all(|l| l["client_ip"] == CLIENT_IP.to_string()), "{log:?}");
}

/// `rate-limit-by-key` on `{request.ip}` counts the real client behind Apache: a different spoofed
/// X-Forwarded-For on every call is still the same counter, another client is another counter,
/// and the 429 with `Retry-After` reaches the client through Apache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_by_client_ip_behind_apache_ignores_spoofed_forwarded_for() {
    let apis = r#"
  limited:
    path: /limited
    backend: api
    policies:
      inbound:
        - rate-limit-by-key: { calls: 3, renewal_period: 60s, counter_key: "{request.ip}", ratelimit_headers: true }
      outbound:
        - set-header: { name: X-Counted-Ip, value: "{request.ip}" }
"#;
    let d = Deployment::layered_with("", apis).await;
    let apache = d.apache.as_ref().expect("apache");
    let limited = |spoof: &str| get("/limited/x").header("x-forwarded-for", spoof).body(Full::default()).expect("req");
    for (i, spoof) in ["1.1.1.1", "2.2.2.2", "3.3.3.3, 4.4.4.4"].into_iter().enumerate() {
        let got = d.send(limited(spoof)).await;
        assert_eq!(got.status, 200, "call {i} ({spoof}): {}", got.text());
        assert_eq!(got.header("x-counted-ip"), Some("127.0.0.2"), "call {i}");
        assert_eq!(got.header("ratelimit-limit"), Some("3"), "call {i}: {:?}", got.headers);
        assert_eq!(
            got.header("ratelimit-remaining"),
            Some((2 - i).to_string().as_str()),
            "call {i}: {:?}",
            got.headers
        );
    }
    // The fourth call, under yet another spoofed address: refused by Gatehouse, through Apache.
    let got = d.send(limited("5.5.5.5")).await;
    assert_eq!(got.status, 429, "{}", got.text());
    let retry: u64 = got.header("retry-after").expect("Retry-After").parse().expect("seconds");
    // The sliding window weighs the previous fixed window (docs/rate-limits.md): the next call can
    // be up to a period and a third away here (3 calls, all in the current window), not just 60 s.
    assert!((1..=80).contains(&retry), "Retry-After {retry}");
    assert_eq!(got.header("ratelimit-remaining"), Some("0"), "{:?}", got.headers);
    let p = got.problem().unwrap_or_else(|| panic!("not problem+json: {:?} {}", got.headers, got.text()));
    assert_eq!(p["status"], 429, "{p}");
    assert_eq!(p["layer"], "policy", "{p}");
    assert_eq!(p["policy"], "rate-limit-by-key", "{p}");
    assert_eq!(p["scope"], "api:limited", "{p}");
    assert_eq!(p["type"], "urn:gatehouse:error:rate-limited", "{p}");
    let rid = got.header("x-request-id").expect("x-request-id");
    assert_eq!(p["request_id"], rid);
    assert!(apache_line(apache, rid).await.starts_with("127.0.0.2 \"GET /limited/x HTTP/1.1\" 429 "));
    assert_eq!(d.api.count(), 3, "the refused call reached the backend");

    // Another client, claiming to be the limited one: its own counter (not Apache's address).
    let other = Ipv4Addr::new(127, 0, 0, 3);
    let got = d.send_from(other, limited("127.0.0.2")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("x-counted-ip"), Some("127.0.0.3"));
    assert_eq!(got.header("ratelimit-remaining"), Some("2"), "{:?}", got.headers);
    // And the limited client is still limited, whatever it claims.
    let got = d.send(limited("127.0.0.3")).await;
    assert_eq!(got.status, 429, "{}", got.text());
    assert!(got.header("retry-after").is_some());
}
