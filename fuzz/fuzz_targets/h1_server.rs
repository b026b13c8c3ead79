//! The own HTTP/1 server's requests (`listener::h1::request`), built from the positions the
//! framing guard records, on arbitrary client bytes.
//!
//! Every head the guard hands over whole (`H1Guard::take_plain_head`: no body, no upgrade)
//! must describe the same request as an independent strict parse of its bytes (httparse):
//! method, target, version and every header field, in order per name. Checked too: nothing
//! panics and the connection always ends (time is paused, so deadlines pass at once). A head
//! that `http` refuses (`request` gives an error, answered 400) is allowed, but only when the
//! independent parse shows a target or method `http` cannot represent.
#![no_main]

mod common;

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

use common::{fed_guard, runtime};
use gatehouse::edge::guard::Wake;
use gatehouse::listener::h1::request;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    runtime().block_on(async {
        let mut guard = fed_guard(mode, input).await;
        guard.set_parking(true);
        for _ in 0..10_000 {
            let woken = tokio::time::timeout(Duration::from_secs(120), std::future::poll_fn(|cx| guard.poll_wake(cx))).await;
            match woken {
                Ok(Ok(Wake::Http1)) => {}
                Ok(Ok(Wake::Park)) => continue,
                _ => break,
            }
            // A head with a body or an upgrade goes to hyper: this target stops there.
            let Some((head, fields)) = guard.take_plain_head() else { break };
            let built = request(&head, fields, None);
            check(&head, built);
        }
    });
});

fn check(head: &[u8], built: Result<http::Request<gatehouse::body::ClientBody>, &'static str>) {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut storage);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, head.len(), "the head handed over is not one whole head"),
        other => panic!("the guard handed over a head httparse refuses ({other:?}): {:?}", String::from_utf8_lossy(head)),
    }
    let method = parsed.method.unwrap_or_default();
    let target = parsed.path.unwrap_or_default();
    let Ok(req) = built else {
        let representable =
            http::Method::from_bytes(method.as_bytes()).is_ok() && target.parse::<http::Uri>().is_ok();
        assert!(!representable, "a head `http` can represent was refused: {:?}", String::from_utf8_lossy(head));
        return;
    };
    assert_eq!(req.method().as_str(), method);
    assert_eq!(req.uri(), &target.parse::<http::Uri>().expect("the built target parses"));
    let version = if parsed.version == Some(1) { http::Version::HTTP_11 } else { http::Version::HTTP_10 };
    assert_eq!(req.version(), version);
    assert_eq!(req.headers().len(), parsed.headers.len(), "a header field was lost or invented");
    for h in parsed.headers.iter() {
        let values: Vec<&[u8]> = req.headers().get_all(h.name).iter().map(|v| v.as_bytes()).collect();
        let want: Vec<&[u8]> =
            parsed.headers.iter().filter(|o| o.name.eq_ignore_ascii_case(h.name)).map(|o| o.value).collect();
        assert_eq!(values, want, "the values of {} differ", h.name);
    }
}
