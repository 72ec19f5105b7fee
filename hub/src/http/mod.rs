//! The hub's HTTP front door: SDMX 2.1 REST ([`sdmx`]), the JSON API
//! ([`api`]) and the dashboard ([`dashboard`]), on an already-bound
//! listener, over HTTPS (client certificates optional) unless configured
//! `dangerous_plain_http`.
//!
//! Every request is attributed to a [`Principal`] before it is handled: an
//! operator (bearer token or client certificate) or the public. The public
//! tier only ever gets what nodes publish to the public: its queries carry
//! the `public` audience, which nodes answer under their public rules only.

mod api;
mod auth;
mod dashboard;
mod sdmx;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tabadul_certs::Identity;
use tokio::net::TcpListener;
use tower::ServiceExt;

pub(crate) use auth::{Principal, RateLimiter};

use crate::config::HttpConfig;
use crate::service::HubState;
use crate::tokens::Tokens;

/// Most HTTP connections served at once; more wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 512;

/// What the front door shares between requests.
#[derive(Debug)]
pub(crate) struct Front {
    pub hub: Arc<HubState>,
    pub config: HttpConfig,
    pub tokens: Tokens,
    pub limiter: RateLimiter,
}

/// The connection a request came on: set by the accept loop, read by
/// [`auth`].
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub addr: SocketAddr,
    /// From a verified client certificate, when one was presented.
    pub identity: Option<Identity>,
    /// Why a presented client certificate is refused (see
    /// `tabadul_certs::verifier`): then every request on the connection is
    /// answered 403 with this reason. A bad certificate is never the public
    /// tier, as a wrong token is not.
    pub refused: Option<String>,
}

/// An error as the caller sees it: a status and a precise message, as
/// JSON on the API and as an SDMX-ML error message on SDMX paths.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub sdmx: bool,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), sdmx: false, retry_after: None }
    }
    /// 503 with Retry-After: the hub is at capacity; try again shortly.
    pub fn busy(message: impl Into<String>) -> Self {
        ApiError { retry_after: Some(1), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }
    pub fn sdmx(mut self) -> Self {
        self.sdmx = true;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = if self.sdmx {
            (self.status, [(header::CONTENT_TYPE, "application/xml; charset=utf-8")], sdmx::error_message(self.status, &self.message))
                .into_response()
        } else {
            let body = serde_json::json!({ "error": { "code": self.status.as_u16(), "message": self.message } });
            (self.status, axum::Json(body)).into_response()
        };
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tabadul\""));
        }
        response
    }
}

fn router(front: Arc<Front>) -> Router {
    let limit = front.config.max_body_bytes;
    Router::new()
        .merge(sdmx::routes())
        .merge(api::routes())
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(front)
}

/// Serves until `shutdown` completes, then gives open requests `grace` to
/// finish.
pub(crate) async fn serve(
    listener: TcpListener,
    front: Arc<Front>,
    tls: Option<Arc<tabadul_certs::tls::ServerTls>>,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let front_header_timeout_ms = front.config.header_read_timeout_ms.max(1);
    let app = router(front);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let header_timeout = Duration::from_millis(front_header_timeout_ms);
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that trickles its headers (slowloris) loses its
            // connection instead of holding one of the slots for ever.
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
            builder.http2().timer(TokioTimer::new());
            match tls {
                None => {
                    let conn = Connection { addr, identity: None, refused: None };
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(tcp), service(app, conn)).into_owned()).await;
                }
                Some(tls) => {
                    let accepted = tokio::time::timeout(tabadul_certs::tls::HANDSHAKE_TIMEOUT, tokio_rustls::TlsAcceptor::from(tls.config()).accept(tcp)).await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::warn!(%addr, error = %e, "HTTPS handshake refused"),
                        Err(_) => return tracing::debug!(%addr, "HTTPS handshake timed out"),
                    };
                    // The verifier already checked chain and CRL; the
                    // network's own rules (no intermediate CA, key usages,
                    // exactly one identity) are checked here so that the
                    // refusal can say why.
                    let (identity, refused) = match stream.get_ref().1.peer_certificates() {
                        None | Some([]) => (None, None),
                        Some(chain) => match tls.check_client(chain) {
                            Ok(identity) => (Some(identity), None),
                            Err(e) => {
                                tracing::warn!(%addr, error = %e, "HTTPS client certificate refused");
                                (None, Some(format!("{e}: present a certificate the network CA issued, or none for the public tier")))
                            }
                        },
                    };
                    let conn = Connection { addr, identity, refused };
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service(app, conn)).into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP grace period over: closing the connections still open");
    }
}

fn service(
    app: Router,
    conn: Connection,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        // `who` is filled in by the `Principal` extractor.
        let span = tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), addr = %conn.addr, who = tracing::field::Empty);
        let refusal = conn.refused.clone().map(|why| {
            let e = ApiError::new(StatusCode::FORBIDDEN, why);
            if request.uri().path().starts_with("/sdmx") { e.sdmx() } else { e }
        });
        request.extensions_mut().insert(conn.clone());
        let app = app.clone();
        tracing::Instrument::instrument(
            async move {
                match refusal {
                    Some(e) => Ok(e.into_response()),
                    None => app.oneshot(request.map(axum::body::Body::new)).await,
                }
            },
            span,
        )
    })
}
