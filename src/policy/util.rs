//! Small helpers the transformation policies share: where a policy may run, which headers no
//! policy may touch, and reading/replacing the body of the message a stage works on.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};

use super::{BuildCx, Exchange, Stage};
use crate::body::{ResponseBody, UpstreamBody};
use crate::config::ConfigError;
use crate::respond::Problem;

/// A config error unless the policy is placed in one of `allowed`.
pub(crate) fn only_in(cx: &BuildCx<'_>, kind: &str, allowed: &[Stage]) -> Result<(), ConfigError> {
    if allowed.contains(&cx.stage) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    Err(cx.doc.error_at_key(
        &cx.path,
        format!("`{kind}` cannot run in `{}`; it belongs in {}", cx.stage.as_str(), names.join(" or ")),
    ))
}

/// Fields that describe the connection or the message framing: the gateway owns them (APIM
/// refuses the same: Connection, Content-Length, Keep-Alive, Transfer-Encoding).
pub(crate) fn is_reserved_header(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::CONTENT_LENGTH
        || n == header::TRANSFER_ENCODING
        || n == header::TE
        || n == header::TRAILER
        || n == header::UPGRADE
        || matches!(n.as_str(), "keep-alive" | "proxy-connection" | "http2-settings")
}

/// A header name from the config, refusing names the gateway owns.
pub(crate) fn header_name(cx: &BuildCx<'_>, sub: &[&str], name: &str) -> Result<HeaderName, ConfigError> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(n) if is_reserved_header(&n) => {
            Err(cx.error(sub, format!("`{name}` describes the connection or framing; the gateway sets it")))
        }
        Ok(n) => Ok(n),
        Err(_) => Err(cx.error(sub, format!("`{name}` is not a valid header name"))),
    }
}

/// An HTTP status code between 100 and 599.
pub(crate) fn status(cx: &BuildCx<'_>, sub: &[&str], code: u16) -> Result<http::StatusCode, ConfigError> {
    match http::StatusCode::from_u16(code) {
        Ok(s) if (100..600).contains(&code) => Ok(s),
        _ => Err(cx.error(sub, format!("{code} is not an HTTP status code (100–599)"))),
    }
}

/// Collects `Result`s' errors; `Ok(())` when there were none.
pub(crate) fn done(errors: Vec<ConfigError>) -> Result<(), Vec<ConfigError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The body of the message this stage works on: the request's in inbound and backend, the
/// response's in outbound and on-error. Buffered whole (bounded by `edge.limits.body_bytes`).
pub(crate) async fn read_body(x: &mut Exchange) -> Result<Bytes, Problem> {
    if x.stage.has_response() {
        x.response_bytes().await
    } else {
        x.request_bytes().await
    }
}

/// Replaces the body of the message this stage works on; the length is fixed to match.
pub(crate) fn put_body(x: &mut Exchange, data: Bytes) {
    if x.stage.has_response() {
        if let Some(resp) = x.response.as_mut() {
            resp.headers_mut().remove(header::CONTENT_LENGTH);
            resp.headers_mut().remove(header::TRANSFER_ENCODING);
            *resp.body_mut() = ResponseBody::full(data);
        }
    } else {
        x.request.headers.remove(header::TRANSFER_ENCODING);
        x.request.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
        x.body = UpstreamBody::full(data);
    }
}

/// The headers of the message this stage works on (`None` in outbound when there is no response).
pub(crate) fn headers_mut(x: &mut Exchange) -> Option<&mut http::HeaderMap> {
    if x.stage.has_response() {
        x.response.as_mut().map(|r| r.headers_mut())
    } else {
        Some(&mut x.request.headers)
    }
}

/// An error at item `i` of the list under `key` below the policy's value.
pub(crate) fn item_error(cx: &BuildCx<'_>, key: &str, i: usize, msg: impl Into<String>) -> ConfigError {
    let mut p = cx.at(&[key]);
    p.push(crate::config::PathSeg::Index(i));
    cx.doc.error(&p, msg)
}

/// Bytes that stay as they are in a URL component we write: RFC 3986 unreserved characters.
pub(crate) const COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` percent-encoded for a path segment or a query name/value.
pub(crate) fn encode(s: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::utf8_percent_encode(s, COMPONENT).into()
}

/// Replaces the query of `uri` (`None` or empty: no query).
pub(crate) fn with_query(uri: &http::Uri, query: Option<&str>) -> Option<http::Uri> {
    let path = uri.path();
    let pq = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(pq).ok()?);
    http::Uri::from_parts(parts).ok()
}

/// An error at item `i` of the list at `sub` below the policy's value.
pub(crate) fn item_error_at(cx: &BuildCx<'_>, sub: &[&str], i: usize, msg: impl Into<String>) -> ConfigError {
    let mut p = cx.at(sub);
    p.push(crate::config::PathSeg::Index(i));
    cx.doc.error(&p, msg)
}
