//! A connection that can be closed from outside: by its watchdog (no first
//! request in time, idle, too old, peer certificate expired) or by a CRL
//! reload that revokes its peer ([`super::Live`]).
//!
//! Closing works below HTTP: every read and write of a closed connection
//! fails, so hyper (under tonic or the front door) drops it whatever state
//! it is in, and a request that was on its way gets no answer. That is the
//! point for a revoked peer, and why an honest one only meets it past
//! limits it never comes near.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{ConnectionLimits, Registration, Slot};

/// The outside handle of one connection: close it, and say when it is
/// busy (a request in progress) so the idle watchdog leaves it alone.
#[derive(Debug, Clone)]
pub struct Watch(Arc<State>);

#[derive(Debug)]
struct State {
    closed: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
    born: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `born` of the last request start or end.
    last_change_ms: AtomicU64,
}

/// A request in progress on a watched connection; dropped when its answer
/// has been sent (or abandoned).
#[derive(Debug)]
pub struct RequestGuard(Arc<State>);

impl Watch {
    pub fn new() -> Self {
        Watch(Arc::new(State {
            closed: AtomicBool::new(false),
            read: AtomicWaker::new(),
            write: AtomicWaker::new(),
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_change_ms: AtomicU64::new(0),
        }))
    }

    /// Fails every further read and write of the connection.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.read.wake();
        self.0.write.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }

    /// Marks a request as begun; it ends when the guard drops.
    pub fn request(&self) -> RequestGuard {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        self.0.touch();
        RequestGuard(self.0.clone())
    }
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

impl State {
    fn touch(&self) {
        self.last_change_ms.store(self.born.elapsed().as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// A connection's stream under watch, holding its admission slot and its
/// registration for CRL re-checks until it is dropped.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    watch: Watch,
    _slot: Slot,
    _registration: Option<Registration>,
    /// Dropped with the connection: stops its watchdog.
    _alive: tokio::sync::oneshot::Sender<()>,
}

impl<S> Guarded<S> {
    /// Guards `inner` (just past its handshake) and starts its watchdog:
    /// see [`ConnectionLimits`] for what closes it. `not_after` is when the
    /// peer's certificate chain stops being valid.
    pub fn new(
        inner: S,
        slot: Slot,
        registration: Option<Registration>,
        watch: Watch,
        limits: &ConnectionLimits,
        peer: SocketAddr,
        not_after: Option<SystemTime>,
    ) -> Self {
        let (alive, gone) = tokio::sync::oneshot::channel();
        tokio::spawn(watchdog(watch.clone(), Rules::new(limits, not_after), peer, gone));
        Guarded { inner, watch, _slot: slot, _registration: registration, _alive: alive }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn watch(&self) -> &Watch {
        &self.watch
    }

    fn closed_error() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed by the server")
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // Registered before the check, so a close in between still wakes us.
        self.watch.0.read.register(cx.waker());
        if self.watch.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.watch.0.write.register(cx.waker());
        if self.watch.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch.0.write.register(cx.waker());
        if self.watch.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.watch.0.write.register(cx.waker());
        if self.watch.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// When a watchdog closes its connection.
#[derive(Debug, Clone, Copy)]
struct Rules {
    first_request: Duration,
    idle: Duration,
    /// Past this, the connection goes whatever it is doing.
    hard_deadline: Instant,
    /// Whether `hard_deadline` is the certificate's expiry (else the age limit).
    expires: bool,
}

impl Rules {
    fn new(limits: &ConnectionLimits, not_after: Option<SystemTime>) -> Self {
        let now = Instant::now();
        let aged = now + limits.max_age() + limits.max_age_grace();
        let expiry = not_after.map(|t| now + t.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO));
        let (hard_deadline, expires) = match expiry {
            Some(e) if e < aged => (e, true),
            _ => (aged, false),
        };
        Rules { first_request: limits.first_request_timeout(), idle: limits.idle_timeout(), hard_deadline, expires }
    }
}

async fn watchdog(watch: Watch, rules: Rules, peer: SocketAddr, mut gone: tokio::sync::oneshot::Receiver<()>) {
    let st = &watch.0;
    loop {
        let now = Instant::now();
        let requests = st.requests.load(Ordering::SeqCst);
        let in_flight = st.in_flight.load(Ordering::SeqCst);
        let quiet_since = st.born + Duration::from_millis(st.last_change_ms.load(Ordering::SeqCst));
        let first_due = st.born + rules.first_request;
        let idle_due = quiet_since + rules.idle;
        if now >= rules.hard_deadline {
            if rules.expires {
                tracing::warn!(%peer, "closing the connection: the peer's certificate has expired");
            } else {
                tracing::info!(%peer, "closing the connection: older than max_connection_age_s");
            }
            return watch.close();
        }
        if requests == 0 && now >= first_due {
            tracing::warn!(%peer, "closing the connection: no request within first_request_timeout_ms");
            return watch.close();
        }
        if in_flight == 0 && requests > 0 && now >= idle_due {
            tracing::debug!(%peer, "closing the connection: idle for idle_timeout_ms");
            return watch.close();
        }
        let mut next = rules.hard_deadline;
        if requests == 0 {
            next = next.min(first_due);
        } else if in_flight == 0 {
            next = next.min(idle_due);
        } else {
            // Busy: look again when it could have gone idle at the earliest.
            next = next.min(now + rules.idle);
        }
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            _ = &mut gone => return,
        }
    }
}
