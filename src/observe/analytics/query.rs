//! `GET /analytics`: the parameters, and the grouping of aggregates (from the store and from
//! memory alike) into result rows.
//!
//! ```text
//! GET /analytics?by=api|operation|product|subscription[,…]&from=…&to=…&interval=minute|hour|total&node=…
//! ```
//! `from`/`to`: RFC 3339 or Unix seconds; default the last hour. Minutes are included when they
//! start in `[from, to)` (`from` rounded down to its minute). `interval` default `total`.
//! `by=operation` groups by API and operation (operation ids are per API).

use std::collections::HashMap;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{Agg, Hist, Key};
use crate::observe::metrics::{LAYERS, STATUS_CLASSES};
use crate::store::StoredAggregate;

/// Result rows one query may produce (time buckets × groups).
pub const MAX_GROUPS: usize = 50_000;
/// The largest Unix time accepted (9999-12-31T23:59:59Z).
const MAX_TIME: i64 = 253_402_300_799;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Api,
    Operation,
    Product,
    Subscription,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Minute,
    Hour,
    Total,
}

impl Interval {
    fn as_str(self) -> &'static str {
        match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Total => "total",
        }
    }
}

/// A query's parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub by: Vec<Dim>,
    /// Unix seconds, a minute's start.
    pub from: i64,
    pub to: i64,
    pub interval: Interval,
    pub node: Option<String>,
}

/// A bad parameter: its name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> ParamError {
    ParamError { param: param.to_owned(), message: message.into() }
}

fn time_param(name: &str, v: &str) -> Result<i64, ParamError> {
    let t = match v.parse::<i64>() {
        Ok(t) => t,
        Err(_) => OffsetDateTime::parse(v, &Rfc3339)
            .map_err(|_| bad(name, "expected RFC 3339 (2025-01-31T12:00:00Z) or Unix seconds"))?
            .unix_timestamp(),
    };
    if !(0..=MAX_TIME).contains(&t) {
        return Err(bad(name, "out of range"));
    }
    Ok(t)
}

impl Params {
    /// Parses the query string (`None`: no `?`) at time `now` (Unix seconds).
    pub fn parse(query: Option<&str>, now: i64) -> Result<Params, ParamError> {
        let mut seen: HashMap<String, String> = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_encoding::percent_decode_str(k).decode_utf8_lossy().into_owned();
            // `+` is kept as is: it is more likely an RFC 3339 offset than a space.
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
            if !matches!(k.as_str(), "by" | "from" | "to" | "interval" | "node") {
                return Err(bad(&k, "unknown parameter (by, from, to, interval, node)"));
            }
            if seen.insert(k.clone(), v).is_some() {
                return Err(bad(&k, "given more than once"));
            }
        }
        let mut by = Vec::new();
        for d in seen.get("by").map_or("api", String::as_str).split(',') {
            let dim = match d.trim() {
                "api" => Dim::Api,
                "operation" => Dim::Operation,
                "product" => Dim::Product,
                "subscription" => Dim::Subscription,
                other => return Err(bad("by", format!("`{other}`: use api, operation, product or subscription"))),
            };
            if by.contains(&dim) {
                return Err(bad("by", format!("`{}` twice", d.trim())));
            }
            by.push(dim);
        }
        let to = match seen.get("to") {
            Some(v) => time_param("to", v)?,
            None => now,
        };
        let from = match seen.get("from") {
            Some(v) => time_param("from", v)?,
            None => to.saturating_sub(3600),
        };
        let from = from - from.rem_euclid(60);
        if from >= to {
            return Err(bad("from", "must be before `to`"));
        }
        let interval = match seen.get("interval").map(String::as_str) {
            None | Some("total") => Interval::Total,
            Some("minute") => Interval::Minute,
            Some("hour") => Interval::Hour,
            Some(_) => return Err(bad("interval", "use minute, hour or total")),
        };
        let node = match seen.remove("node") {
            Some(n) if n.is_empty() => return Err(bad("node", "empty")),
            n => n,
        };
        Ok(Params { by, from, to, interval, node })
    }
}

/// The sums of one result row.
#[derive(Debug, Default)]
struct Totals {
    requests: u64,
    bytes_sent: u64,
    status: [u64; 5],
    /// By layer index; 0 counts requests no layer failed.
    layers: [u64; 5],
    errors: u64,
    latency: Hist,
}

/// (bucket start, api, operation, product, subscription): the dimensions not grouped by are `None`.
type GroupKey = (i64, [Option<String>; 4]);

/// Adds aggregates up into result rows.
pub struct Grouping {
    params: Params,
    groups: HashMap<GroupKey, Totals>,
    /// More than [`MAX_GROUPS`] rows would result.
    pub too_many: bool,
}

impl Grouping {
    pub fn new(params: Params) -> Grouping {
        Grouping { params, groups: HashMap::new(), too_many: false }
    }

    fn bucket(&self, minute: i64) -> i64 {
        match self.params.interval {
            Interval::Minute => minute,
            Interval::Hour => minute - minute.rem_euclid(3600),
            Interval::Total => self.params.from,
        }
    }

    /// Adds one aggregate of the memory.
    pub fn add(&mut self, minute: i64, key: &Key, agg: &Agg) {
        let names = [Some(&*key.api), Some(&*key.operation), key.product.as_deref(), key.subscription.as_deref()];
        self.add_parts(minute, names, key.status, key.layer, agg.requests, agg.bytes_sent, &agg.latency);
    }

    /// Adds one stored aggregate.
    pub fn add_stored(&mut self, r: &StoredAggregate) {
        fn opt(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        let names = [Some(r.api.as_str()), Some(r.operation.as_str()), opt(&r.product), opt(&r.subscription)];
        let status = u8::try_from(r.status_class.clamp(1, 5) - 1).unwrap_or(0);
        let layer = LAYERS.iter().position(|l| *l == r.layer).unwrap_or(0) as u8;
        let latency = Hist::decode(&r.latency);
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        self.add_parts(r.minute, names, status, layer, n(r.requests), n(r.bytes_sent), &latency);
    }

    #[allow(clippy::too_many_arguments)]
    fn add_parts(
        &mut self,
        minute: i64,
        names: [Option<&str>; 4],
        status: u8,
        layer: u8,
        requests: u64,
        bytes_sent: u64,
        latency: &Hist,
    ) {
        let mut key: [Option<String>; 4] = Default::default();
        for dim in &self.params.by {
            let idx: &[usize] = match dim {
                Dim::Api => &[0],
                Dim::Operation => &[0, 1],
                Dim::Product => &[2],
                Dim::Subscription => &[3],
            };
            for &i in idx {
                key[i] = names[i].map(str::to_owned);
            }
        }
        let gk = (self.bucket(minute), key);
        if !self.groups.contains_key(&gk) && self.groups.len() >= MAX_GROUPS {
            self.too_many = true;
            return;
        }
        let t = self.groups.entry(gk).or_default();
        t.requests += requests;
        t.bytes_sent += bytes_sent;
        let (status, layer) = (usize::from(status).min(4), usize::from(layer).min(4));
        t.status[status] += requests;
        t.layers[layer] += requests;
        if layer != 0 || status == 4 {
            t.errors += requests;
        }
        t.latency.merge(latency);
    }

    /// The response document; `source` says where the rows came from (`store` or `memory`).
    pub fn into_json(self, source: &str) -> Value {
        let p = &self.params;
        let grouped = |d: Dim| p.by.contains(&d);
        let mut groups: Vec<(GroupKey, Totals)> = self.groups.into_iter().collect();
        groups.sort_by(|a, b| a.0 .0.cmp(&b.0 .0).then(b.1.requests.cmp(&a.1.requests)).then_with(|| a.0.cmp(&b.0)));
        let rows: Vec<Value> = groups
            .into_iter()
            .map(|((start, names), t)| {
                let [p50, p95, p99] = t.latency.quantiles([0.5, 0.95, 0.99]);
                let mut row = json!({
                    "start": rfc3339(start),
                    "requests": t.requests,
                    "errors": t.errors,
                    "errors_by_layer": {
                        "edge": t.layers[1], "policy": t.layers[2], "backend": t.layers[3], "gateway": t.layers[4],
                    },
                    "status": STATUS_CLASSES.iter().zip(t.status).filter(|(_, n)| *n > 0)
                        .map(|(c, n)| ((*c).to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
                    "bytes_sent": t.bytes_sent,
                    "latency_ms": { "p50": p50, "p95": p95, "p99": p99 },
                });
                let [api, operation, product, subscription] = names;
                if let Some(obj) = row.as_object_mut() {
                    if grouped(Dim::Api) || grouped(Dim::Operation) {
                        obj.insert("api".into(), json!(api));
                    }
                    if grouped(Dim::Operation) {
                        obj.insert("operation".into(), json!(operation));
                    }
                    if grouped(Dim::Product) {
                        obj.insert("product".into(), json!(product));
                    }
                    if grouped(Dim::Subscription) {
                        obj.insert("subscription".into(), json!(subscription));
                    }
                }
                row
            })
            .collect();
        let by: Vec<&str> =
            p.by.iter()
                .map(|d| match d {
                    Dim::Api => "api",
                    Dim::Operation => "operation",
                    Dim::Product => "product",
                    Dim::Subscription => "subscription",
                })
                .collect();
        json!({
            "by": by,
            "from": rfc3339(p.from),
            "to": rfc3339(p.to),
            "interval": p.interval.as_str(),
            "node": p.node,
            "source": source,
            "rows": rows,
        })
    }
}

fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn parse(q: &str) -> Result<Params, ParamError> {
        Params::parse(Some(q), NOW)
    }

    #[test]
    fn defaults_are_the_last_hour_by_api_in_total() {
        let p = Params::parse(None, NOW).expect("defaults");
        assert_eq!(p.by, [Dim::Api]);
        assert_eq!(p.to, NOW);
        assert_eq!(p.from, (NOW - 3600) - (NOW - 3600) % 60);
        assert_eq!(p.interval, Interval::Total);
        assert_eq!(p.node, None);
    }

    #[test]
    fn times_are_rfc3339_or_unix_seconds() {
        let p =
            parse("by=operation,subscription&from=2025-06-15T14:00:30Z&to=1750000000&interval=minute").expect("valid");
        assert_eq!(p.by, [Dim::Operation, Dim::Subscription]);
        assert_eq!(p.from, 1_749_996_000, "rounded down to the minute");
        assert_eq!(p.to, 1_750_000_000);
        assert_eq!(p.interval, Interval::Minute);
        // An offset, encoded or not.
        assert_eq!(parse("from=2025-06-15T16:00:00%2B02:00").expect("offset").from, 1_749_996_000);
        assert_eq!(parse("from=2025-06-15T16:00:00+02:00").expect("offset").from, 1_749_996_000);
    }

    #[test]
    fn bad_parameters_are_named() {
        let name = |q: &str| parse(q).expect_err(q).param;
        assert_eq!(name("by=host"), "by");
        assert_eq!(name("by=api,api"), "by");
        assert_eq!(name("from=yesterday"), "from");
        assert_eq!(name("to=-5"), "to");
        assert_eq!(name("from=1750000000&to=1749990000"), "from");
        assert_eq!(name("interval=day"), "interval");
        assert_eq!(name("limit=5"), "limit");
        assert_eq!(name("by=api&by=operation"), "by");
        assert_eq!(name("node="), "node");
    }

    fn key(api: &str, sub: Option<&str>, status: u8, layer: u8) -> Key {
        Key { api: api.into(), operation: "op".into(), product: None, subscription: sub.map(Into::into), status, layer }
    }

    fn agg(n: u64, ms: u64) -> Agg {
        let mut latency = Hist::default();
        for _ in 0..n {
            latency.observe(std::time::Duration::from_millis(ms));
        }
        Agg { requests: n, bytes_sent: n * 10, latency }
    }

    #[test]
    fn memory_and_stored_rows_add_up_per_group_and_bucket() {
        let p = parse("by=api&from=1749996000&to=1750003200&interval=hour").expect("params");
        let mut g = Grouping::new(p);
        g.add(1_749_996_000, &key("orders", None, 1, 0), &agg(5, 2));
        g.add(1_749_996_060, &key("orders", Some("s"), 4, 3), &agg(2, 30));
        g.add(1_749_996_000, &key("orders", None, 3, 1), &agg(1, 1));
        g.add_stored(&crate::observe::analytics::writer::stored(
            "n",
            &crate::observe::analytics::Row { minute: 1_749_999_600, key: key("orders", None, 4, 0), agg: agg(3, 2) },
        ));
        g.add(1_749_996_000, &key("catalog", None, 1, 0), &agg(1, 2));
        let v = g.into_json("store");
        let rows = v["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 3, "{v}");
        let first = &rows[0];
        assert_eq!(first["api"], "orders");
        assert_eq!(first["start"], "2025-06-15T14:00:00Z");
        assert_eq!(first["requests"], 8);
        assert_eq!(first["errors"], 3, "edge and backend layers");
        assert_eq!(first["errors_by_layer"]["edge"], 1);
        assert_eq!(first["errors_by_layer"]["backend"], 2);
        assert_eq!(first["status"]["5xx"], 2);
        assert_eq!(first["bytes_sent"], 80);
        assert!(first.get("subscription").is_none());
        assert_eq!(rows[1]["api"], "catalog");
        // The stored 5xx without a failed layer (the backend's own answer) is an error too.
        assert_eq!(rows[2]["start"], "2025-06-15T15:00:00Z");
        assert_eq!(rows[2]["errors"], 3);
        assert_eq!(rows[2]["errors_by_layer"]["backend"], 0);
        let p50 = rows[2]["latency_ms"]["p50"].as_f64().expect("p50");
        assert!((1.8..2.2).contains(&p50), "{p50}");
    }

    #[test]
    fn subscriptions_group_with_null_for_none() {
        let mut g = Grouping::new(parse("by=subscription").expect("params"));
        g.add(NOW - 60, &key("a", Some("s1"), 1, 0), &agg(2, 1));
        g.add(NOW - 60, &key("b", Some("s1"), 1, 0), &agg(1, 1));
        g.add(NOW - 60, &key("b", None, 1, 0), &agg(4, 1));
        let v = g.into_json("memory");
        let rows = v["rows"].as_array().expect("rows");
        assert_eq!(rows[0]["subscription"], Value::Null);
        assert_eq!(rows[0]["requests"], 4);
        assert_eq!(rows[1]["subscription"], "s1");
        assert_eq!(rows[1]["requests"], 3);
        assert!(rows[1].get("api").is_none());
    }
}
