//! Mutual TLS for node and hub: rustls configurations with CRLs, a TLS
//! listener that hands tonic connections tagged with the verified peer
//! identity, and a client connector that checks the server's identity.
//!
//! tonic's own TLS has no CRL support, hence this module.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::connection::{Closable, ConnectionLimits, Gate, Guarded, Live, Slot, TrackRequests, Watch};
use crate::{Error, Identity, Role};
// Parsed in `x509`; here for the callers that know them as `tls::`.
pub use crate::x509::{identity_of, serial_hex};

/// The files a party needs for mutual TLS.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct TlsFiles {
    /// The network CA certificate (the only trust anchor).
    pub ca: PathBuf,
    /// This party's certificate chain.
    pub cert: PathBuf,
    /// This party's private key.
    pub key: PathBuf,
    /// The network CRL. Without one, revoked peers cannot be refused.
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// Resolves relative paths against `base` (the directory of a config file).
    pub fn relative_to(mut self, base: &Path) -> Self {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.ca);
        fix(&mut self.cert);
        fix(&mut self.key);
        if let Some(crl) = self.crl.as_mut() {
            fix(crl);
        }
        self
    }

    /// The identity in this party's own certificate.
    pub fn own_identity(&self) -> Result<Identity, Error> {
        let chain = load_certs(&self.cert)?;
        identity_of(&chain[0])
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| pem_error(path, e))?.collect::<Result<Vec<_>, _>>().map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(Error::BadPem { path: path.into(), reason: "no CERTIFICATE block".into() });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}

pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let crls =
        CertificateRevocationListDer::pem_file_iter(path).map_err(|e| pem_error(path, e))?.collect::<Result<Vec<_>, _>>().map_err(|e| pem_error(path, e))?;
    if crls.is_empty() {
        return Err(Error::BadPem { path: path.into(), reason: "no X509 CRL block".into() });
    }
    Ok(crls)
}

fn pem_error(path: &Path, e: rustls_pki_types::pem::Error) -> Error {
    match e {
        rustls_pki_types::pem::Error::Io(source) => Error::io(path, source),
        other => Error::BadPem { path: path.into(), reason: format!("{other:?}") },
    }
}

/// The trust store and the anchors' own certificates (which a peer may
/// repeat in its chain; see [`crate::verifier`]).
fn roots(files: &TlsFiles) -> Result<(Arc<RootCertStore>, Vec<CertificateDer<'static>>), Error> {
    let mut roots = RootCertStore::empty();
    let anchors = load_certs(&files.ca)?;
    for ca in &anchors {
        roots.add(ca.clone()).map_err(|e| Error::BadPem { path: files.ca.clone(), reason: e.to_string() })?;
    }
    Ok((Arc::new(roots), anchors))
}

fn crls(files: &TlsFiles) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    files.crl.as_deref().map(load_crls).transpose().map(Option::unwrap_or_default)
}

/// A server configuration that demands a client certificate from the
/// network CA, not revoked in the CRL, and speaks HTTP/2 only.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    server_config_with(files, client_verifier(files, true)?, &[b"h2"])
}

/// A server configuration for the hub's HTTPS front door: a client
/// certificate from the network CA is checked (CRL included) when one is
/// presented, but not demanded, because browsers, SDMX tools and the public
/// tier come without one. HTTP/2 and HTTP/1.1.
pub fn https_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    server_config_with(files, client_verifier(files, false)?, &[b"h2", b"http/1.1"])
}

/// The check of client certificates, kept beside the server configuration
/// so that open connections can be checked again when the CRL changes.
fn client_verifier(files: &TlsFiles, demand_client_cert: bool) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    let (roots, anchors) = roots(files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider()).with_crls(crls(files)?);
    let verifier = if demand_client_cert { verifier } else { verifier.allow_unauthenticated() };
    let verifier = verifier.build().map_err(|e| Error::Verifier(e.to_string()))?;
    // gRPC refuses a certificate the network would not issue at the
    // handshake. The front door lets the handshake finish and then answers
    // every request with a 403 that says why ([`ServerTls::check_client`]):
    // a browser or SDMX tool shows that, where it would show an alert as
    // "connection failed".
    if demand_client_cert {
        return Ok(Arc::new(crate::verifier::NetworkClientVerifier { inner: verifier, anchors }));
    }
    Ok(verifier)
}

fn server_config_with(files: &TlsFiles, verifier: Arc<dyn ClientCertVerifier>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration that presents our certificate and checks the
/// server against the network CA and CRL.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, Error> {
    Ok(ClientCurrent::build(files)?.config)
}

/// The client's TLS configuration, swappable at run time like
/// [`ServerTls`]: for a long-running client (the hub calling its members),
/// a new CRL applies to the next handshake *and* closes the connections
/// already open to a server it now refuses. Without this, a pooled channel
/// to a revoked member would keep answering until a restart.
#[derive(Debug)]
pub struct ClientTls {
    files: TlsFiles,
    current: RwLock<ClientCurrent>,
    live: Arc<Live>,
    /// Counts reloads: a handshake that straddles one is checked again.
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone)]
struct ClientCurrent {
    config: Arc<ClientConfig>,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
}

impl ClientCurrent {
    fn build(files: &TlsFiles) -> Result<Self, Error> {
        let (roots, anchors) = roots(files)?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(roots, provider()).with_crls(crls(files)?).build().map_err(|e| Error::Verifier(e.to_string()))?;
        let verifier = Arc::new(crate::verifier::NetworkServerVerifier { inner, anchors });
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientCurrent { config: Arc::new(config), verifier })
    }
}

impl ClientTls {
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, Error> {
        let current = RwLock::new(ClientCurrent::build(&files)?);
        Ok(Arc::new(ClientTls { files, current, live: Arc::default(), generation: Default::default() }))
    }

    /// Re-reads the files, then closes the open connections to servers the
    /// new configuration refuses. On error the previous configuration
    /// stays. Returns how many connections were closed.
    pub fn reload(&self) -> Result<usize, Error> {
        let fresh = ClientCurrent::build(&self.files)?;
        let verifier = fresh.verifier.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.live.recheck_servers(&*verifier))
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).config.clone()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The open connections this client made.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn accepts_now(&self, chain: &[CertificateDer<'_>], server_name: &ServerName<'_>) -> bool {
        let verifier = self.current.read().unwrap_or_else(|p| p.into_inner()).verifier.clone();
        chain.split_first().is_some_and(|(ee, rest)| verifier.verify_server_cert(ee, rest, server_name, &[], rustls_pki_types::UnixTime::now()).is_ok())
    }
}

/// Where a channel takes its client configuration from.
#[derive(Debug, Clone)]
pub enum ClientSource {
    /// Fixed for the channel's life: for short-lived command-line clients.
    Fixed(Arc<ClientConfig>),
    /// Reloaded with the files, open connections re-checked: for servers
    /// that call other servers.
    Live(Arc<ClientTls>),
}

impl From<Arc<ClientConfig>> for ClientSource {
    fn from(config: Arc<ClientConfig>) -> Self {
        ClientSource::Fixed(config)
    }
}

impl From<Arc<ClientTls>> for ClientSource {
    fn from(tls: Arc<ClientTls>) -> Self {
        ClientSource::Live(tls)
    }
}

/// `notAfter` of the first certificate in a PEM file, as a Unix timestamp.
pub fn not_after(path: &Path) -> Result<i64, Error> {
    let chain = load_certs(path)?;
    let (_, x509) =
        x509_parser::parse_x509_certificate(&chain[0]).map_err(|_| Error::BadPem { path: path.into(), reason: "not a valid X.509 certificate".into() })?;
    Ok(x509.validity().not_after.timestamp())
}

/// When the CRL at `path` says a newer one will be published (Unix
/// seconds): past it, the CRL is stale. `None` if it names no next update.
pub fn crl_next_update(path: &Path) -> Result<Option<i64>, Error> {
    let crls = load_crls(path)?;
    let (_, crl) = x509_parser::parse_x509_crl(&crls[0]).map_err(|_| Error::BadPem { path: path.into(), reason: "not a valid X.509 CRL".into() })?;
    Ok(crl.next_update().map(|t| t.timestamp()))
}

/// Seconds until the CRL at `path` is due to be replaced (negative: stale
/// for that long); `None` if it cannot be read or names no next update.
pub fn crl_seconds_left(path: &Path) -> Option<i64> {
    Some(crl_next_update(path).ok().flatten()? - time::OffsetDateTime::now_utc().unix_timestamp())
}

/// Logs a warning when the CRL at `path` is past its next update. A stale
/// CRL is still enforced (rustls ignores CRL expiry here on purpose): an
/// outage of the network's CRL publication must not stop exchange, only be
/// seen. Returns the seconds until (negative: since) the next update.
pub fn check_crl_freshness(path: &Path) -> Option<i64> {
    let left = crl_seconds_left(path)?;
    if left < 0 {
        tracing::warn!(crl = %path.display(), stale_for_hours = -left / 3600,
            "the CRL is past its next update: it is still enforced and exchange goes on, but revocations since are not known; fetch the network's new CRL");
    }
    Some(left)
}

/// The server's TLS configuration, swappable at run time so that a new CRL
/// (or certificate) applies to the next handshake without a restart, and
/// to the connections already open: each reload checks their peers again
/// and closes those it now refuses.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Current>,
    /// Built for the hub's HTTPS front door (client certificate optional)
    /// rather than for gRPC.
    https: bool,
    live: Arc<Live>,
    /// Counts reloads: a handshake that straddles one is checked again.
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone)]
struct Current {
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
    /// The CA certificates, as loaded with `config`.
    anchors: Vec<CertificateDer<'static>>,
}

impl Current {
    fn build(files: &TlsFiles, https: bool) -> Result<Self, Error> {
        let verifier = client_verifier(files, !https)?;
        let alpn: &[&[u8]] = if https { &[b"h2", b"http/1.1"] } else { &[b"h2"] };
        Ok(Current { config: server_config_with(files, verifier.clone(), alpn)?, verifier, anchors: load_certs(&files.ca)? })
    }
}

impl ServerTls {
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, Error> {
        Self::load_for(files, false)
    }

    /// For the hub's HTTPS front door: see [`https_server_config`].
    pub fn load_https(files: TlsFiles) -> Result<Arc<Self>, Error> {
        Self::load_for(files, true)
    }

    fn load_for(files: TlsFiles, https: bool) -> Result<Arc<Self>, Error> {
        let current = RwLock::new(Current::build(&files, https)?);
        Ok(Arc::new(ServerTls { files, current, https, live: Arc::default(), generation: Default::default() }))
    }

    /// Re-reads the files, then closes the open connections whose peer the
    /// new configuration refuses (a revocation applies at once, not at the
    /// peer's next handshake). On error the previous configuration stays.
    /// Returns how many connections were closed.
    pub fn reload(&self) -> Result<usize, Error> {
        let fresh = Current::build(&self.files, self.https)?;
        let verifier = fresh.verifier.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.live.recheck(&*verifier))
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether `chain` passes the client check in force now.
    fn accepts_now(&self, chain: &[CertificateDer<'_>]) -> bool {
        let verifier = self.current.read().unwrap_or_else(|p| p.into_inner()).verifier.clone();
        chain.split_first().is_none_or(|(ee, rest)| verifier.verify_client_cert(ee, rest, rustls_pki_types::UnixTime::now()).is_ok())
    }

    /// The network's rules ([`crate::verifier::check_chain`]) for a client
    /// chain the handshake verified: the front door's check, which lets it
    /// say why in an HTTP answer rather than fail the handshake.
    pub fn check_client(&self, chain: &[CertificateDer<'_>]) -> Result<Identity, Error> {
        let (leaf, intermediates) = chain.split_first().ok_or_else(|| Error::PeerRefused("no client certificate".into()))?;
        let anchors = self.current.read().unwrap_or_else(|p| p.into_inner()).anchors.clone();
        crate::verifier::check_chain(leaf, intermediates, &anchors, crate::verifier::Purpose::Client)
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).config.clone()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The open connections that presented a certificate.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }
}

/// A TLS connection past its handshake, under watch (see
/// [`crate::connection`]), with the identity its certificate names.
#[derive(Debug)]
pub struct Accepted {
    pub stream: tokio_rustls::server::TlsStream<Guarded<TcpStream>>,
    /// `None` without a client certificate (possible on the front door
    /// only); an error if the certificate names no Tabadul identity.
    pub identity: Option<Result<Identity, Error>>,
    pub watch: Watch,
}

/// Puts an admitted connection under watch (closed when too old, idle, or
/// without a request in time, or to make room), runs its TLS handshake
/// within the limit, then registers it for CRL re-checks and closes it
/// when its peer certificate expires. Failures are logged with the peer
/// address.
pub async fn accept(tls: &ServerTls, tcp: TcpStream, peer: SocketAddr, slot: Slot, limits: &ConnectionLimits) -> Option<Accepted> {
    let _ = tcp.set_nodelay(true);
    let watch = slot.watch().clone();
    let tcp = Guarded::accepted(tcp, slot, limits, peer);
    let generation = tls.generation();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    let mut stream = match tokio::time::timeout(limits.handshake_timeout(), acceptor.accept(tcp)).await {
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake timed out");
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "TLS handshake refused");
            return None;
        }
        Ok(Ok(s)) => s,
    };
    let chain = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    let identity = chain.first().map(identity_of);
    if !chain.is_empty() {
        let who = match &identity {
            Some(Ok(id)) => id.to_string(),
            _ => "a certificate without identity".to_owned(),
        };
        let registration = tls.live.register(chain.clone(), peer, who, watch.clone());
        stream.get_mut().0.verified(registration, chain_not_after(&chain));
    }
    // A reload during the handshake re-checked the connections registered
    // then, not this one: check it here.
    if tls.generation() != generation && !tls.accepts_now(&chain) {
        tracing::warn!(%peer, "closing the connection: its peer certificate was revoked during the handshake");
        return None;
    }
    Some(Accepted { stream, identity, watch })
}

/// When the first certificate of `chain` to expire does.
fn chain_not_after(chain: &[CertificateDer<'_>]) -> Option<SystemTime> {
    chain
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c).ok())
        .map(|(_, x)| x.validity().not_after.timestamp())
        .min()
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
}

/// Who is on the other end of a connection, from its verified certificate.
/// tonic puts this in every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub identity: Identity,
    pub addr: SocketAddr,
    /// The connection's watch: requests mark themselves in progress on it
    /// ([`TrackRequests`]).
    pub watch: Watch,
}

/// Reads the verified peer out of a tonic request.
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

/// A server-side TLS connection whose peer has been verified.
#[derive(Debug)]
pub struct PeerStream {
    inner: tokio_rustls::server::TlsStream<Guarded<TcpStream>>,
    info: PeerInfo,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener` within `limits` (see
/// [`crate::connection`]) and yields those whose TLS handshake succeeded
/// with a certificate that names a Tabadul identity. Handshakes run
/// concurrently, so a slow or hostile client cannot hold up the others;
/// failures are logged with the peer address and dropped.
pub fn incoming(listener: TcpListener, tls: Arc<ServerTls>, limits: ConnectionLimits) -> tokio_stream::wrappers::ReceiverStream<Result<PeerStream, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let gate = Gate::new(&limits);
    let limits = Arc::new(limits);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Running out of file descriptors must not kill the server.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let Some(slot) = gate.admit(addr).await else { continue };
            let (tx, tls, limits) = (tx.clone(), tls.clone(), limits.clone());
            tokio::spawn(async move {
                let Some(accepted) = accept(&tls, tcp, addr, slot, &limits).await else { return };
                match accepted.identity {
                    Some(Ok(identity)) => {
                        let info = PeerInfo { identity, addr, watch: accepted.watch };
                        let _ = tx.send(Ok(PeerStream { inner: accepted.stream, info })).await;
                    }
                    Some(Err(e)) => tracing::warn!(%addr, error = %e, "peer certificate names no identity"),
                    None => tracing::warn!(%addr, "no client certificate"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A tonic server builder with the HTTP/2 side of `limits`: pings, stream
/// cap, age limit (GOAWAY, then closed after the grace), and the request
/// tracking that the idle timeout needs. Serve it [`incoming`].
pub fn grpc_server(limits: &ConnectionLimits) -> tonic::transport::Server<tower::layer::util::Stack<TrackRequests, tower::layer::util::Identity>> {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.keep_alive_interval()))
        .http2_keepalive_timeout(Some(limits.keep_alive_timeout()))
        .max_concurrent_streams(limits.max_concurrent_streams.max(1))
        .max_connection_age(limits.max_age())
        .max_connection_age_grace(limits.max_age_grace())
        .layer(TrackRequests)
}

/// Whom a client expects to find at the other end.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Exactly this identity (the hub calling a member's node).
    Identity(Identity),
    /// Any holder of this role in this network (an operator calling the
    /// hub). The network is checked too: a hub of another network is
    /// refused before anything is sent to it.
    Role { network: String, role: Role },
}

impl Expect {
    fn check(&self, presented: &Identity) -> bool {
        match self {
            Expect::Identity(id) => presented == id,
            Expect::Role { network, role } => presented.role() == *role && presented.network() == network,
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Identity(id) => write!(f, "{id}"),
            Expect::Role { network, role } => write!(f, "a {role} identity of network {network:?}"),
        }
    }
}

/// A lazily connecting gRPC channel to `addr` (`host:port`) over mutual TLS.
/// A server whose certificate names anyone other than `expected` is refused
/// after the handshake, before any request is sent.
pub fn channel(addr: &str, expected: Expect, config: impl Into<ClientSource>, connect_timeout: Duration) -> Result<Channel, Error> {
    let config = config.into();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::Invalid { what: "endpoint", reason: format!("{addr:?}: {e}") })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let connector = tower::service_fn(move |uri: Uri| {
        let config = config.clone();
        let expected = expected.clone();
        async move { connect(uri, config, expected).await }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// A client connection past its handshake and identity check.
type ClientStream = Closable<tokio_rustls::client::TlsStream<TcpStream>>;

async fn connect(uri: Uri, source: ClientSource, expected: Expect) -> io::Result<TokioIo<ClientStream>> {
    let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "endpoint has no host"))?;
    let port = uri.port_u16().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "endpoint has no port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let server_name = ServerName::try_from(host.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}")))?;
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let peer = tcp.peer_addr()?;
    let (config, generation) = match &source {
        ClientSource::Fixed(config) => (config.clone(), 0),
        ClientSource::Live(live) => (live.config(), live.generation()),
    };
    let tls = tokio_rustls::TlsConnector::from(config).connect(server_name.clone(), tcp).await?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(identity_of)
        .transpose()
        .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
    if !presented.as_ref().is_some_and(|p| expected.check(p)) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("server at {host}:{port} presented identity {}, expected {expected}", presented.map_or_else(|| "none".to_owned(), |p| p.to_string())),
        ));
    }
    let chain = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    let not_after = chain_not_after(&chain);
    let watch = Watch::new();
    let registration = match &source {
        ClientSource::Fixed(_) => None,
        ClientSource::Live(live) => {
            let who = presented.map_or_else(String::new, |p| p.to_string());
            let registration = live.live.register_outgoing(chain.clone(), peer, server_name.clone(), who, watch.clone());
            // A reload during the handshake re-checked the connections
            // registered then, not this one: check it here.
            if live.generation() != generation && !live.accepts_now(&chain, &server_name) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("server at {host}:{port}: its certificate was revoked during the handshake"),
                ));
            }
            Some(registration)
        }
    };
    Ok(TokioIo::new(Closable::outgoing(tls, watch, registration, not_after)))
}

/// Why a server refuses us, found by asking it: a fresh handshake, then a
/// read, which returns the alert the server sent after checking our
/// certificate (in TLS 1.3 that comes after our side has finished, so a
/// failed call often saw only a broken pipe). `None` when the server
/// accepts us or says nothing in time.
pub async fn diagnose(addr: &str, config: Arc<ClientConfig>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let (host, _) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let name = ServerName::try_from(host).ok()?;
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await.ok()?.ok()?;
    let mut tls = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
        Ok(tls) => tls,
        Err(e) => return Some(e.to_string()),
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(2), tls.read(&mut byte)).await {
        Ok(Err(e)) => Some(e.to_string()),
        _ => None,
    }
}

/// A failed call's cause in words an operator can act on: tonic says only
/// "transport error" when the server refused our certificate, and the TLS
/// alert that says why is buried in the error's sources.
/// `diagnosis` is what [`diagnose`] found, if it was asked.
pub fn explain_failure(status: &tonic::Status, diagnosis: Option<&str>) -> String {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    chain.extend(diagnosis.map(str::to_owned));
    let all = chain.join(": ");
    let lower = all.to_lowercase();
    let why = if lower.contains("certificaterevoked") || lower.contains("certificate_revoked") {
        "the server refused our certificate: it has been revoked (ask the network CA for a new one)"
    } else if lower.contains("certificateexpired") || lower.contains("certificate_expired") {
        "the server refused our certificate: it has expired (renew it)"
    } else if lower.contains("unknownca") || lower.contains("unknown_ca") || lower.contains("badcertificate") || lower.contains("bad_certificate") {
        "the server refused our certificate: not issued by its network's CA or not valid for this use"
    } else if lower.contains("certificaterequired") {
        "the server requires a client certificate"
    } else {
        ""
    };
    match (why, all.is_empty()) {
        ("", true) => format!("{:?}: {}", status.code(), status.message()),
        ("", false) => format!("{:?}: {} ({all})", status.code(), status.message()),
        (why, _) => format!("{why} [{all}]"),
    }
}
