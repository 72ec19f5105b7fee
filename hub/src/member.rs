//! A member as the hub holds it: its channel, its log key and pin, and
//! what the hub has learnt about it (receipts used, a fork). Both the
//! fan-out and the pin keeping work on it; neither owns it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tabadul_audit::Verifier;
use tabadul_audit::merkle::Hash;
use tabadul_audit::receipt::Seen;
use tabadul_certs::Identity;
use tabadul_proto::pb::node_client::NodeClient;
use tonic::transport::Channel;

/// A configured member and the channel to its node.
#[derive(Debug, Clone)]
pub struct Member {
    pub code: String,
    pub identity: Identity,
    pub client: NodeClient<Channel>,
    /// The node's log key: receipts must be signed by it.
    pub log_key: Verifier,
    /// The node's latest checkpoint the hub verified: every later receipt
    /// must extend it, so a node that rewrites or forks its log is caught
    /// at its next answer.
    pub seen: std::sync::Arc<std::sync::Mutex<Option<Seen>>>,
    /// The node's `Audit` service, for consistency proofs between receipts.
    pub audit: tabadul_proto::pb::audit_client::AuditClient<Channel>,
    /// Leaf indices of this node's receipts already used for an answer.
    pub used_leaves: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>,
    /// Bounds the hub's concurrent queries to this node.
    pub in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    /// Set when the node was caught forking its log: its answers are refused.
    pub forked: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Where the pin is kept across restarts (the hub's own log).
    pub pins: Option<std::sync::Arc<tabadul_audit::Log>>,
    /// Checkpoints of answers that came back out of order, waiting to be
    /// proven consistent with the pin.
    pub unsettled: std::sync::Arc<Unsettled>,
}

/// Checkpoints waiting to be settled, and whether a task is settling them.
#[derive(Debug, Default)]
pub struct Unsettled {
    /// size → (root, the signed checkpoint note, kept with the pin).
    points: Mutex<BTreeMap<u64, (Hash, String)>>,
    /// Set while a task settles them (`pins`).
    pub(crate) running: AtomicBool,
}

impl Unsettled {
    /// Queues a checkpoint; two roots for one size is a fork, found at once.
    pub(crate) fn add(&self, got: Seen, note: &str) -> Result<(), String> {
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        match points.get(&got.size) {
            Some((root, _)) if *root != got.root => Err(format!("two roots for size {}", got.size)),
            Some(_) => Ok(()),
            None => {
                points.insert(got.size, (got.root, note.to_owned()));
                Ok(())
            }
        }
    }

    pub(crate) fn take(&self) -> BTreeMap<u64, (Hash, String)> {
        std::mem::take(&mut *self.points.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.points.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// True if the caller should start the settling task (none runs).
    pub(crate) fn claim(&self) -> bool {
        !self.running.swap(true, Ordering::AcqRel)
    }

    /// Checkpoints waiting now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.points.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Marks the member's log as forked; returns the reason.
pub(crate) fn poison(member: &Member, why: String) -> String {
    let reason = format!("the node's log forked: {why}");
    tracing::error!(member = %member.code, %reason, "node log fork detected; its answers are refused from now on");
    *member.forked.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
    // On the hub's record, and kept across restarts until `tabadul-hub unpin`.
    if let Some(log) = member.pins.clone() {
        let (origin, code, detail) = (member.log_key.name().to_owned(), member.code.clone(), reason.clone());
        tokio::task::spawn_blocking(move || {
            let mut entry = tabadul_audit::Entry::now("fork-detected", &origin);
            entry.decision = "refused".into();
            entry.detail = detail.clone();
            if let Err(e) = log.set_forked(&origin, &detail).and_then(|()| log.append(&entry, None).map(|_| ())) {
                tracing::error!(member = %code, error = %e, "could not record the fork");
            }
        });
    }
    reason
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn member(pin: Option<Seen>) -> Member {
        // Never dialled in these tests: a lazy channel to nowhere.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        Member {
            code: "MAR".into(),
            identity: "spiffe://alo/node/MAR".parse().unwrap(),
            client: NodeClient::new(channel.clone()),
            log_key: tabadul_audit::Signer::generate("alo/node/MAR").unwrap().verifier(),
            seen: std::sync::Arc::new(std::sync::Mutex::new(pin)),
            audit: tabadul_proto::pb::audit_client::AuditClient::new(channel),
            forked: Default::default(),
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(4)),
            used_leaves: Default::default(),
            pins: None,
            unsettled: Default::default(),
        }
    }
}
