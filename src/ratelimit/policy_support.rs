//! What the four counting policies share once their config is compiled: the header options,
//! the `*_variable_name` outputs, and increment conditions that may wait for the response.

use std::cell::Cell;
use std::sync::Arc;

use serde::Deserialize;

use super::answer::Headers;
use super::Decision;
use crate::expr::{Condition, Context, Name, Names, Template, Value};
use crate::policy::{BuildCx, Exchange};

/// APIM's output options, common to `rate-limit` and `rate-limit-by-key` (the configs list
/// them field by field: `deny_unknown_fields` and `flatten` do not mix).
#[derive(Debug, Default, Deserialize)]
pub struct OutputNames {
    pub retry_after_header_name: Option<String>,
    pub retry_after_variable_name: Option<String>,
    pub remaining_calls_header_name: Option<String>,
    pub remaining_calls_variable_name: Option<String>,
    pub total_calls_header_name: Option<String>,
    pub ratelimit_headers: bool,
}

/// Compiled outputs.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub headers: Headers,
    pub retry_var: Option<Arc<str>>,
    pub remaining_var: Option<Arc<str>>,
}

impl Outputs {
    /// `Err((field, message))` for a bad header name.
    pub fn new(o: &OutputNames) -> Result<Self, (&'static str, String)> {
        let headers = Headers::new(
            o.retry_after_header_name.as_deref(),
            o.remaining_calls_header_name.as_deref(),
            o.total_calls_header_name.as_deref(),
            o.ratelimit_headers,
        )
        .map_err(|field| (field, "not a valid header name".to_string()))?;
        Ok(Outputs {
            headers,
            retry_var: o.retry_after_variable_name.as_deref().map(Arc::from),
            remaining_var: o.remaining_calls_variable_name.as_deref().map(Arc::from),
        })
    }

    /// Values for the `*_variable_name` outputs, as (name, value).
    pub fn vars(&self, d: &Decision) -> impl Iterator<Item = (Arc<str>, String)> + '_ {
        let retry = self
            .retry_var
            .as_ref()
            .filter(|_| !d.allowed())
            .map(|n| (n.clone(), super::answer::secs(d.retry_after_ms).max(1).to_string()));
        let left = self.remaining_var.as_ref().map(|n| (n.clone(), d.remaining.to_string()));
        retry.into_iter().chain(left)
    }
}

/// An increment condition that needs the response status: the request values it reads are
/// captured on the way in, the status is supplied at the end.
#[derive(Debug)]
pub struct Captured {
    pub status: u16,
    pub values: Vec<(Name, Option<String>)>,
}

impl Captured {
    /// Reads, from `cx`, every non-response value that `cond` uses.
    pub fn capture(cond: &Condition, cx: &dyn Context) -> Vec<(Name, Option<String>)> {
        let mut out: Vec<(Name, Option<String>)> = Vec::new();
        for name in cond.names() {
            if !name.is_response() && !out.iter().any(|(n, _)| n == name) {
                out.push((name.clone(), cx.lookup(name).map(|v| v.into_cow().into_owned())));
            }
        }
        out
    }
}

impl Context for Captured {
    fn lookup(&self, name: &Name) -> Option<Value<'_>> {
        match name {
            Name::ResponseStatus => Some(Value::from(self.status.to_string())),
            Name::ResponseHeader(_) => None,
            other => self.values.iter().find(|(n, _)| n == other).and_then(|(_, v)| v.as_deref().map(Value::from)),
        }
    }
}

/// True when `cond` reads the response (so it is decided at the end of the exchange).
pub fn needs_response(cond: &Condition) -> bool {
    cond.names().any(Name::is_response)
}

/// An increment condition at `field`: it may read `response.status` even in inbound, because it
/// is decided once the response is known.
pub fn increment_condition(cx: &BuildCx<'_>, src: &str, field: &str) -> Result<Condition, crate::config::ConfigError> {
    let names = Names { params: cx.params, vars: cx.vars, response: true };
    let c = Condition::parse(src, &names).map_err(|e| cx.error(&[field], e))?;
    if c.names().any(|n| matches!(n, Name::ResponseHeader(_))) {
        return Err(cx.error(&[field], "an increment condition can read response.status but not response headers"));
    }
    Ok(c)
}

/// When a request counts toward a limit (`increment_condition`).
#[derive(Debug)]
pub enum Increment {
    Always,
    /// Decided on the way in.
    Now(Condition),
    /// Needs the response status: taken on the way in, given back at the end if false.
    Later(Arc<Condition>),
}

impl Increment {
    pub fn build(cx: &BuildCx<'_>, src: Option<&str>, field: &str) -> Result<Self, crate::config::ConfigError> {
        Ok(match src {
            None => Increment::Always,
            Some(src) => {
                let c = increment_condition(cx, src, field)?;
                if needs_response(&c) {
                    Increment::Later(Arc::new(c))
                } else {
                    Increment::Now(c)
                }
            }
        })
    }

    /// Whether the request counts, as far as that is known on the way in.
    pub fn counts_now(&self, x: &Exchange) -> bool {
        match self {
            Increment::Now(c) => c.eval(x),
            _ => true,
        }
    }

    /// Whether [`Increment::defer`] does anything: the decision needs the response.
    pub fn is_later(&self) -> bool {
        matches!(self, Increment::Later(_))
    }

    /// After calls were taken for a counting request: if the decision needs the response,
    /// `refund` runs at the end when the condition turns out false.
    pub fn defer(&self, x: &mut Exchange, refund: impl FnOnce() + Send + 'static) {
        if let Increment::Later(c) = self {
            let values = Captured::capture(c, x);
            let c = c.clone();
            x.deferred.push(Box::new(move |status| {
                if !c.eval(&Captured { status, values }) {
                    refund();
                }
            }));
        }
    }
}

impl Increment {
    /// For work at the end of the exchange (response bytes): whether a request that counted on
    /// the way in still counts once its status is known.
    pub fn still_counts(&self, x: &Exchange) -> impl Fn(u16) -> bool + Send + 'static {
        let later = match self {
            Increment::Later(c) => Some((c.clone(), Captured::capture(c, x))),
            _ => None,
        };
        move |status| match &later {
            None => true,
            Some((c, values)) => c.eval(&Captured { status, values: values.clone() }),
        }
    }
}

/// A counter key: `prefix` (kind, scope, period) + the rendered template.
pub fn counter_key(prefix: &str, key: &Template, x: &Exchange) -> String {
    let v = key.render(x);
    let mut k = String::with_capacity(prefix.len() + v.len());
    k.push_str(prefix);
    k.push_str(&v);
    k
}

thread_local! {
    /// Where [`with_counter_key`] builds keys: most requests need their key only for one
    /// lookup, so it is not allocated per request.
    static KEY_BUFFER: Cell<String> = const { Cell::new(String::new()) };
}

/// Runs `f` with the [`counter_key`], built in a buffer kept by the thread (a nested call finds
/// it taken and uses a new one).
pub fn with_counter_key<R>(prefix: &str, key: &Template, x: &Exchange, f: impl FnOnce(&str) -> R) -> R {
    let v = key.render(x);
    let mut buf = KEY_BUFFER.try_with(Cell::take).unwrap_or_default();
    buf.clear();
    buf.push_str(prefix);
    buf.push_str(&v);
    let r = f(&buf);
    // A key made of a long request value does not stay with the thread.
    if buf.capacity() <= 1024 {
        let _ = KEY_BUFFER.try_with(|b| b.set(buf));
    }
    r
}

/// Compiles a config whose API `orders` (operation `get` at `/{id}`) has `inbound` as its
/// inbound section; `Err` holds `path: message` for every error.
#[cfg(test)]
pub fn compile_inbound(inbound: &str) -> Result<(), Vec<String>> {
    compile_section("inbound", inbound)
}

/// [`compile_inbound`] for any section.
#[cfg(test)]
pub fn compile_section(section: &str, policies: &str) -> Result<(), Vec<String>> {
    let inbound = policies;
    let yaml = format!(
        "listeners: [ {{ name: main, bind: \"127.0.0.1:0\" }} ]\n\
         backends: {{ b: {{ servers: [ {{ url: \"http://127.0.0.1:9\" }} ] }} }}\n\
         apis:\n  orders:\n    path: /orders\n    backend: b\n    policies:\n      {section}: {inbound}\n    \
         operations:\n      - {{ id: get, method: GET, template: \"/{{id}}\" }}\n"
    );
    crate::snapshot::compile_str("t.yaml", &yaml, std::path::Path::new("."))
        .map(|_| ())
        .map_err(|errors| errors.into_iter().map(|e| format!("{}: {}", e.path, e.message)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_from_the_threads_buffer_is_the_counter_key_and_a_nested_one_has_its_own() {
        let names = Names { params: &[], vars: &[], response: false };
        let t = Template::parse("{request.path}", &names).expect("template");
        let mut x = crate::policy::Held::take();
        x.path.push_str("/orders/1");
        let owned = counter_key("rlk|api:orders|1000|", &t, &x);
        let (outer, inner) = with_counter_key("rlk|api:orders|1000|", &t, &x, |k| {
            let inner = with_counter_key("p|", &t, &x, str::to_owned);
            (k.to_owned(), inner)
        });
        assert_eq!(outer, owned);
        assert_eq!(inner, "p|/orders/1");
        // The buffer kept by the thread holds nothing of a later key but that key.
        assert_eq!(with_counter_key("q|", &t, &x, str::to_owned), "q|/orders/1");
    }
}
