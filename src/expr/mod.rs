//! Expressions: Gatehouse's small, safe template and condition language for policy values
//! (`counter_key: "{jwt.sub}"`, `value: "user-{var.tier ?? 'free'}"`) and `choose`/`when`
//! conditions (`request.method == 'GET' && jwt.claims.roles contains 'admin'`).
//!
//! The language is deliberately tiny, so that it is safe to run on every request:
//! - **Names are checked when the config compiles.** An unknown name, a route parameter the route
//!   does not have, a `var.X` no `set-variable` sets, or `response.*` in the inbound stage is a
//!   config error, never a runtime surprise. Header names become [`http::HeaderName`]s then.
//! - **Bounded cost.** No loops, no user functions, no regexes. Sources are limited in length
//!   ([`MAX_CONDITION_LEN`], [`MAX_TEMPLATE_LEN`]) and conditions in nesting ([`MAX_DEPTH`]), so a
//!   compiled expression is evaluated in time linear in its size.
//! - **Nothing heavy on the hot path.** Parsing precomputes everything (header names, literals and
//!   their integer values); a static template renders borrowed, a one-placeholder template passes
//!   the context's value through, and comparisons of single values do not allocate.
//!
//! The language knows nothing of the pipeline: it reads values through the [`Context`] trait,
//! which the pipeline implements for its `Exchange`. [`claim`] helps with JWT claims.
//! The user documentation is `docs/expressions.md`.

mod condition;
mod lex;
mod template;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use http::HeaderName;

pub use condition::Condition;
pub use template::Template;

/// Longest condition source accepted, in bytes.
pub const MAX_CONDITION_LEN: usize = 4 * 1024;
/// Longest template source accepted, in bytes. Templates cannot nest, so they may be longer
/// than conditions (a `set-body` template) and still render in linear time.
pub const MAX_TEMPLATE_LEN: usize = 64 * 1024;
/// Deepest nesting of parentheses and `!` accepted in a condition.
pub const MAX_DEPTH: usize = 32;

/// A value an expression can read, resolved when the expression compiles.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Name {
    /// `request.method`
    Method,
    /// `request.path`: the normalised public path that was routed.
    Path,
    /// `request.url`: the URL as received (path and query).
    Url,
    /// `request.host`
    Host,
    /// `request.ip`: the trusted client IP.
    ClientIp,
    /// `request.id`
    RequestId,
    /// `request.header.NAME` (case-insensitive by nature)
    Header(HeaderName),
    /// `request.query.NAME` (case-sensitive, as query parameters are)
    Query(String),
    /// `{NAME}`: a route template parameter.
    Param(String),
    /// `api.name`
    Api,
    /// `operation.id`
    Operation,
    /// `product.name`
    Product,
    /// `subscription.id`
    SubscriptionId,
    /// `subscription.name`
    SubscriptionName,
    /// `jwt.sub`
    JwtSub,
    /// `jwt.claims.NAME`
    JwtClaim(String),
    /// `var.NAME`: set by `set-variable`.
    Var(String),
    /// `response.status` (outbound and on-error only)
    ResponseStatus,
    /// `response.header.NAME` (outbound and on-error only)
    ResponseHeader(HeaderName),
}

impl Name {
    /// Parses one name as written in a condition (`request.header.X-User`,
    /// `jwt.claims['https://example.com/roles']`) and checks it against what is available.
    pub fn parse(src: &str, names: &Names) -> Result<Name, String> {
        let tokens = lex::lex(src, 0, src.len())?;
        match tokens.as_slice() {
            [lex::Token { tok: lex::Tok::Name { path, key }, .. }] => resolve(path, key.as_deref(), names),
            _ => Err(format!("`{src}` is not a name")),
        }
    }

    /// True for names that only exist once there is a response (outbound and on-error).
    pub fn is_response(&self) -> bool {
        matches!(self, Name::ResponseStatus | Name::ResponseHeader(_))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Method => f.write_str("request.method"),
            Name::Path => f.write_str("request.path"),
            Name::Url => f.write_str("request.url"),
            Name::Host => f.write_str("request.host"),
            Name::ClientIp => f.write_str("request.ip"),
            Name::RequestId => f.write_str("request.id"),
            Name::Header(h) => write!(f, "request.header.{h}"),
            Name::Query(q) => write_keyed(f, "request.query", q),
            Name::Param(p) => f.write_str(p),
            Name::Api => f.write_str("api.name"),
            Name::Operation => f.write_str("operation.id"),
            Name::Product => f.write_str("product.name"),
            Name::SubscriptionId => f.write_str("subscription.id"),
            Name::SubscriptionName => f.write_str("subscription.name"),
            Name::JwtSub => f.write_str("jwt.sub"),
            Name::JwtClaim(c) => write_keyed(f, "jwt.claims", c),
            Name::Var(v) => write_keyed(f, "var", v),
            Name::ResponseStatus => f.write_str("response.status"),
            Name::ResponseHeader(h) => write!(f, "response.header.{h}"),
        }
    }
}

/// Writes `prefix.key`, or `prefix['key']` when the key would not read back as a plain name.
fn write_keyed(f: &mut fmt::Formatter<'_>, prefix: &str, key: &str) -> fmt::Result {
    if !key.is_empty() && key.bytes().all(lex::is_name_byte) {
        write!(f, "{prefix}.{key}")
    } else {
        write!(f, "{prefix}['{}']", key.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A value read through a [`Context`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    /// Several values: a JSON-array claim, a repeated header. Renders joined with `,`;
    /// `contains` and `in` test its members.
    List(Vec<Cow<'a, str>>),
}

impl<'a> Value<'a> {
    /// True when the value renders as the empty string.
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Str(s) => s.is_empty(),
            Value::List(l) => l.iter().all(|s| s.is_empty()) && l.len() <= 1,
        }
    }

    /// The rendered form: a list joined with `,` (the only case that allocates here).
    pub fn into_cow(self) -> Cow<'a, str> {
        match self {
            Value::Str(s) => s,
            Value::List(mut l) if l.len() <= 1 => l.pop().unwrap_or(Cow::Borrowed("")),
            Value::List(l) => Cow::Owned(l.join(",")),
        }
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value<'_> {
    fn from(s: String) -> Self {
        Value::Str(Cow::Owned(s))
    }
}

/// Where expressions read their values; the pipeline implements it for its `Exchange`.
///
/// `None` means "not there" (no such header, no token, no response yet): it renders as the
/// empty string, makes `exists(name)` false and triggers a template default.
pub trait Context {
    fn lookup(&self, name: &Name) -> Option<Value<'_>>;
}

/// What names a compiled expression may use where it appears.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// Route template parameters known at this scope (`{id}`).
    pub params: &'a [String],
    /// Variables some `set-variable` sets.
    pub vars: &'a [String],
    /// True in outbound and on-error, where `response.*` exists.
    pub response: bool,
}

impl Names<'_> {
    /// No route parameters, no variables, no response: only the request, API, identity names.
    pub const NONE: Names<'static> = Names { params: &[], vars: &[], response: false };
}

/// The names as a user writes them, for error messages.
const KNOWN: &[&str] = &[
    "request.method",
    "request.path",
    "request.url",
    "request.host",
    "request.ip",
    "request.id",
    "request.header.NAME",
    "request.query.NAME",
    "api.name",
    "operation.id",
    "product.name",
    "subscription.id",
    "subscription.name",
    "jwt.sub",
    "jwt.claims.NAME",
    "var.NAME",
    "response.status",
    "response.header.NAME",
];

/// Families of names that take a key, as (prefix, which).
const KEYED: &[(&str, Keyed)] = &[
    ("request.header", Keyed::Header),
    ("request.query", Keyed::Query),
    ("jwt.claims", Keyed::Claim),
    ("var", Keyed::Var),
    ("response.header", Keyed::ResponseHeader),
];

#[derive(Clone, Copy)]
enum Keyed {
    Header,
    Query,
    Claim,
    Var,
    ResponseHeader,
}

/// Resolves a name as lexed (`path`, plus the key of `path['key']`) against what is available.
pub(crate) fn resolve(path: &str, key: Option<&str>, names: &Names) -> Result<Name, String> {
    if let Some(key) = key {
        return match KEYED.iter().find(|(prefix, _)| *prefix == path) {
            Some((_, kind)) => keyed(*kind, path, key, names),
            None => Err(format!(
                "`{path}['…']`: only request.header, request.query, jwt.claims, var and response.header take a key"
            )),
        };
    }
    let name = match path {
        "request.method" => Name::Method,
        "request.path" => Name::Path,
        "request.url" => Name::Url,
        "request.host" => Name::Host,
        "request.ip" => Name::ClientIp,
        "request.id" => Name::RequestId,
        "api.name" => Name::Api,
        "operation.id" => Name::Operation,
        "product.name" => Name::Product,
        "subscription.id" => Name::SubscriptionId,
        "subscription.name" => Name::SubscriptionName,
        "jwt.sub" => Name::JwtSub,
        "response.status" => return need_response(Name::ResponseStatus, names),
        _ => {
            for (prefix, kind) in KEYED {
                if path == *prefix {
                    return Err(format!("`{path}` needs a NAME: `{path}.NAME` or `{path}['NAME']`"));
                }
                if let Some(rest) = path.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
                    if rest.is_empty() {
                        return Err(format!("`{path}` needs a NAME after the dot"));
                    }
                    return keyed(*kind, path, rest, names);
                }
            }
            if !path.contains('.') && names.params.iter().any(|p| p == path) {
                return Ok(Name::Param(path.to_owned()));
            }
            return Err(unknown(path, names));
        }
    };
    Ok(name)
}

fn keyed(kind: Keyed, path: &str, key: &str, names: &Names) -> Result<Name, String> {
    let header = |key: &str| {
        HeaderName::from_bytes(key.as_bytes()).map_err(|_| format!("`{path}`: `{key}` is not a valid header name"))
    };
    match kind {
        Keyed::Header => Ok(Name::Header(header(key)?)),
        Keyed::Query => Ok(Name::Query(key.to_owned())),
        Keyed::Claim => Ok(Name::JwtClaim(key.to_owned())),
        Keyed::Var if names.vars.iter().any(|v| v == key) => Ok(Name::Var(key.to_owned())),
        Keyed::Var => Err(format!("`var.{key}` is not set by any set-variable or cache-lookup-value")),
        Keyed::ResponseHeader => need_response(Name::ResponseHeader(header(key)?), names),
    }
}

fn need_response(name: Name, names: &Names) -> Result<Name, String> {
    if names.response {
        Ok(name)
    } else {
        Err(format!("`{name}` is only available in outbound and on-error"))
    }
}

fn unknown(path: &str, names: &Names) -> String {
    let mut msg = format!("unknown name `{path}`");
    if let Some(guess) = suggestion(path, names) {
        msg.push_str(&format!(" (did you mean `{guess}`?)"));
    }
    msg.push_str(": expected one of ");
    msg.push_str(&KNOWN.join(", "));
    if names.params.is_empty() {
        msg.push_str(" (no route parameters here)");
    } else {
        msg.push_str(", or a route parameter (");
        msg.push_str(&names.params.join(", "));
        msg.push(')');
    }
    msg
}

/// The closest known name (at most two edits away), keyed families compared on their prefix.
fn suggestion(path: &str, names: &Names) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    let mut consider = |written: &str, candidate: &str, shown: String| {
        let d = distance(written, candidate);
        if d <= 2 && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, shown));
        }
    };
    for known in KNOWN {
        match known.strip_suffix(".NAME") {
            Some(prefix) => {
                // Compare as many segments as the prefix has: `request.headers.x` → `request.header.x`.
                let dots = prefix.matches('.').count() + 1;
                let mut split = path.splitn(dots + 1, '.');
                let head: Vec<&str> = split.by_ref().take(dots).collect();
                if let Some(rest) = split.next() {
                    consider(&head.join("."), prefix, format!("{prefix}.{rest}"));
                }
            }
            None => consider(path, known, (*known).to_owned()),
        }
    }
    for p in names.params {
        consider(path, p, p.clone());
    }
    best.map(|(_, s)| s)
}

/// Levenshtein distance; parse-time only and on short strings.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// `text` as template source that renders exactly `text`: braces doubled. For text spliced into a
/// template's source before it is parsed (a resolved `{{secret:NAME}}`), so that it stays literal
/// and can never be read as placeholders, nor quoted in a parse error.
pub fn escape(text: &str) -> Cow<'_, str> {
    if text.contains(['{', '}']) {
        Cow::Owned(text.replace('{', "{{").replace('}', "}}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The value of claim `name` in a validated JWT payload, for [`Context`] implementations.
///
/// A top-level claim of that exact name wins (claim names may contain dots); otherwise a dotted
/// name walks into objects (`realm_access.roles`). Strings are borrowed; numbers and booleans are
/// rendered; an array becomes a [`Value::List`]; an object renders as its JSON text; `null` is
/// treated as absent.
pub fn claim<'a>(payload: &'a serde_json::Value, name: &str) -> Option<Value<'a>> {
    let obj = payload.as_object()?;
    if let Some(v) = obj.get(name) {
        return json_value(v);
    }
    let mut cur = payload;
    for seg in name.split('.') {
        cur = cur.as_object()?.get(seg)?;
    }
    json_value(cur)
}

/// A JSON value as an expression value (see [`claim`]).
pub fn json_value(v: &serde_json::Value) -> Option<Value<'_>> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::Array(items) => Some(Value::List(items.iter().filter_map(json_scalar).collect())),
        other => json_scalar(other).map(Value::Str),
    }
}

fn json_scalar(v: &serde_json::Value) -> Option<Cow<'_, str>> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
        serde_json::Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
        other => Some(Cow::Owned(other.to_string())),
    }
}
