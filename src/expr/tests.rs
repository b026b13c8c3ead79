//! The expression language as a user sees it: what parses, what each form evaluates to, the error
//! messages, the bounds, and random inputs that must never panic.

use std::borrow::Cow;
use std::cell::Cell;

use http::HeaderName;

use super::*;

/// A request as the pipeline would present it: owned values, handed out borrowed.
#[derive(Default)]
struct Cx {
    values: Vec<(Name, Owned)>,
    lookups: Cell<usize>,
}

enum Owned {
    S(String),
    L(Vec<String>),
}

impl Cx {
    fn with(mut self, name: &str, value: &str) -> Self {
        self.values.push((any_name(name), Owned::S(value.to_owned())));
        self
    }
    fn with_list(mut self, name: &str, items: &[&str]) -> Self {
        self.values.push((any_name(name), Owned::L(items.iter().map(|s| (*s).to_owned()).collect())));
        self
    }
}

impl Context for Cx {
    fn lookup(&self, name: &Name) -> Option<Value<'_>> {
        self.lookups.set(self.lookups.get() + 1);
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| match v {
            Owned::S(s) => Value::Str(Cow::Borrowed(s)),
            Owned::L(l) => Value::List(l.iter().map(|s| Cow::Borrowed(s.as_str())).collect()),
        })
    }
}

fn params() -> Vec<String> {
    vec!["id".to_owned(), "tenant".to_owned()]
}
fn vars() -> Vec<String> {
    vec!["tier".to_owned()]
}

/// Everything allowed: the names of an outbound policy on a route with `{id}` and `{tenant}`.
fn all_names<R>(f: impl FnOnce(&Names) -> R) -> R {
    let (p, v) = (params(), vars());
    f(&Names { params: &p, vars: &v, response: true })
}

fn any_name(src: &str) -> Name {
    all_names(|n| Name::parse(src, n)).expect("name")
}

fn tpl(src: &str) -> Template {
    all_names(|n| Template::parse(src, n)).expect("template parses")
}

fn cond(src: &str) -> Condition {
    all_names(|n| Condition::parse(src, n)).expect("condition parses")
}

fn tpl_err(src: &str, names: &Names) -> String {
    Template::parse(src, names).expect_err("template must not parse")
}

fn cond_err(src: &str) -> String {
    all_names(|n| Condition::parse(src, n)).expect_err("condition must not parse")
}

fn render(src: &str, cx: &Cx) -> String {
    tpl(src).render(cx).into_owned()
}

fn holds(src: &str, cx: &Cx) -> bool {
    cond(src).eval(cx)
}

fn request() -> Cx {
    Cx::default()
        .with("request.method", "GET")
        .with("request.path", "/orders/42")
        .with("request.header.x-user", "alice")
        .with("request.header.x-empty", "")
        .with("request.query.page", "10")
        .with("jwt.sub", "user-7")
        .with_list("jwt.claims.roles", &["orders.read", "admin"])
        .with_list("jwt.claims.one", &["solo"])
        .with("id", "42")
        .with("response.status", "503")
        .with("var.tier", "gold")
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn every_name_parses_and_displays_back() {
    let written = [
        "request.method",
        "request.path",
        "request.url",
        "request.host",
        "request.ip",
        "request.id",
        "request.header.x-user",
        "request.query.page",
        "request.query['filter[name]']",
        "api.name",
        "operation.id",
        "product.name",
        "subscription.id",
        "subscription.name",
        "jwt.sub",
        "jwt.claims.roles",
        "jwt.claims['https://example.com/roles']",
        "var.tier",
        "response.status",
        "response.header.content-type",
        "id",
    ];
    for w in written {
        let name = any_name(w);
        assert_eq!(name.to_string(), w);
        assert_eq!(any_name(&name.to_string()), name);
    }
}

#[test]
fn header_names_are_case_insensitive_and_precomputed() {
    assert_eq!(any_name("request.header.X-User"), Name::Header(HeaderName::from_static("x-user")));
    assert_eq!(any_name("request.header['X-User']"), any_name("request.header.x-user"));
    assert_eq!(render("{request.header.X-USER}", &request()), "alice");
}

#[test]
fn unknown_names_are_rejected_with_the_choices() {
    let e = tpl_err("{jwt.foo.bar}", &Names::NONE);
    assert!(e.starts_with("unknown name `jwt.foo.bar`: expected one of request.method, "), "{e}");
    assert!(e.contains("jwt.claims.NAME") && e.contains("(no route parameters here)"), "{e}");
    let e = cond_err("request.headers.X-User == 'a'");
    assert!(e.contains("did you mean `request.header.X-User`?"), "{e}");
    let e = cond_err("request.methd == 'GET'");
    assert!(e.contains("did you mean `request.method`?"), "{e}");
    let e = cond_err("idd == '1'");
    assert!(e.contains("did you mean `id`?") && e.contains("or a route parameter (id, tenant)"), "{e}");
    assert!(tpl_err("{request.header}", &Names::NONE).contains("`request.header` needs a NAME"));
    assert!(tpl_err("{var.}", &Names::NONE).contains("`var.` needs a NAME after the dot"));
    assert!(tpl_err("{api.name['x']}", &Names::NONE).contains("only request.header"));
}

#[test]
fn names_are_checked_against_where_the_expression_is() {
    let e = tpl_err("{response.status}", &Names::NONE);
    assert_eq!(e, "`response.status` is only available in outbound and on-error (column 2)");
    let e = tpl_err("{response.header.Server}", &Names::NONE);
    assert!(e.starts_with("`response.header.server` is only available in outbound and on-error"), "{e}");
    let e = tpl_err("{var.x}", &Names::NONE);
    assert!(e.starts_with("`var.x` is not set by any set-variable"), "{e}");
    let e = tpl_err("{id}", &Names::NONE);
    assert!(e.starts_with("unknown name `id`"), "{e}");
    // The same names are fine where they are available.
    let v = vars();
    let p = params();
    assert!(Template::parse("{response.status}{var.tier}{id}", &Names { params: &p, vars: &v, response: true }).is_ok());
    let e = tpl_err("{request.header.bad header}", &Names::NONE);
    assert!(e.contains("unexpected text"), "{e}");
    let e = tpl_err("{request.header['bad header']}", &Names::NONE);
    assert!(e.contains("`bad header` is not a valid header name"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Templates

#[test]
fn static_template_renders_borrowed_with_braces_unescaped() {
    let t = tpl("a {{literal}} b");
    assert!(t.is_static());
    assert_eq!(t.names().count(), 0);
    let cx = Cx::default();
    assert!(matches!(t.render(&cx), Cow::Borrowed("a {literal} b")));
    assert!(Template::literal("{raw}").is_static());
    assert_eq!(Template::literal("{raw}").render(&cx), "{raw}");
}

#[test]
fn placeholders_render_values() {
    let cx = request();
    assert_eq!(render("user-{jwt.sub}:{request.method} {id}", &cx), "user-user-7:GET 42");
    assert_eq!(render("{ jwt.sub }", &cx), "user-7");
    assert_eq!(render("{var.tier}/{response.status}", &cx), "gold/503");
    assert_eq!(render("{{{jwt.sub}}}", &cx), "{user-7}");
    assert_eq!(render(r#"{{"user": "{jwt.sub}"}}"#, &cx), r#"{"user": "user-7"}"#);
}

#[test]
fn one_placeholder_passes_the_value_through() {
    let cx = request();
    let t = tpl("{jwt.sub}");
    assert!(!t.is_static());
    assert!(matches!(t.render(&cx), Cow::Borrowed("user-7")));
    let t = tpl("{request.header.X-None ?? 'anon'}");
    assert!(matches!(t.render(&cx), Cow::Borrowed("anon")));
}

#[test]
fn missing_values_render_empty_and_lists_join() {
    let cx = request();
    assert_eq!(render("[{request.header.x-missing}]", &cx), "[]");
    assert_eq!(render("{jwt.claims.roles}", &cx), "orders.read,admin");
    assert_eq!(render("roles={jwt.claims.roles};", &cx), "roles=orders.read,admin;");
    assert_eq!(render("{jwt.claims.one}", &cx), "solo");
}

#[test]
fn defaults_apply_when_missing_or_empty() {
    let cx = request();
    assert_eq!(render("{request.header.X-User ?? 'anon'}", &cx), "alice");
    assert_eq!(render("{request.header.X-Missing ?? 'anon'}", &cx), "anon");
    assert_eq!(render("{request.header.X-Empty ?? \"anon\"}", &cx), "anon");
    assert_eq!(render("{request.header.X-Missing ?? jwt.sub}", &cx), "user-7");
    assert_eq!(render("{request.header.X-Missing ?? request.header.X-Empty ?? 'k:}{'}", &cx), "k:}{");
    assert_eq!(render("n={request.query.size ?? 20}", &cx), "n=20");
    assert_eq!(render("{request.header.X-Missing ?? 'it\\'s'}", &cx), "it's");
    let names: Vec<String> =
        tpl("{request.header.X-Missing ?? jwt.sub ?? 'x'}-{id}").names().map(|n| n.to_string()).collect();
    assert_eq!(names, ["request.header.x-missing", "jwt.sub", "id"]);
}

#[test]
fn template_syntax_errors_name_the_bad_part() {
    let n = Names::NONE;
    assert_eq!(tpl_err("ab{jwt.sub", &n), "unterminated `{` at column 3: write `{{` for a literal brace");
    assert_eq!(tpl_err("ab}c", &n), "unmatched `}` at column 3: write `}}` for a literal brace");
    assert!(tpl_err("x{}", &n).starts_with("empty placeholder `{}` at column 2"));
    assert!(tpl_err("{jwt.sub ?? }", &n).starts_with("expected a name or a quoted default after `??`"));
    assert!(tpl_err("{jwt.sub ?? 'a' ?? 'b'}", &n).contains("the default must be the last"));
    assert!(tpl_err("{jwt.sub jwt.sub}", &n).contains("unexpected text at column 10"));
    assert!(tpl_err("{'x'}", &n).starts_with("expected a name at column 2"));
    assert!(tpl_err("{a{b}}", &n).starts_with("`{` inside the placeholder opened at column 1"));
    assert!(tpl_err("{jwt.sub ?? 'abc}", &n).starts_with("unterminated string in the placeholder"));
    assert!(tpl_err("{jwt.sub == 'a'}", &n).contains("unexpected text"));
    assert!(tpl_err("é{jwt.sub ? 'a'}", &n).contains("at column 11: use `??` for a default"));
}

// ---------------------------------------------------------------------------------------------
// Conditions

#[test]
fn equality_and_inequality() {
    let cx = request();
    assert!(holds("request.method == 'GET'", &cx));
    assert!(!holds("request.method == 'get'", &cx));
    assert!(holds("request.method != \"POST\"", &cx));
    assert!(holds("'GET' == request.method", &cx));
    assert!(holds("id == 42", &cx));
    assert!(holds("id == '042'", &cx), "both sides are integers: compared as numbers");
    assert!(holds("request.header.X-Missing == ''", &cx), "missing compares as empty");
    assert!(holds("request.header.X-Missing != 'x'", &cx));
    assert!(holds("jwt.claims.one == 'solo'", &cx), "a one-item list compares as its item");
    assert!(holds("jwt.claims.roles == 'orders.read,admin'", &cx), "a list compares as rendered");
}

#[test]
fn ordering_is_numeric_for_integers_else_lexicographic() {
    let cx = request();
    assert!(holds("response.status >= 500", &cx));
    assert!(holds("response.status > 499 && response.status < 600", &cx));
    assert!(holds("response.status <= 503", &cx));
    assert!(!holds("response.status < 503", &cx));
    assert!(holds("request.query.page > 9", &cx), "10 > 9 as numbers (as strings it is not)");
    assert!(holds("request.query.page > -1", &cx));
    assert!(holds("jwt.sub > 'user-10'", &cx), "'user-7' > 'user-10' as strings");
    assert!(holds("request.method < 'POST'", &cx));
    assert!(!holds("request.header.X-Missing >= 500", &cx));
}

#[test]
fn contains_starts_with_ends_with() {
    let cx = request();
    assert!(holds("request.path contains '/42'", &cx));
    assert!(!holds("request.path contains '/43'", &cx));
    assert!(holds("jwt.claims.roles contains 'admin'", &cx), "membership for lists");
    assert!(!holds("jwt.claims.roles contains 'adm'", &cx), "not substring of a member");
    assert!(holds("request.path starts_with '/orders/'", &cx));
    assert!(holds("request.path ends_with '42'", &cx));
    assert!(!holds("request.path ends_with '/orders'", &cx));
    assert!(holds("request.header.X-Missing starts_with ''", &cx));
    assert!(holds("'/orders/42/items' starts_with request.path", &cx));
}

#[test]
fn in_lists() {
    let cx = request();
    assert!(holds("request.method in ['GET', 'HEAD']", &cx));
    assert!(!holds("request.method in ['POST','PUT',]", &cx));
    assert!(holds("response.status in [500, 502, 503]", &cx));
    assert!(holds("jwt.claims.roles in ['admin', 'root']", &cx), "any member in the set");
    assert!(!holds("jwt.claims.roles in ['root']", &cx));
    assert!(!holds("request.method in []", &cx));
    assert!(holds("request.method in['GET']", &cx));
}

#[test]
fn exists_not_and_or_constants() {
    let cx = request();
    assert!(holds("exists(request.header.X-User)", &cx));
    assert!(holds("exists(request.header.X-Empty)", &cx), "present though empty");
    assert!(!holds("exists(request.header.X-Missing)", &cx));
    assert!(holds("!exists(request.header.X-Missing)", &cx));
    assert!(holds("!!exists(jwt.sub)", &cx));
    assert!(holds("true", &cx) && !holds("false", &cx));
    assert!(holds("request.method == 'GET' && jwt.sub == 'user-7'", &cx));
    assert!(!holds("request.method == 'GET' && jwt.sub == 'user-8'", &cx));
    assert!(holds("request.method == 'POST' || jwt.sub == 'user-7'", &cx));
    assert!(!holds("request.method == 'POST' || jwt.sub == 'user-8'", &cx));
}

#[test]
fn precedence_and_parentheses() {
    let cx = request();
    // `&&` binds tighter than `||`: true || (false && false).
    assert!(holds("true || false && false", &cx));
    assert!(!holds("(true || false) && false", &cx));
    assert!(holds("false && false || true", &cx));
    // `!` covers the comparison after it.
    assert!(holds("!request.method == 'POST'", &cx));
    assert!(!holds("!request.method == 'GET'", &cx));
    assert!(holds("!(request.method == 'POST' || jwt.sub == 'x') && (id == 42)", &cx));
}

#[test]
fn evaluation_short_circuits() {
    let cx = request();
    let c = cond("false && exists(jwt.sub) && jwt.sub == 'a'");
    assert!(!c.eval(&cx));
    assert_eq!(cx.lookups.get(), 0);
    let c = cond("request.method == 'GET' || jwt.sub == 'a' || exists(id)");
    assert!(c.eval(&cx));
    assert_eq!(cx.lookups.get(), 1);
    let names: Vec<String> = c.names().map(|n| n.to_string()).collect();
    assert_eq!(names, ["request.method", "jwt.sub", "id"]);
}

#[test]
fn condition_syntax_errors_name_the_bad_part() {
    assert_eq!(cond_err(""), "empty condition");
    assert!(cond_err("{jwt.sub} == 'a'").contains("names in conditions are written without braces"));
    let e = cond_err("jwt.sub");
    assert!(e.starts_with("`jwt.sub` (column 1) alone is not a condition: compare it"), "{e}");
    assert!(cond_err("jwt.sub = 'a'").contains("unexpected `=` at column 9: use `==` to compare"));
    assert!(cond_err("true & false").contains("use `&&`"));
    assert!(cond_err("true | false").contains("use `||`"));
    assert!(cond_err("jwt.sub == 'a").starts_with("unterminated string starting at column 12"));
    assert!(cond_err("jwt.sub == 'a\\x'").starts_with("unknown escape `\\x`"));
    assert!(cond_err("jwt.sub == 'a' 'b'").starts_with("unexpected string 'b' at column 16"));
    assert!(cond_err("'a' == 'b'").contains("has no name in it"));
    assert!(cond_err("jwt.sub in 'a'").contains("expected `[` starting the list"));
    assert!(cond_err("jwt.sub in ['a' 'b']").contains("expected `,` or `]` in the `in` list"));
    assert!(cond_err("jwt.sub in [jwt.sub]").contains("a quoted string, a number or `]`"));
    assert!(cond_err("(jwt.sub == 'a'").contains("expected `)` at column 16, found the end"));
    assert!(cond_err("jwt.sub == ").contains("found the end"));
    assert!(cond_err("exists('a')").contains("takes a name"));
    assert!(cond_err("jwt.sub == 99999999999999999999").contains("out of range"));
    assert!(cond_err("jwt.sub == 12ab").contains("invalid number `12ab`"));
    assert!(cond_err("jwt.sub ?? 'a' == 'b'").contains("defaults are for templates"));
    assert!(cond_err("jwt.sub == 'a' && jwt.bogus == 'b'").contains("unknown name `jwt.bogus`"));
    assert!(cond_err("jwt.sub == 'a' #").contains("unexpected `#` at column 16"));
}

// ---------------------------------------------------------------------------------------------
// Bounds

#[test]
fn sources_and_nesting_are_bounded() {
    let n = Names::NONE;
    let long = format!("jwt.sub == '{}'", "x".repeat(MAX_CONDITION_LEN));
    assert!(Condition::parse(&long, &n).expect_err("too long").contains("the limit is 4096"));
    assert!(Template::parse(&"x".repeat(MAX_TEMPLATE_LEN + 1), &n).is_err());
    assert!(Template::parse(&"x".repeat(MAX_TEMPLATE_LEN), &n).is_ok());

    let nested = |d: usize| format!("{}jwt.sub == 'a'{}", "(".repeat(d), ")".repeat(d));
    assert!(Condition::parse(&nested(MAX_DEPTH), &n).is_ok());
    let e = Condition::parse(&nested(MAX_DEPTH + 1), &n).expect_err("too deep");
    assert!(e.starts_with("condition nests deeper than 32 levels"), "{e}");
    assert!(Condition::parse(&format!("{}true", "!".repeat(MAX_DEPTH)), &n).is_ok());
    assert!(Condition::parse(&format!("{}true", "!".repeat(MAX_DEPTH + 1)), &n).is_err());
    // Thousands of `(` stop at the depth limit, not the stack.
    assert!(Condition::parse(&"(".repeat(MAX_CONDITION_LEN), &n).is_err());

    // A long flat chain is fine: it is not nesting, and it evaluates in one pass.
    let chain = vec!["jwt.sub == 'a'"; 200].join(" || ");
    assert!(chain.len() < MAX_CONDITION_LEN);
    let c = Condition::parse(&chain, &n).expect("flat chain");
    let cx = Cx::default();
    assert!(!c.eval(&cx));
    assert_eq!(cx.lookups.get(), 200);
}

// ---------------------------------------------------------------------------------------------
// Property-style: no input panics the parsers or the evaluator.

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fragments that make random sources look like the language often enough to reach deep paths.
const PIECES: &[&str] = &[
    "{",
    "}",
    "{{",
    "}}",
    "(",
    ")",
    "[",
    "]",
    ",",
    "'",
    "\"",
    "\\",
    "??",
    "?",
    "==",
    "=",
    "!=",
    "!",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "&",
    "||",
    "|",
    " ",
    "-",
    "7",
    "42",
    "99999999999999999999",
    "in",
    "contains",
    "starts_with",
    "ends_with",
    "exists",
    "true",
    "false",
    "jwt.sub",
    "jwt.claims.roles",
    "jwt.claims['a b']",
    "request.header.X-A",
    "request.header.",
    "request.method",
    "id",
    "var.tier",
    "response.status",
    "x",
    ".",
    "é",
    "\u{0}",
    "\n",
    "'a'",
    "\"GET\"",
];

#[test]
fn random_sources_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let cx = request();
    let (mut parsed_t, mut parsed_c) = (0, 0);
    for _ in 0..20_000 {
        let len = rng.below(12);
        let src: String = (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect();
        if let Ok(t) = all_names(|n| Template::parse(&src, n)) {
            parsed_t += 1;
            let _ = t.render(&cx);
        }
        if let Ok(c) = all_names(|n| Condition::parse(&src, n)) {
            parsed_c += 1;
            let _ = c.eval(&cx);
        }
        // Arbitrary bytes too (lossily made UTF-8), including multi-byte characters.
        let bytes: Vec<u8> = (0..rng.below(24)).map(|_| rng.next() as u8).collect();
        let junk = String::from_utf8_lossy(&bytes);
        let _ = Template::parse(&junk, &Names::NONE);
        let _ = Condition::parse(&junk, &Names::NONE);
    }
    // The generator reaches valid sources, so evaluation was exercised as well as parsing.
    assert!(parsed_t > 1000 && parsed_c > 50, "templates {parsed_t}, conditions {parsed_c}");
}

/// Clauses whose truth on `request()` is known.
const CLAUSES: &[(&str, bool)] = &[
    ("request.method == 'GET'", true),
    ("request.method != 'GET'", false),
    ("jwt.claims.roles contains 'admin'", true),
    ("response.status < 500", false),
    ("exists(request.header.X-Missing)", false),
    ("id in [41, 42]", true),
    ("true", true),
    ("false", false),
];

/// A random condition over CLAUSES and its expected value, with `&&` above `||` as in the
/// language: an `||` of `&&`s of (maybe negated, maybe parenthesised) terms.
fn random_condition(rng: &mut Rng, depth: usize) -> (String, bool) {
    let mut any = Vec::new();
    for _ in 0..=rng.below(3) {
        let mut all = Vec::new();
        for _ in 0..=rng.below(3) {
            let (mut src, mut value) = if depth > 0 && rng.below(3) == 0 {
                let (s, v) = random_condition(rng, depth - 1);
                (format!("({s})"), v)
            } else {
                let (s, v) = CLAUSES[rng.below(CLAUSES.len())];
                (s.to_owned(), v)
            };
            if rng.below(3) == 0 {
                src = format!("!{src}");
                value = !value;
            }
            all.push((src, value));
        }
        let src = all.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(" && ");
        any.push((src, all.iter().all(|(_, v)| *v)));
    }
    let src = any.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(" || ");
    (src, any.iter().any(|(_, v)| *v))
}

#[test]
fn random_conditions_evaluate_like_rust_booleans() {
    let mut rng = Rng(7);
    let cx = request();
    for _ in 0..2_000 {
        let (src, expected) = random_condition(&mut rng, 3);
        assert_eq!(cond(&src).eval(&cx), expected, "{src}");
    }
}

#[test]
fn escaped_text_renders_back_exactly() {
    let mut rng = Rng(42);
    let alphabet: Vec<char> = "ab{}{{}}'\" é\\?".chars().collect();
    for _ in 0..2_000 {
        let text: String = (0..rng.below(20)).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        let escaped = escape(&text);
        let t = Template::parse(&escaped, &Names::NONE).expect("escaped text parses");
        assert!(t.is_static());
        assert_eq!(t.render(&Cx::default()), text);
    }
}

// ---------------------------------------------------------------------------------------------
// JWT claim helper

#[test]
fn claims_from_a_jwt_payload() {
    let payload = serde_json::json!({
        "sub": "user-7",
        "roles": ["a", "b", 3],
        "n": 5,
        "ok": true,
        "none": null,
        "realm_access": { "roles": ["x"] },
        "https://example.com/tenant": "t1",
        "a.b": "exact wins",
        "a": { "b": "nested" },
    });
    assert!(matches!(claim(&payload, "sub"), Some(Value::Str(Cow::Borrowed("user-7")))));
    assert_eq!(claim(&payload, "roles"), Some(Value::List(vec!["a".into(), "b".into(), "3".into()])));
    assert_eq!(claim(&payload, "n"), Some(Value::from("5")));
    assert_eq!(claim(&payload, "ok"), Some(Value::from("true")));
    assert_eq!(claim(&payload, "none"), None);
    assert_eq!(claim(&payload, "missing"), None);
    assert_eq!(claim(&payload, "realm_access.roles"), Some(Value::List(vec!["x".into()])));
    assert_eq!(claim(&payload, "realm_access"), Some(Value::from(r#"{"roles":["x"]}"#)));
    assert_eq!(claim(&payload, "https://example.com/tenant"), Some(Value::from("t1")));
    assert_eq!(claim(&payload, "a.b"), Some(Value::from("exact wins")));
    assert_eq!(claim(&serde_json::json!("not an object"), "sub"), None);
}
