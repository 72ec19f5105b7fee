//! Per-requester limits: how many queries one peer may have in progress,
//! and how many it may start per second. A peer over its limit is told so
//! (`RESOURCE_EXHAUSTED`, with the limit) and nothing is logged for it: a
//! flood must not turn into log writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Default)]
struct Peer {
    in_flight: usize,
    tokens: f64,
    refilled: Option<Instant>,
}

#[derive(Debug)]
pub struct Limits {
    max_concurrent: usize,
    per_second: u32,
    peers: Mutex<HashMap<String, Peer>>,
}

/// Holds one in-flight slot; released when dropped.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<Limits>,
    peer: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut peers = self.limits.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.get_mut(&self.peer) {
            p.in_flight = p.in_flight.saturating_sub(1);
            // Forget an idle peer once forgetting changes nothing: its
            // bucket would have refilled anyway.
            let refilled = self.limits.per_second == 0 || p.refilled.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0);
            if p.in_flight == 0 && refilled {
                peers.remove(&self.peer);
            }
        }
    }
}

impl Limits {
    pub fn new(max_concurrent: usize, per_second: u32) -> Arc<Self> {
        Arc::new(Limits { max_concurrent: max_concurrent.max(1), per_second, peers: Mutex::new(HashMap::new()) })
    }

    /// A slot for `peer`, or why not.
    pub fn admit(self: &Arc<Self>, peer: &str) -> Result<Permit, String> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let p = peers.entry(peer.to_owned()).or_default();
        if p.in_flight >= self.max_concurrent {
            return Err(format!("{peer} already has {} queries in progress, the most this node allows (max_concurrent_per_peer)", p.in_flight));
        }
        if self.per_second > 0 {
            let now = Instant::now();
            let rate = f64::from(self.per_second);
            p.tokens = match p.refilled {
                None => rate,
                Some(then) => (p.tokens + now.duration_since(then).as_secs_f64() * rate).min(rate),
            };
            p.refilled = Some(now);
            if p.tokens < 1.0 {
                return Err(format!(
                    "{peer} is over this node's rate of {} queries per second (max_queries_per_second_per_peer); retry shortly",
                    self.per_second
                ));
            }
            p.tokens -= 1.0;
        }
        p.in_flight += 1;
        Ok(Permit { limits: self.clone(), peer: peer.to_owned() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_and_rate_are_per_peer() {
        let l = Limits::new(2, 0);
        let a = l.admit("a").unwrap();
        let _b = l.admit("a").unwrap();
        assert!(l.admit("a").unwrap_err().contains("2 queries in progress"));
        let _other = l.admit("b").unwrap();
        drop(a);
        l.admit("a").unwrap();
        let r = Limits::new(100, 3);
        for _ in 0..3 {
            drop(r.admit("a").unwrap());
        }
        assert!(r.admit("a").unwrap_err().contains("3 queries per second"));
        drop(r.admit("b").unwrap());
        std::thread::sleep(std::time::Duration::from_millis(400));
        drop(r.admit("a").unwrap());
        // Idle peers without a pending bucket are forgotten.
        let l = Limits::new(2, 0);
        drop(l.admit("gone").unwrap());
        assert!(l.peers.lock().unwrap().is_empty());
    }
}
