//! The one place that turns a failure into an HTTP response.
//!
//! Every response the gateway writes by itself is `application/problem+json` (RFC 9457) and says
//! which layer failed (product.md §4): `edge`, `policy`, `backend`, or `gateway` for bugs.
//! Backend-layer errors also carry an RFC 9209 `Proxy-Status` header. Client-facing text is
//! written here from fixed vocabularies; internal error `Display` output never reaches a client.

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};

use crate::body::ResponseBody;

/// Which layer of the perimeter produced an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Edge,
    Policy,
    Backend,
    Gateway,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Edge => "edge",
            Layer::Policy => "policy",
            Layer::Backend => "backend",
            Layer::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure the gateway answers by itself.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    /// Suffix of the `type` URN: `urn:gatehouse:error:<kind>`.
    pub kind: &'static str,
    pub detail: String,
    pub layer: Layer,
    pub policy: Option<&'static str>,
    pub scope: Option<String>,
    /// RFC 9209 error type (`connection_refused`, …) and next hop, for backend errors.
    pub proxy_status: Option<(&'static str, String)>,
    pub headers: HeaderMap,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, layer: Layer, detail: impl Into<String>) -> Self {
        Problem {
            status,
            kind,
            detail: detail.into(),
            layer,
            policy: None,
            scope: None,
            proxy_status: None,
            headers: HeaderMap::new(),
        }
    }

    pub fn edge(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(status, kind, Layer::Edge, detail)
    }

    pub fn backend(
        status: StatusCode,
        kind: &'static str,
        proxy_error: &'static str,
        next_hop: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        let mut p = Self::new(status, kind, Layer::Backend, detail);
        p.proxy_status = Some((proxy_error, next_hop.into()));
        p
    }

    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The JSON body, written by hand: the fields are few and fixed, and this runs on error paths
    /// that should stay cheap under attack.
    pub fn body(&self, request_id: &str) -> String {
        let mut s = String::with_capacity(256);
        s.push_str("{\"type\":\"urn:gatehouse:error:");
        s.push_str(self.kind);
        s.push_str("\",\"title\":");
        push_json_str(&mut s, self.status.canonical_reason().unwrap_or("Error"));
        s.push_str(",\"status\":");
        s.push_str(&self.status.as_u16().to_string());
        s.push_str(",\"detail\":");
        push_json_str(&mut s, &self.detail);
        s.push_str(",\"layer\":\"");
        s.push_str(self.layer.as_str());
        s.push('"');
        if let Some(policy) = self.policy {
            s.push_str(",\"policy\":");
            push_json_str(&mut s, policy);
        }
        if let Some(scope) = &self.scope {
            s.push_str(",\"scope\":");
            push_json_str(&mut s, scope);
        }
        s.push_str(",\"request_id\":");
        push_json_str(&mut s, request_id);
        s.push_str("}\n");
        s
    }

    /// The full response, with `X-Request-Id`, `Proxy-Status` and any extra headers.
    pub fn into_response(self, request_id: &str) -> Response<ResponseBody> {
        let body = self.body(request_id);
        let mut resp = Response::new(ResponseBody::full(Bytes::from(body)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(crate::edge::X_REQUEST_ID, v);
        }
        if let Some((error, hop)) = &self.proxy_status {
            let value = format!("gatehouse; error={error}; next-hop=\"{}\"", hop.replace(['"', '\\'], ""));
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(http::HeaderName::from_static("proxy-status"), v);
            }
        }
        for (name, value) in self.headers {
            if let Some(name) = name {
                h.insert(name, value);
            }
        }
        resp
    }

    /// Raw HTTP/1.1 bytes for rejections written before hyper has a request (framing, limits,
    /// timeouts); the connection is closed afterwards.
    pub fn to_http1_bytes(&self, request_id: &str) -> Vec<u8> {
        let body = self.body(request_id);
        let mut out = Vec::with_capacity(body.len() + 200);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_u16().to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("Error").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: application/problem+json\r\nconnection: close\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\nx-request-id: ");
        out.extend_from_slice(request_id.as_bytes());
        out.extend_from_slice(b"\r\ndate: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body.as_bytes());
        out
    }
}

/// Appends `v` as a JSON string literal.
pub fn push_json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_is_valid_json_with_layer() {
        let mut p = Problem::backend(
            StatusCode::BAD_GATEWAY,
            "backend-connect",
            "connection_refused",
            "127.0.0.1:1",
            "the backend refused \"the\" connection",
        );
        p.scope = Some("api:orders".into());
        let body = p.body("abc");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["layer"], "backend");
        assert_eq!(v["status"], 502);
        assert_eq!(v["title"], "Bad Gateway");
        assert_eq!(v["type"], "urn:gatehouse:error:backend-connect");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["scope"], "api:orders");
        let resp = p.into_response("abc");
        assert_eq!(resp.headers()["proxy-status"], "gatehouse; error=connection_refused; next-hop=\"127.0.0.1:1\"");
    }
}
