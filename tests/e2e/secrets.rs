//! Secrets: named values and mounted-secret files reach the config, rotation of a secret file
//! takes effect without a restart (the real binary's watch loop), and no resolved value shows up
//! in config errors, admin API answers or the gateway's own log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::*;

const OLD: &str = "old-admin-token-6f1d9c0b7e";
const NEW: &str = "new-admin-token-a83e55d210";

/// Replaces a file the way a secret mount or a careful operator does: write aside, rename over.
fn put(dir: &Path, name: &str, value: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, value).expect("write secret");
    std::fs::rename(&tmp, dir.join(name)).expect("rename secret");
}

async fn admin_reload(addr: SocketAddr, token: &str) -> Got {
    let req = Request::post(format!("http://{addr}/reload"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::<Bytes>::default())
        .expect("request");
    send(&client(), req).await
}

/// A running `gatehouse run`, killed by PID when dropped; stderr is collected.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn run(config: &Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["run", "-c"])
            .arg(config)
            .env("GATEHOUSE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse");
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let lines = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        });
        Proc { child, stderr }
    }

    fn text(&self) -> String {
        self.stderr.lock().expect("lines").join("\n")
    }

    async fn admin_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.stderr.lock().expect("lines").iter().find(|l| l.contains("Admin API listening.")).cloned();
            if let Some(line) = found {
                return line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("no addr= in {line:?}"));
            }
            assert!(Instant::now() < deadline, "no admin listener; stderr:\n{}", self.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `POST /reload` with `token` until it is accepted (bounded).
async fn until_accepted(addr: SocketAddr, token: &str, p: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_reload(addr, token).await.status != 200 {
        assert!(Instant::now() < deadline, "the rotated token was never accepted; stderr:\n{}", p.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rotated_admin_token_file_takes_effect_without_restart() {
    let b = backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    put(&secrets, "admin-token", &format!("{OLD}\n"));
    let config = dir.path().join("gatehouse.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
admin: {{ bind: "127.0.0.1:0", token: "{{{{secret:admin-token}}}}" }}
secrets: {{ providers: [ {{ dir: secrets }} ] }}
edge: {{ access_log: {{ format: off }} }}
backends: {{ b: {{ servers: [ {{ url: "http://{}" }} ] }} }}
apis: {{ api: {{ path: /api, backend: b }} }}
"#,
            b.addr
        ),
    )
    .expect("write config");
    let p = Proc::run(&config);
    let admin = p.admin_addr().await;
    let got = admin_reload(admin, OLD).await;
    assert_eq!(got.status, 200, "the file's value, newline trimmed: {}", got.text());

    put(&secrets, "admin-token", NEW);
    until_accepted(admin, NEW, &p).await;
    assert_eq!(admin_reload(admin, OLD).await.status, 401, "the old token is gone");

    // A rotation that breaks (the file disappears) is a failed reload: the last good token keeps working.
    std::fs::remove_file(secrets.join("admin-token")).expect("remove");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.text().contains("secret `admin-token` is not set") {
        assert!(Instant::now() < deadline, "no reload error logged; stderr:\n{}", p.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = admin_reload(admin, NEW).await;
    assert_eq!(got.status, 422, "authorised by the last good token, the reload itself fails: {}", got.text());
    put(&secrets, "admin-token", OLD);
    until_accepted(admin, OLD, &p).await;

    let log = p.text();
    assert!(log.contains("A secret file changed."), "{log}");
    assert!(!log.contains(OLD) && !log.contains(NEW), "a secret value reached the log:\n{log}");
}

#[tokio::test]
async fn named_values_and_secret_files_fill_the_config() {
    let b = backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("mounted")).expect("mkdir");
    put(&dir.path().join("mounted"), "admin-token", OLD);
    let yaml = format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
admin: {{ bind: "127.0.0.1:0", token: "{{{{secret:admin}}}}" }}
secrets:
  providers: [ env, {{ dir: mounted }} ]
  values:
    backend-host: {{ value: "{}", secret: false }}
    admin: "{{{{secret:admin-token}}}}"
backends: {{ b: {{ servers: [ {{ url: "http://{{{{secret:backend-host}}}}" }} ] }} }}
apis: {{ api: {{ path: /api, backend: b }} }}
"#,
        b.addr
    );
    let dir_path = dir.path().to_path_buf();
    std::fs::write(dir_path.join("gatehouse.yaml"), &yaml).expect("write");
    let snapshot = gatehouse::snapshot::compile_file(&dir_path.join("gatehouse.yaml")).expect("compiles");
    assert_eq!(snapshot.secrets.len(), 1, "the mounted file is watched");
    let gw = gatehouse::server::Gateway::start(snapshot, Some(dir_path.join("gatehouse.yaml"))).await.expect("start");
    let addr = gw.listener_addr("main").await.expect("listener");
    let got = get(&format!("http://{addr}/api/x")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(b.count(), 1, "the backend URL came from a named value");
    let admin = gw.admin_addr().await.expect("admin");
    assert_eq!(admin_reload(admin, OLD).await.status, 200, "named value → mounted file → admin token");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_secret_in_a_template_is_text_never_template_syntax() {
    // A secret whose value looks like template syntax is sent as it is, in a single value and in
    // a list; the template around it still renders.
    let b = backend().await;
    let yaml = format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
secrets:
  values:
    token: "k{{request.method}}"
backends: {{ b: {{ servers: [ {{ url: "http://{}" }} ] }} }}
apis:
  api:
    path: /api
    backend: b
    policies:
      inbound:
        - set-header: {{ name: Authorization, value: "Bearer {{{{secret:token}}}} for {{request.method}}" }}
        - set-header: {{ name: X-List, values: [ "{{{{secret:token}}}}", "{{request.method}}" ] }}
"#,
        b.addr
    );
    let g = gateway(&yaml).await;
    assert_eq!(get(&g.url("/api/x")).await.status, 200);
    let seen = b.requests();
    assert_eq!(seen[0].headers["authorization"], "Bearer k{request.method} for GET");
    let list: Vec<&str> = seen[0]
        .headers
        .get_all("x-list")
        .iter()
        .flat_map(|v| v.to_str().expect("ascii").split(','))
        .map(str::trim)
        .collect();
    assert_eq!(list, ["k{request.method}", "GET"]);
}

#[tokio::test]
async fn config_errors_never_echo_secret_values() {
    const VALUE: &str = "not-a-port-but-a-Secret-9f3a";
    let t = gateway(&format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
admin: {{ bind: "127.0.0.1:0", token: "{OLD}" }}
backends: {{ b: {{ servers: [ {{ url: "http://127.0.0.1:9" }} ] }} }}
apis: {{ api: {{ path: /api, backend: b }} }}
"#
    ))
    .await;
    // The secret lands where a number and where an address is expected: both errors would quote it.
    let bad = format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }}, {{ name: other, bind: "{{{{secret:leaky}}}}" }} ]
admin: {{ bind: "127.0.0.1:0", token: "{OLD}" }}
runtime: {{ workers: "{{{{secret:leaky}}}}" }}
secrets: {{ values: {{ leaky: "{VALUE}" }} }}
backends: {{ b: {{ servers: [ {{ url: "http://127.0.0.1:9" }} ] }} }}
apis: {{ api: {{ path: /api, backend: b }} }}
"#
    );
    std::fs::write(t.config_path(), &bad).expect("write");
    let errors = match gatehouse::snapshot::compile_file(&t.config_path()) {
        Ok(_) => panic!("the config is invalid"),
        Err(e) => e,
    };
    assert!(errors.len() >= 2, "{errors:#?}");
    for e in &errors {
        assert!(!e.to_string().contains(VALUE), "secret echoed: {e}");
    }
    assert!(errors.iter().any(|e| e.message.contains("{{secret:leaky}}")), "{errors:#?}");
    let admin = t.gw.admin_addr().await.expect("admin");
    let got = admin_reload(admin, OLD).await;
    assert_eq!(got.status, 422, "{}", got.text());
    assert!(got.text().contains("{{secret:leaky}}"), "{}", got.text());
    assert!(!got.text().contains(VALUE), "the admin API echoed a secret: {}", got.text());
}
