//! `set-header`: add, replace, keep or remove a header (APIM `<set-header>`).
//!
//! Inbound and backend change the request sent to the backend; outbound and on-error change the
//! response sent to the client. Values are templates; a static value is turned into a
//! `HeaderValue` once, when the config compiles.

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use serde::Deserialize;

use super::util::{self, done};
use super::{BuildCx, Exchange, Outcome, Policy, Step};
use crate::config::{ConfigError, PathSeg};
use crate::expr::Template;
use crate::respond::{Layer, Problem};

/// `set-header: { name: X-User, exists_action: override, value: "{jwt.sub}" }`; `values: [a, b]`
/// sets several values (repeated fields, as APIM does for `Set-Cookie` and friends, otherwise
/// joined with a comma).
#[derive(Debug, Deserialize)]
pub struct SetHeaderConfig {
    pub name: String,
    #[serde(default)]
    pub exists_action: ExistsAction,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
}

/// APIM `exists-action`: what to do when the header is already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistsAction {
    /// Replace whatever is there.
    #[default]
    Override,
    /// Leave an existing header alone; set it only when absent.
    Skip,
    /// Add the values after the existing ones.
    Append,
    /// Remove the header.
    Delete,
}

#[derive(Debug)]
enum Val {
    Fixed(HeaderValue),
    Template(Template),
}

#[derive(Debug)]
pub struct SetHeader {
    name: HeaderName,
    action: ExistsAction,
    values: Vec<Val>,
    /// Several values become one comma-joined field unless the field may not be joined.
    separate: bool,
}

/// Fields whose values contain commas or dates, so several values stay separate fields (APIM).
const NOT_JOINED: &[&str] = &[
    "set-cookie",
    "cookie",
    "user-agent",
    "www-authenticate",
    "proxy-authenticate",
    "warning",
    "date",
    "expires",
    "if-modified-since",
    "if-unmodified-since",
    "last-modified",
    "retry-after",
];

impl SetHeader {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: SetHeaderConfig = cx.config()?;
        let mut errors = Vec::new();
        let name = match util::header_name(cx, &["name"], &cfg.name) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let mut sources: Vec<(&str, Option<usize>)> = Vec::new();
        if let Some(v) = &cfg.value {
            sources.push((v, None));
        }
        for (i, v) in cfg.values.iter().enumerate() {
            sources.push((v, Some(i)));
        }
        if cfg.value.is_some() && !cfg.values.is_empty() {
            errors.push(cx.error(&["values"], "give either `value` or `values`, not both"));
        }
        match cfg.exists_action {
            ExistsAction::Delete if !sources.is_empty() => {
                errors.push(cx.error(&["exists_action"], "`delete` removes the header and takes no value"))
            }
            ExistsAction::Delete => {}
            _ if sources.is_empty() => errors.push(cx.error(&[], "`value` (or `values`) is required")),
            _ => {}
        }
        let mut values = Vec::new();
        for (src, index) in sources {
            let err = |msg: String| match index {
                None => cx.error(&["value"], msg),
                Some(i) => util::item_error(cx, "values", i, msg),
            };
            let at = match index {
                None => vec![PathSeg::Key("value".into())],
                Some(i) => vec![PathSeg::Key("values".into()), PathSeg::Index(i)],
            };
            match crate::expr::Template::parse(cx.template_source(src, &at), &cx.names()) {
                Ok(t) if t.is_static() => match HeaderValue::from_bytes(t.render(&NoNames).as_bytes()) {
                    Ok(v) => values.push(Val::Fixed(v)),
                    Err(_) => errors.push(err("the value contains characters not allowed in a header".into())),
                },
                Ok(t) => values.push(Val::Template(t)),
                Err(e) => errors.push(err(e)),
            }
        }
        done(errors)?;
        let name = name.ok_or_else(Vec::new)?;
        let separate = NOT_JOINED.contains(&name.as_str());
        Ok(SetHeader { name, action: cfg.exists_action, values, separate })
    }

    /// The values for this request: one field, or one per value for fields that are not joined.
    /// One value, rendered.
    fn one(&self, v: &Val, x: &Exchange) -> Result<HeaderValue, Box<Problem>> {
        match v {
            Val::Fixed(v) => Ok(v.clone()),
            Val::Template(t) => HeaderValue::from_bytes(t.render(x).as_bytes()).map_err(|_| {
                Box::new(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-header-value",
                    Layer::Policy,
                    format!("the value computed for `{}` is not a valid header value", self.name),
                ))
            }),
        }
    }

    fn render(&self, x: &Exchange) -> Result<Vec<HeaderValue>, Box<Problem>> {
        let one = |v: &Val| self.one(v, x);
        if self.values.len() == 1 || self.separate {
            return self.values.iter().map(one).collect();
        }
        let mut joined = Vec::new();
        for (i, v) in self.values.iter().enumerate() {
            if i > 0 {
                joined.push(b',');
            }
            joined.extend_from_slice(one(v)?.as_bytes());
        }
        let v = HeaderValue::from_bytes(&joined).map_err(|_| {
            Box::new(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-header-value",
                Layer::Policy,
                "invalid header value",
            ))
        })?;
        Ok(vec![v])
    }
}

/// A context with no values, for rendering static templates at compile time.
struct NoNames;

impl crate::expr::Context for NoNames {
    fn lookup(&self, _: &crate::expr::Name) -> Option<crate::expr::Value<'_>> {
        None
    }
}

impl Policy for SetHeader {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "set-header"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        if self.action == ExistsAction::Delete {
            if let Some(h) = util::headers_mut(x) {
                h.remove(&self.name);
            }
            return Step::Ready(Outcome::Continue);
        }
        // Only `skip` asks whether the field is there (a lookup per request otherwise).
        if self.action == ExistsAction::Skip && util::headers_mut(x).is_some_and(|h| h.contains_key(&self.name)) {
            return Step::Ready(Outcome::Continue);
        }
        if let [only] = self.values.as_slice() {
            // The common case: one value, no list to build.
            let v = match self.one(only, x) {
                Ok(v) => v,
                Err(p) => return Step::Ready(Outcome::Reject(p)),
            };
            if let Some(h) = util::headers_mut(x) {
                if self.action == ExistsAction::Append {
                    h.append(self.name.clone(), v);
                } else {
                    h.insert(self.name.clone(), v);
                }
            }
            return Step::Ready(Outcome::Continue);
        }
        let values = match self.render(x) {
            Ok(v) => v,
            Err(p) => return Step::Ready(Outcome::Reject(p)),
        };
        let Some(h) = util::headers_mut(x) else { return Step::Ready(Outcome::Continue) };
        if self.action != ExistsAction::Append {
            h.remove(&self.name);
        }
        for v in values {
            h.append(self.name.clone(), v);
        }
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    fn build(yaml: &str) -> Result<SetHeader, Vec<String>> {
        build_with(yaml, super::super::Stage::Inbound, SetHeader::build)
    }

    fn run(p: &SetHeader, x: &mut Exchange) {
        assert!(matches!(run_ready(p, x), Outcome::Continue));
    }

    #[test]
    fn actions_follow_apim() {
        let mut x = exchange("/orders/1");
        x.request.headers.insert("x-a", HeaderValue::from_static("old"));
        run(&build("{ name: X-A, value: new }").expect("ok"), &mut x);
        assert_eq!(x.request.headers.get_all("x-a").iter().collect::<Vec<_>>(), ["new"]);
        run(&build("{ name: X-A, value: skipped, exists_action: skip }").expect("ok"), &mut x);
        assert_eq!(x.request.headers["x-a"], "new");
        run(&build("{ name: X-B, value: set, exists_action: skip }").expect("ok"), &mut x);
        assert_eq!(x.request.headers["x-b"], "set");
        run(&build("{ name: X-A, value: more, exists_action: append }").expect("ok"), &mut x);
        assert_eq!(x.request.headers.get_all("x-a").iter().collect::<Vec<_>>(), ["new", "more"]);
        run(&build("{ name: X-A, exists_action: delete }").expect("ok"), &mut x);
        assert!(x.request.headers.get("x-a").is_none());
    }

    #[test]
    fn values_are_templates_and_join_unless_the_field_cannot() {
        let mut x = exchange("/orders/1?user=bob");
        run(&build("{ name: X-User, values: [ 'u-{request.query.user}', static ] }").expect("ok"), &mut x);
        assert_eq!(x.request.headers["x-user"], "u-bob,static");
        run(&build("{ name: Set-Cookie, values: [ 'a=1', 'b=2' ] }").expect("ok"), &mut x);
        assert_eq!(x.request.headers.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn outbound_changes_the_response() {
        let mut x = exchange("/orders/1");
        x.stage = super::super::Stage::Outbound;
        x.response = Some(http::Response::new(crate::body::ResponseBody::empty()));
        let p = build_with("{ name: X-Status, value: '{response.status}' }", x.stage, SetHeader::build).expect("ok");
        run(&p, &mut x);
        assert_eq!(x.response.as_ref().expect("resp").headers()["x-status"], "200");
        assert!(x.request.headers.get("x-status").is_none());
    }

    #[test]
    fn bad_values_are_refused() {
        let mut x = exchange("/orders/1?v=a%0Ab");
        let p = build("{ name: X-V, value: '{request.query.v}' }").expect("ok");
        assert!(matches!(run_ready(&p, &mut x), Outcome::Reject(p) if p.status == 400));
        let errs = |y| build(y).err().unwrap_or_default().join("\n");
        assert!(errs("{ name: Content-Length, value: '1' }").contains("framing"));
        assert!(errs("{ name: 'bad name', value: '1' }").contains("not a valid header name"));
        assert!(errs("{ name: X-A, exists_action: delete, value: x }").contains("takes no value"));
        assert!(errs("{ name: X-A }").contains("required"));
        assert!(errs("{ name: X-A, value: '{var.nope}' }").contains("not set by any set-variable"));
        assert!(errs("{ name: X-A, value: x, exists_action: replace }").contains("exists_action"));
    }
}
