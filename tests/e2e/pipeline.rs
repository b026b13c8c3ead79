//! The policy pipeline: scopes (global → API → operation), `base` placement, sections
//! (inbound, outbound, on-error) and how their answers reach the client and the log.
//! `return-response` is the probe: whichever scope's policy runs first answers.

use crate::support::*;

/// A config whose global, API and operation scopes each answer with their own name; `api_inbound`
/// and `op_inbound` are the YAML lists for those scopes (so `base` can be placed).
fn scoped(backend: std::net::SocketAddr, api_inbound: &str, op_inbound: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
edge:
  access_log: {{ format: json, path: "{{log}}" }}
backends:
  b:
    servers: [ {{ url: "http://{backend}" }} ]
policies:
  inbound:
    - return-response: {{ status: 200, body: global }}
apis:
  orders:
    path: /orders
    backend: b
    policies:
      inbound: {api_inbound}
    operations:
      - id: get-order
        method: GET
        template: "/{{id}}"
        policies:
          inbound: {op_inbound}
"#
    )
}

#[tokio::test]
async fn base_decides_which_scope_runs_first() {
    let b = backend().await;
    let api = "[ { return-response: { status: 200, body: api } } ]";
    let api_first = "[ { return-response: { status: 200, body: api } }, base ]";
    let op = "[ { return-response: { status: 200, body: operation } } ]";
    let op_first = "[ { return-response: { status: 200, body: operation } }, base ]";
    // (API section, operation section, expected answer)
    let matrix = [
        // No `base` anywhere: enclosing scopes run first, so global answers.
        (api, op, "global"),
        // The API puts its own policy before `base`; the operation has no base (enclosing first).
        (api_first, op, "api"),
        // The operation puts itself first.
        (api, op_first, "operation"),
        (api_first, op_first, "operation"),
        // `base` first written explicitly is the same as no `base`.
        ("[ base, { return-response: { status: 200, body: api } } ]", "[ base ]", "global"),
    ];
    for (api_section, op_section, expected) in matrix {
        let g = gateway(&scoped(b.addr, api_section, op_section)).await;
        let got = get(&g.url("/orders/7")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), expected, "api: {api_section}, operation: {op_section}");
    }
    assert_eq!(b.count(), 0, "a return-response answers at the gateway");
}

#[tokio::test]
async fn outbound_replaces_the_backend_response_and_on_error_the_failure() {
    let b = backend().await;
    // A port nothing listens on: the backend layer fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let yaml = format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
edge:
  access_log: {{ format: json, path: "{{log}}" }}
backends:
  b:
    servers: [ {{ url: "http://{}" }} ]
  dead:
    servers: [ {{ url: "http://{dead}" }} ]
    retry: {{ attempts: 1 }}
apis:
  replaced:
    path: /replaced
    backend: b
    policies:
      outbound:
        - return-response: {{ status: 299, body: "from outbound" }}
  down:
    path: /down
    backend: dead
    policies:
      on-error:
        - return-response: {{ status: 503, headers: {{ retry-after: "30" }}, body: "maintenance" }}
  down-plain:
    path: /plain
    backend: dead
"#,
        b.addr
    );
    let g = gateway(&yaml).await;

    let got = get(&g.url("/replaced/x")).await;
    assert_eq!(got.status, 299);
    assert_eq!(got.text(), "from outbound");
    assert_eq!(b.count(), 1, "outbound runs after the backend answered");

    let got = get(&g.url("/down/x")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "maintenance");
    assert_eq!(got.headers["retry-after"], "30");
    assert!(got.headers.contains_key("x-request-id"));

    // Without on-error the backend failure is the gateway's own problem+json.
    assert_problem(&get(&g.url("/plain/x")).await, 502, "backend");

    // The log keeps where the failure was, even when on-error rewrote the answer.
    let lines = g.log_lines().await;
    let down: serde_json::Value =
        serde_json::from_str(lines.iter().find(|l| l.contains("/down/x")).expect("logged")).expect("json");
    assert_eq!(down["status"], 503);
    assert_eq!(down["layer"], "backend");
}

#[tokio::test]
async fn policy_config_errors_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
policies:
  inbound:
    - return-response
apis:
  a:
    path: /a
    policies:
      inbound:
        - no-such-policy: {}
      outbound:
        - return-response: { status: 99, colour: red }
        - base
        - base
"#;
    let errors = match gatehouse::snapshot::compile_str("g.yaml", yaml, dir.path()) {
        Ok(_) => panic!("the config has errors"),
        Err(e) => e,
    };
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(
        has("g.yaml:12:11: apis.a.policies.inbound[0].no-such-policy: unknown policy `no-such-policy`"),
        "{text:#?}"
    );
    assert!(has("g.yaml:6:7: policies.inbound[0]: `return-response` needs its settings"), "{text:#?}");
    assert!(has("apis.a.policies.outbound[0].return-response.status: status 99"), "{text:#?}");
    assert!(has("apis.a.policies.outbound[0].return-response.colour: unknown key `colour`"), "{text:#?}");
    assert!(has("apis.a.policies.outbound[2]: `base` appears more than once"), "{text:#?}");
}
