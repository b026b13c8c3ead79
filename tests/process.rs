//! Process-level tests: the real `gatehouse` binary, driven the way an operator drives it
//! (command line, config file, signals, admin API), with tiny hyper backends in the test.
//!
//! `gatehouse check` snapshots: every `tests/check/NAME.yaml` (except `blocked_*`) has a
//! `tests/check/NAME.expected` with the exact stderr of `gatehouse check -c tests/check/NAME.yaml`
//! run from the repository root. After an intended change to a message, rewrite them with
//!
//! ```text
//! UPDATE_EXPECT=1 cargo test --test process check_
//! ```
//!
//! and review the diff. `blocked_*.yaml` fixtures back the `#[ignore = "blocked: …"]` tests that
//! assert properties of a message (location, no cascading errors) rather than its exact text.
//!
//! Every spawned process is owned by a [`Proc`], which kills it (by PID) when dropped, so a
//! failing test leaves nothing behind; every wait is bounded.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The admin token the tests hand to the gateway through `ADMIN_TOKEN`.
const TOKEN: &str = "process-test-admin-token-0123456789";
/// Upper bound for anything that should be quick (start-up, a reload, a log line).
const SOON: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Processes

/// Lines a child wrote to one of its pipes, collected by a reader thread.
type Lines = Arc<Mutex<Vec<String>>>;

/// A running `gatehouse`; killed by PID on drop.
struct Proc {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn collect(pipe: impl std::io::Read + Send + 'static, lines: Lines) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            lines.lock().expect("lines").push(line);
        }
    })
}

impl Proc {
    /// Starts `gatehouse ARGS` in `cwd`. The child sees no `ADMIN_TOKEN` unless `env` sets it.
    fn spawn(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(cwd)
            .env("GATEHOUSE_LOG", "info")
            .env_remove("ADMIN_TOKEN")
            .env_remove("admin-token")
            .env_remove("GATEHOUSE_CHECK_FIXTURE_UNSET")
            .env_remove("gatehouse-check-fixture-unset")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn gatehouse");
        let (stdout, stderr): (Lines, Lines) = Default::default();
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), stdout.clone()),
            collect(child.stderr.take().expect("stderr"), stderr.clone()),
        ];
        Proc { child, stdout, stderr, readers }
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid fits")
    }

    fn signal(&self, sig: libc::c_int) {
        send_signal(self.pid(), sig);
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("lines").clone()
    }

    fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("lines").clone()
    }

    fn stderr_text(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// Waits until a stderr line at index `from` or later satisfies `pred`; returns its index
    /// and text. Panics with the whole stderr when `within` passes or the process exits first.
    async fn wait_stderr(&mut self, from: usize, within: Duration, pred: impl Fn(&str) -> bool) -> (usize, String) {
        let deadline = Instant::now() + within;
        loop {
            let found = {
                let lines = self.stderr.lock().expect("lines");
                lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)).map(|(i, l)| (i, l.clone()))
            };
            if let Some(hit) = found {
                return hit;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                tokio::time::sleep(Duration::from_millis(50)).await; // let the readers catch up
                panic!("no matching stderr line (exited: {exited:?}); stderr:\n{}", self.stderr_text());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The address listener `name` reported in its `Listening.` line (at index `from` or later).
    async fn listener_addr(&mut self, name: &str, from: usize) -> SocketAddr {
        let tag = format!("listener={name} ");
        let (_, line) = self.wait_stderr(from, SOON, |l| l.contains("Listening.") && l.contains(&tag)).await;
        addr_in(&line)
    }

    async fn admin_addr(&mut self) -> SocketAddr {
        let (_, line) = self.wait_stderr(0, SOON, |l| l.contains("Admin API listening.")).await;
        addr_in(&line)
    }

    /// Waits (asynchronously) up to `within` for the process to exit.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (blocking) for the exit, then for the pipes to be read to the end.
    fn finish(mut self, within: Duration) -> (ExitStatus, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            assert!(Instant::now() < deadline, "gatehouse did not exit within {within:?}:\n{}", self.stderr_text());
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status, self.stdout_lines(), self.stderr_lines())
    }
}

/// `kill(2)`: the tests are the operator here.
#[allow(unsafe_code)]
fn send_signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` is a child we
    // spawned and have not reaped (`Proc` reaps it only on drop), so the PID cannot be reused.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// `addr=127.0.0.1:PORT` in a tracing line.
fn addr_in(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no addr= in {line:?}"))
}

/// Runs a short command (`check`, `version`) from the repository root.
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let env: Vec<(&str, &str)> = [("GATEHOUSE_LOG", "warn")].into_iter().chain(env.iter().copied()).collect();
    let p = Proc::spawn(args, Path::new(ROOT), &env);
    let (status, out, err) = p.finish(Duration::from_secs(30));
    let joined = |v: Vec<String>| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    (status.code().expect("exited normally, not by a signal"), joined(out), joined(err))
}

// ---------------------------------------------------------------------------------------------
// Config files

/// A temp dir with the gateway's config file in it.
struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn new(yaml: &str) -> ConfigDir {
        let c = ConfigDir { dir: tempfile::tempdir().expect("tempdir") };
        c.write(yaml);
        c
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("gatehouse.yaml")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the config atomically (write + rename), so a reload never reads half a file.
    fn write(&self, yaml: &str) {
        let tmp = self.dir.path().join(".gatehouse.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.path()).expect("rename config");
    }

    fn run(&self, env: &[(&str, &str)]) -> Proc {
        let path = self.path();
        Proc::spawn(&["run", "-c", path.to_str().expect("utf-8 path")], self.dir.path(), env)
    }
}

/// The knobs the tests turn; everything else is a minimal valid config.
#[derive(Clone)]
struct Cfg {
    backend: SocketAddr,
    runtime: String,
    admin: Option<String>,
    access_log: String,
    extra_listener: bool,
    extra_api: Option<&'static str>,
}

impl Cfg {
    fn new(backend: SocketAddr) -> Cfg {
        Cfg {
            backend,
            runtime: "workers: 1".into(),
            admin: None,
            access_log: "{ format: \"off\" }".into(),
            extra_listener: false,
            extra_api: None,
        }
    }

    fn yaml(&self) -> String {
        let mut y =
            format!("runtime: {{ {} }}\nlisteners:\n  - {{ name: main, bind: \"127.0.0.1:0\" }}\n", self.runtime);
        if self.extra_listener {
            y.push_str("  - { name: second, bind: \"127.0.0.1:0\" }\n");
        }
        if let Some(admin) = &self.admin {
            y.push_str(&format!("admin: {admin}\n"));
        }
        y.push_str(&format!("edge:\n  access_log: {}\n", self.access_log));
        y.push_str(&format!("backends:\n  b:\n    servers: [ {{ url: \"http://{}\" }} ]\n", self.backend));
        y.push_str("apis:\n  api: { path: /api, backend: b }\n");
        if let Some(extra) = self.extra_api {
            y.push_str(extra);
        }
        y
    }
}

/// A second API, proxied to the same backend.
const EXTRA_API: &str = "  extra: { path: /extra, backend: b }\n";
/// A second API that refers to a backend that does not exist: the config is invalid.
const BROKEN_API: &str = "  extra: { path: /extra, backend: missing }\n";

/// `LINE:COL:` (1-based) where `needle` starts in `yaml`.
fn position_of(yaml: &str, needle: &str) -> String {
    let (i, line) = yaml.lines().enumerate().find(|(_, l)| l.contains(needle)).expect("needle in yaml");
    format!("{}:{}:", i + 1, line.find(needle).expect("needle") + 1)
}

// ---------------------------------------------------------------------------------------------
// HTTP: a tiny backend and a client

/// A backend on 127.0.0.1:0 that answers 200 `hello from the backend` after `delay`.
struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(delay: Duration) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = req.into_body().collect().await;
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello from the backend"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Backend { addr, hits, task }
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

struct Got {
    status: StatusCode,
    content_type: String,
    www_authenticate: Option<String>,
    body: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request, bounded; `Err` for connection errors and timeouts.
async fn try_send(client: &Client, req: Request<Full<Bytes>>, within: Duration) -> Result<Got, String> {
    let resp = tokio::time::timeout(within, client.request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(within, body.collect())
        .await
        .map_err(|_| "body timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    let content_type =
        parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let www_authenticate =
        parts.headers.get(http::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok(Got { status: parts.status, content_type, www_authenticate, body: String::from_utf8_lossy(&body).into_owned() })
}

async fn get(addr: SocketAddr, path: &str) -> Got {
    let req = Request::get(format!("http://{addr}{path}")).body(Full::default()).expect("request");
    try_send(&client(), req, SOON).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Got {
    let mut req = Request::post(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Full::default()).expect("request");
    try_send(&client(), req, SOON).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Polls `GET path` until it answers `status` (panics after `within`).
async fn until_status(addr: SocketAddr, path: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let req = Request::get(format!("http://{addr}{path}")).body(Full::default()).expect("request");
        let got = try_send(&client(), req, Duration::from_secs(2)).await;
        match got {
            Ok(g) if g.status.as_u16() == status => return,
            other if Instant::now() > deadline => {
                panic!("GET {path} never answered {status}; last: {:?}", other.map(|g| g.status))
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls until a TCP connect to `addr` is refused (panics after `within`).
async fn until_refused(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ if Instant::now() > deadline => panic!("{addr} still accepts connections after {within:?}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Starts the gateway on `cfg` and waits for listener `main`.
async fn start(dir: &ConfigDir, env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let mut p = dir.run(env);
    let addr = p.listener_addr("main", 0).await;
    (p, addr)
}

/// Sends SIGHUP and waits for the reload's outcome line (success or failure) after `from`.
async fn sighup(p: &mut Proc) -> String {
    let from = p.stderr_lines().len();
    p.signal(libc::SIGHUP);
    let (_, line) = p.wait_stderr(from, SOON, |l| l.contains("Config reloaded.") || l.contains("keeps serving")).await;
    line
}

// ---------------------------------------------------------------------------------------------
// `gatehouse check` and `gatehouse version`

/// Runs `gatehouse check` on `tests/check/NAME.yaml` and compares stderr with NAME.expected.
fn check_fixture(name: &str) {
    let rel = format!("tests/check/{name}.yaml");
    let (code, stdout, stderr) = cli(&["check", "-c", &rel], &[]);
    let expected_path = Path::new(ROOT).join(format!("tests/check/{name}.expected"));
    if std::env::var("UPDATE_EXPECT").as_deref() == Ok("1") {
        std::fs::write(&expected_path, &stderr).expect("write .expected");
    } else {
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_EXPECT=1 creates it)", expected_path.display()));
        assert_eq!(stderr, expected, "stderr of `gatehouse check -c {rel}` (UPDATE_EXPECT=1 rewrites .expected)");
    }
    assert_eq!(code, 1, "exit code of check on {rel}; stderr:\n{stderr}");
    assert_eq!(stdout, "", "check prints errors on stderr only");
    let count = stderr.lines().filter(|l| l.starts_with(&format!("{rel}:"))).count();
    assert!(count >= 1, "every error starts with the file path as given:\n{stderr}");
    assert_eq!(stderr.lines().last(), Some(format!("{count} error(s)").as_str()), "summary line:\n{stderr}");
}

macro_rules! check_fixtures {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            check_fixture(&stringify!($name)["check_".len()..]);
        }
    )*};
}

check_fixtures!(
    check_unknown_keys,
    check_wrong_types,
    check_missing_required,
    check_unknown_backend,
    check_bad_address,
    check_bad_units,
    check_duplicate_route,
    check_unset_secret,
    check_syntax_error,
    check_products,
    check_many_errors,
    check_bad_compression,
);

/// Every `tests/check/*.yaml` has a test above (or is a `blocked_*` fixture).
#[test]
fn check_fixtures_all_have_expectations() {
    let dir = Path::new(ROOT).join("tests/check");
    for entry in std::fs::read_dir(&dir).expect("tests/check") {
        let path = entry.expect("entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") && !stem.starts_with("blocked_") {
            assert!(dir.join(format!("{stem}.expected")).exists(), "{stem}.yaml has no {stem}.expected");
        }
    }
}

#[test]
fn check_accepts_the_quickstart() {
    let (code, stdout, stderr) = cli(&["check", "-c", "examples/quickstart.yaml"], &[]);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(stdout.starts_with("examples/quickstart.yaml: ok (1 listener(s), 1 backend(s), "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(stderr, "");
}

#[test]
fn check_secret_from_the_environment() {
    // The same fixture passes once the secret is set (as written, or upper-cased).
    let (code, stdout, stderr) =
        cli(&["check", "-c", "tests/check/unset_secret.yaml"], &[("GATEHOUSE_CHECK_FIXTURE_UNSET", TOKEN)]);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
}

#[test]
fn version_prints_name_and_semver() {
    let (code, stdout, stderr) = cli(&["version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(stderr, "");
    assert_eq!(stdout, format!("gatehouse {}\n", env!("CARGO_PKG_VERSION")));
    let version = stdout.trim_end().strip_prefix("gatehouse ").expect("prefix");
    let parts: Vec<&str> = version.split('.').collect();
    assert_eq!(parts.len(), 3, "X.Y.Z: {version}");
    assert!(parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())), "X.Y.Z: {version}");
}

#[test]
fn usage_errors_exit_with_2_and_check_on_a_missing_file_with_1() {
    // clap reports usage errors with exit code 2.
    let (code, _, stderr) = cli(&["frobnicate"], &[]);
    assert_eq!(code, 2, "{stderr}");
    let (code, stdout, stderr) = cli(&["check", "-c", "tests/check/does-not-exist.yaml"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.starts_with("tests/check/does-not-exist.yaml:"), "{stderr}");
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
}

/// Runs `check` on a `blocked_*` fixture; returns the error lines (summary dropped).
fn check_lines(name: &str) -> Vec<String> {
    let rel = format!("tests/check/{name}.yaml");
    let (code, _, stderr) = cli(&["check", "-c", &rel], &[]);
    assert_eq!(code, 1, "{stderr}");
    stderr.lines().filter(|l| l.starts_with(&rel)).map(str::to_owned).collect()
}

#[test]
fn check_invalid_backend_is_not_also_unknown() {
    let lines = check_lines("blocked_invalid_backend_ref");
    assert!(lines.iter().any(|l| l.contains("backends.orders.servers[0].wieght: unknown key")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("backends.orders.timeouts.connect: invalid duration")), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("unknown backend")), "cascading error: {lines:#?}");
}

#[test]
fn check_top_level_keys_are_located_at_the_key() {
    let lines = check_lines("blocked_top_level_key");
    let rel = "tests/check/blocked_top_level_key.yaml";
    assert!(lines.iter().any(|l| l.starts_with(&format!("{rel}:9:1: routes: unknown key `routes`"))), "{lines:#?}");
}

#[test]
fn check_route_conflicts_name_the_api() {
    let lines = check_lines("blocked_route_conflict");
    for l in &lines {
        assert!(!l.contains("gatehouse_rest") && !l.contains("Insertion failed"), "internal detail leaked: {l}");
        assert!(!l.contains(":8:3: apis: ") && l.contains(": apis."), "not located at an API: {l}");
    }
    assert!(lines.iter().any(|l| l.contains("orders-v2") || l.contains("apis.orders.operations[0]")), "{lines:#?}");
    let two = lines.iter().filter(|l| l.contains(": apis.two.path: ")).count();
    assert_eq!(two, 1, "one error for API `two`, not one per internal pattern: {lines:#?}");
}

#[test]
fn check_reports_errors_hidden_behind_others() {
    let lines = check_lines("blocked_hidden_error");
    for wanted in [
        "edge.limits.header_bytes: header_bytes must be between",
        "edge.limits.body_bytes: invalid size",
        "apis.api.path: `api` must start with /",
        "apis.api.backend: unknown backend `nowhere`",
    ] {
        assert!(lines.iter().any(|l| l.contains(wanted)), "missing {wanted:?}: {lines:#?}");
    }
}

#[test]
fn check_unreadable_file_has_no_fake_position() {
    let (_, _, stderr) = cli(&["check", "-c", "tests/check/does-not-exist.yaml"], &[]);
    assert!(stderr.starts_with("tests/check/does-not-exist.yaml: cannot read the config file"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// `gatehouse run`

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_and_reloads_on_sighup() {
    let b = backend(Duration::ZERO).await;
    let mut cfg = Cfg::new(b.addr);
    let dir = ConfigDir::new(&cfg.yaml());
    let (mut p, addr) = start(&dir, &[]).await;

    let got = get(addr, "/api/x").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, "hello from the backend");
    assert_eq!(get(addr, "/extra/").await.status, 404);

    cfg.extra_api = Some(EXTRA_API);
    dir.write(&cfg.yaml());
    let outcome = sighup(&mut p).await;
    assert!(outcome.contains("Config reloaded.") && outcome.contains("generation=2"), "{outcome}");
    until_status(addr, "/extra/", 200, SOON).await;

    // An invalid config: the errors are logged with their location, the old config serves on.
    cfg.extra_api = Some(BROKEN_API);
    dir.write(&cfg.yaml());
    let from = p.stderr_lines().len();
    let outcome = sighup(&mut p).await;
    assert!(outcome.contains("The new config is invalid; the previous one keeps serving."), "{outcome}");
    let located = format!(
        "{}:{} apis.extra.backend: unknown backend `missing` (defined: b)",
        dir.path().display(),
        position_of(&cfg.yaml(), "missing")
    );
    let lines = p.stderr_lines();
    assert!(lines[from..].iter().any(|l| l.contains(&located)), "no {located:?} in:\n{}", lines[from..].join("\n"));
    assert_eq!(get(addr, "/api/x").await.status, 200);
    assert_eq!(get(addr, "/extra/").await.status, 200);

    p.signal(libc::SIGTERM);
    let status = p.wait_exit(SOON).await.expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", p.stderr_text());
    // stderr is a pipe here, as under systemd or docker: plain text, no colour codes.
    assert!(!p.stderr_text().contains('\u{1b}'), "ANSI escapes in piped logs:\n{}", p.stderr_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_as_soon_as_listening_reloads() {
    // A deploy script may signal as soon as the port answers: by then SIGHUP must be handled
    // (its default action kills the process).
    let b = backend(Duration::ZERO).await;
    let mut cfg = Cfg::new(b.addr);
    let dir = ConfigDir::new(&cfg.yaml());
    cfg.extra_api = Some(EXTRA_API);
    dir.write(&cfg.yaml());
    let mut p = dir.run(&[]);
    p.wait_stderr(0, SOON, |l| l.contains("Listening.")).await;
    p.signal(libc::SIGHUP);
    let (_, line) = p.wait_stderr(0, SOON, |l| l.contains("Config reloaded.")).await;
    assert!(line.contains("generation=2"), "{line}");
    assert!(matches!(p.child.try_wait(), Ok(None)), "killed by SIGHUP:\n{}", p.stderr_text());
}

#[test]
fn check_prints_compiler_warnings() {
    let dir = ConfigDir::new(
        "listeners: [ { name: main, bind: \"127.0.0.1:8080\" } ]\nbackends:\n  b:\n    servers: [ { url: \"https://127.0.0.1:9443\" } ]\n    tls: { verify: false }\napis:\n  api: { path: /api, backend: b }\n",
    );
    let path = dir.path();
    let (code, stdout, stderr) = cli(&["check", "-c", path.to_str().expect("utf-8")], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
    assert!(stderr.contains("WARN") && stderr.contains("backends.b.tls.verify: false"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_ready_and_reload() {
    let b = backend(Duration::ZERO).await;
    let mut cfg = Cfg::new(b.addr);
    cfg.admin = Some("{ bind: \"127.0.0.1:0\", token: \"{{secret:admin-token}}\" }".into());
    let dir = ConfigDir::new(&cfg.yaml());
    let (mut p, addr) = start(&dir, &[("ADMIN_TOKEN", TOKEN)]).await;
    let admin = p.admin_addr().await;

    let health = get(admin, "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let ready = get(admin, "/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["generation"], 1, "{}", ready.body);

    // No token, then a wrong one: 401 problem+json, nothing reloaded.
    for token in [None, Some("wrong-token-wrong-token-wrong")] {
        let denied = post(admin, "/reload", token).await;
        assert_eq!(denied.status, 401, "{}", denied.body);
        assert_eq!(denied.content_type, "application/problem+json");
        assert_eq!(denied.www_authenticate.as_deref(), Some("Bearer"));
        let v = denied.json();
        assert_eq!(v["status"], 401);
        assert_eq!(v["layer"], "edge", "a refused admin call is bad input at the perimeter");
        assert_eq!(v["type"], "urn:gatehouse:error:admin-unauthorized");
        assert!(!denied.body.contains(TOKEN), "the token must never be echoed");
    }
    assert_eq!(get(admin, "/readyz").await.json()["generation"], 1);

    // With the token: the new config is in force and the generation moves on.
    cfg.extra_api = Some(EXTRA_API);
    dir.write(&cfg.yaml());
    let ok = post(admin, "/reload", Some(TOKEN)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["generation"], 2, "{}", ok.body);
    assert_eq!(get(admin, "/readyz").await.json()["generation"], 2);
    assert_eq!(get(addr, "/extra/").await.status, 200);

    // An invalid config: 422 with every located error; the old config keeps serving.
    cfg.extra_api = Some(BROKEN_API);
    dir.write(&cfg.yaml());
    let bad = post(admin, "/reload", Some(TOKEN)).await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.content_type, "application/problem+json");
    let v = bad.json();
    assert_eq!(v["type"], "urn:gatehouse:error:config-invalid");
    let errors = v["errors"].as_array().unwrap_or_else(|| panic!("errors list: {v}"));
    assert_eq!(errors.len(), 1, "{v}");
    let e = errors[0].as_str().expect("string");
    let at = position_of(&cfg.yaml(), "missing");
    assert!(e.starts_with(&format!("{}:{at} apis.extra.backend: unknown backend", dir.path().display())), "{e}");
    assert_eq!(get(admin, "/readyz").await.json()["generation"], 2);
    assert_eq!(get(addr, "/extra/").await.status, 200);

    // Without admin.token mutations are refused outright (403), whatever the caller sends.
    cfg.admin = Some("{ bind: \"127.0.0.1:0\" }".into());
    cfg.extra_api = None;
    dir.write(&cfg.yaml());
    let outcome = sighup(&mut p).await;
    assert!(outcome.contains("Config reloaded."), "{outcome}");
    assert_eq!(get(admin, "/readyz").await.json()["generation"], 3);
    for token in [None, Some(TOKEN)] {
        let refused = post(admin, "/reload", token).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert_eq!(refused.content_type, "application/problem+json");
        assert_eq!(refused.json()["type"], "urn:gatehouse:error:admin-token-missing");
    }
    assert_eq!(get(admin, "/readyz").await.json()["generation"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let b = backend(Duration::from_millis(1500)).await;
    let dir = ConfigDir::new(&Cfg::new(b.addr).yaml());
    let (mut p, addr) = start(&dir, &[]).await;

    let in_flight = tokio::spawn(async move {
        let req = Request::get(format!("http://{addr}/api/slow")).body(Full::default()).expect("request");
        let got = try_send(&client(), req, SOON).await;
        (got, Instant::now())
    });
    // Signal once the backend has the request.
    wait_for_first_hit(&b.hits).await;
    let signalled = Instant::now();
    p.signal(libc::SIGTERM);

    until_refused(addr, Duration::from_secs(1)).await;
    let refused_at = Instant::now();
    let (got, answered_at) = in_flight.await.expect("task");
    let got = got.expect("the in-flight request completes");
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, "hello from the backend");
    assert!(refused_at < answered_at, "new connections are refused while the old request is still in flight");

    let status = p.wait_exit(SOON).await.expect("exits after draining");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", p.stderr_text());
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    let log = p.stderr_text();
    assert!(log.contains("draining in-flight requests") && log.contains("Stopped."), "{log}");
}

/// Idle keep-alive connections do not hold up the drain: one parked by the guard (idle past its
/// 250 ms park delay, no hyper connection left) and one still with hyper are both closed at
/// once, with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = backend(Duration::ZERO).await;
    let dir = ConfigDir::new(&Cfg::new(b.addr).yaml());
    let (mut p, addr) = start(&dir, &[]).await;
    async fn served(addr: SocketAddr) -> tokio::net::TcpStream {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n\r\n").await.expect("send");
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("hello from the backend") {
            let n = tokio::time::timeout(SOON, s.read(&mut chunk)).await.expect("timely").expect("read");
            assert!(n > 0, "closed before the response: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        s
    }
    let mut parked = served(addr).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut fresh = served(addr).await;
    let signalled = Instant::now();
    p.signal(libc::SIGTERM);
    for s in [&mut parked, &mut fresh] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "not closed with nothing written: {read:?} {rest:?}");
    }
    let status = p.wait_exit(SOON).await.expect("exits after draining");
    assert_eq!(status.code(), Some(0), "{}", p.stderr_text());
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
}

/// Waits (bounded) until the backend has received a request.
async fn wait_for_first_hit(hits: &std::sync::atomic::AtomicUsize) {
    let deadline = Instant::now() + SOON;
    while hits.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the request never reached the backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_up_after_the_grace_period() {
    let b = backend(Duration::from_secs(5)).await;
    let mut cfg = Cfg::new(b.addr);
    cfg.runtime = "workers: 1, shutdown_grace: 500ms".into();
    let dir = ConfigDir::new(&cfg.yaml());
    let (mut p, addr) = start(&dir, &[]).await;

    let in_flight = tokio::spawn(async move {
        let req = Request::get(format!("http://{addr}/api/very-slow")).body(Full::default()).expect("request");
        try_send(&client(), req, SOON).await
    });
    wait_for_first_hit(&b.hits).await;
    let signalled = Instant::now();
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(4)).await;
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM:\n{}", p.stderr_text()));
    assert_eq!(status.code(), Some(0), "{}", p.stderr_text());
    assert!(took >= Duration::from_millis(450), "exited before the grace period: {took:?}");
    assert!(took < Duration::from_secs(3), "exited long after the 500ms grace period: {took:?}");
    assert!(p.stderr_text().contains("after the grace period"), "{}", p.stderr_text());
    let cut = in_flight.await.expect("task");
    assert!(cut.is_err(), "the 5 s request cannot complete: {:?}", cut.map(|g| g.status));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log() {
    let b = backend(Duration::ZERO).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let mut cfg = Cfg::new(b.addr);
    cfg.access_log = format!("{{ format: common, path: \"{}\" }}", log.display());
    let cd = ConfigDir { dir };
    cd.write(&cfg.yaml());
    let (mut p, addr) = start(&cd, &[]).await;

    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    async fn until_lines(path: &Path, n: usize, read: &dyn Fn(&Path) -> String) -> String {
        let deadline = Instant::now() + SOON;
        loop {
            let text = read(path);
            if text.lines().count() >= n {
                return text;
            }
            assert!(Instant::now() < deadline, "{} never had {n} line(s): {text:?}", path.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    assert_eq!(get(addr, "/api/first").await.status, 200);
    until_lines(&log, 1, &read).await;
    let rotated = cd.file("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");

    let from = p.stderr_lines().len();
    p.signal(libc::SIGUSR1);
    p.wait_stderr(from, SOON, |l| l.contains("Access log reopen requested.")).await;
    assert_eq!(get(addr, "/api/second").await.status, 200);

    let fresh = until_lines(&log, 1, &read).await;
    assert_eq!(fresh.lines().count(), 1, "{fresh}");
    assert!(fresh.contains("GET /api/second "), "{fresh}");
    let old = read(&rotated);
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.contains("GET /api/first "), "{old}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request() {
    let b = backend(Duration::ZERO).await;
    let mut cfg = Cfg::new(b.addr);
    cfg.runtime = "workers: 2".into();
    let dir = ConfigDir::new(&cfg.yaml());
    let (mut p, addr) = start(&dir, &[]).await;

    let stop_at = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(async move {
                let c = client();
                let (mut ok, mut failed) = (0usize, Vec::new());
                while Instant::now() < stop_at {
                    let req = Request::get(format!("http://{addr}/api/c{i}")).body(Full::default()).expect("request");
                    match try_send(&c, req, Duration::from_secs(5)).await {
                        Ok(g) if g.status == 200 => ok += 1,
                        Ok(g) => failed.push(format!("{} {}", g.status, g.body)),
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    let mut sent = 0;
    while Instant::now() < stop_at {
        cfg.extra_api = if sent % 2 == 0 { Some(EXTRA_API) } else { None };
        dir.write(&cfg.yaml());
        p.signal(libc::SIGHUP);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut total, mut failures) = (0, Vec::new());
    for c in clients {
        let (ok, failed) = c.await.expect("client task");
        total += ok;
        failures.extend(failed);
    }
    let reloads = p.stderr_lines().iter().filter(|l| l.contains("Config reloaded.")).count();
    println!("reload under load: {total} ok, {} failed, {sent} SIGHUPs, {reloads} reloads", failures.len());
    assert!(failures.is_empty(), "{} failed requests, e.g. {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(total > 0, "no request was sent");
    assert!(reloads > 0, "no reload happened:\n{}", p.stderr_text());
    assert!(!p.stderr_text().contains("keeps serving"), "{}", p.stderr_text());
    assert!(matches!(p.child.try_wait(), Ok(None)), "the gateway died:\n{}", p.stderr_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners() {
    let b = backend(Duration::ZERO).await;
    let mut cfg = Cfg::new(b.addr);
    let dir = ConfigDir::new(&cfg.yaml());
    let (mut p, main) = start(&dir, &[]).await;

    cfg.extra_listener = true;
    dir.write(&cfg.yaml());
    let from = p.stderr_lines().len();
    let outcome = sighup(&mut p).await;
    assert!(outcome.contains("Config reloaded."), "{outcome}");
    let second = p.listener_addr("second", from).await;
    assert_ne!(second, main);
    assert_eq!(get(second, "/api/x").await.status, 200);
    assert_eq!(get(main, "/api/x").await.status, 200);

    cfg.extra_listener = false;
    dir.write(&cfg.yaml());
    let from = p.stderr_lines().len();
    let outcome = sighup(&mut p).await;
    assert!(outcome.contains("Config reloaded."), "{outcome}");
    p.wait_stderr(from, SOON, |l| l.contains("Listener removed") && l.contains("listener=second")).await;
    until_refused(second, SOON).await;
    assert_eq!(get(main, "/api/x").await.status, 200);
    // `main` was kept, not reopened: it still has the port it started with.
    assert!(!p.stderr_lines()[from..].iter().any(|l| l.contains("Listening.")), "{}", p.stderr_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_on_file_change() {
    let b = backend(Duration::ZERO).await;
    let mut cfg = Cfg::new(b.addr);
    cfg.runtime = "workers: 1, watch_config: true".into();
    let dir = ConfigDir::new(&cfg.yaml());
    let (mut p, addr) = start(&dir, &[]).await;
    assert_eq!(get(addr, "/extra/").await.status, 404);

    cfg.extra_api = Some(EXTRA_API);
    dir.write(&cfg.yaml());
    p.wait_stderr(0, SOON, |l| l.contains("Config file changed.")).await;
    until_status(addr, "/extra/", 200, SOON).await;

    // Edited in place (no rename) also counts.
    cfg.extra_api = None;
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(dir.path(), cfg.yaml()).expect("write in place");
    until_status(addr, "/extra/", 404, SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_exits_with_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let b = backend(Duration::ZERO).await;
    let yaml = Cfg::new(b.addr).yaml().replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let dir = ConfigDir::new(&yaml);
    let mut p = dir.run(&[]);
    let status = p.wait_exit(SOON).await.unwrap_or_else(|| panic!("still running:\n{}", p.stderr_text()));
    tokio::time::sleep(Duration::from_millis(50)).await; // let the reader catch the last line
    assert_eq!(status.code(), Some(2), "{}", p.stderr_text());
    let log = p.stderr_text();
    assert!(log.contains(&format!("cannot listen on 127.0.0.1:{port} (listener `main`)")), "{log}");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_an_invalid_config_exits_with_1() {
    let b = backend(Duration::ZERO).await;
    let mut cfg = Cfg::new(b.addr);
    cfg.extra_api = Some(BROKEN_API);
    let dir = ConfigDir::new(&cfg.yaml());
    let mut p = dir.run(&[]);
    let status = p.wait_exit(SOON).await.unwrap_or_else(|| panic!("still running:\n{}", p.stderr_text()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(status.code(), Some(1), "{}", p.stderr_text());
    let located = format!(
        "{}:{} apis.extra.backend: unknown backend `missing`",
        dir.path().display(),
        position_of(&cfg.yaml(), "missing")
    );
    assert!(p.stderr_text().contains(&located), "{located:?} in:\n{}", p.stderr_text());
}
