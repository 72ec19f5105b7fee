//! A small blocking HTTPS client: `GET` a URL from the hub's front door,
//! trusting only the network's CA. Enough for the directory and the
//! dictionary, which are small; not a general HTTP client.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::Error;

/// Largest answer read: a directory of thousands of members and a
/// dictionary fit well within it.
const MAX_BYTES: usize = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(20);

/// `GET {base}{path}` where `base` is `https://host:port`; the server's
/// certificate must chain to `ca` and name `host`. Returns the body of a
/// 200 answer; anything else is an error that says what came back.
pub fn get(base: &str, path: &str, ca: &Path) -> Result<Vec<u8>, Error> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let fail = |why: String| Error::Fetch { url: url.clone(), why };
    let authority = base
        .strip_prefix("https://")
        .ok_or_else(|| fail("only https:// URLs: the directory is public, but who serves it must be proven".into()))?
        .trim_end_matches('/');
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = if authority.contains(':') && !authority.ends_with(']') { authority.to_owned() } else { format!("{authority}:443") };
    let mut roots = rustls::RootCertStore::empty();
    for c in tabadul_certs::tls::load_certs(ca).map_err(|e| fail(e.to_string()))? {
        roots.add(c).map_err(|e| fail(format!("CA {}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| fail(format!("{host:?}: {e}")))?;
    let sock = addr.to_socket_addrs().map_err(|e| fail(e.to_string()))?.next().ok_or_else(|| fail(format!("{addr} resolves to nothing")))?;
    let tcp = TcpStream::connect_timeout(&sock, TIMEOUT).map_err(|e| fail(e.to_string()))?;
    tcp.set_read_timeout(Some(TIMEOUT)).and_then(|()| tcp.set_write_timeout(Some(TIMEOUT))).map_err(|e| fail(e.to_string()))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| fail(e.to_string()))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\naccept-encoding: identity\r\n\r\n");
    tls.write_all(request.as_bytes()).and_then(|()| tls.flush()).map_err(|e| fail(e.to_string()))?;
    let mut raw = Vec::new();
    match Read::by_ref(&mut tls).take(MAX_BYTES as u64 + 64 * 1024).read_to_end(&mut raw) {
        Ok(_) => {}
        // Servers may close without close_notify after the body.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let (status, body) = parse(&raw).map_err(fail)?;
    if status != 200 {
        return Err(fail(format!("the server answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))));
    }
    Ok(body)
}

/// Status and body of an HTTP/1.1 answer (content-length, chunked, or to
/// the end of the connection).
fn parse(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of the answer's headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let rest = &raw[end + 4..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n").ok_or("a chunk is cut short")? + at;
            let size_text = std::str::from_utf8(&rest[at..line_end]).map_err(|_| "bad chunk size")?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| "bad chunk size")?;
            if size == 0 {
                break;
            }
            let data = rest.get(line_end + 2..line_end + 2 + size).ok_or("a chunk is cut short")?;
            out.extend_from_slice(data);
            at = line_end + 2 + size + 2;
        }
        out
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad content-length")?;
        rest.get(..len).ok_or("the body is cut short")?.to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > MAX_BYTES {
        return Err(format!("the answer is larger than {MAX_BYTES} bytes"));
    }
    Ok((status, body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_in_every_framing() {
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcdef").unwrap(), (200, b"abc".to_vec()));
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(), (200, b"abcde".to_vec()));
        assert_eq!(parse(b"HTTP/1.1 404 Not Found\r\n\r\nno").unwrap(), (404, b"no".to_vec()));
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc").is_err());
        assert!(parse(b"garbage").is_err());
    }
}
