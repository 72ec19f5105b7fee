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
mod body;
pub(crate) mod corridor;
mod dashboard;
mod directory;
mod pseudonym;
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
use tabadul_certs::connection::{Gate, Guarded, TrackedBody, Watch};
use tokio::net::TcpListener;
use tower::ServiceExt;

pub(crate) use auth::{Principal, RateLimiter};

use crate::config::HttpConfig;
use crate::state::HubState;
use crate::tokens::Tokens;

/// What the front door shares between requests.
#[derive(Debug)]
pub(crate) struct Front {
    pub hub: Arc<HubState>,
    pub config: HttpConfig,
    pub tokens: Tokens,
    pub limiter: RateLimiter,
    /// Today's names for public callers in the hub's log.
    pub pseudonyms: pseudonym::Pseudonyms,
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
    /// Requests mark themselves in progress on it (the idle timeout).
    pub watch: Watch,
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
            (self.status, [(header::CONTENT_TYPE, "application/xml; charset=utf-8")], sdmx::error_message(self.status, &self.message)).into_response()
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
        .merge(directory::routes())
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(documented_errors))
        .layer(axum::middleware::from_fn(public_cors))
        // gzip or brotli, as the client accepts (SDMX messages of a
        // thousand series shrink ten times).
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(front)
}

/// The public tier may be read from any web page, without credentials:
/// `Access-Control-Allow-Origin: *` on SDMX and JSON API answers to
/// requests that carry no `Authorization` (a browser never sends one
/// cross-origin unless the page asks, and the preflight below never allows
/// it), and a preflight that allows GET and the JSON API's POST only.
async fn public_cors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path();
    let public_path = path.starts_with("/sdmx") || path.starts_with("/api/v1/");
    let cross_origin = request.headers().contains_key(header::ORIGIN);
    if !(public_path && cross_origin) {
        return next.run(request).await;
    }
    if request.method() == http::Method::OPTIONS {
        let asks_credentials = request
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|h| h.split(',').any(|n| n.trim().eq_ignore_ascii_case("authorization")));
        let mut r = StatusCode::NO_CONTENT.into_response();
        if !asks_credentials {
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("accept, content-type"));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        return r;
    }
    let anonymous = !request.headers().contains_key(header::AUTHORIZATION);
    let mut response = next.run(request).await;
    if anonymous {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("x-tabadul-members, x-tabadul-hub-leaf, x-tabadul-hub-log"));
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// Every error of the JSON API and of SDMX REST in its documented format
/// (`{"error": …}`, an SDMX-ML error message), including those axum writes
/// itself in plain text: a query string that does not parse, an unknown
/// path, a method a resource does not take.
async fn documented_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path();
    let (api, sdmx) = (path.starts_with("/api/"), path.starts_with("/sdmx"));
    let response = next.run(request).await;
    let status = response.status();
    let typed = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("json") || t.contains("xml"));
    if !(api || sdmx) || !(status.is_client_error() || status.is_server_error()) || typed {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned()).unwrap_or_default();
    let message = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::NOT_FOUND) => "no such resource (see /api/v1/openapi.json and /sdmx)".to_owned(),
        (true, StatusCode::METHOD_NOT_ALLOWED) => "this resource does not take that method".to_owned(),
        (true, s) => s.canonical_reason().unwrap_or("error").to_owned(),
    };
    let e = ApiError::new(status, message);
    let mut out = if sdmx { e.sdmx() } else { e }.into_response();
    // Keep what the original said beyond its body (Allow, Retry-After, …).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// `/sdmx/dataflow/ALO/UNE_RATE/latest/` as `/sdmx/dataflow/ALO/UNE_RATE/latest`
/// (pysdmx's REST client adds the slash): the SDMX and JSON API resources
/// are the same with or without it. The dashboard's `/ui/` keeps its own.
fn without_trailing_slash(uri: &http::Uri) -> Option<http::Uri> {
    let path = uri.path();
    if !(path.starts_with("/sdmx/") || path.starts_with("/api/")) || !path.ends_with('/') {
        return None;
    }
    let trimmed = path.trim_end_matches('/');
    let rebuilt = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = rebuilt.parse().ok();
    http::Uri::from_parts(parts).ok()
}

/// What each request on the front door is held to.
#[derive(Debug, Clone, Copy)]
struct RequestLimits {
    max_body_bytes: usize,
    body_read_timeout: Duration,
}

/// Serves until `shutdown` completes, then gives open requests `grace` to
/// finish.
///
/// Every connection holds a slot (`[http.connections]`: in all and per
/// address) for its whole life, so every stage of it is bounded in time:
/// the TLS handshake, the first request, each request's headers and body,
/// the quiet time between requests, its age and its peer's certificate.
pub(crate) async fn serve(
    listener: TcpListener,
    front: Arc<Front>,
    tls: Option<Arc<tabadul_certs::tls::ServerTls>>,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Arc::new(front.config.connections.clone());
    let header_timeout = Duration::from_millis(front.config.header_read_timeout_ms.max(1));
    let per_request =
        RequestLimits { max_body_bytes: front.config.max_body_bytes, body_read_timeout: Duration::from_millis(front.config.body_read_timeout_ms.max(1)) };
    let app = router(front);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let gate = Gate::new(&limits);
    tokio::pin!(shutdown);
    loop {
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
        // With every slot taken this waits (after closing the quietest
        // connection), and new connections wait in the kernel's queue.
        let admitted = tokio::select! {
            slot = gate.admit(addr) => slot,
            () = &mut shutdown => break,
        };
        let Some(slot) = admitted else { continue };
        let _ = tcp.set_nodelay(true);
        let (app, tls, limits) = (app.clone(), tls.clone(), limits.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that trickles its headers (slowloris) or sits idle
            // between requests loses its connection.
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(limits.keep_alive_interval()))
                .keep_alive_timeout(limits.keep_alive_timeout())
                .max_concurrent_streams(limits.max_concurrent_streams.max(1));
            match tls {
                None => {
                    let watch = slot.watch().clone();
                    let stream = Guarded::accepted(tcp, slot, &limits, addr);
                    let conn = Connection { addr, identity: None, refused: None, watch };
                    if let Err(e) = watcher.watch(builder.serve_connection(TokioIo::new(stream), service(app, conn, per_request)).into_owned()).await {
                        tracing::info!(%addr, error = %e, "HTTP connection ended on an error");
                    }
                }
                Some(tls) => {
                    let Some(accepted) = tabadul_certs::tls::accept(&tls, tcp, addr, slot, &limits).await else { return };
                    // The verifier already checked chain and CRL; the
                    // network's own rules (no intermediate CA, key usages,
                    // exactly one identity) are checked here so that the
                    // refusal can say why.
                    let (identity, refused) = match accepted.stream.get_ref().1.peer_certificates() {
                        None | Some([]) => (None, None),
                        Some(chain) => match tls.check_client(chain) {
                            Ok(identity) => (Some(identity), None),
                            Err(e) => {
                                tracing::warn!(%addr, error = %e, "HTTPS client certificate refused");
                                (None, Some(format!("{e}: present a certificate the network CA issued, or none for the public tier")))
                            }
                        },
                    };
                    let conn = Connection { addr, identity, refused, watch: accepted.watch };
                    // A slowloris client's header timeout ends here.
                    if let Err(e) = watcher.watch(builder.serve_connection(TokioIo::new(accepted.stream), service(app, conn, per_request)).into_owned()).await {
                        tracing::info!(%addr, error = %e, "HTTP connection ended on an error");
                    }
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
    limits: RequestLimits,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        // `who` is filled in by the `Principal` extractor.
        let span = tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), addr = %conn.addr, who = tracing::field::Empty);
        let in_progress = conn.watch.request();
        let refusal = conn.refused.clone();
        request.extensions_mut().insert(conn.clone());
        let (app, addr) = (app.clone(), conn.addr);
        let answer = async move {
            let h1 = request.version() < http::Version::HTTP_2;
            let sdmx = request.uri().path().starts_with("/sdmx");
            let announced = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            // Refused before a byte of the body is read: waiting for 10^12
            // announced bytes would hold the connection for nothing.
            let response = if let Some(why) = refusal {
                // A bad certificate is never the public tier: 403, and why.
                let e = ApiError::new(StatusCode::FORBIDDEN, why);
                if sdmx { e.sdmx() } else { e }.into_response()
            } else if announced.is_some_and(|n| n > limits.max_body_bytes as u64) {
                tracing::warn!(%addr, announced, "request refused: announced body over max_body_bytes");
                cut_off(body::Cut::TooLarge, limits, sdmx, h1)
            } else {
                let verdict = body::Verdict::default();
                let (mut head, incoming) = request.into_parts();
                if let Some(uri) = without_trailing_slash(&head.uri) {
                    head.uri = uri;
                }
                let bounded = body::Bounded::new(incoming, limits.body_read_timeout, limits.max_body_bytes, verdict.clone());
                let Ok(response) = app.oneshot(hyper::Request::from_parts(head, axum::body::Body::new(bounded))).await;
                match verdict.get() {
                    Some(cut) => {
                        tracing::warn!(%addr, ?cut, "request body cut off");
                        cut_off(cut, limits, sdmx, h1)
                    }
                    None => response,
                }
            };
            Ok::<_, std::convert::Infallible>(response.map(|b| axum::body::Body::new(TrackedBody::new(b, Some(in_progress)))))
        };
        tracing::Instrument::instrument(answer, span)
    })
}

/// The answer to a request whose body was cut off; on HTTP/1.1 the
/// connection closes after it (the rest of the body is not read).
fn cut_off(cut: body::Cut, limits: RequestLimits, sdmx: bool, h1: bool) -> Response {
    let error = match cut {
        body::Cut::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {} bytes", limits.max_body_bytes)),
        body::Cut::TooSlow => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, format!("request body not received within {} ms", limits.body_read_timeout.as_millis()))
        }
    };
    let mut response = if sdmx { error.sdmx() } else { error }.into_response();
    if h1 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
