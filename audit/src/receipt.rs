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
pub fn append_with_receipt(log: &crate::Log, entry: &Entry, salt: Option<[u8; 16]>) -> Result<pb::Receipt, Error> {
    let appended = log.append(entry, salt)?;
    let proof = log.inclusion_proof(appended.index, appended.checkpoint.checkpoint.size)?;
    Ok(pb::Receipt {
        entry: entry.encode(),
        index: appended.index,
        salt: salt.map(|s| s.to_vec()).unwrap_or_default(),
        checkpoint: appended.checkpoint.note.clone(),
        inclusion_proof: proof.iter().map(|h| h.to_vec()).collect(),
    })
}
