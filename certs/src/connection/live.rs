//! The verified connections a listener has open, so that a new CRL (or CA)
//! applies to them as it does to the next handshake: on every reload each
//! peer chain is checked again with the new verifier, and the connections
//! it now refuses are closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, UnixTime};
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
    watch: Watch,
}

/// A connection's place in [`Live`]; dropping it removes the entry.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    live: Arc<Live>,
}

impl Live {
    pub fn register(self: &Arc<Self>, chain: Vec<CertificateDer<'static>>, peer: SocketAddr, who: String, watch: Watch) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Entry { chain, peer, who, watch });
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
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = UnixTime::now();
        let mut closed = 0;
        for e in entries.values() {
            let Some((end_entity, intermediates)) = e.chain.split_first() else { continue };
            if let Err(error) = verifier.verify_client_cert(end_entity, intermediates, now) {
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
