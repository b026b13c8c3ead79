//! Templates and conditions (`expr`): any source either compiles or is refused with a message;
//! whatever compiles renders and evaluates against any values without panicking, in bounded
//! time (the language has no loops; sources and nesting are capped).
//!
//! Input: `SOURCE` then, after a NUL byte, the value every name reads (`,` splits it into a
//! list for names that may have several values; empty means "not there").
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;

use gatehouse::expr::{Condition, Context, Name, Names, Template, Value};

struct Values<'a>(&'a str);

impl Context for Values<'_> {
    fn lookup(&self, name: &Name) -> Option<Value<'_>> {
        if self.0.is_empty() {
            return None;
        }
        Some(match name {
            Name::Header(_) | Name::JwtClaim(_) => Value::List(self.0.split(',').map(Cow::Borrowed).collect()),
            _ => Value::Str(Cow::Borrowed(self.0)),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (source, value) = text.split_once('\0').unwrap_or((text, ""));
    let names = Names { params: &["id".to_owned()], vars: &["tier".to_owned()], response: true };
    let cx = Values(value);
    match Template::parse(source, &names) {
        Ok(t) => {
            let out = t.render(&cx);
            if t.is_static() {
                // A static template renders the same text whatever the request.
                assert_eq!(out, t.render(&Values("")), "static template {source:?}");
            }
            for n in t.names() {
                let _ = n.is_response();
            }
        }
        Err(e) => assert!(!e.is_empty(), "an empty error message for {source:?}"),
    }
    let inbound = Names { response: false, ..names };
    match Condition::parse(source, &inbound) {
        Ok(c) => {
            let _ = c.eval(&cx);
            let _ = c.eval(&Values(""));
            assert!(c.names().all(|n| !n.is_response()), "response.* accepted inbound: {source:?}");
        }
        Err(e) => assert!(!e.is_empty(), "an empty error message for {source:?}"),
    }
});
