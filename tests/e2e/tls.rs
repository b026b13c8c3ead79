//! TLS end to end: certificates by SNI, protocols by ALPN, certificate reload without a restart,
//! TLS towards backends (custom CA, system roots, `verify: false`, mTLS, `server_name`, HTTP/2),
//! and located `check` errors for unusable listener certificates.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A certificate with its key, as PEM (for config files) and DER (for comparisons).
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Issued {
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM")
    }
}

fn params(names: &[&str], cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("names");
    // Distinct subjects, so several self-signed certificates can be trust anchors side by side.
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

/// A self-signed certificate for `names`.
fn self_signed(names: &[&str]) -> Issued {
    let key = KeyPair::generate().expect("key");
    let cert = params(names, names[0]).self_signed(&key).expect("self-signed");
    Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
}

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: Issued,
}

fn ca() -> Ca {
    let mut p = params(&[], "Gatehouse Test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("CA");
    let issued = Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() };
    Ca { issuer: Issuer::new(p, key), cert: issued }
}

impl Ca {
    /// A leaf for `names` (DNS names or IP addresses), for servers or for clients.
    fn leaf(&self, names: &[&str], cn: &str, eku: ExtendedKeyUsagePurpose) -> Issued {
        let mut p = params(names, cn);
        p.use_authority_key_identifier_extension = true;
        p.key_usages.push(KeyUsagePurpose::DigitalSignature);
        p.extended_key_usages.push(eku);
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("leaf");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }
}

/// Writes `text` to `dir/name` and returns the absolute path, as a string for YAML.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

/// Writes cert and key as `NAME.pem` / `NAME.key`; returns both paths.
fn write_pair(dir: &Path, name: &str, c: &Issued) -> (String, String) {
    (write(dir, &format!("{name}.pem"), &c.cert_pem), write(dir, &format!("{name}.key"), &c.key_pem))
}

// ---------------------------------------------------------------------------------------------
// Clients

fn client_config(trust: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trust {
        roots.add((*c).clone()).expect("trust anchor");
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// For SNI names the presented certificate is not valid for: accepts any certificate so the
/// test can look at which one came.
fn any_cert_client(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(gatehouse::upstream::tls::NoVerification::new()))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A TLS connection to the gateway; `sni` is a DNS name, or an IP address (no SNI is sent).
async fn connect(addr: SocketAddr, cfg: Arc<ClientConfig>, sni: &str) -> TlsStream<TcpStream> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.expect("timely connect").expect("connect");
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    tokio::time::timeout(WAIT, tokio_rustls::TlsConnector::from(cfg).connect(name, tcp))
        .await
        .expect("timely handshake")
        .unwrap_or_else(|e| panic!("TLS handshake with SNI {sni}: {e}"))
}

fn peer_cert(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().expect("a peer certificate")[0].clone()
}

fn alpn(s: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect()).await.expect("timely body").expect("body").to_bytes();
    Got { status: parts.status, headers: parts.headers, body }
}

/// An HTTP/1.1 connection over an established TLS stream.
async fn h1_over(tls: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (sender, conn) = tokio::time::timeout(WAIT, hyper::client::conn::http1::handshake(TokioIo::new(tls)))
        .await
        .expect("timely")
        .expect("h1 handshake");
    tokio::spawn(conn);
    sender
}

async fn h1_get(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, host: &str, path: &str) -> Got {
    let req = Request::get(path).header("host", host).body(Full::default()).expect("req");
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await.expect("timely").expect("response");
    assert_eq!(resp.version(), http::Version::HTTP_11);
    collect(resp).await
}

/// One HTTP/2 GET over an established TLS stream.
async fn h2_get(tls: TlsStream<TcpStream>, uri: &str) -> Got {
    let (mut sender, conn) =
        tokio::time::timeout(WAIT, hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)))
            .await
            .expect("timely")
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(uri).body(Full::<Bytes>::default()).expect("req");
    let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await.expect("timely").expect("response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    collect(resp).await
}

// ---------------------------------------------------------------------------------------------
// Config

/// A TLS listener `main` with the given certificate entries (YAML flow mappings), in front of an
/// http backend `b` under `/api`.
fn tls_listener_config(certificates: &[String], backend: SocketAddr) -> String {
    let certs: String = certificates.iter().map(|c| format!("          - {c}\n")).collect();
    format!(
        r#"
listeners:
  - name: main
    bind: "127.0.0.1:0"
    tls:
      certificates:
{certs}edge: {{ access_log: {{ format: "off" }} }}
backends: {{ b: {{ servers: [ {{ url: "http://{backend}" }} ] }} }}
apis: {{ api: {{ path: /api, backend: b }} }}
"#
    )
}

fn cert_entry(cert: &str, key: &str, hosts: &[&str]) -> String {
    if hosts.is_empty() {
        format!(r#"{{ cert: "{cert}", key: "{key}" }}"#)
    } else {
        format!(r#"{{ cert: "{cert}", key: "{key}", hosts: [ {} ] }}"#, hosts.join(", "))
    }
}

/// A plain listener `main` in front of backend `b` (one server at `url`) with `backend_extra`
/// lines (indented under `b`).
fn backend_config(url: &str, backend_extra: &str) -> String {
    format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: "off" }} }}
backends:
  b:
    servers: [ {{ url: "{url}" }} ]
    timeouts: {{ connect: 2s, response: 5s }}
{backend_extra}
apis: {{ api: {{ path: /api, backend: b }} }}
"#
    )
}

// ---------------------------------------------------------------------------------------------
// A TLS backend: tokio-rustls in front of hyper, recording what it saw.

#[derive(Debug, Clone)]
struct TlsSeen {
    version: http::Version,
    headers: HeaderMap,
    alpn: Option<Vec<u8>>,
    sni: Option<String>,
    client_cert: Option<CertificateDer<'static>>,
}

struct TlsBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<TlsSeen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn requests(&self) -> Vec<TlsSeen> {
        self.seen.lock().clone()
    }
}

/// Serves HTTP/2 when ALPN chose `h2`, HTTP/1.1 otherwise.
async fn tls_backend(cfg: Arc<ServerConfig>) -> TlsBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<TlsSeen>>> = Arc::default();
    let seen2 = seen.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(WAIT, acceptor.accept(stream)).await else { return };
                let conn = tls.get_ref().1;
                let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
                let sni = conn.server_name().map(str::to_owned);
                let client_cert = conn.peer_certificates().and_then(|c| c.first().cloned());
                let h2 = alpn.as_deref() == Some(b"h2");
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    let s = TlsSeen {
                        version: req.version(),
                        headers: req.headers().clone(),
                        alpn: alpn.clone(),
                        sni: sni.clone(),
                        client_cert: client_cert.clone(),
                    };
                    async move {
                        let _ = req.into_body().collect().await;
                        seen.lock().push(s);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"tls backend"))))
                    }
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                }
            });
        }
    });
    TlsBackend { addr, seen, task }
}

/// The backend's rustls config: its certificate, optionally requiring client certificates
/// signed by `client_ca`, offering `alpn`.
fn backend_tls(cert: &Issued, client_ca: Option<&Ca>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert.der.clone()).expect("client CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(vec![cert.der.clone()], cert.key_der()).expect("server cert");
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

fn assert_proxy_status(got: &Got, error: &str) {
    let ps = got.headers.get("proxy-status").map(|v| v.to_str().expect("ascii")).unwrap_or_default();
    assert!(ps.starts_with(&format!("gatehouse; error={error}; next-hop=")), "proxy-status: {ps:?}");
}

// ---------------------------------------------------------------------------------------------
// 1. SNI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate_and_requests_are_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = self_signed(&["a.test"]);
    let b = self_signed(&["b.test"]);
    let x = self_signed(&["x.test"]);
    let (ac, ak) = write_pair(dir.path(), "a", &a);
    let (bc, bk) = write_pair(dir.path(), "b", &b);
    let (xc, xk) = write_pair(dir.path(), "x", &x);
    let backend = backend().await;
    let yaml = tls_listener_config(
        &[cert_entry(&ac, &ak, &[]), cert_entry(&bc, &bk, &[]), cert_entry(&xc, &xk, &["c.test"])],
        backend.addr,
    );
    let g = gateway(&yaml).await;

    // Verifying clients that trust both certificates: each name gets its own certificate.
    let trusting = client_config(&[&a.der, &b.der], &[b"http/1.1"]);
    for (name, want) in [("a.test", &a.der), ("b.test", &b.der)] {
        let tls = connect(g.addr, trusting.clone(), name).await;
        assert_eq!(&peer_cert(&tls), want, "certificate for SNI {name}");
        let mut h1 = h1_over(tls).await;
        let got = h1_get(&mut h1, name, &format!("/api/{name}")).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    }

    // Unknown names and no SNI at all get the first (default) certificate; `hosts:` overrides
    // the certificate's own names (x.test's certificate answers c.test, not x.test).
    let any = any_cert_client(&[b"http/1.1"]);
    for (name, want) in [("unknown.test", &a.der), ("127.0.0.1", &a.der), ("c.test", &x.der), ("x.test", &a.der)] {
        let tls = connect(g.addr, any.clone(), name).await;
        assert_eq!(&peer_cert(&tls), want, "certificate for SNI {name}");
        let mut h1 = h1_over(tls).await;
        let got = h1_get(&mut h1, name, "/api/other").await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    }

    let seen = backend.requests();
    assert_eq!(seen.len(), 6);
    for s in &seen {
        assert_eq!(s.headers["x-forwarded-proto"], "https", "{:?}", s.headers);
    }
    assert_eq!(seen[0].uri, "/a.test");
    assert_eq!(seen[0].headers["x-forwarded-host"], "a.test");
    assert_eq!(seen[1].headers["x-forwarded-host"], "b.test");
}

// ---------------------------------------------------------------------------------------------
// 2. ALPN

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_selects_http2_or_http1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = self_signed(&["a.test"]);
    let (ac, ak) = write_pair(dir.path(), "a", &a);
    let backend = backend().await;
    let g = gateway(&tls_listener_config(&[cert_entry(&ac, &ak, &[])], backend.addr)).await;

    // h2 offered (first) → HTTP/2.
    let tls = connect(g.addr, client_config(&[&a.der], &[b"h2", b"http/1.1"]), "a.test").await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
    let got = h2_get(tls, "https://a.test/api/over-h2").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(backend.count(), 1);
    let s = &backend.requests()[0];
    assert_eq!(s.uri, "/over-h2");
    assert_eq!(s.headers["x-forwarded-proto"], "https");

    // Only http/1.1 offered → HTTP/1.1.
    let tls = connect(g.addr, client_config(&[&a.der], &[b"http/1.1"]), "a.test").await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let mut h1 = h1_over(tls).await;
    let got = h1_get(&mut h1, "a.test", "/api/over-h1").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());

    // No ALPN at all → HTTP/1.1 too.
    let tls = connect(g.addr, client_config(&[&a.der], &[]), "a.test").await;
    assert_eq!(alpn(&tls), None);
    let mut h1 = h1_over(tls).await;
    let got = h1_get(&mut h1, "a.test", "/api/no-alpn").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(backend.count(), 3);
}

// ---------------------------------------------------------------------------------------------
// 3. Reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_presents_the_renewed_certificate_on_the_same_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = self_signed(&["a.test"]);
    let (cert, key) = write_pair(dir.path(), "site", &old);
    let backend = backend().await;
    let yaml = tls_listener_config(&[cert_entry(&cert, &key, &[])], backend.addr);
    let g = gateway(&yaml).await;

    let tls = connect(g.addr, client_config(&[&old.der], &[b"http/1.1"]), "a.test").await;
    assert_eq!(peer_cert(&tls), old.der);
    let mut before = h1_over(tls).await;
    assert_eq!(h1_get(&mut before, "a.test", "/api/1").await.status, StatusCode::OK);

    // Renew: same paths, new certificate and key.
    let new = self_signed(&["a.test"]);
    assert_ne!(new.der, old.der);
    write_pair(dir.path(), "site", &new);
    let generation = g.reload_with(&yaml).await.expect("reload");
    assert!(generation >= 2, "generation {generation}");
    assert_eq!(g.gw.listener_addr("main").await, Some(g.addr), "same listener, same port");

    let tls = connect(g.addr, client_config(&[&new.der], &[b"http/1.1"]), "a.test").await;
    assert_eq!(peer_cert(&tls), new.der, "new handshakes present the renewed certificate");
    let mut after = h1_over(tls).await;
    assert_eq!(h1_get(&mut after, "a.test", "/api/2").await.status, StatusCode::OK);
    // The connection made before the reload was not closed: the listener was not restarted.
    assert_eq!(h1_get(&mut before, "a.test", "/api/3").await.status, StatusCode::OK);
    assert_eq!(backend.count(), 3);
}

// ---------------------------------------------------------------------------------------------
// 4. TLS towards backends

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_with_a_custom_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let ca_path = write(dir.path(), "ca.pem", &ca.cert.cert_pem);
    let server = ca.leaf(&["localhost", "127.0.0.1"], "backend", ExtendedKeyUsagePurpose::ServerAuth);
    let b = tls_backend(backend_tls(&server, None, &[])).await;

    // (a) trusting the configured CA.
    let g = gateway(&backend_config(&b.url(), &format!(r#"    tls: {{ ca: "{ca_path}" }}"#))).await;
    let got = get(&g.url("/api/x")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "tls backend");
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(seen[0].sni, None, "no SNI for an IP address");
    assert_eq!(seen[0].client_cert, None);
    assert_eq!(seen[0].headers["x-forwarded-proto"], "http", "the client spoke plain HTTP to the gateway");

    // (b) the system roots do not know the test CA: a backend-layer 502 (the Proxy-Status
    // error is checked in `backend_certificate_errors_say_tls_certificate_error`).
    let g = gateway(&backend_config(&b.url(), "")).await;
    let got = get(&g.url("/api/x")).await;
    let v = assert_problem(&got, 502, "backend");
    assert_eq!(v["type"], "urn:gatehouse:error:backend-connect", "{v}");
    assert!(got.headers.contains_key("proxy-status"));
    assert_eq!(b.requests().len(), 1, "nothing reached the backend");
}

/// (b), (e) A certificate the gateway does not accept (unknown CA, or not valid for the name)
/// is `tls_certificate_error` in Proxy-Status, not a refused connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_certificate_errors_say_tls_certificate_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let ca_path = write(dir.path(), "ca.pem", &ca.cert.cert_pem);
    let server = ca.leaf(&["backend.test"], "backend.test", ExtendedKeyUsagePurpose::ServerAuth);
    let b = tls_backend(backend_tls(&server, None, &[])).await;

    // Unknown issuer: the system roots do not know the test CA.
    let g = gateway(&backend_config(&b.url(), "")).await;
    let got = get(&g.url("/api/x")).await;
    let v = assert_problem(&got, 502, "backend");
    assert_eq!(v["type"], "urn:gatehouse:error:backend-connect", "{v}");
    assert_proxy_status(&got, "tls_certificate_error");

    // Trusted issuer, but the certificate is for backend.test and the URL says 127.0.0.1.
    let g = gateway(&backend_config(&b.url(), &format!(r#"    tls: {{ ca: "{ca_path}" }}"#))).await;
    let got = get(&g.url("/api/x")).await;
    assert_problem(&got, 502, "backend");
    assert_proxy_status(&got, "tls_certificate_error");
    assert!(b.requests().is_empty());
}

/// (c) `verify: false` works against an unknown CA, and compiling such a config logs a warning
/// (at every load: `check`, start and reload all compile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_verify_off_works_and_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let server = ca.leaf(&["localhost", "127.0.0.1"], "backend", ExtendedKeyUsagePurpose::ServerAuth);
    let b = tls_backend(backend_tls(&server, None, &[])).await;
    let yaml = backend_config(&b.url(), "    tls: { verify: false }");

    let logged = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = logged.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || LogSink(sink.clone()))
        .finish();
    let compiled = tracing::subscriber::with_default(subscriber, || {
        gatehouse::snapshot::compile_str("gatehouse.yaml", &yaml, dir.path())
    });
    assert!(compiled.is_ok(), "{:?}", compiled.err());
    let logged = String::from_utf8_lossy(&logged.lock()).into_owned();
    assert!(logged.contains("WARN"), "{logged}");
    assert!(logged.contains("TLS verification towards this backend is off"), "{logged}");
    assert!(logged.contains("backends.b.tls.verify: false"), "{logged}");

    let g = gateway(&yaml).await;
    let got = get(&g.url("/api/x")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(b.requests().len(), 1);
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// (d) mTLS: the backend requires a client certificate signed by the CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_mtls_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let ca_path = write(dir.path(), "ca.pem", &ca.cert.cert_pem);
    let server = ca.leaf(&["localhost", "127.0.0.1"], "backend", ExtendedKeyUsagePurpose::ServerAuth);
    let client = ca.leaf(&[], "gatehouse-client", ExtendedKeyUsagePurpose::ClientAuth);
    let (client_cert, client_key) = write_pair(dir.path(), "client", &client);
    let b = tls_backend(backend_tls(&server, Some(&ca), &[])).await;

    // Without a client certificate the backend refuses: 502, backend layer.
    let g = gateway(&backend_config(&b.url(), &format!(r#"    tls: {{ ca: "{ca_path}" }}"#))).await;
    let got = get(&g.url("/api/x")).await;
    let v = assert_problem(&got, 502, "backend");
    assert!(got.headers.contains_key("proxy-status"), "{v}");
    assert!(b.requests().is_empty());

    // With one: 200, and the backend saw the gateway's client certificate.
    let extra = format!(r#"    tls: {{ ca: "{ca_path}", client_cert: "{client_cert}", client_key: "{client_key}" }}"#);
    let g = gateway(&backend_config(&b.url(), &extra)).await;
    let got = get(&g.url("/api/x")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    let presented = seen[0].client_cert.as_ref().expect("a client certificate");
    assert_eq!(presented, &client.der);
    // The subject's common name, as encoded in the certificate.
    assert!(presented.windows(b"gatehouse-client".len()).any(|w| w == b"gatehouse-client"));
}

/// (e) `server_name` when the URL's host (an IP address) is not in the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_server_name_override() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let ca_path = write(dir.path(), "ca.pem", &ca.cert.cert_pem);
    let server = ca.leaf(&["backend.test"], "backend.test", ExtendedKeyUsagePurpose::ServerAuth);
    let b = tls_backend(backend_tls(&server, None, &[])).await;

    // Without the override the name does not match: a backend-layer 502.
    let g = gateway(&backend_config(&b.url(), &format!(r#"    tls: {{ ca: "{ca_path}" }}"#))).await;
    let got = get(&g.url("/api/x")).await;
    assert_problem(&got, 502, "backend");
    assert!(b.requests().is_empty());

    let extra = format!(r#"    tls: {{ ca: "{ca_path}", server_name: backend.test }}"#);
    let g = gateway(&backend_config(&b.url(), &extra)).await;
    let got = get(&g.url("/api/x")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni.as_deref(), Some("backend.test"), "the override is also the SNI sent");
}

// ---------------------------------------------------------------------------------------------
// 5. HTTP/2 to a TLS backend

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_to_a_tls_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let ca_path = write(dir.path(), "ca.pem", &ca.cert.cert_pem);
    let server = ca.leaf(&["localhost", "127.0.0.1"], "backend", ExtendedKeyUsagePurpose::ServerAuth);
    // Offers only h2: a client that does not offer h2 gets no ALPN and would be served HTTP/1.1.
    let b = tls_backend(backend_tls(&server, None, &[b"h2"])).await;
    let extra = format!("    protocol: http2\n    tls: {{ ca: \"{ca_path}\" }}");
    let g = gateway(&backend_config(&b.url(), &extra)).await;
    for i in 0..2 {
        let got = get(&g.url(&format!("/api/{i}"))).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    }
    let seen = b.requests();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(s.version, http::Version::HTTP_2);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. check errors

#[test]
fn unusable_listener_certificates_are_located_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = self_signed(&["a.test"]);
    let b = self_signed(&["b.test"]);
    let (ac, ak) = write_pair(dir.path(), "a", &a);
    let (_, bk) = write_pair(dir.path(), "b", &b);
    let backend: SocketAddr = "127.0.0.1:9".parse().expect("addr");

    let compile = |yaml: &str| match gatehouse::snapshot::compile_str("gatehouse.yaml", yaml, dir.path()) {
        Ok(_) => panic!("compiled: {yaml}"),
        Err(errors) => errors,
    };

    // A certificate file that does not exist.
    let missing = dir.path().join("missing.pem").display().to_string();
    let errors = compile(&tls_listener_config(&[cert_entry(&missing, &ak, &[])], backend));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert_eq!(e.path, "listeners[0].tls.certificates[0].cert", "{e}");
    assert!(e.to_string().contains("listeners[0].tls.certificates[0].cert"), "{e}");
    assert!(e.message.contains(&missing), "{e}");
    assert!(e.file == "gatehouse.yaml" && e.line > 0 && e.col > 0, "{e}");

    // A key that belongs to another certificate.
    let errors = compile(&tls_listener_config(&[cert_entry(&ac, &bk, &[])], backend));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert_eq!(e.path, "listeners[0].tls.certificates[0].key", "{e}");
    assert!(e.message.contains(&bk) && e.message.contains(&ac), "{e}");
    assert!(e.line > 0, "{e}");

    // A missing key file, on the second certificate.
    let missing_key = dir.path().join("missing.key").display().to_string();
    let errors =
        compile(&tls_listener_config(&[cert_entry(&ac, &ak, &[]), cert_entry(&ac, &missing_key, &[])], backend));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "listeners[0].tls.certificates[1].key", "{}", errors[0]);

    // And the good pair compiles.
    let ok = gatehouse::snapshot::compile_str(
        "gatehouse.yaml",
        &tls_listener_config(&[cert_entry(&ac, &ak, &[])], backend),
        dir.path(),
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
}
