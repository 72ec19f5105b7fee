//! A small HTTP/1.1 client for the hub's front door, over plain TCP or
//! TLS (with or without a client certificate). One request per connection;
//! enough to test status codes, headers and bodies exactly as sent.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tabadul_certs::tls::TlsFiles;

/// An answer: status, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("not JSON ({}): {}", self.status, self.text()))
    }
}

/// How to reach the front door.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    pub fn plain(addr: SocketAddr) -> Self {
        Client { addr, tls: None }
    }

    /// HTTPS, trusting `ca`; presenting `client` (cert, key) if given.
    pub fn tls(addr: SocketAddr, ca: &std::path::Path, client: Option<&TlsFiles>) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in tabadul_certs::tls::load_certs(ca)? {
            roots.add(c)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_root_certificates(roots);
        let mut config = match client {
            Some(files) => builder.with_client_auth_cert(tabadul_certs::tls::load_certs(&files.cert)?, tabadul_certs::tls::load_key(&files.key)?)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client { addr, tls: Some(Arc::new(config)) })
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Answer> {
        self.request("GET", path, headers, &[])
    }

    pub fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> Result<Answer> {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/json"));
        self.request("POST", path, &h, body.to_string().as_bytes())
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Answer> {
        let tcp = std::net::TcpStream::connect(self.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = Vec::new();
        match &self.tls {
            None => {
                let mut s = tcp;
                s.write_all(head.as_bytes())?;
                s.write_all(body)?;
                s.read_to_end(&mut raw)?;
            }
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from("localhost")?.to_owned();
                let conn = rustls::ClientConnection::new(config.clone(), name)?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                s.write_all(head.as_bytes())?;
                s.write_all(body)?;
                s.flush()?;
                match s.read_to_end(&mut raw) {
                    Ok(_) => {}
                    // Servers may close without close_notify after the body.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> Result<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line.split(' ').nth(1).context("no status")?.parse()?;
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest)? } else { rest.to_vec() };
    Ok(Answer { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end])?.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
