//! Unit tests for the YAML loader: parse errors and their hints, error paths and locations,
//! recovery across runs, lenient values, the core schema, and malformed input that must not panic.

#![allow(dead_code)]
use super::*;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
struct Gw {
    listen: String,
    #[serde(default)]
    backends: BTreeMap<String, Backend>,
    #[serde(default)]
    routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
struct Backend {
    servers: Vec<Server>,
    #[serde(default)]
    balance: Balance,
}

#[derive(Debug, Deserialize)]
struct Server {
    url: String,
    #[serde(default)]
    weight: u32,
    tls: Option<bool>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Balance {
    #[default]
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Deserialize)]
struct Route {
    path: String,
    #[serde(default)]
    plugins: Vec<Plugin>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Plugin {
    Cors,
    RateLimit(u32),
    SetHeader { name: String, value: String },
}

fn errors<T: DeserializeOwned + fmt::Debug>(yaml: &str) -> Vec<String> {
    let result = Document::parse("gw.yaml", yaml).and_then(|d| d.deserialize::<T>());
    result.expect_err("expected errors").iter().map(ToString::to_string).collect()
}

#[test]
fn unknown_keys_at_every_depth() {
    let yaml = "listen: ':80'\nlisten_port: 1\nbackends:\n  orders:\n    servers:\n      - url: http://a\n        wieght: 2\n    balanse: x\nroutes:\n  - path: /\n    \"a.b\": 1\n";
    assert_eq!(
        errors::<Gw>(yaml),
        [
            "gw.yaml:2:1: listen_port: unknown key `listen_port` (expected one of: listen, backends, routes)",
            "gw.yaml:7:9: backends.orders.servers[0].wieght: unknown key `wieght` (expected one of: url, weight, tls)",
            "gw.yaml:8:5: backends.orders.balanse: unknown key `balanse` (expected one of: servers, balance)",
            "gw.yaml:11:5: routes[0][\"a.b\"]: unknown key `a.b` (expected one of: path, plugins)",
        ]
    );
}

#[test]
fn type_error_and_unknown_key_in_one_struct() {
    let yaml = "listen: x\nbackends:\n  orders:\n    servers:\n      - url: [1]\n        weight: abc\n        colour: red\n        tls: 'yes'\n";
    assert_eq!(
        errors::<Gw>(yaml),
        [
            "gw.yaml:5:14: backends.orders.servers[0].url: expected a string, found a list",
            "gw.yaml:6:17: backends.orders.servers[0].weight: expected an integer, found \"abc\"",
            "gw.yaml:7:9: backends.orders.servers[0].colour: unknown key `colour` (expected one of: url, weight, tls)",
            "gw.yaml:8:14: backends.orders.servers[0].tls: expected a boolean (true or false), found \"yes\"",
        ]
    );
}

#[test]
fn missing_field_has_path_and_location_of_its_map() {
    let yaml = "listen: x\nbackends:\n  orders:\n    servers:\n      - weight: 1\n  users:\n    servers: []\n    balance: random\n";
    assert_eq!(errors::<Gw>(yaml), [
        "gw.yaml:5:9: backends.orders.servers[0]: missing key `url`",
        "gw.yaml:8:14: backends.users.balance: unknown value `random` (expected one of: round_robin, least_request)",
    ]);
    assert_eq!(errors::<Gw>("backends: {}\n"), ["gw.yaml:1:1: missing key `listen`"]);
}

#[test]
fn a_bad_element_does_not_hide_the_next() {
    let yaml = "listen: x\nroutes:\n  - plugins: [cors]\n  - path: /a\n    plugins:\n      - rate-limit: -1\n      - bogus\n      - set-header: {name: x}\n      - cors: 1\n  - path: 5\n    nope: 1\n";
    assert_eq!(
        errors::<Gw>(yaml),
        [
            "gw.yaml:3:5: routes[0]: missing key `path`",
            "gw.yaml:6:21: routes[1].plugins[0].rate-limit: expected a non-negative integer, found -1",
            "gw.yaml:7:9: routes[1].plugins[1]: unknown value `bogus` (expected one of: cors, rate-limit, set-header)",
            "gw.yaml:8:21: routes[1].plugins[2].set-header: missing key `value`",
            "gw.yaml:9:15: routes[1].plugins[3].cors: `cors` takes no value: write just `cors`",
            "gw.yaml:11:5: routes[2].nope: unknown key `nope` (expected one of: path, plugins)",
        ]
    );
}

#[test]
fn duplicate_keys_and_syntax_errors() {
    let dup = Document::parse("gw.yaml", "a: 1\nb:\n  c: 1\n  c: 2\na: 3\n").expect_err("dup");
    let dup: Vec<String> = dup.iter().map(ToString::to_string).collect();
    assert_eq!(
        dup,
        [
            "gw.yaml:4:3: duplicate key `c` (first defined on line 3)",
            "gw.yaml:5:1: duplicate key `a` (first defined on line 1)",
        ]
    );
    let bad = Document::parse("gw.yaml", "a: 1\nb: [1, 2\nc: 3\n").expect_err("syntax");
    assert_eq!((bad.len(), bad[0].line, bad[0].col), (1, 3, 2));
    let bad = Document::parse("f.yaml", "a: 1\n b: 2\n").expect_err("syntax");
    assert_eq!(bad[0].to_string(), "f.yaml:2:3: mapping values are not allowed in this context");
    for (text, message) in [
        ("a: &x 1\nb: *x\n", "aliases (`*name`) are not supported: write the value out"),
        ("a: 1\n---\nb: 2\n", "only one YAML document is allowed per file"),
        ("a: !secret x\n", "YAML tags such as `!secret` are not supported"),
    ] {
        let e = Document::parse("f.yaml", text).expect_err(text);
        assert_eq!(e[0].message, message);
    }
}

#[test]
fn display_format() {
    let path = [PathSeg::Key("apis".into()), PathSeg::Key("/x.y".into())];
    let mut e = ConfigError::new("gw.yaml", (12, 9), &path, "m".into());
    assert_eq!(e.to_string(), "gw.yaml:12:9: apis[\"/x.y\"]: m");
    e.path.clear();
    assert_eq!(e.to_string(), "gw.yaml:12:9: m");
    let path = [PathSeg::Index(0), PathSeg::Key("a".into()), PathSeg::Key("".into())];
    assert_eq!(format_path(&path), "[0].a[\"\"]");
    // No position (an unreadable file): no fake `:0:0`.
    let mut e = ConfigError::new("gw.yaml", (0, 0), &[], "cannot read the config file".into());
    assert_eq!(e.to_string(), "gw.yaml: cannot read the config file");
    e.path = "apis".into();
    assert_eq!(e.to_string(), "gw.yaml: apis: cannot read the config file");
}

#[test]
fn keys_are_located_at_the_key() {
    let doc = Document::parse("gw.yaml", "a:\n  b:\n    c: 1\nl: [ { k: v } ]\n").expect("parse");
    let key = |k: &str| PathSeg::Key(k.into());
    assert_eq!(doc.locate(&[key("a"), key("b")]), (3, 5));
    assert_eq!(doc.locate_key(&[key("a"), key("b")]), (2, 3));
    assert_eq!(doc.locate_key(&[key("a")]), (1, 1));
    assert_eq!(doc.locate_key(&[key("l"), PathSeg::Index(0), key("k")]), (4, 8));
    // A list element, or no such key: like `locate`.
    assert_eq!(doc.locate_key(&[key("l"), PathSeg::Index(0)]), (4, 6));
    assert_eq!(doc.locate_key(&[key("a"), key("nope")]), (2, 3));
    let e = doc.error_at_key(&[key("a"), key("b")], "m");
    assert_eq!(e.to_string(), "gw.yaml:2:3: a.b: m");
}

#[test]
fn lenient_keeps_what_could_be_read() {
    let yaml = "listen: [x]\nbackends:\n  orders:\n    servers:\n      - url: http://a\n        weight: abc\n    balance: random\n";
    let doc = Document::parse("gw.yaml", yaml).expect("parse");
    let (value, errors) = doc.deserialize_at_lenient::<Gw>(&[]).expect("node");
    let gw = value.expect("only leaf errors and a defaulted field");
    assert_eq!(gw.listen, "");
    let orders = &gw.backends["orders"];
    assert_eq!((orders.servers[0].url.as_str(), orders.servers[0].weight), ("http://a", 0));
    assert_eq!(orders.balance, Balance::RoundRobin);
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors, [
        "gw.yaml:1:9: listen: expected a string, found a list",
        "gw.yaml:6:17: backends.orders.servers[0].weight: expected an integer, found \"abc\"",
        "gw.yaml:7:14: backends.orders.balance: unknown value `random` (expected one of: round_robin, least_request)",
    ]);
    // The strict form gives the same errors and no value.
    assert_eq!(doc.deserialize::<Gw>().expect_err("errors").len(), 3);
    // A dropped list element (or map entry) would shift what follows: no value.
    let yaml = "listen: x\nroutes:\n  - path: /a\n    plugins: [bogus, cors]\n";
    let doc = Document::parse("gw.yaml", yaml).expect("parse");
    let (value, errors) = doc.deserialize_at_lenient::<Gw>(&[]).expect("node");
    assert!(value.is_none());
    assert_eq!(errors.len(), 1, "{errors:?}");
    // A missing required key: no value either.
    let doc = Document::parse("gw.yaml", "backends: {}\n").expect("parse");
    let (value, errors) = doc.deserialize_at_lenient::<Gw>(&[]).expect("node");
    assert!(value.is_none());
    assert_eq!(errors[0].message, "missing key `listen`");
    assert!(doc.deserialize_at_lenient::<Gw>(&[PathSeg::Key("nope".into())]).is_none());
}

#[test]
fn unclosed_brackets_and_list_hints() {
    let message = |text: &str| Document::parse("f", text).expect_err(text)[0].to_string();
    assert_eq!(
        message("l:\n  - { name: main, bind: \"127.0.0.1:8080\"\nbackends:\n  b: 1\n"),
        "f:3:1: invalid indentation (the `{` opened at 2:5 is not closed)"
    );
    assert!(message("l:\n  - { name: main, bind: x\nbackends:\n  c: 1\n")
        .ends_with(" (the `{` opened at 2:5 is not closed)"));
    assert!(message("l: [ a, b\n").ends_with(" (the `[` opened at 1:4 is not closed)"));
    assert!(message("a:\n  - [1, 2\n  - [3]\n").ends_with(" (the `[` opened at 2:5 is not closed)"));
    // A bracket that is closed later, or an error on its own line: no hint.
    for text in ["a: { b: 1 \n  c: 2 }\n", "a: [ { u: x }, { b: 2 ]\n", "a: [\n  { u: x },\n  u: y: z\n]\n"] {
        assert!(!message(text).contains("opened at"), "{text:?}: {}", message(text));
    }
    let yaml = "listen: x\nroutes:\n  path: /\nbackends:\n  b:\n    servers: { url: x }\n";
    assert_eq!(
        errors::<Gw>(yaml),
        [
            "gw.yaml:3:3: routes: expected a list, found a map (start each entry with `- `)",
            "gw.yaml:6:14: backends.b.servers: expected a list, found a map (for a list of one, write `[ { … } ]`)",
        ]
    );
}

#[derive(Debug, Deserialize, PartialEq)]
struct Scalars {
    s: Vec<String>,
    n: Vec<i64>,
    f: f64,
    b: Vec<bool>,
    o: Vec<Option<u8>>,
    e: Option<String>,
    any: Vec<Any>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum Any {
    Int(u16),
    Name(Balance),
}

#[test]
fn core_schema_scalars() {
    let yaml = "s: [8080, true, 1.50, 'x', ~x]\nn: [0x1F, 0o17, -3, +4]\nf: 2\nb: [True, FALSE]\no: [~, null, 7]\ne:\nany: [503, least_request]\n";
    let doc = Document::parse("f", yaml).expect("parse");
    let v: Scalars = doc.deserialize().expect("valid");
    assert_eq!(v.s, ["8080", "true", "1.50", "x", "~x"]);
    assert_eq!((v.n, v.f, v.b), (vec![31, 15, -3, 4], 2.0, vec![true, false]));
    assert_eq!((v.o, v.e), (vec![None, None, Some(7)], None));
    assert_eq!(v.any, [Any::Int(503), Any::Name(Balance::LeastRequest)]);
    let yaml = "s: 5\nn: ['1', 99999999999999999999, 1.5]\nf: x\nb: [1]\no: [256]\ne: [1]\nany: [x]\n";
    assert_eq!(errors::<Scalars>(yaml), [
        "gw.yaml:1:4: s: expected a list, found 5",
        "gw.yaml:2:5: n[0]: expected an integer, found \"1\" (quoted values are strings: remove the quotes)",
        "gw.yaml:2:10: n[1]: expected an integer between -9223372036854775808 and 9223372036854775807, found 99999999999999999999",
        "gw.yaml:2:32: n[2]: expected an integer, found 1.5",
        "gw.yaml:3:4: f: expected a number, found \"x\"",
        "gw.yaml:4:5: b[0]: expected a boolean (true or false), found 1",
        "gw.yaml:5:5: o[0]: expected an integer between 0 and 255, found 256",
        "gw.yaml:6:4: e: expected a string, found a list",
        "gw.yaml:7:7: any[0]: unexpected value \"x\": it matches none of the accepted forms",
    ]);
}

#[test]
fn sections_one_by_one() {
    let doc = Document::parse("gw.yaml", "backends:\n  a:\n    servers: [{url: x}]\n  b:\n    servers: [{}]\n")
        .expect("parse");
    let entries = doc.map_entries(&[PathSeg::Key("backends".into())]);
    let names: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(doc.deserialize_at::<Backend>(&entries[0].1).is_some_and(|r| r.is_ok()));
    let Some(Err(e)) = doc.deserialize_at::<Backend>(&entries[1].1) else { panic!("b must fail") };
    assert_eq!(e[0].to_string(), "gw.yaml:5:15: backends.b.servers[0]: missing key `url`");
    assert!(doc.deserialize_at::<Backend>(&[PathSeg::Key("nope".into())]).is_none());
    let path = [PathSeg::Key("backends".into()), PathSeg::Key("a".into()), PathSeg::Key("balance".into())];
    assert_eq!(doc.locate(&path), (3, 5));
    assert_eq!(
        doc.error(&path, "unknown backend `x`").to_string(),
        "gw.yaml:3:5: backends.a.balance: unknown backend `x`"
    );
    let empty = Document::parse("e.yaml", "# nothing\n").expect("empty");
    assert_eq!(empty.root().kind, NodeKind::Map(Vec::new()));
}

#[test]
fn wrong_shapes_report_once_and_never_panic() {
    let yaml = "listen: {a: 1}\nbackends: [1]\nroutes:\n  - plugins: 3\n    path: [x]\n";
    assert_eq!(
        errors::<Gw>(yaml),
        [
            "gw.yaml:1:9: listen: expected a string, found a map",
            "gw.yaml:2:11: backends: expected a map, found a list",
            "gw.yaml:4:14: routes[0].plugins: expected a list, found 3",
            "gw.yaml:5:11: routes[0].path: expected a string, found a list",
        ]
    );
    // Arbitrary input must come back as errors, not panics.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let alphabet = b"ab:- \n[]{},'\"&*!|>#?%@`~0x.";
    for _ in 0..2000 {
        let text: String = (0..(seed % 40))
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                alphabet[(seed % alphabet.len() as u64) as usize] as char
            })
            .collect();
        if let Ok(doc) = Document::parse("f", &text) {
            let _ = doc.deserialize::<Gw>();
            let _ = doc.deserialize::<Scalars>();
        }
    }
}
