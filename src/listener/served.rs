//! The own HTTP/1 server's handler for an awake connection: one future that answers the
//! connection's requests one after another, so each request's handler state is built in place,
//! inside it, instead of being built elsewhere and moved into a slot. The state of a proxied
//! request is large (about 3 KiB), and every move of it is a copy: three per request before
//! (callgrind; `memmove` was the largest single item of the gateway's own CPU time under load).
//!
//! The listener hands a request over, then polls `Served` (through `h1::Respond`) until the
//! response is there; the loop inside is polled by nobody else, so waiting for the next request
//! needs no waker.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use parking_lot::Mutex;

use crate::body::{ClientBody, ResponseBody};
use crate::proxy::{self, ConnInfo};
use crate::server::Gateway;

/// The request handed over and the response it got.
#[derive(Default)]
struct Mail {
    request: Option<Request<ClientBody>>,
    response: Option<Response<ResponseBody>>,
}

/// The handler loop of one awake connection (allocated when the connection wakes, freed when it
/// parks or ends).
pub(super) struct Served<L> {
    mail: Arc<Mutex<Mail>>,
    work: Option<Pin<Box<L>>>,
}

/// A handler loop for the connection `info` on the gateway `gw`.
pub(super) fn served(gw: Arc<Gateway>, info: Arc<ConnInfo>) -> Served<impl Future<Output = ()> + Send> {
    let mail = Arc::new(Mutex::new(Mail::default()));
    let inbox = mail.clone();
    let work = async move {
        loop {
            let req = poll_fn(|_| match inbox.lock().request.take() {
                Some(req) => Poll::Ready(req),
                None => Poll::Pending,
            })
            .await;
            // Each request reads the snapshot that is active when it arrives.
            let Ok(response) = proxy::handle(gw.active(), info.clone(), req).await;
            inbox.lock().response = Some(response);
        }
    };
    Served { mail, work: Some(Box::pin(work)) }
}

impl<L> Served<L> {
    /// The next request to answer (the previous one has been answered).
    pub(super) fn hand_over(&mut self, req: Request<ClientBody>) {
        // A cancelled loop answers nothing; the listener drops it and closes the connection.
        debug_assert!(self.work.is_some(), "a request handed to a cancelled handler loop");
        self.mail.lock().request = Some(req);
    }
}

impl<L: Future<Output = ()>> super::h1::Respond for Served<L> {
    fn poll_response(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<ResponseBody>> {
        let this = self.get_mut();
        let Some(work) = this.work.as_mut() else {
            return Poll::Pending;
        };
        // The loop never ends; it answers, then waits for the next request.
        let _ = work.as_mut().poll(cx);
        match this.mail.lock().response.take() {
            Some(response) => Poll::Ready(response),
            None => Poll::Pending,
        }
    }

    fn cancel(self: Pin<&mut Self>) {
        self.get_mut().work = None;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::edge::guard::ConnShared;
    use crate::listener::h1::Respond;

    fn get(path: &str) -> Request<ClientBody> {
        let mut req = Request::new(ClientBody::Empty);
        *req.uri_mut() = path.parse().expect("path");
        req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("a.test"));
        req
    }

    async fn answer<L: Future<Output = ()>>(s: &mut Served<L>) -> (u16, bytes::Bytes) {
        let r = tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| Pin::new(&mut *s).poll_response(cx)))
            .await
            .expect("an answer");
        let status = r.status().as_u16();
        (status, r.into_body().collect().await.expect("body").to_bytes())
    }

    /// One loop answers a connection's requests in turn, each with its own response; with no
    /// request handed over it answers nothing; cancelled, it drops the request in progress and
    /// with it the backend call (the backend sees its connection close).
    #[tokio::test]
    async fn one_loop_answers_in_turn_and_cancelling_drops_the_backend_call() {
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr");
        let yaml = format!(
            r#"
listeners:
  - {{ name: t, bind: "127.0.0.1:0" }}
edge:
  access_log: {{ format: off }}
backends:
  silent:
    servers: [ {{ url: "http://{addr}" }} ]
apis:
  hello:
    path: /hello
    operations:
      - id: hi
        method: GET
        template: /
        policies:
          inbound:
            - return-response: {{ status: 200, body: "hi" }}
  slow:
    path: /slow
    backend: silent
"#
        );
        let snapshot = crate::snapshot::compile_str("served.yaml", &yaml, Path::new(".")).expect("config");
        let gw = Gateway::start(snapshot, None).await.expect("start");
        let peer = "127.0.0.1:4000".parse().expect("peer");
        let info = Arc::new(ConnInfo::new(peer, 8080, false, Arc::new(ConnShared::default())));
        let mut s = served(gw.clone(), info);

        let nothing = poll_fn(|cx| Poll::Ready(Pin::new(&mut s).poll_response(cx).is_pending())).await;
        assert!(nothing, "an answer with no request");
        s.hand_over(get("/hello"));
        assert_eq!(answer(&mut s).await, (200, bytes::Bytes::from_static(b"hi")));
        s.hand_over(get("/nowhere"));
        let (status, body) = answer(&mut s).await;
        assert_eq!(status, 404);
        assert!(body.starts_with(b"{") && body.windows(6).any(|w| w == b"\"edge\""), "{body:?}");

        s.hand_over(get("/slow/x"));
        let pending = poll_fn(|cx| Poll::Ready(Pin::new(&mut s).poll_response(cx).is_pending())).await;
        assert!(pending, "the silent backend answered");
        let (mut backend, _) =
            tokio::time::timeout(Duration::from_secs(5), silent.accept()).await.expect("the call").expect("accept");
        Pin::new(&mut s).cancel();
        let mut buf = vec![0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match backend.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // the request itself
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the backend call outlived the cancelled loop");
    }
}
