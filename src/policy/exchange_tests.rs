//! The reused exchange box: reused on its thread, and emptied of its request before the next
//! one gets it (a security property: no claims, caller, headers or variables leak across).

use std::sync::atomic::{AtomicBool, Ordering};

use http::header::AUTHORIZATION;

use super::*;
use crate::cache::{CacheCell, CachingType, Store};

/// An exchange as a request leaves it: every field holds something of that request.
fn fill(x: &mut Exchange, route: &Arc<Route>, ran: &Arc<AtomicBool>) {
    let mut req = http::Request::get("/orders/7?debug=1").body(()).expect("request").into_parts().0;
    req.headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret-token"));
    x.stage = Stage::OnError;
    x.request = req;
    x.body = UpstreamBody::full(Bytes::from_static(b"request body"));
    x.path.push_str("/orders/7");
    x.params = vec![(Arc::from("id"), "7".to_owned())];
    x.client_ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    x.request_id = HeaderValue::from_static("rid-7");
    x.route = route.clone();
    x.set_var(&Arc::from("user"), "alice".to_owned());
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), serde_json::Value::String("alice".into()));
    x.jwt = Some(Arc::new(crate::identity::jwt::claims::Verified::new(claims)));
    x.caller = Some(Arc::new(Caller {
        subscription_id: "sub-1".into(),
        subscription_name: "alice-app".into(),
        product: Some("gold".into()),
    }));
    x.backend.service = Some("other".into());
    x.backend.target = Some("/internal".into());
    x.backend.timeout = Some(Duration::from_secs(3));
    x.response = Some(Response::new(ResponseBody::full(Bytes::from_static(b"response"))));
    x.error = Some(ErrorInfo {
        status: 500,
        layer: Layer::Backend,
        policy: None,
        kind: "backend-down",
        detail: "down".into(),
    });
    x.extra_response_headers.insert("x-caller", HeaderValue::from_static("alice"));
    let flag = ran.clone();
    x.deferred.push(Box::new(move |_| flag.store(true, Ordering::SeqCst)));
    let flag = ran.clone();
    x.on_sent.push(Box::new(move |_, _| flag.store(true, Ordering::SeqCst)));
    x.body_limit = 1 << 20;
    let cell = CacheCell::default();
    x.cache = Store::new(cell.memory(), &crate::ratelimit::Limits::default(), CachingType::Internal).map(|store| {
        CacheTicket {
            key: "r:alice".into(),
            store,
            honor_cache_control: true,
            allow_private: true,
            authorized: true,
            status: "gatehouse; fwd=uri-miss",
        }
    });
    assert!(x.cache.is_some(), "the test fills every field");
}

fn assert_blank(x: &mut Exchange) {
    assert_eq!(x.stage, Stage::Inbound);
    assert_eq!(x.request.uri, "/");
    assert!(x.request.headers.is_empty(), "request headers: {:?}", x.request.headers);
    assert!(x.request.extensions.is_empty());
    let body = futures_util::FutureExt::now_or_never(x.body.buffer());
    assert!(matches!(body, Some(Ok(b)) if b.is_empty()), "the request body is gone");
    assert!(x.path.is_empty());
    assert!(x.params.is_empty());
    assert_eq!(x.client_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert!(x.request_id.is_empty());
    assert!(x.route.api.name.is_empty() && x.route.chain.is_empty(), "the blank route");
    assert!(x.vars.is_empty() && x.var("user").is_none());
    assert!(x.jwt.is_none());
    assert!(x.caller.is_none());
    assert!(x.backend.service.is_none() && x.backend.target.is_none());
    assert!(x.backend.timeout.is_none() && x.backend.retry.is_none());
    assert!(x.response.is_none());
    assert!(x.error.is_none());
    assert!(x.extra_response_headers.is_empty());
    assert!(x.deferred.is_empty());
    assert!(x.on_sent.is_empty());
    assert_eq!(x.body_limit, 0);
    assert!(x.cache.is_none());
}

#[test]
fn a_held_exchange_is_reused_on_its_thread_and_nothing_of_a_request_reaches_the_next() {
    let route = Arc::new(Route {
        api: Arc::new(Api { name: "orders".into(), prefix: "/orders".into(), backend: None, server_timing: false }),
        operation: Some("get-order".into()),
        chain: Arc::new(Chain::default()),
        metrics: Default::default(),
    });
    let ran = Arc::new(AtomicBool::new(false));

    let mut first = Held::take();
    assert_blank(&mut first);
    fill(&mut first, &route, &ran);
    let at: *const Exchange = &*first;
    drop(first);

    // The spare box comes back (same allocation), emptied.
    let mut second = Held::take();
    assert!(std::ptr::eq(at, &*second), "the box was not reused");
    assert_blank(&mut second);
    assert_eq!(Arc::strong_count(&route), 1, "a spare box keeps no route (and no snapshot) alive");
    assert!(!ran.load(Ordering::SeqCst), "callbacks of a request that ended early are dropped unrun");
    assert_eq!(Arc::strong_count(&ran), 1, "and released");

    // While one is in use, another request on the thread gets another box.
    let third = Held::take();
    assert!(!std::ptr::eq(&*second, &*third));
    drop(third);
    drop(second);
}

#[test]
fn a_reused_box_does_not_keep_a_large_path_buffer() {
    let mut x = Held::take();
    x.path.push_str(&"a".repeat(KEEP_BYTES + 1));
    drop(x);
    let x = Held::take();
    assert!(x.path.is_empty());
    assert!(x.path.capacity() <= KEEP_BYTES);
}
