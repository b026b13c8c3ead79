//! The framing guard lent to one hyper HTTP/1 connection, and given back when the guard parks
//! an idle keep-alive connection (see `H1Guard::set_parking`).
//!
//! hyper owns its IO until its connection is dropped, and an upgraded connection keeps it (as
//! the `Upgraded` stream), so the guard comes back through a channel from `Drop`: only a parked
//! guard is sent; any other ends with hyper's connection as before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::edge::guard::H1Guard;

pub struct Lent<S> {
    guard: Option<H1Guard<S>>,
    home: Option<oneshot::Sender<H1Guard<S>>>,
}

impl<S> Lent<S> {
    /// The guard for hyper, and where it comes back if hyper's connection ends parked.
    pub fn new(guard: H1Guard<S>) -> (Lent<S>, oneshot::Receiver<H1Guard<S>>) {
        let (home, back) = oneshot::channel();
        (Lent { guard: Some(guard), home: Some(home) }, back)
    }

    fn guard(&mut self) -> io::Result<&mut H1Guard<S>> {
        self.guard.as_mut().ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl<S> Drop for Lent<S> {
    fn drop(&mut self) {
        if let (Some(guard), Some(home)) = (self.guard.take(), self.home.take()) {
            if guard.is_parked() {
                // If the listener is gone, the guard (and the socket) just close.
                let _ = home.send(guard);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Lent<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().guard()?).poll_read(cx, out)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lent<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().guard()?).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().guard()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().guard()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().guard()?).poll_shutdown(cx)
    }
}
