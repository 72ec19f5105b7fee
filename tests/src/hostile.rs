//! Hostile clients for the connection-limit tests and the bench: each kind
//! opens a connection from a chosen loopback address (Linux routes all of
//! 127.0.0.0/8 to lo, so 127.0.0.2.. are distinct peers to the server) and
//! then misbehaves the way the red team did, until the server closes it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::Pki;

/// How a hostile client misbehaves once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP connection, then nothing: not even a TLS ClientHello.
    SilentTcp,
    /// A complete TLS handshake, then nothing.
    SilentTls,
    /// TLS with ALPN h2, the HTTP/2 connection preface and SETTINGS, then
    /// nothing (and no answer to the server's pings).
    H2PrefaceThenSilence,
    /// An HTTP/1.1 request line, then one header line every `pace`.
    Slowloris,
    /// An HTTP/1.1 POST announcing 1,000 bytes, sent one byte every `pace`.
    SlowBody,
    /// An HTTP/1.1 POST announcing 10^12 bytes, then nothing.
    HugeContentLength,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::SilentTcp, Kind::SilentTls, Kind::H2PrefaceThenSilence, Kind::Slowloris, Kind::SlowBody, Kind::HugeContentLength];
}

/// What happened to one hostile connection.
#[derive(Debug)]
pub struct Outcome {
    /// From the TCP connect until the server closed (or reset) it.
    pub held: Duration,
    /// Everything the server sent (plaintext after TLS).
    pub received: Vec<u8>,
    /// The TLS handshake failed (a closed socket at once shows as this).
    pub handshake_failed: bool,
}

impl Outcome {
    /// The HTTP status the server answered with, if it sent one.
    pub fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(&self.received).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}

/// The `n`th hostile source address: 127.0.0.2, 127.0.0.3, ... (127.0.0.1
/// is left to honest clients).
pub fn source(n: usize) -> IpAddr {
    let n = n as u32 + 2;
    IpAddr::V4(Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8))
}

/// A TCP connection to `to` from `from` (any port).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// A client TLS configuration trusting the network CA, offering `alpn`,
/// presenting `client` (cert, key) if given.
pub fn client_tls(pki: &Pki, client: Option<&crate::Cert>, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in tabadul_certs::tls::load_certs(&pki.ca_cert())? {
        roots.add(c)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder.with_client_auth_cert(tabadul_certs::tls::load_certs(&c.cert)?, tabadul_certs::tls::load_key(&c.key)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Opens one connection of `kind` from `from` to `to` and misbehaves until
/// the server closes it. `tls` is needed for every kind but `SilentTcp`
/// (its ALPN must suit the kind: h2 for the preface, http/1.1 for the rest).
pub async fn hold(kind: Kind, from: IpAddr, to: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>, pace: Duration) -> io::Result<Outcome> {
    let started = Instant::now();
    let tcp = connect_from(from, to).await?;
    if kind == Kind::SilentTcp {
        let received = drain(tcp).await;
        return Ok(Outcome { held: started.elapsed(), received, handshake_failed: false });
    }
    let config = tls.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "this kind needs TLS"))?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let stream = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
        Ok(s) => s,
        Err(_) => return Ok(Outcome { held: started.elapsed(), received: Vec::new(), handshake_failed: true }),
    };
    let received = misbehave(kind, stream, pace).await;
    Ok(Outcome { held: started.elapsed(), received, handshake_failed: false })
}

async fn misbehave<S: AsyncRead + AsyncWrite + Unpin>(kind: Kind, stream: S, pace: Duration) -> Vec<u8> {
    let (mut rx, mut tx) = tokio::io::split(stream);
    let opening: &[u8] = match kind {
        Kind::SilentTcp | Kind::SilentTls => b"",
        // The client preface, then an empty SETTINGS frame.
        Kind::H2PrefaceThenSilence => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        Kind::Slowloris => b"GET /sdmx/dataflow HTTP/1.1\r\nhost: localhost\r\n",
        Kind::SlowBody => b"POST /api/v1/query HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
        Kind::HugeContentLength => b"POST /api/v1/query HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000000000000\r\n\r\n",
    };
    let trickle: Option<&[u8]> = match kind {
        Kind::Slowloris => Some(b"x-a: b\r\n"),
        Kind::SlowBody => Some(b" "),
        _ => None,
    };
    let writer = async {
        if tx.write_all(opening).await.is_err() || tx.flush().await.is_err() {
            return;
        }
        let Some(piece) = trickle else { return std::future::pending().await };
        loop {
            tokio::time::sleep(pace).await;
            // One byte at a time: the slowest a client can be while still sending.
            for b in piece {
                if tx.write_all(std::slice::from_ref(b)).await.is_err() || tx.flush().await.is_err() {
                    return;
                }
            }
        }
    };
    let reader = drain_half(&mut rx);
    tokio::pin!(reader);
    tokio::select! {
        received = &mut reader => received,
        // A write failed: the server is gone; read what it said.
        () = writer => reader.await,
    }
}

async fn drain(mut s: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}

async fn drain_half<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}
