//! Reading a compact JWS (`header.payload.signature`) without trusting it.
//!
//! Everything here runs on attacker-controlled bytes before any signature is checked, so it is
//! bounded and strict: a size cap first, the base64url alphabet only, a JOSE header read into a
//! fixed struct (duplicate members are errors), `crit` and JWE headers refused (RFC 7515
//! §4.1.11), and `jku`, `x5u`, `jwk`, `x5c` never looked at — the key always comes from the
//! provider. The payload is parsed only after the signature verified ([`claims_object`]).

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::Alg;
use super::Invalid;

/// Tokens longer than this are refused before any decoding (reliability.md §2.7).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
const MAX_HEADER_BYTES: usize = 2048;

/// The parts of a token that were checked for shape; borrowed from the token text.
#[derive(Debug)]
pub struct Jws<'a> {
    pub alg: Alg,
    pub kid: Option<Cow<'a, str>>,
    /// `header.payload`: what the signature covers.
    pub signing_input: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
    crit: Option<IgnoredAny>,
    // JWE members: an encrypted token is not a signed one.
    enc: Option<IgnoredAny>,
    zip: Option<IgnoredAny>,
    // Named so a duplicate is an error like any other; never used.
    #[serde(rename = "jku")]
    _jku: Option<IgnoredAny>,
    #[serde(rename = "x5u")]
    _x5u: Option<IgnoredAny>,
    #[serde(rename = "jwk")]
    _jwk: Option<IgnoredAny>,
    #[serde(rename = "x5c")]
    _x5c: Option<IgnoredAny>,
    #[serde(rename = "typ")]
    _typ: Option<IgnoredAny>,
}

fn is_b64url(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits and checks the token's shape and header.
pub fn parse(token: &str) -> Result<Jws<'_>, Invalid> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Invalid::TooLarge);
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(if token.split('.').count() == 5 { Invalid::Encrypted } else { Invalid::Malformed });
    };
    if h.is_empty() || p.is_empty() || !is_b64url(h) || !is_b64url(p) || !is_b64url(s) {
        return Err(Invalid::Malformed);
    }
    if h.len() > MAX_HEADER_BYTES {
        return Err(Invalid::Malformed);
    }
    if s.is_empty() {
        // `alg: none` tokens end with an empty signature; refuse them by name for the log.
        return Err(Invalid::Unsigned);
    }
    let header_json = URL_SAFE_NO_PAD.decode(h).map_err(|_| Invalid::Malformed)?;
    let header: Header<'_> = serde_json::from_slice(&header_json).map_err(|_| Invalid::Malformed)?;
    if header.enc.is_some() || header.zip.is_some() {
        return Err(Invalid::Encrypted);
    }
    if header.crit.is_some() {
        return Err(Invalid::CriticalHeader);
    }
    let alg = match header.alg.as_deref() {
        None => return Err(Invalid::Malformed),
        Some(a) if a.eq_ignore_ascii_case("none") => return Err(Invalid::Unsigned),
        Some(a) => Alg::parse(a).ok_or(Invalid::Algorithm)?,
    };
    // The header JSON was decoded into a temporary buffer, so borrowed strings cannot outlive
    // it; `kid` is copied (it is short, and only needed on the cold path).
    let kid = header.kid.map(|k| Cow::Owned(k.into_owned()));
    let signing_input = &token[..h.len() + 1 + p.len()];
    Ok(Jws { alg, kid, signing_input, payload: p, signature: s })
}

/// Decodes a verified payload into its claims object; a duplicate top-level member, a
/// non-object payload or a time claim that is not a number is an error.
pub fn claims_object(payload_b64: &str) -> Result<Map<String, Value>, Invalid> {
    let json = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| Invalid::Malformed)?;
    let mut de = serde_json::Deserializer::from_slice(&json);
    let map = de.deserialize_map(StrictObject).map_err(|_| Invalid::Malformed)?;
    de.end().map_err(|_| Invalid::Malformed)?;
    for name in ["exp", "nbf", "iat"] {
        if let Some(v) = map.get(name) {
            if !v.is_number() {
                return Err(Invalid::Malformed);
            }
        }
    }
    Ok(map)
}

/// A JSON object whose top-level member names are unique (RFC 7519 §4: a duplicate claim
/// name makes a JWT invalid; two parsers could read two different values).
struct StrictObject;

impl<'de> Visitor<'de> for StrictObject {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value: Value = access.next_value()?;
            if map.contains_key(&key) {
                return Err(de::Error::custom("duplicate claim"));
            }
            map.insert(key, value);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn reads_alg_and_kid() {
        let t = token(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#, "{}");
        let jws = parse(&t).expect("valid shape");
        assert_eq!(jws.alg, Alg::RS256);
        assert_eq!(jws.kid.as_deref(), Some("k1"));
        assert_eq!(jws.signature, "c2ln");
        assert!(t.starts_with(jws.signing_input) && jws.signing_input.ends_with(jws.payload));
    }

    #[test]
    fn refuses_none_crit_jwe_unknown_alg_and_duplicates() {
        let cases = [
            (format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}")), Invalid::Unsigned),
            (token(r#"{"alg":"NONE"}"#, "{}"), Invalid::Unsigned),
            (token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, "{}"), Invalid::CriticalHeader),
            (token(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#, "{}"), Invalid::Encrypted),
            ("a.b.c.d.e".to_string(), Invalid::Encrypted),
            (token(r#"{"alg":"XS256"}"#, "{}"), Invalid::Algorithm),
            (token(r#"{"alg":"HS256","alg":"RS256"}"#, "{}"), Invalid::Malformed),
            (token(r#"{"kid":"k"}"#, "{}"), Invalid::Malformed),
            (token(r#"["RS256"]"#, "{}"), Invalid::Malformed),
        ];
        for (t, want) in cases {
            assert_eq!(parse(&t).expect_err(&t), want, "{t}");
        }
    }

    #[test]
    fn malformed_binary_and_oversized_tokens_are_errors_not_panics() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(parse(&long).expect_err("too long"), Invalid::TooLarge);
        for t in ["", ".", "..", "a.b", "a.b.c", "é.ü.ß", "a b.c.d", "YQ.YQ.YQ.", "=.=.=", "\u{0}.\u{1}.\u{2}"] {
            assert!(parse(t).is_err(), "{t:?}");
        }
        // Valid base64url, invalid UTF-8 / JSON in the header.
        let t = format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x00]), b64("{}"));
        assert_eq!(parse(&t).expect_err("binary header"), Invalid::Malformed);
    }

    #[test]
    fn header_members_that_point_at_keys_are_ignored() {
        let t = token(
            r#"{"alg":"RS256","kid":"k1","jku":"http://evil/jwks","x5u":"http://evil/c","jwk":{"kty":"oct","k":"AA"}}"#,
            "{}",
        );
        assert_eq!(parse(&t).expect("shape ok").kid.as_deref(), Some("k1"));
    }

    #[test]
    fn claims_must_be_an_object_with_unique_members_and_numeric_times() {
        assert!(claims_object(&b64(r#"{"sub":"a","exp":1}"#)).is_ok());
        assert_eq!(claims_object(&b64(r#"{"sub":"a","sub":"b"}"#)).expect_err("dup"), Invalid::Malformed);
        assert_eq!(claims_object(&b64(r#"[1]"#)).expect_err("array"), Invalid::Malformed);
        assert_eq!(claims_object(&b64(r#"{"exp":"tomorrow"}"#)).expect_err("string exp"), Invalid::Malformed);
        assert_eq!(claims_object(&b64(r#"{"a":1} x"#)).expect_err("trailing"), Invalid::Malformed);
        assert_eq!(claims_object("%%%").expect_err("not b64"), Invalid::Malformed);
    }
}
