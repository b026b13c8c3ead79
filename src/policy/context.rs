//! How expressions read a request: [`crate::expr::Context`] for [`Exchange`].
//!
//! Every [`Name`] maps to one field of the exchange. Values are borrowed wherever the exchange
//! holds them as text; only the client IP, a percent-decoded query parameter and rendered JWT
//! numbers are built per lookup.

use std::borrow::Cow;

use http::HeaderMap;

use super::Exchange;
use crate::expr::{Context, Name, Value};

impl Context for Exchange {
    fn lookup(&self, name: &Name) -> Option<Value<'_>> {
        match name {
            Name::Method => Some(self.request.method.as_str().into()),
            Name::Path => Some(self.path.as_str().into()),
            Name::Url => self.request.uri.path_and_query().map(|pq| pq.as_str().into()),
            Name::Host => match self.request.headers.get(http::header::HOST) {
                Some(h) => h.to_str().ok().map(Value::from),
                None => self.request.uri.authority().map(|a| a.as_str().into()),
            },
            Name::ClientIp => Some(self.client_ip.to_string().into()),
            Name::RequestId => self.request_id.to_str().ok().map(Value::from),
            Name::Header(h) => header(&self.request.headers, h),
            Name::Query(q) => query_param(self.request.uri.query()?, q).map(Value::Str),
            Name::Param(p) => self.param(p).map(Value::from),
            Name::Api => Some(self.route.api.name.as_str().into()),
            Name::Operation => self.route.operation.as_deref().map(Value::from),
            Name::Product => self.caller.as_ref()?.product.as_deref().map(Value::from),
            Name::SubscriptionId => self.caller.as_ref().map(|c| Value::from(&*c.subscription_id)),
            Name::SubscriptionName => self.caller.as_ref().map(|c| Value::from(&*c.subscription_name)),
            Name::JwtSub => {
                let jwt = self.jwt.as_deref()?;
                // A string `sub` was read at verification; any other form is looked up as before.
                match jwt.sub() {
                    Some(sub) => Some(Value::from(sub)),
                    None => crate::expr::claim(&jwt.claims, "sub"),
                }
            }
            Name::JwtClaim(c) => crate::expr::claim(&self.jwt.as_deref()?.claims, c),
            Name::Var(v) => self.var(v).map(Value::from),
            Name::ResponseStatus => self.response.as_ref().map(|r| Value::from(r.status().as_u16().to_string())),
            Name::ResponseHeader(h) => header(self.response.as_ref()?.headers(), h),
        }
    }
}

/// A header's value; a repeated header is a list. Values that are not text count as absent.
fn header<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> Option<Value<'a>> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?.to_str().ok()?;
    match all.next() {
        None => Some(first.into()),
        Some(second) => {
            let mut list = vec![Cow::Borrowed(first)];
            list.extend(second.to_str().ok().map(Cow::Borrowed));
            list.extend(all.filter_map(|v| v.to_str().ok()).map(Cow::Borrowed));
            Some(Value::List(list))
        }
    }
}

/// The first value of query parameter `name` (form-decoded: `+` is a space), borrowed when it
/// needs no decoding.
pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// Form-decodes one query component; undecodable bytes are kept as `U+FFFD`.
pub(crate) fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let plus = s.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&plus).decode_utf8_lossy().into_owned())
}

#[cfg(test)]
pub(crate) mod testing {
    //! An exchange for policy unit tests.

    use std::sync::Arc;

    use std::cell::RefCell;

    use super::super::{BuildCx, Chain, Exchange, Outcome, Policy, PolicyEnv, Stage, Step};
    use crate::config::{ConfigError, Document, PathSeg};
    use crate::route::{Api, Route};

    /// Builds a policy from its YAML value (`{ name: X, value: y }`) placed in `stage`, on a
    /// route with parameter `{id}` and variable `tier`; errors as `file:line:col: path: message`.
    pub fn build_with<P>(
        yaml: &str,
        stage: Stage,
        f: fn(&BuildCx<'_>) -> Result<P, Vec<ConfigError>>,
    ) -> Result<P, Vec<String>> {
        build_in(&format!("p: {yaml}\n"), &[PathSeg::Key("p".into())], stage, f)
    }

    /// Builds a policy whose value is at `path` in the document `doc`.
    pub fn build_in<P>(
        doc: &str,
        path: &[PathSeg],
        stage: Stage,
        f: fn(&BuildCx<'_>) -> Result<P, Vec<ConfigError>>,
    ) -> Result<P, Vec<String>> {
        let doc = Document::parse("t.yaml", doc).map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        let params = vec!["id".to_owned()];
        let vars = vec!["tier".to_owned()];
        let env = PolicyEnv::new();
        let cx = BuildCx {
            doc: &doc,
            path: path.to_vec(),
            stage,
            scope: "api:orders".into(),
            params: &params,
            vars: &vars,
            env: &env,
            pending: RefCell::new(Vec::new()),
        };
        let built = f(&cx);
        let mut pending: Vec<String> = cx.pending.take().iter().map(|e| e.to_string()).collect();
        match built {
            Ok(p) if pending.is_empty() => Ok(p),
            Ok(_) => Err(pending),
            Err(e) => {
                pending.extend(e.iter().map(|e| e.to_string()));
                Err(pending)
            }
        }
    }

    /// Runs a policy that must decide without waiting.
    pub fn run_ready(p: &dyn Policy, x: &mut Exchange) -> Outcome {
        match p.run(x) {
            Step::Ready(o) => o,
            Step::Wait(_) => panic!("{} waited", p.kind()),
        }
    }

    /// Runs a policy to its outcome, waiting if it must.
    pub async fn run_async(p: &dyn Policy, x: &mut Exchange) -> Outcome {
        match p.run(x) {
            Step::Ready(o) => o,
            Step::Wait(f) => f.await,
        }
    }

    /// A validated token's payload as `validate-jwt` hands it on.
    pub fn verified(claims: serde_json::Value) -> Arc<crate::identity::jwt::claims::Verified> {
        match claims {
            serde_json::Value::Object(map) => Arc::new(crate::identity::jwt::claims::Verified::new(map)),
            _ => panic!("test claims must be an object"),
        }
    }

    /// A GET of `uri` (path and query) on API `orders`, operation `get-order`, from 192.0.2.1.
    pub fn exchange(uri: &str) -> Exchange {
        let req = http::Request::builder().method("GET").uri(uri).body(()).expect("request");
        let (request, ()) = req.into_parts();
        let path = request.uri.path().to_owned();
        Exchange {
            request,
            path,
            client_ip: "192.0.2.1".parse().expect("ip"),
            request_id: http::HeaderValue::from_static("rid-1"),
            route: Arc::new(Route {
                api: Arc::new(Api {
                    name: "orders".into(),
                    prefix: "/orders".into(),
                    backend: Some("b".into()),
                    server_timing: false,
                }),
                operation: Some("get-order".into()),
                chain: Arc::new(Chain::default()),
                metrics: Default::default(),
            }),
            body_limit: 1 << 20,
            ..Exchange::blank()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::testing::{exchange, verified};
    use super::*;
    use crate::expr::{Names, Template};
    use crate::policy::Caller;

    fn render(x: &Exchange, src: &str) -> String {
        let params = vec!["id".to_owned()];
        let vars = vec!["tier".to_owned()];
        let t = Template::parse(src, &Names { params: &params, vars: &vars, response: true }).expect("template");
        t.render(x).into_owned()
    }

    #[test]
    fn every_name_reads_its_field() {
        let mut x = exchange("/orders/7?a=1&q=hello+w%C3%B6rld&a=2");
        x.request.headers.insert("host", "api.test".parse().expect("hv"));
        x.request.headers.append("x-tag", "one".parse().expect("hv"));
        x.request.headers.append("x-tag", "two".parse().expect("hv"));
        x.params.push((Arc::from("id"), "7".to_owned()));
        x.set_var(&Arc::from("tier"), "gold".to_owned());
        x.jwt = Some(verified(serde_json::json!({ "sub": "alice", "roles": ["a", "b"], "n": 3 })));
        x.caller = Some(Arc::new(Caller {
            subscription_id: "s1".into(),
            subscription_name: "Sub One".into(),
            product: Some("gold".into()),
        }));
        let mut resp = http::Response::new(crate::body::ResponseBody::empty());
        *resp.status_mut() = http::StatusCode::CREATED;
        resp.headers_mut().insert("etag", "\"v1\"".parse().expect("hv"));
        x.response = Some(resp);
        let cases = [
            ("{request.method}", "GET"),
            ("{request.path}", "/orders/7"),
            ("{request.url}", "/orders/7?a=1&q=hello+w%C3%B6rld&a=2"),
            ("{request.host}", "api.test"),
            ("{request.ip}", "192.0.2.1"),
            ("{request.id}", "rid-1"),
            ("{request.header.X-Tag}", "one,two"),
            ("{request.query.a}", "1"),
            ("{request.query.q}", "hello wörld"),
            ("{id}", "7"),
            ("{api.name}/{operation.id}", "orders/get-order"),
            ("{product.name}|{subscription.id}|{subscription.name}", "gold|s1|Sub One"),
            ("{jwt.sub} {jwt.claims.roles} {jwt.claims.n}", "alice a,b 3"),
            ("{var.tier}", "gold"),
            ("{response.status} {response.header.etag}", "201 \"v1\""),
        ];
        for (src, want) in cases {
            assert_eq!(render(&x, src), want, "{src}");
        }
    }

    #[test]
    fn absent_values_fall_back_to_defaults() {
        let x = exchange("/orders/7");
        assert_eq!(render(&x, "{jwt.sub ?? 'anon'}|{product.name ?? 'none'}|{request.query.a ?? '-'}"), "anon|none|-");
        assert_eq!(render(&x, "{response.status ?? 'no response'}"), "no response");
    }

    #[test]
    fn a_subject_that_is_not_a_string_reads_as_any_claim_does() {
        let mut x = exchange("/orders/7");
        for (claims, want) in [
            (serde_json::json!({ "sub": 42 }), "42"),
            (serde_json::json!({ "sub": ["a", "b"] }), "a,b"),
            (serde_json::json!({ "sub": null }), "anon"),
            (serde_json::json!({}), "anon"),
        ] {
            x.jwt = Some(verified(claims));
            assert_eq!(render(&x, "{jwt.sub ?? 'anon'}"), want);
            assert_eq!(render(&x, "{jwt.sub ?? 'anon'}"), render(&x, "{jwt.claims.sub ?? 'anon'}"));
        }
    }
}
