//! Path normalisation against route-level auth (reliability.md §2.4; Orange Tsai 2018, "Breaking
//! Parser Logic"). API `shop` forwards everything under `/shop` to the raw backend, except
//! `/shop/admin…`, whose operations answer 403 at the gateway.
//!
//! For every spelling of "admin" an attacker might try, the gateway either applies the admin
//! rule (403), refuses the request (400), or forwards a path that is already normal *and* that
//! no common backend reading of it turns into `/admin`: decoding once or twice, overlong UTF-8,
//! backslashes as slashes, `;parameters` stripped per segment (Tomcat, Jetty, Spring).

use crate::framing::{one_shot, settle};
use crate::support::*;

use super::wire::RawBackend;

fn config(backend: std::net::SocketAddr) -> String {
    let deny = r#"{ inbound: [ { return-response: { status: 403, headers: { content-type: text/plain }, body: "admin only" } } ] }"#;
    format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: off }} }}
backends: {{ b: {{ servers: [ {{ url: "http://{backend}" }} ] }} }}
apis:
  shop:
    path: /shop
    backend: b
    operations:
      - {{ id: anything, method: "*", template: "/{{*rest}}" }}
      - {{ id: admin, method: "*", template: /admin, policies: {deny} }}
      - {{ id: admin-sub, method: "*", template: "/admin/{{*rest}}", policies: {deny} }}
"#
    )
}

/// Percent-decodes once; with `overlong`, also reads overlong UTF-8 forms of `.` and `/` as
/// those characters, as old or lenient decoders do.
fn decode(b: &[u8], overlong: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    if !overlong {
        return out;
    }
    let mut folded = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        match &out[i..] {
            [0xc0, 0xae, ..] => (folded.push(b'.'), i += 2),
            [0xc0, 0xaf, ..] => (folded.push(b'/'), i += 2),
            [0xe0, 0x80, 0xae, ..] => (folded.push(b'.'), i += 3),
            [0xe0, 0x80, 0xaf, ..] => (folded.push(b'/'), i += 3),
            [c, ..] => (folded.push(*c), i += 1),
            [] => break,
        };
    }
    folded
}

/// Resolves a decoded path the lenient way: `\` is `/`, `;params` dropped, dot segments and
/// empty segments removed.
fn resolve(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        let seg = seg.split(';').next().unwrap_or_default();
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Every way a backend might read the forwarded path.
fn readings(target: &str) -> Vec<String> {
    let path = target.split('?').next().unwrap_or_default().as_bytes();
    let once = decode(path, true);
    let twice = decode(&once, true);
    vec![resolve(path), resolve(&decode(path, false)), resolve(&once), resolve(&twice)]
}

fn is_admin(p: &str) -> bool {
    p == "/admin" || p.starts_with("/admin/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_level_auth_sees_the_path_the_backend_sees() {
    let b = RawBackend::start().await;
    let g = gateway(&config(b.addr)).await;
    let admin = [
        "/shop/admin",
        "/shop/admin/",
        "/shop/admin/users",
        "/shop/./admin",
        "/shop/x/../admin",
        "/shop/x/../admin/users",
        "/shop/%2e/admin",
        "/shop/x/%2e%2e/admin",
        "/shop/x/.%2e/admin",
        "/shop/x/%2E%2E/admin",
        "/shop//admin",
        "/shop///admin//users",
        "/shop/%61dmin",
        "/shop/%61%64%6D%69%6E/users",
        "/shop/admin%2fusers",
        "/shop/x/..%2fadmin",
        "/shop/x%2f..%2fadmin",
        "/shop\\admin",
        "/shop/x/..\\admin",
        "/shop/x/..%5cadmin",
        "/shop/admin;x=1",
        "/shop/admin;/users",
        "/shop/x/..;/admin",
        "/shop/.;/admin",
        "/shop/x/%2e%2e;/admin",
        "/shop/x/%c0%ae%c0%ae/admin",
        "/shop/x/%c0%ae%c0%ae%c0%afadmin",
        "/shop/x/%e0%80%ae%e0%80%ae/admin",
        "/shop/x/%252e%252e/admin",
        "/shop/x/%252e%252e%252fadmin",
        "/shop/x%252f..%252fadmin",
        "/shop/admin%00",
        "/shop/admin%2500",
        "/shop/admin?x=1",
        "/shop/admin/?../../x",
        "/shop/x/../../shop/admin",
        "/shop/x/./../admin/.",
        "/shop/x/..%00/admin",
        "/shop/x/%2e%2e%3badmin",
    ];
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for target in admin {
        let before = b.requests().len();
        let raw = format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let (r, _, rest) = one_shot(g.addr, raw.as_bytes()).await;
        settle().await;
        let new = b.requests().into_iter().skip(before).collect::<Vec<_>>();
        let Some(r) = r.first() else {
            failures.push(format!("{target}: no answer ({rest:?})"));
            continue;
        };
        outcomes.push(format!("{target} -> {}", r.status));
        match r.status {
            403 => {
                if r.text() != "admin only" {
                    failures.push(format!("{target}: a 403 that is not the admin rule: {}", r.text()));
                }
            }
            400 => {
                if let Err(e) = r.check_problem(&[400]) {
                    failures.push(format!("{target}: {e}"));
                }
            }
            200 => {
                let Some(seen) = new.last() else {
                    failures.push(format!("{target}: 200 without reaching the backend"));
                    continue;
                };
                let fwd = seen.target.split('?').next().unwrap_or_default();
                match gatehouse::edge::normalize::normalize_path(fwd) {
                    Ok(n) if n == fwd => {}
                    other => failures.push(format!("{target}: forwarded {fwd:?}, which normalises to {other:?}")),
                }
                for reading in readings(&seen.target) {
                    if is_admin(&reading) {
                        failures.push(format!(
                            "{target}: forwarded as {:?}, which a backend reads as {reading}",
                            seen.target
                        ));
                    }
                }
            }
            s => failures.push(format!("{target}: answered {s} {}", r.text())),
        }
        if r.status != 200 && !new.is_empty() {
            failures.push(format!("{target}: answered {} but the backend saw {:?}", r.status, new[0].target));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}\n\noutcomes:\n{}",
        failures.len(),
        failures.join("\n"),
        outcomes.join("\n")
    );
}

/// Routing is case-sensitive, as URL paths are (RFC 3986 §6.2.2.1): `/shop/ADMIN` is not the
/// admin operation, and is forwarded exactly as routed — never silently as `/admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_is_routed_and_forwarded_as_sent() {
    let b = RawBackend::start().await;
    let g = gateway(&config(b.addr)).await;
    for (target, fwd) in [("/shop/ADMIN", "/ADMIN"), ("/shop/Admin/x", "/Admin/x"), ("/shop/%41DMIN", "/ADMIN")] {
        let got = get(&g.url(target)).await;
        assert_eq!(got.status, 200, "{target}: {}", got.text());
        settle().await;
        assert_eq!(b.requests().last().map(|r| r.target.clone()).as_deref(), Some(fwd), "{target}");
    }
    // The prefix itself is case-sensitive too: `/SHOP/admin` is no route at all.
    let got = get(&g.url("/SHOP/admin")).await;
    assert_problem(&got, 404, "edge");
}
