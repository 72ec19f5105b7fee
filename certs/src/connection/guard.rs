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

const NEVER: u64 = u64::MAX;

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
    /// Milliseconds after `born` when the peer's certificate expires
    /// (`NEVER` until the handshake has told).
    expires_ms: AtomicU64,
    /// Tells the watchdog that `expires_ms` changed.
    rules_changed: tokio::sync::Notify,
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
            expires_ms: AtomicU64::new(NEVER),
            rules_changed: tokio::sync::Notify::new(),
        }))
    }

    /// Since when nothing has been in progress on the connection (its
    /// start, if it never made a request); `None` while a request is.
    pub fn quiet_since(&self) -> Option<Instant> {
        (self.0.in_flight.load(Ordering::SeqCst) == 0).then(|| self.0.born + Duration::from_millis(self.0.last_change_ms.load(Ordering::SeqCst)))
    }

    /// Closes the connection at `not_after` (its peer certificate's).
    fn expire_at(&self, not_after: SystemTime) {
        let left = not_after.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        let at = (self.0.born.elapsed() + left).as_millis() as u64;
        self.0.expires_ms.store(at, Ordering::SeqCst);
        self.0.rules_changed.notify_one();
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

/// A connection's stream that can be closed from outside through its
/// [`Watch`]: once closed, every read and write fails. Built two ways:
/// - [`Watched::accepted`], a listener's connection from its TCP accept
///   (TLS runs on top, so a close applies during the handshake too), with
///   its admission slot and its watchdog; once the peer is known,
///   [`Watched::verified`] adds its registration for CRL re-checks and its
///   certificate's expiry;
/// - [`Watched::outgoing`], a connection a client made, registered for
///   CRL re-checks of the server it reached and closed when that server's
///   certificate expires (clients have no admission or idle rules).
///
/// What it holds besides lives exactly as long as the connection.
pub struct Watched<S> {
    inner: S,
    watch: Watch,
    /// The admission slot, the CRL registration, and the sender whose drop
    /// stops the watchdog or expiry timer.
    _held: Vec<Box<dyn std::any::Any + Send + Sync>>,
    closed: &'static str,
}

/// A listener's connection ([`Watched::accepted`]).
pub type Guarded<S> = Watched<S>;

/// A connection a client made ([`Watched::outgoing`]).
pub type Closable<S> = Watched<S>;

impl<S: std::fmt::Debug> std::fmt::Debug for Watched<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("inner", &self.inner).field("watch", &self.watch).finish_non_exhaustive()
    }
}

impl<S> Watched<S> {
    /// Guards `inner` (just accepted) and starts its watchdog: see
    /// [`ConnectionLimits`] for what closes it.
    pub fn accepted(inner: S, slot: Slot, limits: &ConnectionLimits, peer: SocketAddr) -> Self {
        let (alive, gone) = tokio::sync::oneshot::channel();
        let watch = slot.watch().clone();
        tokio::spawn(watchdog(watch.clone(), Rules::new(limits), peer, gone));
        Watched { inner, watch, _held: vec![Box::new(slot), Box::new(alive)], closed: "connection closed by the server" }
    }

    /// After the handshake: keeps the connection's place among those a CRL
    /// reload re-checks, and closes it when the peer's chain expires.
    pub fn verified(&mut self, registration: Registration, not_after: Option<SystemTime>) {
        self._held.push(Box::new(registration));
        if let Some(t) = not_after {
            self.watch.expire_at(t);
        }
    }

    /// A client's connection to a server whose chain expires at
    /// `not_after`, registered for CRL re-checks if `registration`.
    pub fn outgoing(inner: S, watch: Watch, registration: Option<Registration>, not_after: Option<SystemTime>) -> Self {
        let mut held: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        if let Some(r) = registration {
            held.push(Box::new(r));
        }
        if let Some(t) = not_after {
            let (alive, gone) = tokio::sync::oneshot::channel::<()>();
            let watch = watch.clone();
            tokio::spawn(async move {
                let left = t.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                tokio::select! {
                    () = tokio::time::sleep(left) => {
                        tracing::warn!("closing the connection: the server's certificate has expired");
                        watch.close();
                    }
                    _ = gone => {}
                }
            });
            held.push(Box::new(alive));
        }
        Watched { inner, watch, _held: held, closed: "connection closed: the server's certificate is no longer accepted" }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn watch(&self) -> &Watch {
        &self.watch
    }

    fn closed_error(&self) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, self.closed)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // Registered before the check, so a close in between still wakes us.
        self.watch.0.read.register(cx.waker());
        if self.watch.is_closed() {
            return Poll::Ready(Err(self.closed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.watch.0.write.register(cx.waker());
        if self.watch.is_closed() {
            return Poll::Ready(Err(self.closed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch.0.write.register(cx.waker());
        if self.watch.is_closed() {
            return Poll::Ready(Err(self.closed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.watch.0.write.register(cx.waker());
        if self.watch.is_closed() {
            return Poll::Ready(Err(self.closed_error()));
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
    /// Past this age, the connection goes whatever it is doing.
    max_age: Duration,
}

impl Rules {
    fn new(limits: &ConnectionLimits) -> Self {
        Rules { first_request: limits.first_request_timeout(), idle: limits.idle_timeout(), max_age: limits.max_age() + limits.max_age_grace() }
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
        let aged = st.born + rules.max_age;
        let expires = match st.expires_ms.load(Ordering::SeqCst) {
            NEVER => None,
            ms => Some(st.born + Duration::from_millis(ms)),
        };
        if expires.is_some_and(|e| now >= e) {
            tracing::warn!(%peer, "closing the connection: the peer's certificate has expired");
            return watch.close();
        }
        if now >= aged {
            tracing::info!(%peer, "closing the connection: older than max_connection_age_s");
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
        let mut next = expires.map_or(aged, |e| e.min(aged));
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
            () = st.rules_changed.notified() => {}
            _ = &mut gone => return,
        }
    }
}
