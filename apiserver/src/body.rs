//! The response body: either bytes known up front, or a stream of chunks (watch) that the
//! connection polls itself; the stream is dropped with the body when the client goes away.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http_body::Frame;

/// A response body.
#[derive(Debug)]
pub struct Body(Inner);

/// A stream of body chunks.
type Chunks = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

enum Inner {
    Full(Option<Bytes>),
    Stream(Chunks),
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inner::Full(b) => f.debug_tuple("Full").field(b).finish(),
            Inner::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Body {
    /// A complete body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        Body(Inner::Full((!b.is_empty()).then_some(b)))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body(Inner::Full(None))
    }

    /// A streaming body: each item is written as it comes; the stream ends the body.
    pub fn stream(chunks: impl Stream<Item = Bytes> + Send + 'static) -> Self {
        Body(Inner::Stream(Box::pin(chunks)))
    }

    /// The bytes of a complete body (tests).
    pub fn as_full(&self) -> Option<&Bytes> {
        match &self.0 {
            Inner::Full(b) => b.as_ref(),
            Inner::Stream(_) => None,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.0 {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(chunks) => chunks
                .as_mut()
                .poll_next(cx)
                .map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.0, Inner::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Inner::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => http_body::SizeHint::with_exact(0),
            Inner::Stream(_) => http_body::SizeHint::default(),
        }
    }
}
