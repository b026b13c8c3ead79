use super::*;
use crate::store::{Subscription, SubscriptionKey};

fn record(
    id: &str,
    scope: Scope,
    state: State,
    expires_at: Option<i64>,
    rev: i64,
) -> (SubscriptionRecord, [String; 2]) {
    let p = SubscriptionKey::generate().expect("rng");
    let s = SubscriptionKey::generate().expect("rng");
    let rec = SubscriptionRecord {
        subscription: Subscription {
            id: id.into(),
            name: format!("name-{id}"),
            scope,
            state,
            expires_at,
            created_at: 0,
            updated_at: 0,
        },
        primary: p.hash(),
        secondary: s.hash(),
        rev,
    };
    (rec, [p.expose().to_owned(), s.expose().to_owned()])
}

fn index_with(recs: &[SubscriptionRecord]) -> SubscriptionIndex {
    let index = SubscriptionIndex::default();
    {
        let mut sync = index.sync.try_lock().expect("unlocked");
        index.apply(&mut sync, recs);
    }
    index
}

fn access(api: &str, products: &[&str], required: bool) -> ApiAccess {
    ApiAccess { api: api.into(), products: products.iter().map(|p| Arc::from(*p)).collect(), required }
}

#[test]
fn both_keys_work_and_scope_is_enforced() {
    let (a, ka) = record("a", Scope::Product("starter".into()), State::Active, None, 1);
    let (b, kb) = record("b", Scope::Api("orders".into()), State::Active, None, 2);
    let (c, kc) = record("c", Scope::AllApis, State::Active, None, 3);
    let index = index_with(&[a, b, c]);
    let orders = access("orders", &["starter"], true);
    let billing = access("billing", &[], true);
    for k in &ka {
        let caller = index.check(&orders, Some(k)).expect("product key");
        assert_eq!(caller.product.as_deref(), Some("starter"));
        assert_eq!(&*caller.subscription_id, "a");
        assert_eq!(index.check(&billing, Some(k)).err(), Some(Denial::OutOfScope));
    }
    assert!(index.check(&orders, Some(&kb[1])).expect("api key").product.is_none());
    assert_eq!(index.check(&billing, Some(&kb[0])).err(), Some(Denial::OutOfScope));
    assert!(index.check(&billing, Some(&kc[0])).is_ok());
}

#[test]
fn missing_invalid_inactive_expired() {
    let (s, ks) = record("s", Scope::AllApis, State::Suspended, None, 1);
    let (x, kx) = record("x", Scope::AllApis, State::Cancelled, None, 2);
    let (e, ke) = record("e", Scope::AllApis, State::Active, Some(unix_now() - 1), 3);
    let (f, kf) = record("f", Scope::AllApis, State::Active, Some(unix_now() + 3600), 4);
    let index = index_with(&[s, x, e, f]);
    let any = access("orders", &[], true);
    assert_eq!(index.check(&any, None).err(), Some(Denial::Missing));
    assert_eq!(index.check(&any, Some("")).err(), Some(Denial::Missing));
    assert_eq!(index.check(&any, Some("not-a-key-but-well-formed")).err(), Some(Denial::Invalid));
    assert_eq!(index.check(&any, Some("\u{0}bin\u{7f}")).err(), Some(Denial::Invalid));
    assert_eq!(index.check(&any, Some(&"k".repeat(100_000))).err(), Some(Denial::Invalid));
    assert_eq!(index.check(&any, Some(&ks[0])).err(), Some(Denial::Inactive(State::Suspended)));
    assert_eq!(index.check(&any, Some(&kx[1])).err(), Some(Denial::Inactive(State::Cancelled)));
    assert_eq!(index.check(&any, Some(&ke[0])).err(), Some(Denial::Expired));
    assert!(index.check(&any, Some(&kf[0])).is_ok());
    let names = KeyNames::default();
    let p = Denial::Missing.problem(&names);
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert_eq!(p.policy, Some("subscription"));
    assert!(p.headers.contains_key(WWW_AUTHENTICATE));
    assert_eq!(Denial::Expired.problem(&names).status, StatusCode::FORBIDDEN);
}

#[test]
fn a_changed_record_replaces_its_old_keys() {
    let (a, ka) = record("a", Scope::AllApis, State::Active, None, 1);
    let index = index_with(std::slice::from_ref(&a));
    let mut rotated = a;
    let fresh = SubscriptionKey::generate().expect("rng");
    rotated.primary = fresh.hash();
    rotated.rev = 2;
    {
        let mut sync = index.sync.try_lock().expect("unlocked");
        index.apply(&mut sync, &[rotated]);
        assert_eq!(sync.rev, 2);
    }
    let any = access("orders", &[], true);
    assert_eq!(index.check(&any, Some(&ka[0])).err(), Some(Denial::Invalid), "old primary is gone");
    assert!(index.check(&any, Some(&ka[1])).is_ok(), "secondary still works");
    assert!(index.check(&any, Some(fresh.expose())).is_ok());
    assert_eq!(index.len(), 2);
}

fn parts(uri: &str, header: Option<&str>) -> http::request::Parts {
    let mut b = http::Request::builder().uri(uri);
    if let Some(h) = header {
        b = b.header("Ocp-Apim-Subscription-Key", h);
    }
    b.body(()).expect("request").into_parts().0
}

#[test]
fn authenticate_takes_header_then_query_and_strips_both() {
    let (a, ka) = record("a", Scope::AllApis, State::Active, None, 1);
    let index = index_with(&[a]);
    let names = KeyNames::default();
    let any = access("orders", &[], true);

    let mut req = parts(&format!("/orders/1?x=1&subscription-key={}&y=2", ka[0]), None);
    assert!(index.authenticate(&any, &names, &mut req).expect("query key").is_some());
    assert_eq!(req.uri, "/orders/1?x=1&y=2");

    let mut req = parts("/orders?subscription-key=wrong-but-ignored", Some(&ka[1]));
    assert!(index.authenticate(&any, &names, &mut req).is_ok(), "the header wins");
    assert_eq!(req.uri, "/orders");
    assert!(!req.headers.contains_key("ocp-apim-subscription-key"));

    let mut req = parts("/orders", None);
    assert_eq!(index.authenticate(&any, &names, &mut req).err(), Some(Denial::Missing));
    let optional = access("orders", &[], false);
    assert!(matches!(index.authenticate(&optional, &names, &mut req), Ok(None)));
    let mut req = parts("/orders", Some("bogus-key-value-xxxxxxxxxxx"));
    assert_eq!(
        index.authenticate(&optional, &names, &mut req).err(),
        Some(Denial::Invalid),
        "a presented key is checked"
    );
}

#[test]
fn query_parameter_removal() {
    let mut u: Uri = "http://h/p?subscription-key=a%2Db&subscription-key=c".parse().expect("uri");
    assert_eq!(remove_query_param(&mut u, "subscription-key").as_deref(), Some("a-b"));
    assert_eq!(u, "http://h/p");
    let mut u: Uri = "/p?a=1&subscription%2Dkey=z&b".parse().expect("uri");
    assert_eq!(remove_query_param(&mut u, "subscription-key").as_deref(), Some("z"));
    assert_eq!(u, "/p?a=1&b");
    let mut u: Uri = "/p?a=1".parse().expect("uri");
    assert_eq!(remove_query_param(&mut u, "subscription-key"), None);
    assert_eq!(u, "/p?a=1");
    let mut u: Uri = "/p?subscription-key".parse().expect("uri");
    assert_eq!(remove_query_param(&mut u, "subscription-key").as_deref(), Some(""));
    assert_eq!(u, "/p");
    let mut u: Uri = "/p?subscription-key=%ff%fe".parse().expect("uri");
    assert!(!is_key_text(&remove_query_param(&mut u, "subscription-key").expect("value")));
}

#[test]
fn header_values_that_cannot_be_keys() {
    let name = HeaderName::from_static("ocp-apim-subscription-key");
    let taken = |values: &[&[u8]]| {
        let mut h = HeaderMap::new();
        h.insert("x-other", HeaderValue::from_static("kept"));
        for v in values {
            h.append(&name, HeaderValue::from_bytes(v).expect("value"));
        }
        let t = take_header(&mut h, &name);
        assert!(!h.contains_key(&name), "every copy of the key leaves the request");
        assert_eq!(h.len(), 1, "other fields stay");
        t.map(|t| t.key().to_owned())
    };
    assert_eq!(taken(&[]), None);
    assert!(!is_key_text(&taken(&[b"\xffabc"]).expect("present")));
    assert_eq!(taken(&[b"one-key-xxxxxxxxxxxxxxxxx"]).as_deref(), Some("one-key-xxxxxxxxxxxxxxxxx"));
    let twice = taken(&[b"one-key-xxxxxxxxxxxxxxxxx", b"two"]).expect("present");
    assert!(!is_key_text(&twice), "a repeated header is refused");
}

#[test]
fn key_names_are_validated() {
    assert!(KeyNames::new(&SubscriptionKeyConfig { header: "X-Key".into(), query: "key".into() }).is_ok());
    assert!(KeyNames::new(&SubscriptionKeyConfig { header: "bad header".into(), query: "key".into() }).is_err());
    assert!(KeyNames::new(&SubscriptionKeyConfig { header: "X-Key".into(), query: "a=b".into() }).is_err());
}

#[test]
fn products_compile_into_access_rules() {
    let text =
        "products:\n  starter: { subscription_required: true, apis: [orders, nope] }\n  free: { apis: [open] }\n  \
                gold: { subscription_required: true, apis: [orders, open, orders] }\n";
    let doc = Document::parse("t.yaml", text).expect("yaml");
    let path = [PathSeg::Key("products".into())];
    let products: BTreeMap<String, ProductConfig> = doc.deserialize_at(&path).expect("node").expect("products");
    let apis: BTreeSet<String> = ["orders", "open", "other"].iter().map(|s| s.to_string()).collect();
    let mut errors = Vec::new();
    let table = ProductTable::compile(&doc, &path, &products, &apis, &mut errors);
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].contains("products.gold.apis[2]") && msgs[0].contains("listed twice"), "{msgs:?}");
    assert!(msgs[1].contains("products.starter.apis[1]") && msgs[1].contains("no API named `nope`"), "{msgs:?}");
    let orders = table.access("orders");
    assert!(orders.required);
    assert_eq!(orders.products.len(), 2);
    assert!(!table.access("open").required, "an open product makes the key optional");
    assert!(!table.access("other").required);
    assert!(table.has_product("free") && !table.has_product("silver"));
}

#[test]
fn log_queries_hide_keys() {
    let names: Vec<Box<str>> = vec!["subscription-key".into(), "apikey".into()];
    assert!(matches!(redact_query("a=1&b=2", &names), Cow::Borrowed("a=1&b=2")));
    assert_eq!(
        redact_query("a=1&subscription-key=s3cr3t&apikey=x", &names),
        "a=1&subscription-key=REDACTED&apikey=REDACTED"
    );
    assert_eq!(redact_query("subscription%2Dkey=s3cr3t", &names), "subscription%2Dkey=REDACTED");
}

/// The request path hashes a presented key through the per-thread memo (`identity::digest`),
/// the store through `KeyHash::of`: both must name the same entry, first time and repeat.
#[test]
fn a_presented_keys_digest_is_the_stores() {
    for _ in 0..2 {
        for key in ["k", "abcdefgh", "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", "a.b~c_d-e"] {
            assert_eq!(digest::sha256(digest::Kind::Key, key.as_bytes()), KeyHash::of(key).0, "{key}");
        }
    }
}
