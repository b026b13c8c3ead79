//! Micro-benchmarks of the expression language on the request path.
//!
//! What is measured, and why:
//! - `template/static`: a template without placeholders (a plain policy value) — should be a
//!   borrow, nanoseconds.
//! - `template/one_placeholder`: `{jwt.sub}` (the usual rate-limit counter key) — passes the
//!   context's value through without allocating.
//! - `template/two_placeholders`: `user-{jwt.sub}@{request.header.X-Tenant ?? 'none'}` — one
//!   allocation for the result.
//! - `condition/three_clauses`: `request.method == 'GET' && jwt.claims.roles contains 'admin'
//!   && response.status >= 500` where every clause is evaluated (all true), so it is the full cost.
//! - `parse/*`: compiling those, which a config reload pays once per expression.
//!
//! The context is a small in-memory one that hands out borrowed values, as the pipeline's does,
//! so the numbers are the language's own cost. Run with `cargo bench --bench expr`.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::expr::{Condition, Context, Name, Names, Template, Value};
use http::HeaderValue;

struct Cx {
    tenant: HeaderValue,
    sub: String,
    roles: Vec<String>,
}

impl Context for Cx {
    fn lookup(&self, name: &Name) -> Option<Value<'_>> {
        match name {
            Name::Method => Some(Value::Str(Cow::Borrowed("GET"))),
            Name::JwtSub => Some(Value::Str(Cow::Borrowed(&self.sub))),
            Name::Header(h) if h == "x-tenant" => self.tenant.to_str().ok().map(|s| Value::Str(Cow::Borrowed(s))),
            Name::JwtClaim(c) if c == "roles" => {
                Some(Value::List(self.roles.iter().map(|r| Cow::Borrowed(r.as_str())).collect()))
            }
            Name::ResponseStatus => Some(Value::Str(Cow::Borrowed(http::StatusCode::BAD_GATEWAY.as_str()))),
            _ => None,
        }
    }
}

const TWO: &str = "user-{jwt.sub}@{request.header.X-Tenant ?? 'none'}";
const THREE: &str = "request.method == 'GET' && jwt.claims.roles contains 'admin' && response.status >= 500";

fn benches(c: &mut Criterion) {
    let names = Names { params: &[], vars: &[], response: true };
    let cx = Cx {
        tenant: HeaderValue::from_static("contoso"),
        sub: "0f9c2a7e-1b44-4c1e-9d0a-7a1f3e5b2c11".to_owned(),
        roles: vec!["orders.read".to_owned(), "orders.write".to_owned(), "admin".to_owned()],
    };
    let static_t = Template::parse("application/json", &names).expect("static");
    let one = Template::parse("{jwt.sub}", &names).expect("one");
    let two = Template::parse(TWO, &names).expect("two");
    let three = Condition::parse(THREE, &names).expect("three");
    assert_eq!(two.render(&cx), "user-0f9c2a7e-1b44-4c1e-9d0a-7a1f3e5b2c11@contoso");
    assert!(three.eval(&cx));

    let mut g = c.benchmark_group("template");
    g.bench_function("static", |b| b.iter(|| black_box(static_t.render(black_box(&cx))).len()));
    g.bench_function("one_placeholder", |b| b.iter(|| black_box(one.render(black_box(&cx))).len()));
    g.bench_function("two_placeholders", |b| b.iter(|| black_box(two.render(black_box(&cx))).len()));
    g.finish();

    let mut g = c.benchmark_group("condition");
    g.bench_function("three_clauses", |b| b.iter(|| black_box(three.eval(black_box(&cx)))));
    g.finish();

    let mut g = c.benchmark_group("parse");
    g.bench_function("template_two_placeholders", |b| b.iter(|| Template::parse(black_box(TWO), &names)));
    g.bench_function("condition_three_clauses", |b| b.iter(|| Condition::parse(black_box(THREE), &names)));
    g.finish();
}

criterion_group! {
    name = expr;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(expr);
