//! How limit decisions reach the client: the problem+json refusals (429 rate limit, 403 quota,
//! 503 when Redis is down and `on_redis_failure: closed`), `Retry-After`, and the optional
//! headers APIM users know (`remaining_calls_header_name`, `total_calls_header_name`) plus the
//! IETF draft `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` fields.

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, StatusCode};

use super::{Decision, Verdict};
use crate::respond::{Layer, Problem};

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The response headers a limit policy writes, resolved when the config compiles.
#[derive(Debug, Clone)]
pub struct Headers {
    pub retry_after: HeaderName,
    pub remaining: Option<HeaderName>,
    pub total: Option<HeaderName>,
    /// `RateLimit-Limit`, `-Remaining`, `-Reset` on every response.
    pub draft: bool,
}

impl Default for Headers {
    fn default() -> Self {
        Headers { retry_after: RETRY_AFTER, remaining: None, total: None, draft: false }
    }
}

impl Headers {
    /// From the config's optional names; `Err` names the field whose value is not a header name.
    pub fn new(
        retry_after: Option<&str>,
        remaining: Option<&str>,
        total: Option<&str>,
        draft: bool,
    ) -> Result<Self, &'static str> {
        let parse = |v: Option<&str>, field: &'static str| -> Result<Option<HeaderName>, &'static str> {
            v.map(|s| HeaderName::from_bytes(s.as_bytes()).map_err(|_| field)).transpose()
        };
        Ok(Headers {
            retry_after: parse(retry_after, "retry_after_header_name")?.unwrap_or(RETRY_AFTER),
            remaining: parse(remaining, "remaining_calls_header_name")?,
            total: parse(total, "total_calls_header_name")?,
            draft,
        })
    }

    /// Headers for a response that passed (and for a refusal, alongside `Retry-After`). When
    /// several limits apply, the one with the fewest calls left is reported.
    pub fn write(&self, d: &Decision, h: &mut HeaderMap) {
        // A limit of 0: nothing was counted (fail-open while Redis is away, a bytes-only quota).
        if d.verdict == Verdict::Unavailable || d.limit == 0 {
            return;
        }
        let tighter = |h: &HeaderMap, name: &HeaderName| {
            h.get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).is_none_or(|old| d.remaining <= old)
        };
        if let Some(name) = &self.remaining {
            if tighter(h, name) {
                h.insert(name.clone(), HeaderValue::from(d.remaining));
                if let Some(total) = &self.total {
                    h.insert(total.clone(), HeaderValue::from(d.limit));
                }
            }
        } else if let Some(total) = &self.total {
            h.insert(total.clone(), HeaderValue::from(d.limit));
        }
        if self.draft && d.limit > 0 && tighter(h, &RATELIMIT_REMAINING) {
            h.insert(RATELIMIT_LIMIT, HeaderValue::from(d.limit));
            h.insert(RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
            h.insert(RATELIMIT_RESET, HeaderValue::from(secs(d.reset_ms)));
        }
    }
}

/// Whole seconds, rounded up (a client that waits `Retry-After` must not be early).
pub fn secs(ms: u64) -> u64 {
    ms.div_ceil(1_000)
}

/// The refusal for a decision that is not [`Verdict::Allowed`].
/// `quota` chooses 403 `quota-exceeded` over 429 `rate-limited`.
pub fn refusal(d: &Decision, quota: bool, headers: &Headers) -> Problem {
    let retry = secs(d.retry_after_ms).max(1);
    let mut p = match (d.verdict, quota) {
        (Verdict::Unavailable, _) => {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "limit-unavailable",
                Layer::Policy,
                "the shared limit store cannot be reached; try again shortly",
            )
            .with_header(RETRY_AFTER, HeaderValue::from(1u64));
        }
        (_, false) => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            Layer::Policy,
            format!("rate limit exceeded; retry in {retry} s"),
        ),
        (_, true) if d.retry_after_ms == 0 => {
            Problem::new(StatusCode::FORBIDDEN, "quota-exceeded", Layer::Policy, "quota exceeded")
        }
        (_, true) => Problem::new(
            StatusCode::FORBIDDEN,
            "quota-exceeded",
            Layer::Policy,
            format!("quota exceeded; it renews in {retry} s"),
        ),
    };
    if !(quota && d.retry_after_ms == 0) {
        p.headers.insert(headers.retry_after.clone(), HeaderValue::from(retry));
    }
    headers.write(d, &mut p.headers);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Ticket;

    fn d(verdict: Verdict, remaining: u64, retry: u64) -> Decision {
        Decision { verdict, limit: 10, remaining, reset_ms: 30_500, retry_after_ms: retry, ticket: Ticket::default() }
    }

    #[test]
    fn rate_refusal_is_429_with_retry_after_rounded_up() {
        let h = Headers::new(None, Some("x-left"), None, true).expect("names");
        let p = refusal(&d(Verdict::Limited, 0, 1_200), false, &h);
        assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(p.layer, Layer::Policy);
        assert_eq!(p.headers["retry-after"], "2");
        assert_eq!(p.headers["x-left"], "0");
        assert_eq!(p.headers["ratelimit-reset"], "31");
    }

    #[test]
    fn quota_refusal_is_403_and_unavailable_is_503() {
        let h = Headers::new(Some("x-retry"), None, None, false).expect("names");
        let p = refusal(&d(Verdict::Limited, 0, 86_400_000), true, &h);
        assert_eq!((p.status, p.kind), (StatusCode::FORBIDDEN, "quota-exceeded"));
        assert_eq!(p.headers["x-retry"], "86400");
        let p = refusal(&d(Verdict::Unavailable, 0, 0), false, &h);
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.headers["retry-after"], "1");
    }

    #[test]
    fn the_tightest_limit_is_reported() {
        let h = Headers::new(None, Some("x-left"), Some("x-total"), true).expect("names");
        let mut map = HeaderMap::new();
        h.write(&d(Verdict::Allowed, 3, 0), &mut map);
        h.write(&Decision { limit: 100, remaining: 50, ..d(Verdict::Allowed, 3, 0) }, &mut map);
        assert_eq!(map["x-left"], "3");
        assert_eq!(map["x-total"], "10");
        assert_eq!(map["ratelimit-remaining"], "3");
        assert!(Headers::new(None, Some("bad name"), None, false).is_err());
    }
}
