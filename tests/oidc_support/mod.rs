//! The real OpenID provider for tests: panva/oidc-provider in `tests/oidc` (installed by
//! `.ci/setup-oidc.sh`), started per test on loopback by PID and killed when dropped. It issues
//! JWT access tokens for client_credentials through resource indicators; an admin endpoint rotates
//! and withdraws keys and simulates outages.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
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
        let (child, stdin, v) = start_node("the OpenID provider", |c| {
            c.arg("server.js").current_dir(&dir);
        });
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

/// Starts a Node.js service (`configure` adds the script, directory and environment) and returns
/// it with its stdin (the service exits when stdin closes) and the JSON line it prints once
/// listening.
///
/// Node usually starts in a second or two, longer on a loaded 2-core machine; but once in a few
/// hundred starts it has printed nothing at all for minutes, twice in a row in one CI run. A start
/// that says nothing within 40 s is killed (by PID) and made again, three times in all; each
/// failure reports what the process was doing (its state, CPU time and threads from /proc) and
/// what it wrote to stderr, so the next occurrence says where it hung.
pub fn start_node(label: &str, configure: impl Fn(&mut Command)) -> (Child, ChildStdin, Value) {
    let mut failures = Vec::new();
    for attempt in 1..=3 {
        let mut command = Command::new("node");
        configure(&mut command);
        match try_start_node(command, Duration::from_secs(40)) {
            Ok(started) => return started,
            Err(e) => {
                eprintln!("{label} did not start (attempt {attempt}): {e}");
                failures.push(e);
            }
        }
    }
    panic!("{label} did not start: {}", failures.join("; "));
}

fn try_start_node(mut command: Command, wait: Duration) -> Result<(Child, ChildStdin, Value), String> {
    let stderr_path = std::env::temp_dir().join(format!(
        "gatehouse-node-{}-{}.stderr",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    let started = std::time::Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("node must be installed to run the test identity providers (.ci/setup-oidc.sh)");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the service never blocks on a full pipe.
        let _ = std::io::copy(&mut reader.take(u64::MAX), &mut std::io::sink());
    });
    let said = rx.recv_timeout(wait);
    let v: Option<Value> = said.as_ref().ok().and_then(|line| serde_json::from_str(line).ok());
    if let Some(v) = v {
        let _ = std::fs::remove_file(&stderr_path);
        return Ok((child, stdin, v));
    }
    let process = describe_process(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    Err(match said {
        Ok(line) => format!("it said {line:?} after {:?}; stderr: {err:?}", started.elapsed()),
        Err(_) => format!("nothing within {wait:?}; process: {process}; stderr: {err:?}"),
    })
}

/// What a process is doing, from /proc: its state, the CPU time it used, and each thread's state
/// and kernel wait channel — enough to tell a busy loop from a wait, and on what.
fn describe_process(pid: u32) -> String {
    let stat = |path: &Path| -> Option<(String, String, u64)> {
        let text = std::fs::read_to_string(path).ok()?;
        // The command name is in parentheses and may hold spaces; the fields follow the last ')'.
        let (name, rest) = text.rsplit_once(')')?;
        let name = name.split_once('(').map_or("", |(_, n)| n).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some((name, (*fields.first()?).to_owned(), ticks))
    };
    let root = Path::new("/proc").join(pid.to_string());
    let Some((_, state, ticks)) = stat(&root.join("stat")) else {
        return "gone".to_owned();
    };
    let mut threads = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(root.join("task")) {
        for task in tasks.flatten() {
            let path = task.path();
            if let Some((name, state, ticks)) = stat(&path.join("stat")) {
                let wchan = std::fs::read_to_string(path.join("wchan")).unwrap_or_default();
                threads.push(format!("{name} {state} {ticks}t {wchan}"));
            }
        }
    }
    format!("state {state}, {ticks} CPU ticks; threads: [{}]", threads.join(", "))
}
