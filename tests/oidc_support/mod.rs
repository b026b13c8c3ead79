//! The real OpenID provider for tests: panva/oidc-provider in `tests/oidc` (installed by
//! `.ci/setup-oidc.sh`), started per test on loopback by PID and killed when dropped. It issues
//! JWT access tokens for client_credentials through resource indicators; an admin endpoint rotates
//! and withdraws keys and simulates outages.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

use crate::support::{client, get, send};

pub const CLIENT_ID: &str = "gatehouse-test";
pub const CLIENT_SECRET: &str = "gatehouse-test-secret-0123456789";

/// A running oidc-provider; killed (by its PID) when dropped.
pub struct Idp {
    child: Child,
    _stdin: ChildStdin,
    pub issuer: String,
    pub other_issuer: String,
    pub admin: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Idp {
    /// Stops the provider (by its PID): an outage for the gateways using it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn start() -> Idp {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the OpenID provider is not installed: run .ci/setup-oidc.sh (npm ci in tests/oidc)"
        );
        // Node starting the provider takes a second or two, and much longer on a loaded 2-core
        // machine; once in a few hundred starts it printed nothing for 90 s. Such a start is
        // killed (by PID) and made again, with what the provider wrote to stderr reported.
        let mut failures = Vec::new();
        for _ in 0..2 {
            match Self::try_start(&dir, Duration::from_secs(90)) {
                Ok(idp) => return idp,
                Err(e) => {
                    eprintln!("the OpenID provider did not start: {e}");
                    failures.push(e);
                }
            }
        }
        panic!("the OpenID provider did not start: {}", failures.join("; "));
    }

    fn try_start(dir: &std::path::Path, wait: Duration) -> Result<Idp, String> {
        let stderr_path = std::env::temp_dir().join(format!(
            "gatehouse-oidc-{}-{}.stderr",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ));
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("node must be installed to run the OpenID provider (.ci/setup-oidc.sh)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the provider never blocks on a full pipe.
            let _ = std::io::copy(&mut reader.take(u64::MAX), &mut std::io::sink());
        });
        let said = rx.recv_timeout(wait);
        let v: Option<Value> = said.as_ref().ok().and_then(|line| serde_json::from_str(line).ok());
        let Some(v) = v else {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let _ = std::fs::remove_file(&stderr_path);
            return Err(match said {
                Ok(line) => format!("it said {line:?}; stderr: {err:?}"),
                Err(_) => format!("nothing within {wait:?}; stderr: {err:?}"),
            });
        };
        let _ = std::fs::remove_file(&stderr_path);
        let s = |k: &str| v[k].as_str().expect("url").to_owned();
        Ok(Idp { issuer: s("issuer"), other_issuer: s("other_issuer"), admin: s("admin"), child, _stdin: stdin })
    }

    pub fn discovery(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// A client_credentials token for `resource` from `issuer`.
    pub async fn token_from(&self, issuer: &str, resource: &str, scope: &str) -> String {
        let form = format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&resource={resource}&scope={scope}"
        );
        let req = Request::post(format!("{issuer}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.replace(' ', "%20"))))
            .expect("req");
        let got = send(&client(), req).await;
        assert_eq!(got.status, 200, "token endpoint: {}", got.text());
        got.json()["access_token"].as_str().expect("access_token").to_owned()
    }

    pub async fn token(&self, resource: &str, scope: &str) -> String {
        self.token_from(&self.issuer, resource, scope).await
    }

    pub async fn admin(&self, method: &str, path: &str) -> Value {
        let req =
            Request::builder().method(method).uri(format!("{}{path}", self.admin)).body(Full::default()).expect("req");
        send(&client(), req).await.json()
    }

    pub async fn jwks_hits(&self) -> u64 {
        self.admin("GET", "/stats").await["jwks_hits"].as_u64().expect("hits")
    }

    /// The provider's published JWKS.
    pub async fn jwks(&self) -> Value {
        get(&format!("{}/jwks", self.issuer)).await.json()
    }
}
