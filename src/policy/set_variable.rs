//! `set-variable`: remember a value for later policies (APIM `<set-variable>`), read as
//! `{var.NAME}` in templates and conditions.

use std::sync::Arc;

use serde::Deserialize;

use super::{BuildCx, Exchange, Outcome, Policy, Step};
use crate::config::ConfigError;
use crate::expr::Template;

/// `set-variable: { name: tier, value: "{jwt.claims.tier ?? 'free'}" }`
#[derive(Debug, Deserialize)]
pub struct SetVariableConfig {
    pub name: String,
    pub value: String,
}

#[derive(Debug)]
pub struct SetVariable {
    name: Arc<str>,
    value: Template,
}

impl SetVariable {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: SetVariableConfig = cx.config()?;
        let mut errors = Vec::new();
        let ok_name =
            !cfg.name.is_empty() && cfg.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok_name {
            errors.push(cx.error(&["name"], "a variable name is letters, digits, `_` and `-`"));
        }
        let value = cx.template(&cfg.value, &["value"]).map_err(|e| errors.push(e)).ok();
        super::util::done(errors)?;
        Ok(SetVariable { name: Arc::from(cfg.name), value: value.ok_or_else(Vec::new)? })
    }
}

impl Policy for SetVariable {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "set-variable"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let v = self.value.render(x).into_owned();
        x.set_var(&self.name, v);
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Names;
    use crate::policy::context::testing::*;
    use crate::policy::Stage;

    #[test]
    fn sets_and_overwrites_a_variable() {
        let mut x = exchange("/orders/1?t=gold");
        let p =
            build_with("{ name: tier, value: '{request.query.t ?? \"free\"}' }", Stage::Inbound, SetVariable::build)
                .expect("ok");
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert_eq!(x.var("tier"), Some("gold"));
        let p = build_with("{ name: tier, value: 'x-{var.tier}' }", Stage::Inbound, SetVariable::build).expect("ok");
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert_eq!(x.var("tier"), Some("x-gold"));
        let vars = vec!["tier".to_owned()];
        let t = crate::expr::Template::parse("{var.tier}", &Names { params: &[], vars: &vars, response: false })
            .expect("template");
        assert_eq!(t.render(&x), "x-gold");
    }

    #[test]
    fn bad_names_and_templates_are_config_errors() {
        let e = build_with("{ name: 'a b', value: '{nope}' }", Stage::Inbound, SetVariable::build).expect_err("err");
        let all = e.join("\n");
        assert!(all.contains("p.name: a variable name"), "{all}");
        assert!(all.contains("p.value: unknown name `nope`"), "{all}");
    }
}
