//! `ip-filter`: allow or forbid client addresses (APIM `<ip-filter action="allow|forbid">`) on
//! the trusted client IP (after `edge.trusted_proxies`).
//!
//! Addresses and CIDR ranges (IPv4 and IPv6) and `from`–`to` ranges are merged into sorted,
//! disjoint intervals when the config compiles, so a check is a binary search however long the
//! list. An IPv4-mapped IPv6 client (`::ffff:192.0.2.1`) is checked as IPv4.
//!
//! The product puts IP filtering in the edge layer (product.md §4), so a refusal is a 403 with
//! `layer: edge`, and still names `policy: ip-filter` and the scope it was configured in.

use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;

use super::{util, BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;
use crate::respond::Problem;

/// `ip-filter: { action: allow, addresses: [10.0.0.0/8, "2001:db8::/32", 192.0.2.7],
/// address_ranges: [ { from: 198.51.100.10, to: 198.51.100.20 } ] }`
#[derive(Debug, Deserialize)]
pub struct IpFilterConfig {
    pub action: Action,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub address_ranges: Vec<RangeConfig>,
}

#[derive(Debug, Deserialize)]
pub struct RangeConfig {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Only the listed addresses pass.
    Allow,
    /// The listed addresses are refused.
    Forbid,
}

#[derive(Debug)]
pub struct IpFilter {
    allow: bool,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    scope: Arc<str>,
}

impl IpFilter {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: IpFilterConfig = cx.config()?;
        let mut errors = Vec::new();
        if let Err(e) = util::only_in(cx, "ip-filter", &[Stage::Inbound]) {
            errors.push(e);
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, a) in cfg.addresses.iter().enumerate() {
            let net = a.trim().parse::<IpNet>().or_else(|_| a.trim().parse::<IpAddr>().map(IpNet::from));
            match net {
                Ok(IpNet::V4(n)) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                Ok(IpNet::V6(n)) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
                Err(_) => errors.push(util::item_error(
                    cx,
                    "addresses",
                    i,
                    format!("`{a}` is not an IP address or CIDR range (192.0.2.0/24, 2001:db8::/32)"),
                )),
            }
        }
        for (i, r) in cfg.address_ranges.iter().enumerate() {
            match (r.from.trim().parse::<IpAddr>(), r.to.trim().parse::<IpAddr>()) {
                (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(b))) if a <= b => v4.push((a.into(), b.into())),
                (Ok(IpAddr::V6(a)), Ok(IpAddr::V6(b))) if a <= b => v6.push((a.into(), b.into())),
                _ => errors.push(util::item_error(
                    cx,
                    "address_ranges",
                    i,
                    "`from` and `to` must be addresses of the same family with from ≤ to",
                )),
            }
        }
        if cfg.addresses.is_empty() && cfg.address_ranges.is_empty() {
            errors.push(cx.error(&[], "list at least one entry in `addresses` or `address_ranges`"));
        }
        util::done(errors)?;
        Ok(IpFilter { allow: cfg.action == Action::Allow, v4: merge(v4), v6: merge(v6), scope: cx.scope.clone() })
    }

    /// Whether `ip` is in the list.
    pub fn listed(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }
}

/// Sorted, disjoint, non-adjacent intervals.
fn merge<T: Ord + Copy + num_like::Succ>(mut v: Vec<(T, T)>) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1.succ() => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn within<T: Ord + Copy>(v: &[(T, T)], x: T) -> bool {
    // The last interval starting at or before `x`.
    let i = v.partition_point(|(lo, _)| *lo <= x);
    i > 0 && v.get(i - 1).is_some_and(|(_, hi)| x <= *hi)
}

mod num_like {
    /// The next value, saturating (so adjacent intervals merge without overflow).
    pub trait Succ {
        fn succ(self) -> Self;
    }
    impl Succ for u32 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
}

impl Policy for IpFilter {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "ip-filter"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        if self.listed(x.client_ip) == self.allow {
            return Step::Ready(Outcome::Continue);
        }
        let mut p = Problem::edge(StatusCode::FORBIDDEN, "ip-forbidden", "the client address is not allowed here");
        p.policy = Some("ip-filter");
        p.scope = Some(self.scope.to_string());
        Step::Ready(Outcome::Reject(Box::new(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    fn filter(yaml: &str) -> IpFilter {
        build_with(yaml, Stage::Inbound, IpFilter::build).expect("builds")
    }

    fn passes(f: &IpFilter, ip: &str) -> bool {
        let mut x = exchange("/orders/1");
        x.client_ip = ip.parse().expect("ip");
        match run_ready(f, &mut x) {
            Outcome::Continue => true,
            Outcome::Reject(p) => {
                assert_eq!(
                    (p.status.as_u16(), p.layer, p.policy),
                    (403, crate::respond::Layer::Edge, Some("ip-filter"))
                );
                assert_eq!(p.scope.as_deref(), Some("api:orders"));
                false
            }
            Outcome::Respond(_) => panic!("answered"),
        }
    }

    #[test]
    fn allow_lists_cidrs_single_addresses_and_ranges() {
        let f = filter(
            "{ action: allow, addresses: [10.0.0.0/8, 192.0.2.7, '2001:db8::/32'], \
             address_ranges: [ { from: 198.51.100.10, to: 198.51.100.20 } ] }",
        );
        for ip in ["10.1.2.3", "192.0.2.7", "2001:db8::1", "198.51.100.10", "198.51.100.20", "::ffff:10.0.0.1"] {
            assert!(passes(&f, ip), "{ip}");
        }
        for ip in ["11.0.0.0", "192.0.2.8", "2001:db9::1", "198.51.100.21", "::1"] {
            assert!(!passes(&f, ip), "{ip}");
        }
    }

    #[test]
    fn forbid_refuses_only_the_listed() {
        let f = filter("{ action: forbid, addresses: [192.0.2.0/24] }");
        assert!(!passes(&f, "192.0.2.200"));
        assert!(passes(&f, "192.0.3.1"));
    }

    #[test]
    fn overlapping_and_adjacent_entries_merge() {
        let f = filter("{ action: allow, addresses: [10.0.0.0/9, 10.128.0.0/9, 10.0.0.0/16, 0.0.0.0/0] }");
        assert_eq!(f.v4, vec![(0, u32::MAX)]);
        assert!(passes(&f, "255.255.255.255"));
    }

    #[test]
    fn invalid_entries_are_located() {
        let e = build_with(
            "{ action: allow, addresses: [10.0.0.0/33, ok] , address_ranges: [ { from: 10.0.0.2, to: 10.0.0.1 } ] }",
            Stage::Inbound,
            IpFilter::build,
        )
        .expect_err("err")
        .join("\n");
        assert!(e.contains("p.addresses[0]: `10.0.0.0/33` is not an IP address or CIDR range"), "{e}");
        assert!(e.contains("p.addresses[1]:"), "{e}");
        assert!(e.contains("p.address_ranges[0]:"), "{e}");
    }
}
