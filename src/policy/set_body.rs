//! `set-body`: replace the body (APIM `<set-body>`): the request's in inbound/backend, the
//! response's in outbound/on-error. Two forms:
//! - `value`: a template that becomes the whole body (write `{{`/`}}` for literal braces);
//! - `json`: edits of a JSON body — `set` fields by JSON pointer (`/a/b/0`) or dotted path
//!   (`a.b`), creating missing objects, and `remove` fields. String values are templates;
//!   other values are inserted as written.
//!
//! The JSON form reads the body whole (bounded by `edge.limits.body_bytes`); a body that is not
//! JSON is refused (400 for a request, 502 for a response). The length is always fixed.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value as Json;

use super::{util, BuildCx, Exchange, Outcome, Policy, Step};
use crate::config::ConfigError;
use crate::expr::Template;
use crate::respond::{Layer, Problem};

/// `set-body: { value: "…", content_type: text/plain }` or
/// `set-body: { json: { set: { "/user": "{jwt.sub}" }, remove: ["/debug"] } }`
#[derive(Debug, Deserialize)]
pub struct SetBodyConfig {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub json: Option<JsonEditsConfig>,
    #[serde(default)]
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct JsonEditsConfig {
    #[serde(default)]
    pub set: BTreeMap<String, Json>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug)]
enum NewValue {
    Template(Template),
    Fixed(Json),
}

#[derive(Debug)]
enum Mode {
    Value(Template),
    Json { set: Vec<(Vec<String>, NewValue)>, remove: Vec<Vec<String>> },
}

#[derive(Debug)]
pub struct SetBody {
    mode: Mode,
    content_type: Option<HeaderValue>,
}

/// `/a/b~1c` (JSON pointer) or `a.b` (dotted) as segments.
fn segments(path: &str) -> Option<Vec<String>> {
    let segs: Vec<String> = match path.strip_prefix('/') {
        Some(p) => p.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect(),
        None => path.split('.').map(str::to_owned).collect(),
    };
    (!path.is_empty() && path != "/").then_some(segs)
}

impl SetBody {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: SetBodyConfig = cx.config()?;
        let mut errors = Vec::new();
        let content_type = cfg.content_type.as_deref().and_then(|c| {
            HeaderValue::from_str(c)
                .map_err(|_| errors.push(cx.error(&["content_type"], "not a valid header value")))
                .ok()
        });
        let mode = match (cfg.value, cfg.json) {
            (Some(v), None) => cx.template(&v, &["value"]).map(Mode::Value).map_err(|e| errors.push(e)).ok(),
            (None, Some(j)) => {
                let mut set = Vec::new();
                for (path, v) in j.set {
                    let at = ["json", "set", path.as_str()];
                    let Some(segs) = segments(&path) else {
                        errors.push(cx.error(&at, "name a field: `/a/b` or `a.b`"));
                        continue;
                    };
                    let value = match v {
                        Json::String(s) => match cx.template(&s, &at) {
                            Ok(t) => NewValue::Template(t),
                            Err(e) => {
                                errors.push(e);
                                continue;
                            }
                        },
                        other => NewValue::Fixed(other),
                    };
                    set.push((segs, value));
                }
                let mut remove = Vec::new();
                for (i, path) in j.remove.iter().enumerate() {
                    match segments(path) {
                        Some(s) => remove.push(s),
                        None => errors.push(util::item_error_at(
                            cx,
                            &["json", "remove"],
                            i,
                            "name a field: `/a/b` or `a.b`",
                        )),
                    }
                }
                if set.is_empty() && remove.is_empty() && errors.is_empty() {
                    errors.push(cx.error(&["json"], "give `set` and/or `remove`"));
                }
                Some(Mode::Json { set, remove })
            }
            _ => {
                errors.push(cx.error(&[], "give either `value` (a template) or `json` (field edits)"));
                None
            }
        };
        util::done(errors)?;
        Ok(SetBody { mode: mode.ok_or_else(Vec::new)?, content_type })
    }

    fn finish(&self, x: &mut Exchange, body: Bytes) {
        util::put_body(x, body);
        if let (Some(ct), Some(h)) = (&self.content_type, util::headers_mut(x)) {
            h.insert(CONTENT_TYPE, ct.clone());
        }
    }
}

/// Sets `path` in `root` to `v`, creating objects on the way (a scalar in the way is replaced).
pub fn set_at(root: &mut Json, path: &[String], v: Json) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = root;
    for seg in parents {
        if !cur.is_object() && !cur.is_array() {
            *cur = Json::Object(serde_json::Map::new());
        }
        cur = match cur {
            Json::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(next) => next,
                None => return,
            },
            Json::Object(m) => m.entry(seg.clone()).or_insert_with(|| Json::Object(serde_json::Map::new())),
            _ => return,
        };
    }
    if !cur.is_object() && !cur.is_array() {
        *cur = Json::Object(serde_json::Map::new());
    }
    match cur {
        Json::Object(m) => {
            m.insert(last.clone(), v);
        }
        Json::Array(a) if last == "-" => a.push(v),
        Json::Array(a) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *slot = v;
            }
        }
        _ => {}
    }
}

/// Removes `path` from `root` when it is there.
pub fn remove_at(root: &mut Json, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = root;
    for seg in parents {
        cur = match cur {
            Json::Object(m) => match m.get_mut(seg) {
                Some(n) => n,
                None => return,
            },
            Json::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(n) => n,
                None => return,
            },
            _ => return,
        };
    }
    match cur {
        Json::Object(m) => {
            m.remove(last);
        }
        Json::Array(a) => {
            if let Some(i) = last.parse::<usize>().ok().filter(|i| *i < a.len()) {
                a.remove(i);
            }
        }
        _ => {}
    }
}

impl Policy for SetBody {
    fn kind(&self) -> &'static str {
        "set-body"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        if x.stage.has_response() && x.response.is_none() {
            return Step::Ready(Outcome::Continue);
        }
        let (set, remove) = match &self.mode {
            Mode::Value(t) => {
                let body = Bytes::from(t.render(x).into_owned());
                self.finish(x, body);
                return Step::Ready(Outcome::Continue);
            }
            Mode::Json { set, remove } => (set, remove),
        };
        // Values are rendered before the body is read: templates read the exchange, not the body.
        let values: Vec<Json> = set
            .iter()
            .map(|(_, v)| match v {
                NewValue::Template(t) => Json::String(t.render(x).into_owned()),
                NewValue::Fixed(j) => j.clone(),
            })
            .collect();
        Step::Wait(Box::pin(async move {
            let body = match util::read_body(x).await {
                Ok(b) => b,
                Err(p) => return Outcome::Reject(Box::new(p)),
            };
            let mut doc: Json = if body.iter().all(u8::is_ascii_whitespace) {
                Json::Object(serde_json::Map::new())
            } else {
                match serde_json::from_slice(&body) {
                    Ok(d) => d,
                    Err(_) => {
                        let (status, whose) = if x.stage.has_response() {
                            (StatusCode::BAD_GATEWAY, "the backend's response")
                        } else {
                            (StatusCode::BAD_REQUEST, "the request")
                        };
                        let p =
                            Problem::new(status, "body-not-json", Layer::Policy, format!("{whose} body is not JSON"));
                        return Outcome::Reject(Box::new(p));
                    }
                }
            };
            for ((path, _), v) in set.iter().zip(values) {
                set_at(&mut doc, path, v);
            }
            for path in remove {
                remove_at(&mut doc, path);
            }
            let out = serde_json::to_vec(&doc).unwrap_or_default();
            self.finish(x, Bytes::from(out));
            Outcome::Continue
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::context::testing::*;
    use crate::policy::Stage;

    fn run_on(yaml: &str, stage: Stage, body: &'static str) -> (Outcome, Exchange) {
        let p = build_with(yaml, stage, SetBody::build).expect("builds");
        let mut x = exchange("/o?u=bob");
        x.stage = stage;
        if stage.has_response() {
            x.response =
                Some(http::Response::new(crate::body::ResponseBody::full(Bytes::from_static(body.as_bytes()))));
        } else {
            x.body = crate::body::UpstreamBody::full(Bytes::from_static(body.as_bytes()));
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        let o = rt.block_on(run_async(&p, &mut x));
        (o, x)
    }

    fn body(x: &mut Exchange) -> Json {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        let b = rt.block_on(util::read_body(x)).expect("body");
        serde_json::from_slice(&b).expect("json")
    }

    #[test]
    fn json_edits_set_and_remove() {
        let yaml = "{ json: { set: { '/user/id': '{request.query.u}', 'meta.n': 3, '/list/1': x, '/list/-': y }, \
                    remove: ['/secret', 'list.0'] } }";
        let (o, mut x) = run_on(yaml, Stage::Inbound, r#"{"secret":1,"keep":true,"list":[1,2]}"#);
        assert!(matches!(o, Outcome::Continue));
        assert_eq!(
            body(&mut x),
            json!({ "keep": true, "user": { "id": "bob" }, "meta": { "n": 3 }, "list": ["x", "y"] })
        );
        let len: usize = x.request.headers["content-length"].to_str().expect("ascii").parse().expect("n");
        assert_eq!(len, serde_json::to_vec(&body(&mut x)).expect("json").len());
    }

    #[test]
    fn value_replaces_the_response_body() {
        let yaml = "{ value: '{{\"method\": \"{request.method}\"}}', content_type: application/json }";
        let (o, mut x) = run_on(yaml, Stage::Outbound, "old");
        assert!(matches!(o, Outcome::Continue));
        assert_eq!(body(&mut x), json!({ "method": "GET" }));
        assert_eq!(x.response.as_ref().expect("r").headers()["content-type"], "application/json");
    }

    #[test]
    fn a_body_that_is_not_json_is_refused() {
        let (o, _) = run_on("{ json: { remove: [a] } }", Stage::Inbound, "not json");
        assert!(matches!(o, Outcome::Reject(p) if p.status == 400));
        let (o, _) = run_on("{ json: { remove: [a] } }", Stage::Outbound, "<html>");
        assert!(matches!(o, Outcome::Reject(p) if p.status == 502));
    }

    #[test]
    fn config_errors() {
        let e = build_with("{ value: x, json: { remove: [a] } }", Stage::Inbound, SetBody::build).expect_err("e");
        assert!(e.join("\n").contains("either `value`"));
        let e = build_with("{ json: { set: { '/a': '{bad}' } } }", Stage::Inbound, SetBody::build).expect_err("e");
        assert!(e.join("\n").contains("unknown name `bad`"), "{e:?}");
    }
}
