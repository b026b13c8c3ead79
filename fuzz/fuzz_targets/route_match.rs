//! Route matching: operation templates written by the fuzzer are compiled (or refused with an
//! error) and requests are looked up; a lookup never panics, and whatever it finds is an API
//! whose public prefix the (normalised) path really starts with — the proxy slices the forwarded
//! path at that prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;

use gatehouse::route::Lookup;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    // Line 1: up to 6 operation templates for API `b` (prefix `/b`), separated by spaces.
    let templates: Vec<&str> = lines.next().unwrap_or("").split(' ').filter(|t| !t.is_empty()).take(6).collect();
    let mut ops = String::new();
    for (i, t) in templates.iter().enumerate() {
        let method = ["GET", "POST", "*"][i % 3];
        let t = serde_json_escape(t);
        ops.push_str(&format!("      - {{ id: op{i}, method: \"{method}\", template: {t} }}\n"));
    }
    let yaml = format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: off }} }}
backends: {{ be: {{ servers: [ {{ url: "http://127.0.0.1:9" }} ] }} }}
apis:
  root: {{ path: /, backend: be }}
  a: {{ path: /a, backend: be, hosts: [ a.test, "*.wild.test" ] }}
  b:
    path: /b
    backend: be
    operations:
{ops}"#
    );
    let Ok(snapshot) = gatehouse::snapshot::compile_str("fuzz.yaml", &yaml, std::path::Path::new("/nonexistent"))
    else {
        return;
    };
    // Further lines: `METHOD HOST PATH` lookups.
    for line in lines.take(16) {
        let mut parts = line.splitn(3, ' ');
        let (Some(method), Some(host), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let Ok(method) = http::Method::from_bytes(method.as_bytes()) else { continue };
        let Ok(path) = gatehouse::edge::normalize::normalize_path(path) else { continue };
        let host = (!host.is_empty()).then_some(host);
        match snapshot.routes.lookup(host, &path, &method) {
            Lookup::Found(r, _) => {
                assert!(path.starts_with(r.api.prefix.as_str()), "{path:?} routed to prefix {:?}", r.api.prefix);
                // The slice the proxy forwards is on a char boundary.
                assert!(path.is_char_boundary(r.api.prefix.len()));
            }
            Lookup::MethodNotAllowed(allow) => assert!(!allow.is_empty(), "405 without Allow for {path:?}"),
            Lookup::NotFound => {}
        }
    }
});

/// A YAML double-quoted scalar for `s` (JSON string syntax is valid YAML).
fn serde_json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
