//! Unit tests for the access log: the formats and every directive, parse errors, escaping,
//! JSON fields, redaction, and the writer (file and stdout targets, reopen, drops when the queue
//! is full, concurrent loggers).

use super::format::secret_param;
use super::*;
use http::HeaderValue;
use std::sync::Arc;
use std::time::Instant;

fn name(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

fn route(api: &str, operation: Option<&str>) -> Arc<Route> {
    let api = crate::route::Api { name: api.to_owned(), prefix: String::new(), backend: None, server_timing: false };
    Arc::new(Route {
        api: Arc::new(api),
        operation: operation.map(str::to_owned),
        chain: Default::default(),
        metrics: Default::default(),
    })
}

/// A head with this path and query, the rest as in [`record`].
fn head(path: &str, query: Option<&str>) -> HeadText {
    let mut h = HeadText::default();
    h.set_path(path);
    h.set_query(query);
    h.set_host(Some("api.example.com"));
    h.set_request_id("req-1");
    h.add_header(false, &REFERER, b"http://www.example.com/start.html");
    h.add_header(false, &USER_AGENT, b"Mozilla/4.08 [en] (Win98; I ;Nav)");
    h.add_header(false, &name("x-trace"), b"abc");
    h.add_header(true, &name("content-type"), b"image/gif");
    h
}

fn record() -> LogRecord {
    LogRecord {
        client_ip: "192.0.2.7".parse().expect("ip"),
        peer_port: 51234,
        local_port: 8443,
        time: UNIX_EPOCH + Duration::from_millis(971_186_136_123),
        method: Method::GET,
        version: Version::HTTP_11,
        status: 200,
        bytes_sent: 2326,
        duration: Duration::from_micros(1_234_567),
        head: head("/apache_pb.gif", Some("a=1&b=2")),
        user: Some("frank".to_owned()),
        route: Some(route("pets", Some("getPet"))),
        product: Some("starter".into()),
        subscription: Some("sub-9".into()),
        backend: Some("pets-v1".into()),
        layer: None,
        policy: None,
        upstream_status: Some(200),
        time_edge: Duration::from_micros(250),
        time_policy: Duration::from_micros(1500),
        time_backend: Some(Duration::from_millis(1200)),
    }
}

fn line(spec: &str, rec: &LogRecord) -> String {
    let mut out = Vec::new();
    LogFormat::parse(spec).expect("format").write(rec, &mut out);
    String::from_utf8(out).expect("utf8")
}

const COMMON_LINE: &str = "192.0.2.7 - frank [10/Oct/2000:13:55:36 +0000] \
                           \"GET /apache_pb.gif?a=1&b=2 HTTP/1.1\" 200 2326";

#[test]
fn common_and_combined_exact() {
    let rec = record();
    assert_eq!(line("common", &rec), format!("{COMMON_LINE}\n"));
    let combined = format!(
        "{COMMON_LINE} \"http://www.example.com/start.html\" \
         \"Mozilla/4.08 [en] (Win98; I ;Nav)\"\n"
    );
    assert_eq!(line("combined", &rec), combined);
    let mut out = Vec::new();
    LogFormat::default().write(&rec, &mut out);
    assert_eq!(out, combined.as_bytes());
}

#[test]
fn every_directive() {
    let spec = "%h|%l|%u|%t|%r|%>s|%s|%<s|%b|%B|%D|%T|%{ms}T|%{us}T|%{s}T|%{X-Trace}i|\
                %{Content-Type}o|%{Missing}i|%v|%p|%{local}p|%{canonical}p|%{remote}p|\
                %U|%q|%m|%H|%%";
    assert_eq!(
        line(spec, &record()),
        "192.0.2.7|-|frank|[10/Oct/2000:13:55:36 +0000]|GET /apache_pb.gif?a=1&b=2 HTTP/1.1|\
         200|200|200|2326|2326|1234567|1|1234|1234567|1|abc|image/gif|-|api.example.com|\
         8443|8443|8443|51234|/apache_pb.gif|?a=1&b=2|GET|HTTP/1.1|%\n"
    );
}

#[test]
fn empty_and_absent_values() {
    let mut rec = record();
    rec.bytes_sent = 0;
    rec.head.set_query(None);
    rec.user = None;
    rec.head.set_host(None);
    rec.version = Version::HTTP_2;
    rec.method = Method::POST;
    assert_eq!(
        line("%b %B \"%r\" [%q] %u %v %H %m", &rec),
        "- 0 \"POST /apache_pb.gif HTTP/2.0\" [] - - HTTP/2.0 POST\n"
    );
    rec.head.set_query(Some("?x=1"));
    assert_eq!(line("%q|%r", &rec), "?x=1|POST /apache_pb.gif?x=1 HTTP/2.0\n");
    rec.head.set_query(Some(""));
    assert_eq!(line("[%q]", &rec), "[]\n");
}

#[test]
fn gateway_directives() {
    let spec = "%{request_id}g %{layer}g %{api}g %{upstream_status}g %{time_backend}g \
                %{time_edge}g %{time_policy}g %{operation}g %{product}g %{subscription}g \
                %{backend}g %{policy}g %{host}g %{query}g %{duration_ms}g %{time}g \
                %{client_ip}g %{user}g %{status}g %{bytes_sent}g %{protocol}g";
    assert_eq!(
        line(spec, &record()),
        "req-1 - pets 200 1200.000 0.250 1.500 getPet starter sub-9 pets-v1 - api.example.com \
         a=1&b=2 1234.567 2000-10-10T13:55:36.123Z 192.0.2.7 frank 200 2326 HTTP/1.1\n"
    );
    let mut rec = record();
    rec.layer = Some("policy");
    rec.policy = Some("rate \"limit\"");
    rec.upstream_status = None;
    rec.time_backend = None;
    assert_eq!(
        line("%{layer}g %{policy}g %{upstream_status}g %{time_backend}g", &rec),
        "policy rate \\\"limit\\\" - -\n"
    );
    for (name, _) in FIELDS {
        assert!(LogFormat::parse(&format!("%{{{name}}}g")).is_ok(), "{name}");
    }
}

#[test]
fn parse_errors_name_directive_and_offset() {
    let err = |spec: &str| LogFormat::parse(spec).expect_err(spec);
    let e = err("%h %Z");
    assert!(e.contains("\"%Z\"") && e.contains("offset 3"), "{e}");
    let e = err("ab %{foo");
    assert!(e.contains("unterminated") && e.contains("offset 3"), "{e}");
    let e = err("%{nope}g");
    assert!(e.contains("unknown gateway field") && e.contains("%{nope}g"), "{e}");
    let e = err("abc %");
    assert!(e.contains("incomplete") && e.contains("offset 4"), "{e}");
    let e = err("x %>");
    assert!(e.contains("offset 2"), "{e}");
    assert!(err("%i").contains("missing"));
    assert!(err("%{bad name}i").contains("invalid header name"));
    assert!(err("%{x}h").contains("\"%{x}h\""));
    assert!(err("%{x}e").contains("unsupported"));
    let e = err("é%é");
    assert!(e.contains("\"%é\"") && e.contains("offset 2"), "{e}");
    assert!(err("").contains("empty"));
    for ok in ["common", "combined", "json", " json ", "plain text", "%%", "%>s %<s"] {
        assert!(LogFormat::parse(ok).is_ok(), "{ok}");
    }
}

#[test]
fn escapes_like_apache() {
    let mut rec = record();
    rec.head.set_header(false, &USER_AGENT, b"evil\" 200 1 \"x\\y\tz\x85\xe2\x80\xa8");
    rec.head.set_path("/a\nb\"c\x7f");
    rec.user = Some("bob\r\n1.2.3.4 - - [forged]".to_owned());
    let out = line("combined", &rec);
    assert_eq!(out.matches('\n').count(), 1);
    assert!(out.ends_with('\n'));
    assert!(out.starts_with("192.0.2.7 - bob\\r\\n1.2.3.4 - - [forged] ["), "{out}");
    assert!(out.contains("\"GET /a\\nb\\\"c\\x7f?a=1&b=2 HTTP/1.1\""), "{out}");
    assert!(out.ends_with(" \"evil\\\" 200 1 \\\"x\\\\y\\tz\\x85\\xe2\\x80\\xa8\"\n"), "{out}");
    let mut esc = Vec::new();
    escape(&mut esc, b"\x08\x0b\x00\x1f ~");
    assert_eq!(esc, b"\\b\\v\\x00\\x1f ~");

    // JSON: still one line, and the values round-trip.
    let json = line("json", &rec);
    assert_eq!(json.matches('\n').count(), 1);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["path"], "/a\nb\"c\x7f");
    assert_eq!(v["user"], "bob\r\n1.2.3.4 - - [forged]");
    let ua = v["user_agent"].as_str().expect("ua");
    assert!(ua.starts_with("evil\" 200 1 \"x\\y\tz"), "{ua}");
}

#[test]
fn json_fields() {
    let out = line("json", &record());
    assert!(out.ends_with("}\n"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let obj = v.as_object().expect("object");
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let want: Vec<&str> = FIELDS.iter().map(|(k, _)| *k).collect();
    let mut sorted = want.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted); // serde_json's map is sorted; all keys, nothing else
    assert!(out.starts_with("{\"time\":\"2000-10-10T13:55:36.123Z\",\"client_ip\""));
    assert_eq!(v["time"], "2000-10-10T13:55:36.123Z");
    assert_eq!(v["client_ip"], "192.0.2.7");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/apache_pb.gif");
    assert_eq!(v["query"], "a=1&b=2");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_sent"], 2326);
    assert_eq!(v["duration_ms"].as_f64(), Some(1234.567));
    assert_eq!(v["request_id"], "req-1");
    assert_eq!(v["host"], "api.example.com");
    assert_eq!(v["user_agent"], "Mozilla/4.08 [en] (Win98; I ;Nav)");
    assert_eq!(v["referer"], "http://www.example.com/start.html");
    assert_eq!(v["api"], "pets");
    assert_eq!(v["operation"], "getPet");
    assert_eq!(v["product"], "starter");
    assert_eq!(v["subscription"], "sub-9");
    assert_eq!(v["backend"], "pets-v1");
    assert_eq!(v["layer"], serde_json::Value::Null);
    assert_eq!(v["policy"], serde_json::Value::Null);
    assert_eq!(v["upstream_status"], 200);
    assert_eq!(v["time_edge"].as_f64(), Some(0.25));
    assert_eq!(v["time_policy"].as_f64(), Some(1.5));
    assert_eq!(v["time_backend"].as_f64(), Some(1200.0));

    let rec = LogRecord::default();
    let v: serde_json::Value = serde_json::from_str(&line("json", &rec)).expect("json");
    for key in ["query", "host", "user_agent", "referer", "user", "api", "layer", "upstream_status", "time_backend"] {
        assert_eq!(v[key], serde_json::Value::Null, "{key}");
    }
    assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
    assert_eq!(v["duration_ms"].as_f64(), Some(0.0));
}

#[test]
fn secrets_are_redacted() {
    let mut rec = record();
    let h = &mut rec.head;
    h.set_header(false, &name("authorization"), b"Bearer SECRET1");
    h.set_header(false, &name("cookie"), b"sid=SECRET2");
    h.set_header(false, &name("x-api-key"), b"SECRET3");
    h.set_header(false, &name("ocp-apim-subscription-key"), b"SECRET4");
    h.set_header(false, &name("proxy-authorization"), b"Basic SECRET5");
    h.add_header(true, &name("set-cookie"), b"a=SECRET6");
    h.add_header(true, &name("set-cookie"), b"b=SECRET6");
    h.set_query(Some(
        "a=1&subscription-key=SECRET7&Subscription%2dKEY=SECRET8&\
         subscription-keyx=keep&subscription-key",
    ));
    let q = "a=1&subscription-key=[redacted]&Subscription%2dKEY=[redacted]&\
             subscription-keyx=keep&subscription-key";
    let out = line(
        "%{Authorization}i %{Cookie}i %{X-Api-Key}i %{Ocp-Apim-Subscription-Key}i \
         %{Proxy-Authorization}i %{Set-Cookie}o %{authorization}o %q \"%r\" %{query}g",
        &rec,
    );
    assert_eq!(
        out,
        format!(
            "[redacted] [redacted] [redacted] [redacted] [redacted] [redacted] - ?{q} \
             \"GET /apache_pb.gif?{q} HTTP/1.1\" {q}\n"
        )
    );
    let json = line("json", &rec);
    assert!(!json.contains("SECRET"), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["query"], q);
    assert!(!line("combined", &rec).contains("SECRET"));
    for name in REDACTED_HEADERS {
        let parsed = HeaderName::from_bytes(name.as_bytes()).expect("name");
        assert_eq!(parsed.as_str(), *name, "REDACTED_HEADERS must be lower-case");
    }
}

#[test]
fn query_param_matching() {
    assert!(secret_param(b"subscription-key"));
    assert!(secret_param(b"SUBSCRIPTION-KEY"));
    assert!(secret_param(b"subscription%2Dkey"));
    assert!(secret_param(b"%73ubscription-key"));
    assert!(!secret_param(b"subscription-ke"));
    assert!(!secret_param(b"subscription-key%"));
    assert!(!secret_param(b"subscription%2"));
    assert!(!secret_param(b""));
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("access-log-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lines_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).expect("read log").lines().map(str::to_owned).collect()
}

fn with_path(path: &str) -> LogRecord {
    LogRecord { head: head(path, Some("a=1&b=2")), ..record() }
}

#[tokio::test]
async fn file_target_and_reopen() {
    let dir = TempDir::new("reopen");
    let path = dir.0.join("access.log");
    let rotated = dir.0.join("access.log.1");
    let log = AccessLog::start(LogFormat::parse("%U").expect("fmt"), LogTarget::File(path.clone())).expect("start");
    assert!(path.exists(), "file is created at start-up");
    log.log(&with_path("/one"));
    log.flush().await;
    assert_eq!(lines_of(&path), ["/one"]);
    std::fs::rename(&path, &rotated).expect("rename");
    log.log(&with_path("/one-b")); // enqueued before reopen: still the old file
    log.reopen();
    log.log(&with_path("/two"));
    log.log(&with_path("/three"));
    log.flush().await;
    assert_eq!(lines_of(&rotated), ["/one", "/one-b"]);
    assert_eq!(lines_of(&path), ["/two", "/three"]);
    assert_eq!((log.dropped(), log.write_errors()), (0, 0));

    // A failed reopen keeps the old file.
    std::fs::remove_dir_all(&dir.0).expect("rm");
    log.reopen();
    log.log(&with_path("/four"));
    log.flush().await;
    assert_eq!(log.write_errors(), 1);
}

#[test]
fn start_fails_on_unopenable_file() {
    let dir = TempDir::new("bad");
    let target = LogTarget::File(dir.0.join("missing/dir/access.log"));
    assert!(AccessLog::start(LogFormat::Json, target).is_err());
}

#[tokio::test]
async fn stdout_target_starts_and_flushes() {
    let log = AccessLog::start(LogFormat::Json, LogTarget::Stdout).expect("start");
    log.reopen(); // no-op
    log.flush().await;
    assert_eq!(log.dropped(), 0);
}

#[tokio::test]
async fn full_queue_drops_instead_of_blocking() {
    let dir = TempDir::new("full");
    let path = dir.0.join("access.log");
    let log = AccessLog::start_with_capacity(LogFormat::Json, LogTarget::File(path.clone()), 4).expect("start");
    let gate = log.inner.shared.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    for _ in 0..100 {
        log.log(&record());
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // The thread's buffer holds 4; the writer takes nothing while it waits at the gate.
    let dropped = log.dropped();
    assert_eq!(dropped, 96);
    // A reopen while the writer is behind still keeps the order: the lines logged before it
    // go to the old file, the later ones to the new.
    let rotated = dir.0.join("access.log.1");
    std::fs::rename(&path, &rotated).expect("rename");
    log.reopen();
    log.log(&with_path("/after"));
    assert_eq!(log.dropped(), 97, "the buffer is still full");
    drop(gate);
    log.flush().await;
    let written = lines_of(&rotated);
    assert_eq!(written.len() as u64, 100 - dropped);
    for l in written {
        serde_json::from_str::<serde_json::Value>(&l).expect("whole JSON line");
    }
    assert!(lines_of(&path).is_empty());
    // Drained, the buffer takes lines again.
    log.log(&with_path("/later"));
    log.flush().await;
    assert_eq!(lines_of(&path).len(), 1);
    assert_eq!(log.dropped(), 97);
}

#[tokio::test]
async fn lines_keep_their_order_and_side_of_a_reopen_across_threads() {
    let dir = TempDir::new("order");
    let path = dir.0.join("access.log");
    let rotated = dir.0.join("access.log.1");
    let log = AccessLog::start(LogFormat::parse("%U").expect("fmt"), LogTarget::File(path.clone())).expect("start");
    let logged = Arc::new(std::sync::Barrier::new(5));
    let reopened = Arc::new(std::sync::Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (log, logged, reopened) = (log.clone(), logged.clone(), reopened.clone());
            std::thread::spawn(move || {
                for i in 0..300 {
                    log.log(&with_path(&format!("/before/{t}/{i}")));
                }
                logged.wait();
                reopened.wait();
                for i in 0..300 {
                    log.log(&with_path(&format!("/after/{t}/{i}")));
                }
            })
        })
        .collect();
    logged.wait();
    std::fs::rename(&path, &rotated).expect("rename");
    log.reopen();
    reopened.wait();
    for t in threads {
        t.join().expect("join");
    }
    log.flush().await;
    assert_eq!(log.dropped(), 0);
    for (file, side) in [(&rotated, "before"), (&path, "after")] {
        let lines = lines_of(file);
        assert_eq!(lines.len(), 1200, "{side}");
        // Each thread's lines in the order it logged them.
        for t in 0..4 {
            let prefix = format!("/{side}/{t}/");
            let mine: Vec<&String> = lines.iter().filter(|l| l.starts_with(&prefix)).collect();
            let want: Vec<String> = (0..300).map(|i| format!("{prefix}{i}")).collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>(), "{side} {t}");
        }
    }
}

#[tokio::test]
async fn a_thread_that_ends_leaves_its_lines_to_the_writer() {
    let dir = TempDir::new("gone");
    let path = dir.0.join("access.log");
    let log = AccessLog::start(LogFormat::parse("%U").expect("fmt"), LogTarget::File(path.clone())).expect("start");
    let gate = log.inner.shared.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let l = log.clone();
    std::thread::spawn(move || {
        for i in 0..10 {
            l.log(&with_path(&format!("/{i}")));
        }
    })
    .join()
    .expect("join");
    drop(gate);
    log.flush().await;
    let want: Vec<String> = (0..10).map(|i| format!("/{i}")).collect();
    assert_eq!(lines_of(&path), want);
}

#[tokio::test]
async fn lines_reach_the_file_without_a_flush() {
    let dir = TempDir::new("window");
    let path = dir.0.join("access.log");
    let log = AccessLog::start(LogFormat::parse("%U").expect("fmt"), LogTarget::File(path.clone())).expect("start");
    log.log(&with_path("/soon"));
    let started = Instant::now();
    while lines_of(&path).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "the line never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(lines_of(&path), ["/soon"]);
}

#[tokio::test]
async fn dropping_the_last_handle_writes_what_is_left() {
    let dir = TempDir::new("last");
    let path = dir.0.join("access.log");
    let log = AccessLog::start(LogFormat::parse("%U").expect("fmt"), LogTarget::File(path.clone())).expect("start");
    let strong = log.inner.shared.clone();
    let gate = strong.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    log.log(&with_path("/one"));
    log.log(&with_path("/two"));
    let shared = Arc::downgrade(&strong);
    drop(log);
    drop(gate);
    drop(strong);
    let started = Instant::now();
    // The writer holds the shared state until it has written everything and exited.
    while shared.strong_count() > 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the writer never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(lines_of(&path), ["/one", "/two"]);
}

#[test]
fn the_standard_formats_write_what_their_pieces_would() {
    let mut recs = vec![record(), LogRecord::default()];
    let mut odd = record();
    odd.method = Method::from_bytes(b"PURGE").expect("method");
    odd.version = Version::HTTP_2;
    odd.bytes_sent = 0;
    odd.user = None;
    odd.client_ip = "2001:db8::7".parse().expect("ip");
    odd.head.set_path("/a b\"c");
    odd.head.set_query(Some("subscription-key=x&y=1"));
    recs.push(odd);
    for rec in &recs {
        for (name, spec) in [("common", COMMON), ("combined", COMBINED)] {
            let LogFormat::Apache(mut generic) = LogFormat::parse(name).expect("format") else { panic!("apache") };
            assert!(generic.standard.is_some(), "{name}");
            generic.standard = None;
            let mut want = Vec::new();
            LogFormat::Apache(generic).write(rec, &mut want);
            assert_eq!(line(name, rec).as_bytes(), want, "{name}");
            assert_eq!(line(spec, rec).as_bytes(), want, "{name} spelled out");
        }
    }
}

#[tokio::test]
async fn concurrent_loggers_write_whole_lines() {
    let dir = TempDir::new("conc");
    let path = dir.0.join("access.log");
    let log = AccessLog::start(LogFormat::Json, LogTarget::File(path.clone())).expect("start");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    log.log(&with_path(&format!("/t{t}/{i}")));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join");
    }
    log.flush().await;
    let lines = lines_of(&path);
    assert_eq!(lines.len() as u64 + log.dropped(), 4000);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON line");
        assert!(v["path"].as_str().is_some_and(|p| p.starts_with("/t")));
    }
}

#[test]
fn named_query_parameters_are_redacted_in_any_spelling() {
    let names: Vec<Box<str>> = vec!["api_key".into()];
    assert_eq!(
        super::format::redact_named("a=1&api_key=s3cret&API%5Fkey=s3cret&b=api_key", &names),
        "a=1&api_key=[redacted]&API%5Fkey=[redacted]&b=api_key"
    );
    assert_eq!(super::format::redact_named("api_key", &names), "api_key");
}

#[test]
fn a_reset_record_prints_as_a_new_one_and_keeps_a_small_buffer() {
    let fmt = "%h %u %t \"%r\" %>s %b %D %v %{request_id}g %{Referer}i %{Content-Type}o %{api}g %{backend}g";
    let long = format!("/{}", "p".repeat(400));
    let mut rec = LogRecord { head: head(&long, Some("a=1&b=2")), user: Some("alice".into()), ..record() };
    assert!(line(fmt, &rec).contains(&long));
    rec.reset();
    assert_eq!(line(fmt, &rec), line(fmt, &LogRecord::default()));
    assert!(rec.head.bytes.capacity() >= long.len());
    // A huge head gives its buffer back rather than pinning it in a reused record.
    rec.head.set_path(&"p".repeat(10_000));
    rec.reset();
    assert_eq!(rec.head.bytes.capacity(), 0);
    assert_eq!(rec.head.path(), b"/");
}

#[test]
fn the_cached_second_of_t_is_only_used_within_that_second() {
    let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms);
    let t = |time| line("%t", &LogRecord { time, ..record() });
    assert_eq!(t(at(971_182_536, 0)), "[10/Oct/2000:12:55:36 +0000]\n");
    assert_eq!(t(at(971_182_536, 999)), "[10/Oct/2000:12:55:36 +0000]\n");
    assert_eq!(t(at(971_182_537, 0)), "[10/Oct/2000:12:55:37 +0000]\n");
    assert_eq!(t(at(971_182_536, 500)), "[10/Oct/2000:12:55:36 +0000]\n");
    assert_eq!(t(UNIX_EPOCH - Duration::from_millis(1)), "[01/Jan/1970:00:00:00 +0000]\n");
    assert_eq!(t(UNIX_EPOCH), "[01/Jan/1970:00:00:00 +0000]\n");
}

#[test]
fn headers_are_kept_per_direction_in_order() {
    let mut h = HeadText::default();
    h.add_header(false, &name("x-a"), b"1");
    h.add_header(true, &name("x-a"), b"out");
    h.add_header(false, &name("x-a"), b"2");
    assert_eq!(h.header(false, &name("x-a")).collect::<Vec<_>>(), [b"1", b"2"]);
    assert_eq!(h.header(true, &name("x-a")).collect::<Vec<_>>(), [b"out"]);
    h.set_header(false, &name("x-a"), b"3");
    assert_eq!(h.header(false, &name("x-a")).collect::<Vec<_>>(), [b"3"]);
    assert_eq!(h.header(true, &name("x-a")).count(), 1);
    let rec = LogRecord { head: h, ..record() };
    assert_eq!(line("%{X-A}i|%{X-A}o|%{X-B}i", &rec), "3|out|-\n");
}

#[test]
fn picked_headers_are_the_first_value_of_the_named_ones() {
    let mut map = HeaderMap::new();
    map.append(USER_AGENT, HeaderValue::from_static("one"));
    map.append(USER_AGENT, HeaderValue::from_static("two"));
    map.insert(name("x-other"), HeaderValue::from_static("x"));
    let mut h = HeadText::default();
    h.pick_headers(false, &[USER_AGENT, REFERER], &map);
    assert_eq!(h.header(false, &USER_AGENT).collect::<Vec<_>>(), [b"one"]);
    assert_eq!(h.header(false, &REFERER).count() + h.header(false, &name("x-other")).count(), 0);
    let rec = LogRecord { head: h, ..record() };
    assert_eq!(line("%{User-Agent}i|%{Referer}i|%{X-Other}i", &rec), "one|-|-\n");
}

#[test]
fn host_empty_or_dash_prints_a_dash() {
    let mut rec = record();
    for host in ["", "-"] {
        rec.head.set_host(Some(host));
        assert_eq!(line("%v|%{host}g", &rec), "-|-\n");
    }
    assert_eq!(format::strip_port("a.test:8080"), "a.test");
    assert_eq!(format::strip_port("[::1]:80"), "[::1]");
    assert_eq!(format::strip_port("[::1]"), "[::1]");
    assert_eq!(format::strip_port("[::1"), "[::1");
    assert_eq!(format::strip_port("a:b:80"), "a:b");
    assert_eq!(format::strip_port("é.test:1"), "é.test");
    assert_eq!(format::strip_port(""), "");
}

#[test]
fn headers_used_by_formats() {
    let used = |spec: &str| LogFormat::parse(spec).expect("format").headers_used();
    assert_eq!(used("combined"), (vec![REFERER, USER_AGENT], vec![]));
    assert_eq!(used("common"), (vec![], vec![]));
    assert_eq!(used("json"), (vec![USER_AGENT, REFERER], vec![]));
    assert_eq!(
        used("%{X-A}i %{x-a}i %{Content-Type}o %{user_agent}g"),
        (vec![name("x-a"), USER_AGENT], vec![name("content-type")])
    );
}

#[test]
fn a_remembered_line_start_is_the_one_written() {
    let generic = |rec: &LogRecord| {
        let LogFormat::Apache(mut f) = LogFormat::parse("combined").expect("format") else { panic!("apache") };
        f.standard = None;
        let mut out = Vec::new();
        LogFormat::Apache(f).write(rec, &mut out);
        String::from_utf8(out).expect("utf8")
    };
    let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms);
    let mut rec = LogRecord { user: None, ..record() };
    // The same client and second (remembered), another client, another second, a user, a
    // client again after a user, and statuses in and beyond the table.
    let steps: [(&str, SystemTime, Option<&str>, u16); 9] = [
        ("192.0.2.7", at(971_182_536, 10), None, 200),
        ("192.0.2.7", at(971_182_536, 990), None, 404),
        ("192.0.2.8", at(971_182_536, 990), None, 99),
        ("192.0.2.8", at(971_182_537, 0), None, 999),
        ("192.0.2.8", at(971_182_537, 1), Some("frank"), 1000),
        ("192.0.2.8", at(971_182_537, 2), None, 100),
        ("2001:db8::1", at(971_182_537, 2), None, 0),
        ("2001:db8::1", at(971_182_537, 3), None, 503),
        ("192.0.2.8", UNIX_EPOCH - Duration::from_secs(1), None, 200),
    ];
    for (ip, time, user, status) in steps {
        rec.client_ip = ip.parse().expect("ip");
        rec.time = time;
        rec.user = user.map(str::to_owned);
        rec.status = status;
        let want = generic(&rec);
        assert_eq!(line("combined", &rec), want);
        assert_eq!(line("combined", &rec), want, "written again");
    }
}

#[test]
fn formats_say_what_they_need_of_a_request() {
    let needs = |spec: &str| LogFormat::parse(spec).expect("format").needs();
    let none = Needs::default();
    assert_eq!(needs("common"), none);
    assert_eq!(needs("combined"), none);
    assert_eq!(needs("%h %t %r %>s %D %{User-Agent}i %{referer}g %{status}g"), none);
    assert_eq!(needs("json"), Needs { host: true, request_id: true, time_ms: true, gateway: true });
    assert_eq!(needs("%v"), Needs { host: true, ..none });
    assert_eq!(needs("%{host}g"), Needs { host: true, ..none });
    assert_eq!(needs("%{request_id}g"), Needs { request_id: true, ..none });
    assert_eq!(needs("%{time}g"), Needs { time_ms: true, ..none });
    for field in GATEWAY_FIELDS {
        assert_eq!(needs(&format!("%{{{field}}}g")), Needs { gateway: true, ..none }, "{field}");
    }
    // Every field is either printed from what every record holds or named by a need.
    let basic = ["time", "client_ip", "method", "path", "query", "protocol", "status", "bytes_sent", "duration_ms"];
    let other = ["host", "request_id", "user_agent", "referer", "user"];
    for (name, _) in FIELDS {
        assert!(basic.contains(name) || other.contains(name) || GATEWAY_FIELDS.contains(name), "{name}");
    }
}
