//! Fetching a discovery document or a JWKS: one HTTP/1.1 GET per fetch, over the TLS stack the
//! gateway already has.
//!
//! Why not a pooled client (hyper-util's legacy client, reqwest): a provider is asked once per
//! refresh interval (minutes) or once per unknown `kid` at most every `min_refetch_interval`, so
//! a pool would hold idle connections for nothing, and reqwest would bring a second HTTP stack
//! and TLS configuration into the binary. Every fetch is bounded: one deadline for connect,
//! TLS, response and body, and a size cap on the body. Redirects are not followed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::upstream::pool::MaybeTls;

/// A JWKS or discovery document larger than this is refused.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// Why a fetch failed; shown in the gateway's log, never to clients.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes or the body failed")]
    Body,
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
}

/// Fetches JSON documents for one provider.
pub struct Fetcher {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl Fetcher {
    /// `tls` is needed for https URLs (system roots); `None` when every URL is http.
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration) -> Fetcher {
        Fetcher { tls, timeout }
    }

    /// A client TLS config trusting `ca` (PEM bundle) or else the system's roots, offering http/1.1.
    pub fn tls(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut cfg = crate::upstream::tls::client_config(&crate::upstream::tls::ClientTlsOptions {
            ca,
            verify: true,
            client_cert: None,
        })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// GETs `url` and parses the body as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &Uri) -> Result<T, FetchError> {
        let body = tokio::time::timeout(self.timeout, self.get(url))
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))??;
        serde_json::from_slice(&body).map_err(FetchError::Json)
    }

    async fn get(&self, url: &Uri) -> Result<Bytes, FetchError> {
        let https = url.scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = url.authority().ok_or_else(|| FetchError::Http("URL has no host".into()))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port)).await.map_err(FetchError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let io = if https {
            let cfg = self.tls.clone().ok_or_else(|| FetchError::Http("no TLS configuration".into()))?;
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| FetchError::Http("host is not a valid TLS server name".into()))?;
            let tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(FetchError::Tls)?;
            MaybeTls::Tls(Box::new(tls))
        } else {
            MaybeTls::Plain(tcp)
        };
        let (mut sender, conn) =
            http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await.map_err(|e| FetchError::Http(e.to_string()))?;
        let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let req = Request::get(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::ACCEPT, "application/json, application/jwk-set+json")
            .header(http::header::USER_AGENT, concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let exchange = async {
            let resp = sender.send_request(req).await.map_err(|e| FetchError::Http(e.to_string()))?;
            if resp.status() != StatusCode::OK {
                return Err(FetchError::Status(resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES).collect().await;
            body.map(|b| b.to_bytes()).map_err(|_| FetchError::Body)
        };
        // The connection is driven here rather than spawned, so a timeout (which drops this
        // future) closes it too.
        tokio::select! {
            r = exchange => r,
            c = conn => Err(FetchError::Http(match c {
                Ok(()) => "connection closed before the response".into(),
                Err(e) => e.to_string(),
            })),
        }
    }
}
