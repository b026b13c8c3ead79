//! `set-method`: change the request method sent to the backend (APIM `<set-method>`).

use http::Method;

use super::{util, BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;

/// `set-method: POST`
#[derive(Debug)]
pub struct SetMethod {
    method: Method,
}

impl SetMethod {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let name: String = cx.config()?;
        util::only_in(cx, "set-method", &[Stage::Inbound, Stage::Backend]).map_err(|e| vec![e])?;
        match Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
            Ok(m) if m != Method::CONNECT => Ok(SetMethod { method: m }),
            _ => Err(vec![cx.error(&[], format!("`{name}` is not an HTTP method the gateway can send"))]),
        }
    }
}

impl Policy for SetMethod {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "set-method"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        x.request.method = self.method.clone();
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    #[test]
    fn sets_the_method_inbound_only() {
        let mut x = exchange("/orders/1");
        let p = build_with("post", Stage::Inbound, SetMethod::build).expect("ok");
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert_eq!(x.request.method, Method::POST);
        let e = build_with("POST", Stage::Outbound, SetMethod::build).expect_err("err").join("\n");
        assert!(e.contains("cannot run in `outbound`"), "{e}");
        let e = build_with("'PO ST'", Stage::Inbound, SetMethod::build).expect_err("err").join("\n");
        assert!(e.contains("not an HTTP method"), "{e}");
    }
}
