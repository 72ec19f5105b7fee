//! Keeping each member's pin (the latest checkpoint of its log the hub has
//! verified) honest while many answers arrive at once.
//!
//! Every receipt proves that the node's log extends the pin the request
//! carried. When answers come back in the order their requests left, that
//! is enough: the pin moves forward on the answer's own proof. Under load
//! they do not: a request sent at size 40 may come back at size 57 after
//! another answer already moved the pin to 52, and nothing yet shows that
//! 52 and 57 are one history. Such checkpoints are *unsettled*: the answer
//! is used (its receipt verified), and the checkpoint must then be proven
//! consistent with the pin, or the member is treated as forked.
//!
//! Proving each unsettled checkpoint on its own costs one `Audit` call per
//! out-of-order answer, and chasing a pin that keeps moving costs more;
//! under a thousand concurrent queries that cost more than the queries
//! themselves. So one task per member settles everything pending in rounds:
//! it sorts the distinct checkpoints with the pin and proves each
//! consecutive pair, which puts all of them on one linear history for one
//! call per *distinct* checkpoint (answers from one node batch share one).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tabadul_audit::merkle::Hash;
use tabadul_audit::receipt::Seen;
use tonic::Code;

use crate::member::{Member, poison};

/// Moves the member's pin to `got` (already proven to extend `sent`, the
/// pin our request carried). If another answer moved the pin meanwhile,
/// equal sizes are compared here; otherwise `got` is queued for the
/// member's settling task, off the answer's path. A failure poisons the
/// member (every later answer is refused and the fork is logged).
pub(crate) fn settle_pin(member: &Member, sent: Option<Seen>, got: Seen, note: &str) -> Result<(), String> {
    let mut pin = member.seen.lock().unwrap_or_else(|p| p.into_inner());
    if *pin == sent {
        if sent.is_none_or(|b| b.size < got.size) {
            *pin = Some(got);
            store_pin(member, note);
        }
        return Ok(());
    }
    let Some(cur) = *pin else { return Ok(()) };
    drop(pin);
    if cur.size == got.size {
        return if cur.root == got.root { Ok(()) } else { Err(poison(member, format!("two roots for size {}", got.size))) };
    }
    member.unsettled.add(got, note).map_err(|why| poison(member, why))?;
    if member.unsettled.claim() {
        let member = member.clone();
        tokio::spawn(async move { settle_all(&member).await });
    }
    Ok(())
}

/// The settling task: rounds until nothing is pending.
async fn settle_all(member: &Member) {
    loop {
        let points = member.unsettled.take();
        if points.is_empty() {
            member.unsettled.running.store(false, Ordering::Release);
            // A checkpoint queued between `take` and here found the task
            // still running and did not start one: pick it up.
            if member.unsettled.is_empty() || !member.unsettled.claim() {
                return;
            }
            continue;
        }
        let Some(pin) = *member.seen.lock().unwrap_or_else(|p| p.into_inner()) else {
            member.unsettled.running.store(false, Ordering::Release);
            return;
        };
        let chain = match chain(pin, &points) {
            Ok(chain) => chain,
            Err(why) => return fail(member, why),
        };
        for (old, new) in chain.windows(2).map(|w| (w[0], w[1])) {
            if let Err(why) = prove(member, old, new).await {
                return fail(member, why);
            }
        }
        // Everything in the round, the pin included, is one history whose
        // largest checkpoint is `top`.
        let Some((&size, (root, note))) = points.last_key_value() else { continue };
        let top = Seen { size, root: *root };
        let mut now = member.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *now == Some(pin) {
            if top.size > pin.size {
                *now = Some(top);
                store_pin(member, note);
            }
        } else if let Err(why) = member.unsettled.add(top, note) {
            // Another answer moved the pin meanwhile (on its own proof from
            // `pin`): `top` is settled against that pin in the next round,
            // and with it everything it was proven to extend.
            drop(now);
            return fail(member, why);
        }
    }
}

fn fail(member: &Member, why: String) {
    poison(member, why);
    member.unsettled.running.store(false, Ordering::Release);
}

/// The pin and the pending checkpoints in size order: each consecutive
/// pair must be proven consistent. A pending checkpoint of the pin's size
/// must have its root.
fn chain(pin: Seen, points: &BTreeMap<u64, (Hash, String)>) -> Result<Vec<Seen>, String> {
    let mut chain: Vec<Seen> = points.iter().map(|(size, (root, _))| Seen { size: *size, root: *root }).collect();
    match chain.iter().position(|s| s.size == pin.size) {
        Some(i) if chain[i].root != pin.root => return Err(format!("two roots for size {}", pin.size)),
        Some(_) => {}
        None => {
            let at = chain.partition_point(|s| s.size < pin.size);
            chain.insert(at, pin);
        }
    }
    Ok(chain)
}

/// Asks the node to prove `new` extends `old`, and checks the proof. A node
/// that cannot, after retries, is treated as forked: answers were already
/// used on the strength of these checkpoints.
async fn prove(member: &Member, old: Seen, new: Seen) -> Result<(), String> {
    let mut failures = 0u32;
    loop {
        let mut request = tonic::Request::new(tabadul_proto::pb::ConsistencyProofRequest { old_size: old.size, new_size: new.size });
        request.set_timeout(Duration::from_secs(5));
        match tokio::time::timeout(Duration::from_secs(6), member.audit.clone().consistency_proof(request)).await {
            Ok(Ok(p)) => {
                return tabadul_audit::merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &p.into_inner().hashes)
                    .map_err(|e| format!("checkpoints {} and {} are inconsistent ({e})", old.size, new.size));
            }
            Ok(Err(s)) if s.code() == Code::OutOfRange || s.code() == Code::InvalidArgument => {
                return Err(format!("it cannot prove checkpoint {} extends {}: {}", new.size, old.size, s.message()));
            }
            Ok(Err(_)) | Err(_) => {
                failures += 1;
                if failures >= 5 {
                    return Err(format!("it gave no consistency proof between checkpoints {} and {} in five tries", old.size, new.size));
                }
                tokio::time::sleep(Duration::from_secs(1 << failures)).await;
            }
        }
    }
}

/// Keeps the pin in the hub's log database. Called with the member's pin
/// locked, so pins are stored in the order they move; the synced write
/// tells the runtime it blocks (`block_in_place`) rather than stall the
/// other tasks of this worker thread.
fn store_pin(member: &Member, note: &str) {
    let Some(pins) = &member.pins else { return };
    let store = || pins.set_pinned(member.log_key.name(), note);
    let stored = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(store),
        _ => store(),
    };
    if let Err(e) = stored {
        tracing::warn!(member = %member.code, error = %e, "could not store the pin");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::member::Unsettled;
    use crate::member::tests::member;

    fn seen(size: u64, root: u8) -> Seen {
        Seen { size, root: [root; 32] }
    }

    #[tokio::test]
    async fn the_pin_moves_forward_and_a_concurrent_fork_poisons_the_member() {
        // Nobody else moved the pin: it advances.
        let m = member(Some(seen(4, 1)));
        settle_pin(&m, Some(seen(4, 1)), seen(6, 2), "").unwrap();
        assert_eq!(*m.seen.lock().unwrap(), Some(seen(6, 2)));
        // An older answer arriving late does not move it back.
        let m = member(Some(seen(6, 2)));
        settle_pin(&m, Some(seen(6, 2)), seen(6, 2), "").unwrap();
        assert_eq!(*m.seen.lock().unwrap(), Some(seen(6, 2)));
        // Two answers to requests sent at size 4 come back at size 6 with
        // different roots: the second is refused and the member poisoned.
        let m = member(Some(seen(6, 2)));
        let e = settle_pin(&m, Some(seen(4, 1)), seen(6, 3), "").unwrap_err();
        assert!(e.contains("forked") && e.contains("size 6"), "{e}");
        assert!(m.forked.lock().unwrap().as_ref().is_some_and(|r| r.contains("two roots")));
        assert_eq!(*m.seen.lock().unwrap(), Some(seen(6, 2)), "the pin stays on the first root");
    }

    #[test]
    fn pending_checkpoints_of_one_size_must_agree() {
        let u = Unsettled::default();
        u.add(seen(9, 1), "a").unwrap();
        u.add(seen(9, 1), "b").unwrap();
        assert_eq!(u.len(), 1, "answers of one node batch share one checkpoint: one proof");
        assert!(u.add(seen(9, 2), "c").unwrap_err().contains("two roots for size 9"));
    }

    #[test]
    fn the_chain_puts_the_pin_among_the_pending_checkpoints() {
        let points: BTreeMap<u64, (Hash, String)> = [(3, ([3; 32], String::new())), (12, ([12; 32], String::new())), (7, ([7; 32], String::new()))].into();
        let sizes: Vec<u64> = chain(seen(5, 5), &points).unwrap().iter().map(|s| s.size).collect();
        assert_eq!(sizes, [3, 5, 7, 12]);
        // The pin's size already pending: once, and with the pin's root only.
        let sizes: Vec<u64> = chain(seen(7, 7), &points).unwrap().iter().map(|s| s.size).collect();
        assert_eq!(sizes, [3, 7, 12]);
        assert!(chain(seen(7, 8), &points).unwrap_err().contains("two roots for size 7"));
    }

    #[tokio::test]
    async fn an_out_of_order_checkpoint_waits_for_the_settling_task_not_the_answer() {
        // The answer is accepted at once; its checkpoint is left to the
        // member's settling task (whose proof request, to a node that is
        // not there, is still being retried when the test ends).
        let m = member(Some(seen(6, 2)));
        settle_pin(&m, Some(seen(4, 1)), seen(8, 3), "").unwrap();
        assert!(m.unsettled.running.load(Ordering::Acquire), "a settling task runs");
        assert!(m.forked.lock().unwrap().is_none(), "not yet: the proof is still being asked for");
    }
}
