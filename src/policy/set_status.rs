//! `set-status`: change the status (and HTTP/1 reason phrase) of the response sent to the
//! client (APIM `<set-status>`). Only where there is a response: outbound and on-error.

use http::StatusCode;
use hyper::ext::ReasonPhrase;
use serde::Deserialize;

use super::{util, BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;

/// `set-status: { code: 404, reason: "Not Found" }`
#[derive(Debug, Deserialize)]
pub struct SetStatusConfig {
    pub code: u16,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct SetStatus {
    code: StatusCode,
    reason: Option<ReasonPhrase>,
}

impl SetStatus {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: SetStatusConfig = cx.config()?;
        let mut errors = Vec::new();
        if let Err(e) = util::only_in(cx, "set-status", &[Stage::Outbound, Stage::OnError]) {
            errors.push(e);
        }
        let code = util::status(cx, &["code"], cfg.code).map_err(|e| errors.push(e)).ok();
        if cfg.code < 200 {
            errors.push(cx.error(&["code"], "an informational status (1xx) cannot end a response"));
        }
        let reason = match &cfg.reason {
            None => None,
            Some(r) => match ReasonPhrase::try_from(r.as_bytes().to_vec()) {
                Ok(p) => Some(p),
                Err(_) => {
                    errors.push(cx.error(&["reason"], "a reason phrase is visible text on one line"));
                    None
                }
            },
        };
        util::done(errors)?;
        Ok(SetStatus { code: code.unwrap_or(StatusCode::OK), reason })
    }
}

impl Policy for SetStatus {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "set-status"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        if let Some(resp) = x.response.as_mut() {
            *resp.status_mut() = self.code;
            match &self.reason {
                Some(r) => {
                    resp.extensions_mut().insert(r.clone());
                }
                None => {
                    resp.extensions_mut().remove::<ReasonPhrase>();
                }
            }
        }
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    #[test]
    fn changes_status_and_reason() {
        let mut x = exchange("/orders/1");
        x.stage = Stage::Outbound;
        x.response = Some(http::Response::new(crate::body::ResponseBody::empty()));
        let p = build_with("{ code: 418, reason: Short and stout }", Stage::Outbound, SetStatus::build).expect("ok");
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        let resp = x.response.as_ref().expect("resp");
        assert_eq!(resp.status(), 418);
        assert_eq!(resp.extensions().get::<ReasonPhrase>().map(|r| r.as_bytes()), Some(&b"Short and stout"[..]));
    }

    #[test]
    fn config_errors() {
        let e = build_with("{ code: 99 }", Stage::Outbound, SetStatus::build).expect_err("err").join("\n");
        assert!(e.contains("p.code: 99 is not an HTTP status code"), "{e}");
        let e = build_with("{ code: 200 }", Stage::Inbound, SetStatus::build).expect_err("err").join("\n");
        assert!(e.contains("cannot run in `inbound`"), "{e}");
        let e = build_with("{ code: 200, reason: \"a\\nb\" }", Stage::Outbound, SetStatus::build).expect_err("e");
        assert!(e.join("\n").contains("reason phrase"));
    }
}
