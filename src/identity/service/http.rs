//! The token endpoint's HTTP: one HTTP/1.1 request per call over the gateway's TLS stack.
//!
//! No pool: a token is fetched once per lifetime (minutes to hours), so idle connections would be
//! held for nothing. Every call is bounded — one deadline for connect, TLS, response and body —
//! and the body is capped. Redirects are not followed (a token request carries credentials).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::TokenError;
use crate::upstream::pool::MaybeTls;

/// A token response or discovery document larger than this is refused.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How the client reaches one endpoint: its TLS roots and deadline.
#[derive(Clone)]
pub struct Http {
    tls: Option<Arc<rustls::ClientConfig>>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http").field("custom_ca", &self.tls.is_some()).field("timeout", &self.timeout).finish()
    }
}

/// The system roots, loaded once per process (reloads build policies again; the roots do not change).
fn system_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static SYSTEM: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    SYSTEM.get_or_init(|| tls_config(None)).clone()
}

fn tls_config(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let opts = crate::upstream::tls::ClientTlsOptions { ca, verify: true, client_cert: None };
    let mut cfg = crate::upstream::tls::client_config(&opts)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl Http {
    /// `ca`: a private CA for the identity provider instead of the system roots.
    pub fn new(ca: Option<&std::path::Path>, timeout: Duration) -> Result<Http, String> {
        let tls = match ca {
            Some(ca) => Some(tls_config(Some(ca))?),
            None => None,
        };
        Ok(Http { tls, timeout })
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body; the status and body.
    pub async fn post_form(
        &self,
        url: &Uri,
        form: String,
        authorization: Option<HeaderValue>,
    ) -> Result<(StatusCode, Bytes), TokenError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.send(Method::POST, url, Some(form), authorization))
            .await
            .map_err(|_| TokenError::Timeout(timeout))?
    }

    /// `GET url` (discovery); the status and body.
    pub async fn get(&self, url: &Uri) -> Result<(StatusCode, Bytes), TokenError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.send(Method::GET, url, None, None))
            .await
            .map_err(|_| TokenError::Timeout(timeout))?
    }

    async fn send(
        &self,
        method: Method,
        url: &Uri,
        form: Option<String>,
        authorization: Option<HeaderValue>,
    ) -> Result<(StatusCode, Bytes), TokenError> {
        let https = url.scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = url.authority().ok_or_else(|| TokenError::Http("the URL has no host".into()))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port)).await.map_err(|e| TokenError::Connect(e.kind()))?;
        let _ = tcp.set_nodelay(true);
        let io = if https {
            let cfg = match &self.tls {
                Some(c) => c.clone(),
                None => system_tls().map_err(TokenError::Http)?,
            };
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| TokenError::Http("the host is not a valid TLS server name".into()))?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| TokenError::Tls(e.to_string()))?;
            MaybeTls::Tls(Box::new(tls))
        } else {
            MaybeTls::Plain(tcp)
        };
        let (mut sender, conn) =
            http1::handshake::<_, Full<Bytes>>(TokioIo::new(io)).await.map_err(|e| TokenError::Http(e.to_string()))?;
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
        if form.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if let Some(mut auth) = authorization {
            auth.set_sensitive(true);
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        let req =
            req.body(Full::new(Bytes::from(form.unwrap_or_default()))).map_err(|e| TokenError::Http(e.to_string()))?;
        let exchange = async {
            let resp = sender.send_request(req).await.map_err(|e| TokenError::Http(e.to_string()))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY_BYTES).collect().await;
            let body = body.map(|b| b.to_bytes()).map_err(|_| TokenError::Body)?;
            Ok((status, body))
        };
        // Driven here rather than spawned, so a timeout (which drops this future) closes it too.
        tokio::select! {
            r = exchange => r,
            c = conn => Err(TokenError::Http(match c {
                Ok(()) => "the connection closed before the response".into(),
                Err(e) => e.to_string(),
            })),
        }
    }
}

/// `application/x-www-form-urlencoded` (and RFC 6749 §2.3.1's encoding of client_id/secret for
/// Basic): unreserved characters as they are, space as `+`, everything else `%XX`.
pub fn form_encode(out: &mut String, value: &str) {
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

/// Appends `name=value` to a form body.
pub fn form_pair(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    form_encode(out, name);
    out.push('=');
    form_encode(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        let mut s = String::new();
        form_pair(&mut s, "scope", "api://orders/.default read");
        form_pair(&mut s, "client_secret", "a+b&c=d/é");
        assert_eq!(s, "scope=api%3A%2F%2Forders%2F.default+read&client_secret=a%2Bb%26c%3Dd%2F%C3%A9");
    }
}
