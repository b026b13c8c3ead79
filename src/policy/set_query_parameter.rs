//! `set-query-parameter`: add, replace, keep or remove a query parameter of the request sent to
//! the backend (APIM `<set-query-parameter>`). After a `rewrite-uri` it edits the rewritten
//! target's query. Values are templates; names and values are percent-encoded as written.

use serde::Deserialize;

use super::context::decode;
use super::set_header::ExistsAction;
use super::{util, BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;
use crate::expr::Template;

/// `set-query-parameter: { name: api-version, exists_action: skip, value: "2024-01-01" }`;
/// `values: [a, b]` repeats the parameter.
#[derive(Debug, Deserialize)]
pub struct SetQueryParameterConfig {
    pub name: String,
    #[serde(default)]
    pub exists_action: ExistsAction,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug)]
pub struct SetQueryParameter {
    name: String,
    encoded_name: String,
    action: ExistsAction,
    values: Vec<Template>,
}

impl SetQueryParameter {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: SetQueryParameterConfig = cx.config()?;
        let mut errors = Vec::new();
        if let Err(e) = util::only_in(cx, "set-query-parameter", &[Stage::Inbound, Stage::Backend]) {
            errors.push(e);
        }
        if cfg.name.is_empty() {
            errors.push(cx.error(&["name"], "the parameter needs a name"));
        }
        let mut values = Vec::new();
        if let Some(v) = &cfg.value {
            cx.template(v, &["value"]).map(|t| values.push(t)).unwrap_or_else(|e| errors.push(e));
        }
        for (i, v) in cfg.values.iter().enumerate() {
            let at = [crate::config::PathSeg::Key("values".into()), crate::config::PathSeg::Index(i)];
            match crate::expr::Template::parse(cx.template_source(v, &at), &cx.names()) {
                Ok(t) => values.push(t),
                Err(e) => errors.push(util::item_error(cx, "values", i, e)),
            }
        }
        if cfg.value.is_some() && !cfg.values.is_empty() {
            errors.push(cx.error(&["values"], "give either `value` or `values`, not both"));
        }
        let wants_values = cfg.exists_action != ExistsAction::Delete;
        if wants_values && cfg.value.is_none() && cfg.values.is_empty() {
            errors.push(cx.error(&[], "`value` (or `values`) is required"));
        }
        if !wants_values && (cfg.value.is_some() || !cfg.values.is_empty()) {
            errors.push(cx.error(&["exists_action"], "`delete` removes the parameter and takes no value"));
        }
        util::done(errors)?;
        let encoded_name = util::encode(&cfg.name).into_owned();
        Ok(SetQueryParameter { name: cfg.name, encoded_name, action: cfg.exists_action, values })
    }

    /// The new query, or `None` when nothing changes.
    fn edit(&self, query: Option<&str>, x: &Exchange) -> Option<String> {
        let query = query.unwrap_or("");
        let is_ours = |pair: &&str| decode(pair.split_once('=').map_or(*pair, |(k, _)| k)) == self.name.as_str();
        let exists = query.split('&').any(|p| is_ours(&p));
        let keep_existing = match self.action {
            ExistsAction::Skip if exists => return None,
            ExistsAction::Delete if !exists => return None,
            ExistsAction::Append | ExistsAction::Skip => true,
            ExistsAction::Override | ExistsAction::Delete => false,
        };
        let mut out = String::with_capacity(query.len() + 32);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            if keep_existing || !is_ours(&pair) {
                if !out.is_empty() {
                    out.push('&');
                }
                out.push_str(pair);
            }
        }
        for t in &self.values {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&self.encoded_name);
            out.push('=');
            out.push_str(&util::encode(&t.render(x)));
        }
        Some(out)
    }
}

impl Policy for SetQueryParameter {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "set-query-parameter"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        if let Some(target) = &x.backend.target {
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target.as_str(), None),
            };
            if let Some(q) = self.edit(query, x) {
                let t = if q.is_empty() { path.to_owned() } else { format!("{path}?{q}") };
                x.backend.target = Some(t);
            }
        } else if let Some(q) = self.edit(x.request.uri.query(), x) {
            if let Some(uri) = util::with_query(&x.request.uri, Some(&q)) {
                x.request.uri = uri;
            }
        }
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    fn apply(yaml: &str, uri: &str) -> String {
        let p = build_with(yaml, Stage::Inbound, SetQueryParameter::build).expect("builds");
        let mut x = exchange(uri);
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        x.request.uri.to_string()
    }

    #[test]
    fn actions_follow_apim() {
        assert_eq!(apply("{ name: v, value: '2' }", "/o?a=1&v=1&v=3"), "/o?a=1&v=2");
        assert_eq!(apply("{ name: v, value: '2' }", "/o"), "/o?v=2");
        assert_eq!(apply("{ name: v, value: '2', exists_action: skip }", "/o?v=1"), "/o?v=1");
        assert_eq!(apply("{ name: v, value: '2', exists_action: skip }", "/o?a=1"), "/o?a=1&v=2");
        assert_eq!(apply("{ name: v, value: '2', exists_action: append }", "/o?v=1"), "/o?v=1&v=2");
        assert_eq!(apply("{ name: v, exists_action: delete }", "/o?v=1&a=b"), "/o?a=b");
        assert_eq!(apply("{ name: v, exists_action: delete }", "/o?v=1"), "/o");
    }

    #[test]
    fn values_are_encoded_templates() {
        assert_eq!(
            apply("{ name: 'who am', value: '{request.header.x-none ?? \"a&b=c d\"}' }", "/o"),
            "/o?who%20am=a%26b%3Dc%20d"
        );
        assert_eq!(apply("{ name: id, values: ['{request.method}', x] }", "/o"), "/o?id=GET&id=x");
    }

    #[test]
    fn edits_a_rewritten_target() {
        let p = build_with("{ name: v, value: '2' }", Stage::Inbound, SetQueryParameter::build).expect("builds");
        let mut x = exchange("/o?v=1");
        x.backend.target = Some("/new?v=9&k=1".into());
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert_eq!(x.backend.target.as_deref(), Some("/new?k=1&v=2"));
    }
}
