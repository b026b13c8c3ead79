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
