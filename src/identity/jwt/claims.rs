//! Claim checks after the signature: issuer, audience, times, and required claim values.
//!
//! They run on every request, cached token or not (a cached token still expires, and two
//! policies may ask different things of the same token), so they only compare strings already
//! in memory.

use serde_json::{Map, Value};

use super::Invalid;

/// How the values listed for a required claim must be present in the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    All,
    Any,
}

/// One required claim: `roles: [orders.read]`, `{ any_of: [a, b] }`, or `[]` for "present".
#[derive(Debug, Clone)]
pub struct ClaimRule {
    /// A claim name, or a dotted path into nested objects (`realm_access.roles`).
    pub name: Box<str>,
    pub values: Vec<Box<str>>,
    pub mode: Match,
}

impl ClaimRule {
    /// Whether `claims` satisfy this rule.
    pub fn check(&self, claims: &Map<String, Value>) -> bool {
        let Some(value) = lookup(claims, &self.name) else {
            return false;
        };
        if self.values.is_empty() {
            return !value.is_null();
        }
        let has = |want: &str| claim_values(&self.name, value).any(|v| v == want);
        match self.mode {
            Match::All => self.values.iter().all(|w| has(w)),
            Match::Any => self.values.iter().any(|w| has(w)),
        }
    }
}

/// The claim at `name`: the member itself, else a dotted path through nested objects.
pub fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |v, part| v.as_object()?.get(part))
}

/// The individual values of a claim: array elements; a string (split on spaces for `scope` and
/// `scp`, RFC 8693 §4.2); numbers and booleans as written.
pub fn claim_values<'a>(name: &str, value: &'a Value) -> Box<dyn Iterator<Item = std::borrow::Cow<'a, str>> + 'a> {
    use std::borrow::Cow;
    let scalar = |v: &'a Value| -> Option<Cow<'a, str>> {
        match v {
            Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => None,
        }
    };
    let space_separated = name == "scope" || name == "scp" || name.ends_with(".scope");
    match value {
        Value::Array(items) => Box::new(items.iter().filter_map(scalar)),
        Value::String(s) if space_separated => Box::new(s.split(' ').filter(|p| !p.is_empty()).map(Cow::Borrowed)),
        other => Box::new(scalar(other).into_iter()),
    }
}

/// A token's `exp`, `nbf` and `iat`, read once when it is verified: a cached token is judged
/// against the clock on every request without looking its claims up again.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Times {
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    pub iat: Option<f64>,
}

impl Times {
    pub fn of(claims: &Map<String, Value>) -> Times {
        let time = |name: &str| claims.get(name).and_then(Value::as_f64);
        Times { exp: time("exp"), nbf: time("nbf"), iat: time("iat") }
    }

    /// `exp`, `nbf`, `iat` against `now` (Unix seconds) with `skew` seconds of tolerance.
    pub fn check(self, now: u64, skew: u64, require_exp: bool) -> Result<(), Invalid> {
        let now = now as f64;
        let skew = skew as f64;
        match self.exp {
            Some(exp) if now >= exp + skew => return Err(Invalid::Expired),
            None if require_exp => return Err(Invalid::NoExpiry),
            _ => {}
        }
        if self.nbf.is_some_and(|nbf| now + skew < nbf) {
            return Err(Invalid::NotYetValid);
        }
        if self.iat.is_some_and(|iat| now + skew < iat) {
            return Err(Invalid::IssuedInFuture);
        }
        Ok(())
    }
}

/// A verified token's payload, with what every request asks of it read once when the signature
/// verified: the times, the issuer, the audiences and the subject. The cache holds it behind an
/// `Arc`, and later policies read it from the exchange without looking members up again.
#[derive(Debug, PartialEq)]
pub struct Verified {
    /// The payload (always a JSON object).
    pub claims: Value,
    pub times: Times,
    /// `iss` when it is a string.
    iss: Option<Box<str>>,
    /// `aud`'s strings (a single string or an array's string items).
    aud: Box<[Box<str>]>,
    /// `sub` when it is a string.
    sub: Option<Box<str>>,
}

impl Verified {
    pub fn new(claims: Map<String, Value>) -> Verified {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(Into::into);
        let aud = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str().into()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(Into::into).collect(),
            _ => Vec::new(),
        };
        Verified {
            times: Times::of(&claims),
            iss: text("iss"),
            aud: aud.into(),
            sub: text("sub"),
            claims: Value::Object(claims),
        }
    }

    /// The payload's members.
    pub fn map(&self) -> Option<&Map<String, Value>> {
        self.claims.as_object()
    }

    /// `sub` when it is a string (other forms: look it up in [`Verified::claims`]).
    pub fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    /// Like [`check_issuer`], on the issuer read at verification.
    pub fn check_issuer(&self, issuers: &[&str]) -> Result<(), Invalid> {
        if issuers.is_empty() {
            return Ok(());
        }
        match &self.iss {
            Some(iss) if issuers.contains(&&**iss) => Ok(()),
            _ => Err(Invalid::Issuer),
        }
    }

    /// Like [`check_audience`], on the audiences read at verification.
    pub fn check_audience(&self, audiences: &[Box<str>]) -> Result<(), Invalid> {
        if audiences.is_empty() || self.aud.iter().any(|a| audiences.contains(a)) {
            Ok(())
        } else {
            Err(Invalid::Audience)
        }
    }
}

/// `iss` must equal one of `issuers` exactly (an empty list accepts any issuer).
pub fn check_issuer(claims: &Map<String, Value>, issuers: &[&str]) -> Result<(), Invalid> {
    if issuers.is_empty() {
        return Ok(());
    }
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if issuers.contains(&iss) => Ok(()),
        _ => Err(Invalid::Issuer),
    }
}

/// `aud` (a string or an array) must contain one of `audiences` exactly.
pub fn check_audience(claims: &Map<String, Value>, audiences: &[Box<str>]) -> Result<(), Invalid> {
    if audiences.is_empty() {
        return Ok(());
    }
    let ok = match claims.get("aud") {
        Some(Value::String(a)) => audiences.iter().any(|w| **w == **a),
        Some(Value::Array(items)) => {
            items.iter().filter_map(Value::as_str).any(|a| audiences.iter().any(|w| **w == *a))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Invalid::Audience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check_times(claims: &Map<String, Value>, now: u64, skew: u64, require_exp: bool) -> Result<(), Invalid> {
        Times::of(claims).check(now, skew, require_exp)
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test claims must be an object"),
        }
    }

    fn rule(name: &str, values: &[&str], mode: Match) -> ClaimRule {
        ClaimRule { name: name.into(), values: values.iter().map(|v| (*v).into()).collect(), mode }
    }

    #[test]
    fn required_claims_all_any_present_arrays_and_scopes() {
        let c = obj(json!({
            "roles": ["orders.read", "orders.write"],
            "scp": "orders.read  profile",
            "scope": "a b",
            "tid": "t1",
            "admin": true,
            "realm_access": { "roles": ["ops"] }
        }));
        assert!(rule("roles", &["orders.read"], Match::All).check(&c));
        assert!(rule("roles", &["orders.read", "orders.write"], Match::All).check(&c));
        assert!(!rule("roles", &["orders.read", "admin"], Match::All).check(&c));
        assert!(rule("roles", &["admin", "orders.write"], Match::Any).check(&c));
        assert!(rule("scp", &["profile", "orders.read"], Match::All).check(&c));
        assert!(!rule("scp", &["orders"], Match::Any).check(&c), "no substring matches");
        assert!(rule("scope", &["b"], Match::All).check(&c));
        assert!(rule("tid", &["t1"], Match::All).check(&c));
        assert!(!rule("tid", &["t1 "], Match::All).check(&c));
        assert!(rule("admin", &["true"], Match::All).check(&c));
        assert!(rule("realm_access.roles", &["ops"], Match::All).check(&c));
        assert!(rule("tid", &[], Match::All).check(&c), "presence");
        assert!(!rule("missing", &[], Match::All).check(&c));
        assert!(!rule("missing", &["x"], Match::Any).check(&c));
    }

    #[test]
    fn times_with_skew() {
        let c = obj(json!({ "exp": 1000, "nbf": 900, "iat": 900 }));
        assert_eq!(check_times(&c, 950, 0, true), Ok(()));
        assert_eq!(check_times(&c, 1000, 0, true), Err(Invalid::Expired));
        assert_eq!(check_times(&c, 1029, 30, true), Ok(()));
        assert_eq!(check_times(&c, 1030, 30, true), Err(Invalid::Expired));
        assert_eq!(check_times(&c, 880, 0, true), Err(Invalid::NotYetValid));
        assert_eq!(check_times(&c, 880, 30, true), Ok(()));
        let future_iat = obj(json!({ "exp": 5000, "iat": 2000 }));
        assert_eq!(check_times(&future_iat, 1000, 60, true), Err(Invalid::IssuedInFuture));
        let no_exp = obj(json!({ "sub": "x" }));
        assert_eq!(check_times(&no_exp, 1000, 0, true), Err(Invalid::NoExpiry));
        assert_eq!(check_times(&no_exp, 1000, 0, false), Ok(()));
    }

    #[test]
    fn issuer_and_audience_are_exact() {
        let c = obj(json!({ "iss": "https://idp/", "aud": ["api://a", "api://b"] }));
        assert_eq!(check_issuer(&c, &["https://idp/"]), Ok(()));
        assert_eq!(check_issuer(&c, &["https://idp"]), Err(Invalid::Issuer));
        assert_eq!(check_audience(&c, &["api://b".into()]), Ok(()));
        assert_eq!(check_audience(&c, &["api://c".into(), "api://a".into()]), Ok(()));
        assert_eq!(check_audience(&c, &["api://".into()]), Err(Invalid::Audience));
        let single = obj(json!({ "aud": "api://a" }));
        assert_eq!(check_audience(&single, &["api://a".into()]), Ok(()));
        assert_eq!(check_audience(&obj(json!({})), &["api://a".into()]), Err(Invalid::Audience));
        assert_eq!(check_issuer(&obj(json!({ "iss": 5 })), &["5"]), Err(Invalid::Issuer));
    }

    #[test]
    fn verified_judges_as_the_claims_do() {
        let cases = [
            json!({ "iss": "https://idp/", "aud": ["api://a", 7, "api://b"], "sub": "alice", "exp": 10 }),
            json!({ "iss": "https://idp", "aud": "api://a", "sub": 42 }),
            json!({ "iss": 5, "aud": { "x": "api://a" } }),
            json!({ "aud": [] }),
            json!({}),
        ];
        let issuers: [&[&str]; 4] = [&[], &["https://idp/"], &["https://idp", "x"], &["5"]];
        let audiences: [Vec<Box<str>>; 4] =
            [vec![], vec!["api://a".into()], vec!["api://c".into(), "api://b".into()], vec!["7".into()]];
        for case in cases {
            let map = obj(case);
            let v = Verified::new(map.clone());
            for iss in issuers {
                assert_eq!(v.check_issuer(iss), check_issuer(&map, iss), "{map:?} {iss:?}");
            }
            for aud in &audiences {
                assert_eq!(v.check_audience(aud), check_audience(&map, aud), "{map:?} {aud:?}");
            }
            assert_eq!(v.times, Times::of(&map));
            assert_eq!(v.sub(), map.get("sub").and_then(Value::as_str));
            assert_eq!(v.map(), Some(&map));
        }
    }
}
