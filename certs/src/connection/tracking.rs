//! Marks requests as in progress on their connection's [`Watch`] for as
//! long as their answer is being sent, so that the idle watchdog only ever
//! closes a connection with nothing in progress.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::RequestGuard;
use crate::tls::PeerInfo;

/// A tower layer for tonic servers whose connections come from
/// [`crate::tls::incoming`] (it reads the [`PeerInfo`] tonic puts in each
/// request).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequests;

impl<S> tower::Layer<S> for TrackRequests {
    type Service = Tracked<S>;
    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Tracked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<TrackedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request.extensions().get::<PeerInfo>().map(|p| p.watch.request());
        let answer = self.inner.call(request);
        Box::pin(async move { Ok(answer.await?.map(|body| TrackedBody::new(body, guard))) })
    }
}

/// An answer's body that keeps its request in progress until it is sent.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _guard: Option<RequestGuard>,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, guard: Option<RequestGuard>) -> Self {
        TrackedBody { inner, _guard: guard }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
