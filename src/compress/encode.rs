//! The streaming encoders and the body that runs a response through one.
//!
//! Each data frame is compressed as it arrives, so memory stays bounded whatever the body's size
//! (the encoder's window plus at most [`FLUSH_AFTER`] bytes of pending input). The output is
//! flushed whenever the source has nothing more ready, so a slow stream (server-sent events, a
//! long poll) reaches the client chunk by chunk instead of waiting for the encoder's buffer to
//! fill; frames that arrive back to back are compressed together, which keeps the ratio.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::buf::Writer;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::config::{Coding, Spec};
use crate::body::ResponseBody;

/// Input compressed since the last flush after which output goes out even while more is ready.
pub const FLUSH_AFTER: usize = 64 * 1024;
/// Brotli's window: 512 KiB (2^19), ngx_brotli's default; large windows cost memory per stream.
const BR_WINDOW_BITS: u32 = 19;
const BR_BUFFER: usize = 4096;

/// One stream's compressor, writing into memory.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Writer<BytesMut>>),
    /// Boxed: the brotli state is large and the gzip one is not.
    Br(Box<brotli::CompressorWriter<Writer<BytesMut>>>),
}

impl Encoder {
    pub fn new(coding: Coding, spec: &Spec) -> Encoder {
        let out = BytesMut::new().writer();
        match coding {
            Coding::Gzip => {
                Encoder::Gzip(flate2::write::GzEncoder::new(out, flate2::Compression::new(spec.gzip_level)))
            }
            Coding::Br => {
                Encoder::Br(Box::new(brotli::CompressorWriter::new(out, BR_BUFFER, spec.br_level, BR_WINDOW_BITS)))
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
        }
    }

    /// Flushes what was written so far (a sync flush: the client can decode all of it) and
    /// takes the output.
    fn flush(&mut self) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => {
                e.flush()?;
                Ok(e.get_mut().get_mut().split().freeze())
            }
            Encoder::Br(e) => {
                e.flush()?;
                Ok(e.get_mut().get_mut().split().freeze())
            }
        }
    }

    /// Ends the stream (the gzip trailer, brotli's last block) and takes the rest of the output.
    fn finish(self) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => Ok(e.finish()?.into_inner().freeze()),
            Encoder::Br(e) => Ok(e.into_inner().into_inner().freeze()),
        }
    }

    /// Compresses a whole body in one go (for tests and small gateway-written bodies).
    pub fn encode_all(mut self, data: &[u8]) -> std::io::Result<Bytes> {
        self.write(data)?;
        self.finish()
    }
}

/// A response body compressed as it streams.
pub struct Encoded {
    source: ResponseBody,
    /// `None` once the stream is finished.
    encoder: Option<Encoder>,
    /// Bytes written into the encoder since its last flush.
    unflushed: usize,
    /// The source's trailers, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
}

impl Encoded {
    pub fn new(source: ResponseBody, encoder: Encoder) -> Encoded {
        Encoded { source, encoder: Some(encoder), unflushed: 0, trailers: None }
    }

    fn finish(&mut self) -> Option<Bytes> {
        let encoder = self.encoder.take()?;
        // Writing into memory cannot fail; were it ever to, the body ends here and the client
        // sees a truncated stream rather than wrong bytes.
        encoder.finish().ok().filter(|b| !b.is_empty())
    }

    fn flush(&mut self) -> Option<Bytes> {
        self.unflushed = 0;
        match self.encoder.as_mut()?.flush() {
            Ok(b) => Some(b).filter(|b| !b.is_empty()),
            Err(_) => {
                self.encoder = None;
                None
            }
        }
    }

    /// The frame after the last compressed bytes: the trailers, or the end.
    fn after_end(&mut self) -> Poll<Option<Result<Frame<Bytes>, crate::body::BoxError>>> {
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

impl Body for Encoded {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::body::BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(encoder) = this.encoder.as_mut() else { return this.after_end() };
            let ready = match Pin::new(&mut this.source).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => {
                        if encoder.write(&data).is_err() {
                            this.encoder = None;
                            return this.after_end();
                        }
                        this.unflushed += data.len();
                        if this.source.is_end_stream() {
                            this.finish()
                        } else if this.unflushed >= FLUSH_AFTER {
                            this.flush()
                        } else {
                            continue;
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        this.finish()
                    }
                },
                Poll::Ready(None) => this.finish(),
                Poll::Ready(Some(Err(e))) => {
                    this.encoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                // Nothing more for now: what was compressed goes out before waiting.
                Poll::Pending if this.unflushed > 0 => this.flush(),
                Poll::Pending => return Poll::Pending,
            };
            if let Some(bytes) = ready {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The bytes a client decodes (unit tests).
#[cfg(test)]
pub(crate) fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match coding {
        Coding::Gzip => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
        Coding::Br => brotli::Decompressor::new(data, 4096).read_to_end(&mut out),
    }
    .expect("decodes");
    out
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http_body_util::BodyExt;

    use super::*;
    use crate::compress::config::{DEFAULT_BR_LEVEL, DEFAULT_GZIP_LEVEL};

    fn spec() -> Spec {
        Spec {
            codings: vec![Coding::Br, Coding::Gzip],
            min_size: 0,
            types: Vec::new(),
            gzip_level: DEFAULT_GZIP_LEVEL,
            br_level: DEFAULT_BR_LEVEL,
        }
    }

    #[test]
    fn each_flush_is_decodable_on_its_own() {
        // What a client has received after each flush decodes to everything sent so far: a
        // server-sent event is readable as soon as it arrives.
        for coding in [Coding::Gzip, Coding::Br] {
            let mut e = Encoder::new(coding, &spec());
            let mut sent = Vec::new();
            e.write(b"data: one\n\n").expect("write");
            sent.extend_from_slice(&e.flush().expect("flush"));
            let mut partial = Vec::new();
            let got = match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&sent[..]).read_to_end(&mut partial).map(|_| ()),
                Coding::Br => brotli::Decompressor::new(&sent[..], 4096).read_to_end(&mut partial).map(|_| ()),
            };
            // The stream is not finished, so the decoder may complain at the end; the bytes
            // before that are what counts.
            let _ = got;
            assert_eq!(partial, b"data: one\n\n", "{coding:?}");
            e.write(b"data: two\n\n").expect("write");
            sent.extend_from_slice(&e.flush().expect("flush"));
            sent.extend_from_slice(&e.finish().expect("finish"));
            assert_eq!(decode(coding, &sent), b"data: one\n\ndata: two\n\n", "{coding:?}");
        }
    }

    #[tokio::test]
    async fn a_full_body_becomes_one_frame() {
        let text = "hello compression ".repeat(200);
        for coding in [Coding::Gzip, Coding::Br] {
            let mut body = Encoded::new(ResponseBody::full(Bytes::from(text.clone())), Encoder::new(coding, &spec()));
            let first = body.frame().await.expect("a frame").expect("ok").into_data().expect("data");
            assert!(body.is_end_stream());
            assert!(body.frame().await.is_none());
            assert!(first.len() < text.len() / 10, "{coding:?}: {} bytes", first.len());
            assert_eq!(decode(coding, &first), text.as_bytes());
        }
    }

    #[tokio::test]
    async fn an_empty_body_is_a_valid_empty_stream() {
        for coding in [Coding::Gzip, Coding::Br] {
            let body = Encoded::new(ResponseBody::empty(), Encoder::new(coding, &spec()));
            let bytes = body.collect().await.expect("ok").to_bytes();
            assert!(decode(coding, &bytes).is_empty());
        }
    }
}
