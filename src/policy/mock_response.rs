//! `mock-response`: answer at the gateway with an example response (APIM `<mock-response
//! status-code content-type>`), so clients can be built before the backend exists.
//!
//! Like APIM, the example comes from the operation's declared responses: an operation's
//! `examples` map status codes to content types to a body (a string is sent as it is, anything
//! else as JSON). Placed on an API, the policy answers each operation from that operation's
//! examples. An `example` given in the policy itself wins over both. Without `status_code` the
//! first 2xx example is used (else 200); without `content_type` the first one listed for that
//! status. Nothing found: the status with an empty body. Examples are rendered once, when the
//! config compiles.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::Value as Json;

use super::{util, BuildCx, Exchange, Outcome, Policy, Step};
use crate::body::ResponseBody;
use crate::config::{ConfigError, PathSeg};

/// `mock-response: { status_code: 200, content_type: application/json }`, optionally with an
/// inline `example: { id: 1 }`.
#[derive(Debug, Deserialize)]
pub struct MockResponseConfig {
    #[serde(default)]
    pub status_code: Option<u16>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub example: Option<Json>,
}

/// status → content type → example.
type Examples = BTreeMap<String, BTreeMap<String, Json>>;

#[derive(Debug, Clone)]
struct Canned {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

#[derive(Debug)]
pub struct MockResponse {
    /// Per operation id, when placed on an API with operations.
    by_operation: Vec<(String, Canned)>,
    fallback: Canned,
}

impl MockResponse {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: MockResponseConfig = cx.config()?;
        let status = match cfg.status_code {
            Some(c) => Some(util::status(cx, &["status_code"], c).map_err(|e| vec![e])?),
            None => None,
        };
        let ct = |c: &str| {
            HeaderValue::from_str(c).map_err(|_| vec![cx.error(&["content_type"], "not a valid header value")])
        };
        if let Some(example) = &cfg.example {
            let content_type = match &cfg.content_type {
                Some(c) => Some(ct(c)?),
                None if example.is_string() => Some(HeaderValue::from_static("text/plain; charset=utf-8")),
                None => Some(HeaderValue::from_static("application/json")),
            };
            let fallback = Canned { status: status.unwrap_or(StatusCode::OK), content_type, body: render(example) };
            return Ok(MockResponse { by_operation: Vec::new(), fallback });
        }
        let fallback = Canned {
            status: status.unwrap_or(StatusCode::OK),
            content_type: cfg.content_type.as_deref().map(ct).transpose()?,
            body: Bytes::new(),
        };
        // The scope that owns this policy: the path up to its first `policies` key.
        let owner: Vec<PathSeg> =
            cx.path.iter().take_while(|s| !matches!(s, PathSeg::Key(k) if k == "policies")).cloned().collect();
        let mut by_operation = Vec::new();
        match owner.as_slice() {
            [PathSeg::Key(a), _, PathSeg::Key(o), PathSeg::Index(_)] if a == "apis" && o == "operations" => {
                let examples = examples_at(cx, &owner)?;
                if !examples.is_empty() {
                    let canned = choose(&examples, status, cfg.content_type.as_deref())
                        .ok_or_else(|| vec![cx.error(&[], missing(status, cfg.content_type.as_deref()))])?;
                    return Ok(MockResponse { by_operation, fallback: canned });
                }
            }
            [PathSeg::Key(a), _] if a == "apis" => {
                let mut ops = owner.clone();
                ops.push(PathSeg::Key("operations".into()));
                let count = match cx.doc.get(&ops).map(|n| &n.kind) {
                    Some(crate::config::yaml::NodeKind::Seq(items)) => items.len(),
                    _ => 0,
                };
                for i in 0..count {
                    let mut op = ops.clone();
                    op.push(PathSeg::Index(i));
                    let mut id_path = op.clone();
                    id_path.push(PathSeg::Key("id".into()));
                    let Some(id) = cx.doc.get(&id_path).and_then(|n| n.text()).map(str::to_owned) else { continue };
                    let examples = examples_at(cx, &op)?;
                    if let Some(c) = choose(&examples, status, cfg.content_type.as_deref()) {
                        by_operation.push((id, c));
                    }
                }
            }
            _ => {}
        }
        Ok(MockResponse { by_operation, fallback })
    }
}

fn missing(status: Option<StatusCode>, ct: Option<&str>) -> String {
    match (status, ct) {
        (Some(s), Some(c)) => format!("the operation's `examples` have none for {} {c}", s.as_u16()),
        (Some(s), None) => format!("the operation's `examples` have none for status {}", s.as_u16()),
        (None, Some(c)) => format!("the operation's `examples` have no 2xx example for {c}"),
        (None, None) => "the operation's `examples` have no 2xx example".to_owned(),
    }
}

fn examples_at(cx: &BuildCx<'_>, owner: &[PathSeg]) -> Result<Examples, Vec<ConfigError>> {
    let mut p = owner.to_vec();
    p.push(PathSeg::Key("examples".into()));
    match cx.doc.deserialize_at::<Examples>(&p) {
        None => Ok(Examples::new()),
        Some(r) => r,
    }
}

/// The example for `status` (or the first 2xx) and `ct` (or the first listed).
fn choose(examples: &Examples, status: Option<StatusCode>, ct: Option<&str>) -> Option<Canned> {
    let (code, by_type) = match status {
        Some(s) => (s, examples.get(s.as_str())?),
        None => examples.iter().find_map(|(k, v)| {
            let s = k.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok())?;
            s.is_success().then_some((s, v))
        })?,
    };
    let (ct, example) = match ct {
        Some(c) => by_type.get_key_value(c)?,
        None => by_type.iter().next()?,
    };
    Some(Canned { status: code, content_type: HeaderValue::from_str(ct).ok(), body: render(example) })
}

fn render(example: &Json) -> Bytes {
    match example {
        Json::String(s) => Bytes::from(s.clone()),
        other => Bytes::from(serde_json::to_vec_pretty(other).unwrap_or_default()),
    }
}

impl Policy for MockResponse {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "mock-response"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let canned = x
            .route
            .operation
            .as_deref()
            .and_then(|op| self.by_operation.iter().find(|(id, _)| id == op))
            .map_or(&self.fallback, |(_, c)| c);
        let mut resp = Response::new(ResponseBody::full(canned.body.clone()));
        *resp.status_mut() = canned.status;
        if let Some(ct) = &canned.content_type {
            resp.headers_mut().insert(CONTENT_TYPE, ct.clone());
        }
        Step::Ready(Outcome::Respond(Box::new(resp)))
    }

    fn terminates(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;
    use crate::policy::Stage;

    const DOC: &str = r#"
apis:
  orders:
    policies:
      inbound:
        - mock-response: { content_type: text/plain }
    operations:
      - id: get-order
        examples:
          "404": { application/json: { error: none } }
          "200":
            application/json: { id: 7, items: [1, 2] }
            text/plain: "order 7"
        policies:
          inbound:
            - mock-response: { status_code: 404 }
            - mock-response: { status_code: 500 }
      - id: other
"#;

    fn key(k: &str) -> PathSeg {
        PathSeg::Key(k.into())
    }

    fn at_op(i: usize) -> Vec<PathSeg> {
        vec![
            key("apis"),
            key("orders"),
            key("operations"),
            PathSeg::Index(0),
            key("policies"),
            key("inbound"),
            PathSeg::Index(i),
            key("mock-response"),
        ]
    }

    fn answer(p: &MockResponse, op: Option<&str>) -> (u16, String, String) {
        let mut x = exchange("/orders/7");
        x.route = std::sync::Arc::new(crate::route::Route {
            api: x.route.api.clone(),
            operation: op.map(str::to_owned),
            chain: x.route.chain.clone(),
            metrics: Default::default(),
        });
        match run_ready(p, &mut x) {
            Outcome::Respond(r) => {
                let ct =
                    r.headers().get(CONTENT_TYPE).map(|v| v.to_str().expect("ascii").to_owned()).unwrap_or_default();
                let status = r.status().as_u16();
                let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
                let body = rt.block_on(http_body_util::BodyExt::collect(r.into_body())).expect("body").to_bytes();
                (status, ct, String::from_utf8_lossy(&body).into_owned())
            }
            _ => panic!("mock-response answers"),
        }
    }

    #[test]
    fn operation_examples_by_status_and_type() {
        let p = build_in(DOC, &at_op(0), Stage::Inbound, MockResponse::build).expect("builds");
        let (status, ct, body) = answer(&p, Some("get-order"));
        assert_eq!((status, ct.as_str()), (404, "application/json"));
        assert_eq!(serde_json::from_str::<Json>(&body).expect("json"), serde_json::json!({ "error": "none" }));
        let e = build_in(DOC, &at_op(1), Stage::Inbound, MockResponse::build).expect_err("no 500 example");
        assert!(e.join("\n").contains("have none for status 500"), "{e:?}");
    }

    #[test]
    fn on_an_api_each_operation_answers_from_its_own_examples() {
        let path =
            vec![key("apis"), key("orders"), key("policies"), key("inbound"), PathSeg::Index(0), key("mock-response")];
        let p = build_in(DOC, &path, Stage::Inbound, MockResponse::build).expect("builds");
        assert_eq!(answer(&p, Some("get-order")), (200, "text/plain".into(), "order 7".into()));
        assert_eq!(answer(&p, Some("other")), (200, "text/plain".into(), String::new()));
    }

    #[test]
    fn inline_example_wins() {
        let p = build_with("{ status_code: 201, example: { ok: true } }", Stage::Inbound, MockResponse::build)
            .expect("builds");
        let (status, ct, body) = answer(&p, None);
        assert_eq!((status, ct.as_str()), (201, "application/json"));
        assert_eq!(serde_json::from_str::<Json>(&body).expect("json"), serde_json::json!({ "ok": true }));
        assert!(p.terminates());
    }
}
