use super::*;

fn run(yaml: &str, base: &Path) -> (Document, Resolved, Vec<ConfigError>) {
    let mut doc = Document::parse("t.yaml", yaml).expect("parse");
    let mut errors = Vec::new();
    let r = resolve_in(&mut doc, base, &mut errors);
    (doc, r, errors)
}

fn scalar(doc: &Document, path: &[&str]) -> String {
    let path: Vec<PathSeg> = path.iter().map(|k| key(k)).collect();
    doc.deserialize_at::<String>(&path).expect("node").expect("string")
}

#[test]
fn substitutes_and_reports() {
    let mut get = |n: &str| if n == "admin-token" { Ok("s3cret".to_owned()) } else { Err(format!("no {n}")) };
    assert_eq!(substitute("Bearer {{secret:admin-token}}!", &mut get).as_deref(), Ok("Bearer s3cret!"));
    assert!(substitute("{{secret:nope}}", &mut get).is_err());
    assert!(substitute("{{secret:x", &mut get).is_err());
    assert!(substitute("{{secret: }}", &mut get).is_err());
    assert_eq!(providers::env_name("db.pass-word"), "DB_PASS_WORD");
}

#[test]
fn environment_by_default() {
    let yaml = "a: \"{{secret:gatehouse-unit-env-x}}\"\nb: \"{{secret:gatehouse-unit-unset}}\"\n";
    // The variable name is unique to this test; nothing else in the process reads or writes it.
    std::env::set_var("GATEHOUSE_UNIT_ENV_X", "from-env");
    let (doc, r, errors) = run(yaml, Path::new(""));
    assert_eq!(scalar(&doc, &["a"]), "from-env");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "b");
    assert!(errors[0].message.contains("GATEHOUSE_UNIT_UNSET"), "{}", errors[0].message);
    assert!(r.sources.is_empty());
}

#[test]
fn named_values_then_providers_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("s")).expect("mkdir");
    std::fs::write(dir.path().join("s/client-secret"), "file-secret\n").expect("write");
    std::fs::write(dir.path().join("s/host"), "from-file").expect("write");
    let yaml = r#"
secrets:
  providers: [ { dir: s }, env ]
  values:
    host: orders.internal
    alias: "{{secret:client-secret}}"
    plain: { value: "visible", secret: false }
x: "{{secret:host}}"
y: "id:{{secret:client-secret}}"
z: "{{secret:alias}}"
"#;
    let (doc, r, errors) = run(yaml, dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(scalar(&doc, &["x"]), "orders.internal", "named values win over providers");
    assert_eq!(scalar(&doc, &["y"]), "id:file-secret");
    assert_eq!(scalar(&doc, &["z"]), "file-secret", "a named value may refer to a provider");
    assert_eq!(r.sources.len(), 1);
    assert_eq!(r.redact_str("bad: file-secret and visible"), "bad: {{secret:client-secret}} and visible");
}

#[test]
fn errors_are_located_and_never_echo_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = r#"
secrets:
  providers: [ vault, { dir: missing }, env ]
  values:
    "bad name": x
    ref: "{{secret:gatehouse-unit-nowhere}}"
    extra: { value: v, colour: red }
a: "{{secret:ref}}"
"#;
    let (_, _, errors) = run(yaml, dir.path());
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"secrets.providers[0]"), "{errors:?}");
    assert!(paths.contains(&"secrets.providers[1].dir"), "{errors:?}");
    assert!(paths.contains(&"secrets.values.ref"), "{errors:?}");
    assert!(errors.iter().any(|e| e.message.contains("colour")), "{errors:?}");
}

#[test]
fn unreadable_secret_file_is_an_error_without_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("big"), "x".repeat(100_000)).expect("write");
    let (_, _, errors) = run("secrets: { providers: [ { dir: . } ] }\na: \"{{secret:big}}\"\n", dir.path());
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("larger than"), "{errors:?}");
    assert!(!errors[0].message.contains("xxxx"));
}

#[test]
fn redaction_prefers_the_longest_value() {
    let mut r = Resolved::default();
    r.keep_out("short", "abcd", true);
    r.keep_out("long", "abcdefgh", true);
    r.keep_out("tiny", "ab", true);
    r.keep_out("plain", "public-host", false);
    r.redactions.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
    let mut errors = vec![ConfigError {
        file: "f".into(),
        line: 1,
        col: 1,
        path: "p".into(),
        message: "got abcdefgh, abcd, ab at public-host".into(),
    }];
    r.redact(&mut errors);
    assert_eq!(errors[0].message, "got {{secret:long}}, {{secret:short}}, ab at public-host");
}

#[test]
fn secret_debug_hides_the_value() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s:?}"), "Secret(***)");
    assert_eq!(s.expose(), "hunter2");
}

#[test]
fn section_shapes_are_checked() {
    let (_, _, errors) = run("secrets: { values: 5 }\n", Path::new(""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "secrets.values");
    let (_, _, errors) = run("secrets: { providers: env }\n", Path::new(""));
    assert_eq!(errors[0].path, "secrets.providers");
    let (_, _, errors) = run("secrets: 5\n", Path::new(""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (_, _, errors) = run("secrets:\n", Path::new(""));
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn template_fields_get_the_secret_escaped() {
    let yaml = "secrets: { values: { k: \"a{b}c\" } }\nh: \"Bearer {{secret:k}} for {jwt.sub}\"\nplain: x\n";
    let (doc, r, errors) = run(yaml, Path::new(""));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(scalar(&doc, &["h"]), "Bearer a{b}c for {jwt.sub}", "other fields get the value as it is");
    assert_eq!(r.template_source(&[key("h")]), Some("Bearer a{{b}}c for {jwt.sub}"));
    assert_eq!(r.template_source(&[key("plain")]), None);
}
