//! Admission of TCP connections: a global cap and a cap per IP address,
//! taken at accept time, before any TLS work, and held for the life of the
//! connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ConnectionLimits;

/// The slots of one listener.
#[derive(Debug)]
pub struct Gate {
    global: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_address: usize,
}

/// One admitted connection's slots; dropping it gives them back.
#[derive(Debug)]
pub struct Slot {
    _global: OwnedSemaphorePermit,
    addr: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Gate {
    pub fn new(limits: &ConnectionLimits) -> Self {
        Gate {
            global: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            per_address: Arc::default(),
            max_per_address: limits.max_connections_per_address.max(1),
        }
    }

    /// Waits for a free global slot. Called before `accept`, so that while
    /// the listener is full new connections wait in the kernel's queue
    /// instead of being taken and dropped.
    pub async fn global_slot(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed.
        match self.global.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await,
        }
    }

    /// Admits the connection from `peer` with its global slot, unless that
    /// address already holds its share (then the caller closes it).
    pub fn admit(&self, global: OwnedSemaphorePermit, peer: SocketAddr) -> Option<Slot> {
        let addr = peer.ip();
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(addr).or_insert(0);
        if *count >= self.max_per_address {
            tracing::warn!(%peer, open = *count, "connection refused: too many open from this address");
            return None;
        }
        *count += 1;
        Some(Slot { _global: global, addr, per_address: self.per_address.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = counts.get_mut(&self.addr) {
            *c -= 1;
            if *c == 0 {
                counts.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_gets_its_share_and_no_more_and_gets_it_back() {
        let gate = Gate::new(&ConnectionLimits { max_connections: 10, max_connections_per_address: 2, ..Default::default() });
        let a: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:1000".parse().unwrap();
        let one = gate.admit(gate.global_slot().await, a).unwrap();
        let _two = gate.admit(gate.global_slot().await, a).unwrap();
        assert!(gate.admit(gate.global_slot().await, a).is_none());
        assert!(gate.admit(gate.global_slot().await, b).is_some());
        drop(one);
        assert!(gate.admit(gate.global_slot().await, a).is_some());
    }
}
