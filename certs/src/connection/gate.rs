//! Admission of TCP connections: a cap per IP address and a global cap,
//! taken at accept time, before any TLS work, and held for the life of the
//! connection. When the global cap is reached, the connection that has
//! been quiet longest (no request in progress: most often one that never
//! sent a request) is closed to make room, so hostile clients from many
//! addresses cannot keep the slots an honest client needs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ConnectionLimits, Watch};

/// The slots of one listener.
#[derive(Debug)]
pub struct Gate {
    global: Arc<Semaphore>,
    open: Arc<Mutex<Open>>,
    max_per_address: usize,
}

#[derive(Debug, Default)]
struct Open {
    per_address: HashMap<IpAddr, usize>,
    connections: HashMap<u64, (SocketAddr, Watch)>,
    next: u64,
}

/// One admitted connection's slots and its [`Watch`]; dropping it gives
/// the slots back.
#[derive(Debug)]
pub struct Slot {
    _global: OwnedSemaphorePermit,
    id: u64,
    addr: IpAddr,
    watch: Watch,
    open: Arc<Mutex<Open>>,
}

impl Slot {
    pub fn watch(&self) -> &Watch {
        &self.watch
    }
}

impl Gate {
    pub fn new(limits: &ConnectionLimits) -> Self {
        Gate {
            global: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            open: Arc::default(),
            max_per_address: limits.max_connections_per_address.max(1),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits the connection from `peer`, unless that address already
    /// holds its share (then the caller closes it). With every slot taken,
    /// closes the quietest connection and waits for its slot (or any).
    pub async fn admit(&self, peer: SocketAddr) -> Option<Slot> {
        let addr = peer.ip();
        {
            let mut open = self.open();
            let count = open.per_address.entry(addr).or_insert(0);
            if *count >= self.max_per_address {
                tracing::warn!(%peer, open = *count, "connection refused: too many open from this address");
                return None;
            }
            *count += 1;
        }
        let global = match self.global.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.evict_quietest(peer);
                // The semaphore is never closed.
                match self.global.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return std::future::pending().await,
                }
            }
        };
        let watch = Watch::new();
        let mut open = self.open();
        let id = open.next;
        open.next += 1;
        open.connections.insert(id, (peer, watch.clone()));
        Some(Slot { _global: global, id, addr, watch, open: self.open.clone() })
    }

    fn evict_quietest(&self, newcomer: SocketAddr) {
        let open = self.open();
        let quietest = open.connections.values().filter_map(|(peer, w)| Some((w.quiet_since()?, peer, w))).min_by_key(|(since, _, _)| *since);
        match quietest {
            Some((_, peer, watch)) => {
                tracing::warn!(%peer, %newcomer, "closing the quietest connection: every slot is taken");
                watch.close();
            }
            None => tracing::warn!(%newcomer, "every slot is taken by a connection with a request in progress: waiting"),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.connections.remove(&self.id);
        if let Some(c) = open.per_address.get_mut(&self.addr) {
            *c -= 1;
            if *c == 0 {
                open.per_address.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_gets_its_share_and_no_more_and_gets_it_back() {
        let gate = Gate::new(&ConnectionLimits { max_connections: 10, max_connections_per_address: 2, ..Default::default() });
        let a: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:1000".parse().unwrap();
        let one = gate.admit(a).await.unwrap();
        let _two = gate.admit(a).await.unwrap();
        assert!(gate.admit(a).await.is_none());
        assert!(gate.admit(b).await.is_some());
        drop(one);
        assert!(gate.admit(a).await.is_some());
    }

    #[tokio::test]
    async fn when_full_the_quietest_connection_makes_room() {
        let gate = Gate::new(&ConnectionLimits { max_connections: 2, max_connections_per_address: 2, ..Default::default() });
        let busy = gate.admit("127.0.0.2:1".parse().unwrap()).await.unwrap();
        let _in_progress = busy.watch().request();
        let quiet = gate.admit("127.0.0.3:1".parse().unwrap()).await.unwrap();
        let quiet_watch = quiet.watch().clone();
        // Its connection ends when closed, giving back its slot.
        tokio::spawn(async move {
            while !quiet.watch().is_closed() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            drop(quiet);
        });
        let newcomer = tokio::time::timeout(std::time::Duration::from_secs(2), gate.admit("127.0.0.4:1".parse().unwrap())).await;
        assert!(newcomer.unwrap().is_some());
        assert!(quiet_watch.is_closed());
        assert!(!busy.watch().is_closed());
    }
}
