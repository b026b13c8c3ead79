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
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
        // Node starting the provider can take a while on a loaded 2-core machine.
        let line = rx.recv_timeout(Duration::from_secs(90)).expect("the OpenID provider did not start");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("provider said {line:?}: {e}"));
        let s = |k: &str| v[k].as_str().expect("url").to_owned();
        Idp { issuer: s("issuer"), other_issuer: s("other_issuer"), admin: s("admin"), child, _stdin: stdin }
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
