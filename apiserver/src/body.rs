//! The response body: either bytes known up front, or a stream of chunks (watch), fed by a
//! channel so the producer notices when the client goes away (the send fails).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub struct Body(Inner);

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
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

    /// A streaming body and the sender that feeds it; dropping the sender ends the body.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Body(Inner::Stream(rx)))
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
            Inner::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
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
