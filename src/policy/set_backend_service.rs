//! `set-backend-service`: send the request to another configured backend (APIM
//! `<set-backend-service backend-id=…>`). The name is checked against `backends:` when the
//! config compiles; APIM's `base-url` form is not offered (a backend is always a configured pool
//! with its health checks, timeouts and TLS settings).

use std::sync::Arc;

use serde::Deserialize;

use super::{util, BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::{ConfigError, PathSeg};

/// `set-backend-service: { backend_id: orders-v2 }`
#[derive(Debug, Deserialize)]
pub struct SetBackendServiceConfig {
    pub backend_id: String,
}

#[derive(Debug)]
pub struct SetBackendService {
    backend: Arc<str>,
}

impl SetBackendService {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: SetBackendServiceConfig = cx.config()?;
        util::only_in(cx, "set-backend-service", &[Stage::Inbound, Stage::Backend]).map_err(|e| vec![e])?;
        let known: Vec<String> =
            cx.doc.map_entries(&[PathSeg::Key("backends".into())]).into_iter().map(|(k, _)| k).collect();
        if !known.contains(&cfg.backend_id) {
            let list = if known.is_empty() { "none are configured".to_owned() } else { known.join(", ") };
            return Err(vec![cx.error(
                &["backend_id"],
                format!("`{}` is not a backend in `backends` (known: {list})", cfg.backend_id),
            )]);
        }
        Ok(SetBackendService { backend: Arc::from(cfg.backend_id) })
    }
}

impl Policy for SetBackendService {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "set-backend-service"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        x.backend.service = Some(self.backend.clone());
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    const DOC: &str = "backends:\n  v1: {}\n  v2: {}\np: { backend_id: v2 }\nq: { backend_id: v3 }\n";

    #[test]
    fn names_a_configured_backend() {
        let p = build_in(DOC, &[PathSeg::Key("p".into())], Stage::Inbound, SetBackendService::build).expect("ok");
        let mut x = exchange("/orders/1");
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert_eq!(x.backend.service.as_deref(), Some("v2"));
        let e = build_in(DOC, &[PathSeg::Key("q".into())], Stage::Inbound, SetBackendService::build).expect_err("e");
        assert!(e.join("\n").contains("t.yaml:5:"), "{e:?}");
        assert!(e.join("\n").contains("`v3` is not a backend in `backends` (known: v1, v2)"), "{e:?}");
    }
}
