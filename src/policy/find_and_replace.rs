//! `find-and-replace`: replace every occurrence of a text in the body (APIM
//! `<find-and-replace from to>`): the request body in inbound/backend, the response body in
//! outbound/on-error. The body is read whole (bounded by `edge.limits.body_bytes`) and its length
//! fixed. It works on the bytes as sent: a compressed body is not decompressed.

use bytes::Bytes;
use serde::Deserialize;

use super::{util, BuildCx, Exchange, Outcome, Policy, Step};
use crate::config::ConfigError;
use crate::expr::Template;

/// `find-and-replace: { from: "http://internal", to: "https://{request.host}" }`
#[derive(Debug, Deserialize)]
pub struct FindAndReplaceConfig {
    pub from: String,
    pub to: String,
}

#[derive(Debug)]
pub struct FindAndReplace {
    from: memchr::memmem::Finder<'static>,
    to: Template,
}

impl FindAndReplace {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: FindAndReplaceConfig = cx.config()?;
        let mut errors = Vec::new();
        if cfg.from.is_empty() {
            errors.push(cx.error(&["from"], "`from` is the text to find; it cannot be empty"));
        }
        let to = cx.template(&cfg.to, &["to"]).map_err(|e| errors.push(e)).ok();
        util::done(errors)?;
        let from = memchr::memmem::Finder::new(cfg.from.as_bytes()).into_owned();
        Ok(FindAndReplace { from, to: to.ok_or_else(Vec::new)? })
    }
}

/// `body` with every non-overlapping `from` replaced by `to`; `None` when there is none.
pub fn replace_all(body: &[u8], from: &memchr::memmem::Finder<'_>, to: &[u8]) -> Option<Vec<u8>> {
    let mut hits = from.find_iter(body).peekable();
    hits.peek()?;
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for hit in hits {
        out.extend_from_slice(body.get(at..hit).unwrap_or_default());
        out.extend_from_slice(to);
        at = hit + from.needle().len();
    }
    out.extend_from_slice(body.get(at..).unwrap_or_default());
    Some(out)
}

impl Policy for FindAndReplace {
    fn kind(&self) -> &'static str {
        "find-and-replace"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        if x.stage.has_response() && x.response.is_none() {
            return Step::Ready(Outcome::Continue);
        }
        let to = self.to.render(x).into_owned();
        Step::Wait(Box::pin(async move {
            let body = match util::read_body(x).await {
                Ok(b) => b,
                Err(p) => return Outcome::Reject(Box::new(p)),
            };
            if let Some(new) = replace_all(&body, &self.from, to.as_bytes()) {
                util::put_body(x, Bytes::from(new));
            }
            Outcome::Continue
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;
    use crate::policy::Stage;

    #[test]
    fn replaces_every_occurrence_and_fixes_the_length() {
        let p = build_with("{ from: cat, to: '{request.method}' }", Stage::Inbound, FindAndReplace::build).expect("ok");
        let mut x = exchange("/o");
        x.body = crate::body::UpstreamBody::full(Bytes::from_static(b"cat concat cat"));
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        assert!(matches!(rt.block_on(run_async(&p, &mut x)), Outcome::Continue));
        let body = rt.block_on(x.request_bytes()).expect("body");
        assert_eq!(&body[..], b"GET conGET GET");
        assert_eq!(x.request.headers["content-length"], "14");
    }

    #[test]
    fn replaces_in_the_response_outbound() {
        let p = build_with("{ from: 'a', to: 'bb' }", Stage::Outbound, FindAndReplace::build).expect("ok");
        let mut x = exchange("/o");
        x.stage = Stage::Outbound;
        x.response = Some(http::Response::new(crate::body::ResponseBody::full(Bytes::from_static(b"banana"))));
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        assert!(matches!(rt.block_on(run_async(&p, &mut x)), Outcome::Continue));
        assert_eq!(&rt.block_on(x.response_bytes()).expect("body")[..], b"bbbnbbnbb");
    }

    #[test]
    fn nothing_to_find_is_an_error() {
        let e = build_with("{ from: '', to: x }", Stage::Inbound, FindAndReplace::build).expect_err("e");
        assert!(e.join("\n").contains("p.from:"));
    }
}
