//! The verified connections a listener has open (or a client has made), so
//! that a new CRL (or CA) applies to them as it does to the next handshake:
//! on every reload each peer chain is checked again with the new verifier,
//! and the connections it now refuses are closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use super::Watch;

/// Open connections that presented a certificate.
#[derive(Debug, Default)]
pub struct Live {
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    chain: Vec<CertificateDer<'static>>,
    peer: SocketAddr,
    /// The certificate's identity, for the log.
    who: String,
    /// The name a client connection was made to (`None` on a listener's
    /// connections): a server certificate is checked against it.
    server_name: Option<ServerName<'static>>,
    watch: Watch,
}

/// A connection's place in [`Live`]; dropping it removes the entry.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    live: Arc<Live>,
}

impl Live {
    /// Registers a connection a listener accepted from `peer`.
    pub fn register(self: &Arc<Self>, chain: Vec<CertificateDer<'static>>, peer: SocketAddr, who: String, watch: Watch) -> Registration {
        self.insert(Entry { chain, peer, who, server_name: None, watch })
    }

    /// Registers a connection this client made to `server_name` at `peer`.
    pub fn register_outgoing(
        self: &Arc<Self>,
        chain: Vec<CertificateDer<'static>>,
        peer: SocketAddr,
        server_name: ServerName<'static>,
        who: String,
        watch: Watch,
    ) -> Registration {
        self.insert(Entry { chain, peer, who, server_name: Some(server_name), watch })
    }

    fn insert(self: &Arc<Self>, entry: Entry) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(id, entry);
        Registration { id, live: self.clone() }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every open connection's peer chain as a new handshake would
    /// be checked with `verifier` now, and closes those it refuses
    /// (revoked, expired, no longer from our CA). Returns how many.
    pub fn recheck(&self, verifier: &dyn ClientCertVerifier) -> usize {
        self.recheck_with(|end_entity, intermediates, _, now| verifier.verify_client_cert(end_entity, intermediates, now).map(drop))
    }

    /// [`Live::recheck`] for the connections a client made: each server's
    /// chain is checked as the next handshake to it would be.
    pub fn recheck_servers(&self, verifier: &dyn ServerCertVerifier) -> usize {
        self.recheck_with(|end_entity, intermediates, server_name, now| match server_name {
            Some(name) => verifier.verify_server_cert(end_entity, intermediates, name, &[], now).map(drop),
            None => Ok(()),
        })
    }

    fn recheck_with(
        &self,
        check: impl Fn(&CertificateDer<'static>, &[CertificateDer<'static>], Option<&ServerName<'static>>, UnixTime) -> Result<(), rustls::Error>,
    ) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = UnixTime::now();
        let mut closed = 0;
        for e in entries.values() {
            let Some((end_entity, intermediates)) = e.chain.split_first() else { continue };
            if let Err(error) = check(end_entity, intermediates, e.server_name.as_ref(), now) {
                tracing::warn!(peer = %e.peer, who = %e.who, %error, "closing the connection: its peer certificate is no longer accepted");
                e.watch.close();
                closed += 1;
            }
        }
        closed
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.live.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}
