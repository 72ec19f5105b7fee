//! Request bodies under a deadline and a size limit, whoever reads them:
//! a client that trickles its body (one byte every few seconds) or sends
//! more than `max_body_bytes` is stopped here, and the front door turns
//! the failure into 408 or 413 and closes the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};

/// How reading a body ended, when it failed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    TooSlow,
    TooLarge,
}

/// Set by [`Bounded`] when it cuts a body, read by the front door after the
/// handler has answered.
#[derive(Debug, Clone, Default)]
pub(crate) struct Verdict(Arc<AtomicU8>);

impl Verdict {
    fn set(&self, cut: Cut) {
        self.0.store(if cut == Cut::TooSlow { 1 } else { 2 }, Ordering::SeqCst);
    }
    pub fn get(&self) -> Option<Cut> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(Cut::TooSlow),
            2 => Some(Cut::TooLarge),
            _ => None,
        }
    }
}

/// A request body that must arrive complete within a deadline (counted
/// from the request's start) and within a size.
#[derive(Debug)]
pub(crate) struct Bounded<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    left: usize,
    verdict: Verdict,
}

impl<B> Bounded<B> {
    pub fn new(inner: B, within: Duration, max_bytes: usize, verdict: Verdict) -> Self {
        Bounded { inner, deadline: Box::pin(tokio::time::sleep(within)), left: max_bytes, verdict }
    }

    fn cut(&self, cut: Cut) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        self.verdict.set(cut);
        let why = match cut {
            Cut::TooSlow => "request body not received in time",
            Cut::TooLarge => "request body too large",
        };
        Poll::Ready(Some(Err(why.into())))
    }
}

impl<B> Body for Bounded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                if n > self.left {
                    return self.cut(Cut::TooLarge);
                }
                self.left -= n;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    return self.cut(Cut::TooSlow);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
