//! `check-header`: require a request header, optionally with one of the allowed values (APIM
//! `<check-header>`); otherwise reject with the configured status and message. Values are
//! compared in constant time, since this policy is often used to check a shared key.

use http::header::HeaderName;
use http::StatusCode;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{util, BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;
use crate::respond::{Layer, Problem};

/// `check-header: { name: X-Api-Version, failed_check_httpcode: 400,
/// failed_check_error_message: "X-Api-Version must be 1 or 2", ignore_case: true, values: ["1", "2"] }`
#[derive(Debug, Deserialize)]
pub struct CheckHeaderConfig {
    pub name: String,
    pub failed_check_httpcode: u16,
    pub failed_check_error_message: String,
    #[serde(default)]
    pub ignore_case: bool,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug)]
pub struct CheckHeader {
    name: HeaderName,
    status: StatusCode,
    message: String,
    ignore_case: bool,
    /// Lowercased already when `ignore_case`.
    values: Vec<Vec<u8>>,
}

impl CheckHeader {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: CheckHeaderConfig = cx.config()?;
        let mut errors = Vec::new();
        if let Err(e) = util::only_in(cx, "check-header", &[Stage::Inbound]) {
            errors.push(e);
        }
        let name = HeaderName::from_bytes(cfg.name.as_bytes())
            .map_err(|_| errors.push(cx.error(&["name"], format!("`{}` is not a valid header name", cfg.name))))
            .ok();
        let status =
            util::status(cx, &["failed_check_httpcode"], cfg.failed_check_httpcode).map_err(|e| errors.push(e)).ok();
        if !(400..600).contains(&cfg.failed_check_httpcode) {
            errors.push(cx.error(&["failed_check_httpcode"], "a failed check answers with an error status (400–599)"));
        }
        util::done(errors)?;
        let values = cfg
            .values
            .iter()
            .map(|v| if cfg.ignore_case { v.to_ascii_lowercase() } else { v.clone() }.into_bytes())
            .collect();
        Ok(CheckHeader {
            name: name.ok_or_else(Vec::new)?,
            status: status.ok_or_else(Vec::new)?,
            message: cfg.failed_check_error_message,
            ignore_case: cfg.ignore_case,
            values,
        })
    }

    fn passes(&self, x: &Exchange) -> bool {
        let mut present = false;
        for v in x.request.headers.get_all(&self.name) {
            present = true;
            if self.values.is_empty() {
                return true;
            }
            let lowered;
            let got = if self.ignore_case {
                lowered = v.as_bytes().to_ascii_lowercase();
                &lowered[..]
            } else {
                v.as_bytes()
            };
            // Every allowed value is compared, so the time taken does not say which one matched.
            let mut ok = subtle::Choice::from(0);
            for allowed in &self.values {
                ok |= got.ct_eq(allowed);
            }
            if bool::from(ok) {
                return true;
            }
        }
        present && self.values.is_empty()
    }
}

impl Policy for CheckHeader {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "check-header"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        if self.passes(x) {
            return Step::Ready(Outcome::Continue);
        }
        let p = Problem::new(self.status, "header-check-failed", Layer::Policy, self.message.clone());
        Step::Ready(Outcome::Reject(Box::new(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    fn build(yaml: &str) -> CheckHeader {
        build_with(yaml, Stage::Inbound, CheckHeader::build).expect("builds")
    }

    fn status(p: &CheckHeader, value: Option<&str>) -> Option<u16> {
        let mut x = exchange("/orders/1");
        if let Some(v) = value {
            x.request.headers.insert("x-v", v.parse().expect("hv"));
        }
        match run_ready(p, &mut x) {
            Outcome::Continue => None,
            Outcome::Reject(p) => {
                assert_eq!(p.detail, "bad version");
                Some(p.status.as_u16())
            }
            Outcome::Respond(_) => panic!("answered"),
        }
    }

    #[test]
    fn presence_and_values() {
        let base = "name: X-V, failed_check_httpcode: 401, failed_check_error_message: bad version";
        let present = build(&format!("{{ {base} }}"));
        assert_eq!(status(&present, Some("anything")), None);
        assert_eq!(status(&present, None), Some(401));
        let exact = build(&format!("{{ {base}, values: [v1, v2] }}"));
        assert_eq!(status(&exact, Some("v2")), None);
        assert_eq!(status(&exact, Some("V2")), Some(401));
        let folded = build(&format!("{{ {base}, values: [v1, V2], ignore_case: true }}"));
        assert_eq!(status(&folded, Some("v2")), None);
        assert_eq!(status(&folded, Some("v3")), Some(401));
    }

    #[test]
    fn config_errors() {
        let e = build_with(
            "{ name: X-V, failed_check_httpcode: 200, failed_check_error_message: m }",
            Stage::Inbound,
            CheckHeader::build,
        )
        .expect_err("err");
        assert!(e.join("\n").contains("p.failed_check_httpcode: a failed check answers with an error status"));
    }
}
