//! Checking a node's receipt: the leaf it logged for an answer, proven
//! included in a checkpoint signed by that node's log key.

use tabadul_proto::pb;

use crate::checkpoint::Checkpoint;
use crate::entry::Entry;
use crate::merkle;
use crate::note::Verifier;
use crate::{Error, ReceiptRef};

/// A receipt that checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub entry: Entry,
    pub checkpoint: Checkpoint,
    pub leaf_hash: merkle::Hash,
}

impl Verified {
    /// How the hub records it in its own leaf.
    pub fn to_ref(&self, member: &str, index: u64) -> ReceiptRef {
        ReceiptRef { member: member.to_owned(), index, leaf_hash: self.leaf_hash, tree_size: self.checkpoint.size }
    }
}

/// Checks the signature, origin and inclusion proof of `receipt`, and that
/// its leaf is a canonical entry. What the entry must say is the caller's
/// business (the hub compares it with the answer it got).
pub fn verify(receipt: &pb::Receipt, log_key: &Verifier) -> Result<Verified, Error> {
    let bad = |why: String| Error::Receipt(why);
    let (checkpoint, _) = Checkpoint::open(&receipt.checkpoint, log_key).map_err(|e| bad(e.to_string()))?;
    let leaf_hash = merkle::leaf_hash(&receipt.entry);
    merkle::verify_inclusion(receipt.index, checkpoint.size, &leaf_hash, &receipt.inclusion_proof, &checkpoint.root)
        .map_err(|e| bad(format!("leaf {} is not proven in checkpoint {}: {e}", receipt.index, checkpoint.size)))?;
    let entry = Entry::decode(&receipt.entry).map_err(|e| bad(e.to_string()))?;
    Ok(Verified { entry, checkpoint, leaf_hash })
}

/// Appends `entry` to `log` and returns its receipt: the leaf, its salt,
/// the signed checkpoint that covers it and the inclusion proof. Blocks
/// until the entry is durable.
///
/// `known_size` is the size of the caller's last verified checkpoint of
/// this log; when given (and not beyond the new checkpoint), the receipt
/// carries the consistency proof from it.
pub fn append_with_receipt(log: &crate::Log, entry: &Entry, salt: Option<[u8; 16]>, known_size: Option<u64>) -> Result<pb::Receipt, Error> {
    let appended = log.append(entry, salt)?;
    let size = appended.checkpoint.checkpoint.size;
    let proof = log.inclusion_proof(appended.index, size)?;
    let (consistency_from, consistency_proof) = match known_size {
        Some(known) if known > 0 && known < size => (known, log.consistency_proof(known, size)?),
        _ => (0, Vec::new()),
    };
    Ok(pb::Receipt {
        entry: entry.encode(),
        index: appended.index,
        salt: salt.map(|s| s.to_vec()).unwrap_or_default(),
        checkpoint: appended.checkpoint.note.clone(),
        inclusion_proof: proof.iter().map(|h| h.to_vec()).collect(),
        consistency_from,
        consistency_proof: consistency_proof.iter().map(|h| h.to_vec()).collect(),
    })
}

/// gRPC metadata key: the size of the last checkpoint of the callee's log
/// that the caller verified.
pub const KNOWN_SIZE_METADATA: &str = "tlog-known-size";

/// What a caller last verified of a log: enough to demand that every later
/// checkpoint extends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    pub size: u64,
    pub root: merkle::Hash,
}

/// Checks that a verified receipt's checkpoint extends `seen` (the caller's
/// last verified checkpoint of that log, sent as `tlog-known-size`): same
/// size, same root; larger, with a valid consistency proof from it; never
/// smaller, since a log's receipts only grow.
pub fn check_extends(receipt: &pb::Receipt, v: &Verified, seen: Option<Seen>) -> Result<(), Error> {
    let Some(seen) = seen.filter(|s| s.size > 0) else { return Ok(()) };
    let cp = &v.checkpoint;
    let bad = |why: String| Err(Error::Receipt(why));
    if cp.size < seen.size {
        return bad(format!("the log went back from size {} to {}: entries were removed or the log was replaced", seen.size, cp.size));
    }
    if cp.size == seen.size {
        return if cp.root == seen.root { Ok(()) } else { bad(format!("the log signed two roots for size {}: it forked", cp.size)) };
    }
    if receipt.consistency_from != seen.size {
        return bad(format!("no consistency proof from size {} (the receipt proves from {})", seen.size, receipt.consistency_from));
    }
    merkle::verify_consistency(seen.size, cp.size, &seen.root, &cp.root, &receipt.consistency_proof)
        .or_else(|e| bad(format!("checkpoint {} does not extend checkpoint {} verified earlier: {e}", cp.size, seen.size)))
}

/// Checks that a verified receipt's entry records exactly this answer: a
/// query from `requester`, with this query digest, decision, rule and
/// policy, and (unless refused) these cells under the receipt's salt. The
/// hub checks every member's answer with it; a node checks the answers it
/// asks other members for.
pub fn check_answer(receipt: &pb::Receipt, v: &Verified, requester: &str, digest: &str, d: &pb::Decision, cells: &[pb::Cell]) -> Result<(), String> {
    let e = &v.entry;
    let mismatch = |what: &str, logged: &str, got: &str| format!("the receipt logs {what} {logged:?}, the answer says {got:?}");
    if e.kind != "query" {
        return Err(mismatch("kind", &e.kind, "query"));
    }
    if e.peer != requester {
        return Err(mismatch("requester", &e.peer, requester));
    }
    if e.query_digest != digest || d.query_digest != digest {
        return Err(mismatch("query", &e.query_digest, digest));
    }
    let word = tabadul_proto::decision_word(d.kind);
    if e.decision != word {
        return Err(mismatch("decision", &e.decision, word));
    }
    if e.rule_id != d.rule_id || e.policy_version != d.policy_version {
        return Err(mismatch("rule and policy", &format!("{} {}", e.rule_id, e.policy_version), &format!("{} {}", d.rule_id, d.policy_version)));
    }
    if d.kind != pb::DecisionKind::Refused as i32 {
        let released = crate::released_digest(&receipt.salt, &tabadul_proto::released_canonical(d, cells));
        if e.released != released {
            return Err("the cells received are not the ones the node logged as released".into());
        }
    }
    Ok(())
}
