//! The `Server-Timing` response header (W3C Server Timing): where a request's time went, per
//! layer, for debugging in a browser's network panel. Off by default; `apis.NAME.server_timing:
//! true` turns it on for one API. It reveals timings only, never names or values.

use std::fmt::Write;
use std::time::Duration;

use http::HeaderValue;

pub const SERVER_TIMING: http::HeaderName = http::HeaderName::from_static("server-timing");

/// `edge;dur=0.012, policy;dur=0.004, backend;dur=1.250` (milliseconds); a layer that did not
/// run is left out.
pub fn header_value(edge: Duration, policy: Option<Duration>, backend: Option<Duration>) -> HeaderValue {
    let mut s = String::with_capacity(64);
    let mut put = |name: &str, d: Duration| {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "{name};dur={:.3}", d.as_secs_f64() * 1000.0);
    };
    put("edge", edge);
    if let Some(p) = policy {
        put("policy", p);
    }
    if let Some(b) = backend {
        put("backend", b);
    }
    // Only ASCII digits, letters and punctuation were written.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("edge"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_in_milliseconds_and_absent_layers_left_out() {
        let v = header_value(Duration::from_micros(12), None, Some(Duration::from_micros(1250)));
        assert_eq!(v, "edge;dur=0.012, backend;dur=1.250");
        let v = header_value(Duration::ZERO, Some(Duration::from_millis(2)), None);
        assert_eq!(v, "edge;dur=0.000, policy;dur=2.000");
    }
}
