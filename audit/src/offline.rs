//! What an auditor does without a network: verify a fetched log directory,
//! cross-check the hub's receipts against node logs, and check fraud proofs.
//!
//! A log directory (written by `tabadul-audit fetch`):
//! - `log.json`: origin, where and when it was fetched;
//! - `entries.bin`: every entry, each as a u32 big-endian length and the bytes;
//! - `hashes.bin`: the leaf hash of each entry as fetched (32 bytes each),
//!   which lets `verify` name the entry that changed after the fetch;
//! - `checkpoints/<size>.note`: every signed checkpoint the log made;
//! - `proofs.json`: consistency proofs between successive checkpoints, as
//!   the log served them;
//! - `cosigned.note`: the latest checkpoint with witness cosignatures (hub).
//!
//! Every check reports what failed where ([`Finding`]); nothing stops at
//! the first problem.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::checkpoint::Checkpoint;
use crate::entry::Entry;
use crate::merkle::{self, Frontier, Hash};
use crate::note::{Note, Verifier};

/// `log.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogInfo {
    pub origin: String,
    pub endpoint: String,
    pub fetched_at: String,
    pub size: u64,
}

/// A consistency proof as fetched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchedProof {
    pub old: u64,
    pub new: u64,
    pub hashes: Vec<String>,
}

/// One thing that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `entry`, `checkpoint`, `proof`, `witness`, `file`, `receipt`, `orphan`.
    pub what: String,
    /// Where: an entry index, a checkpoint size, a file name, ...
    pub at: String,
    pub reason: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.what, self.at, self.reason)
    }
}

fn finding(what: &str, at: impl std::fmt::Display, reason: impl Into<String>) -> Finding {
    Finding { what: what.to_owned(), at: at.to_string(), reason: reason.into() }
}

/// k-of-n witness policy: lines `witness <vkey>` (the witness key, as
/// `keygen` printed it or as a cosigner key, type 0x04) and `quorum <k>`;
/// `#` starts a comment.
#[derive(Debug, Clone)]
pub struct WitnessPolicy {
    pub witnesses: Vec<Verifier>,
    pub quorum: usize,
}

impl WitnessPolicy {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut witnesses = Vec::new();
        let mut quorum = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let bad = |why: String| Error::Invalid(format!("witness policy line {}: {why}", n + 1));
            match line.split_once(' ') {
                None if line.is_empty() => {}
                Some(("witness", vkey)) => {
                    // `tabadul-audit keygen` prints a key's Ed25519 vkey (type
                    // 0x01); a witness signs with the same key as a cosigner
                    // (type 0x04, another key ID). Both spellings name it.
                    let v = Verifier::parse(vkey.trim()).map_err(|e| bad(e.to_string()))?.cosigner();
                    // A witness listed twice must not count twice towards the quorum.
                    if witnesses.contains(&v) {
                        return Err(bad(format!("witness {} is listed twice", v.name())));
                    }
                    witnesses.push(v);
                }
                Some(("quorum", k)) => quorum = Some(k.trim().parse().map_err(|_| bad(format!("quorum {k:?} is not a number")))?),
                _ => return Err(bad(format!("expected `witness <vkey>` or `quorum <k>`, found {line:?}"))),
            }
        }
        let quorum = quorum.ok_or_else(|| Error::Invalid("witness policy has no `quorum` line".into()))?;
        if quorum == 0 || quorum > witnesses.len() {
            return Err(Error::Invalid(format!("quorum {quorum} of {} witnesses is not satisfiable", witnesses.len())));
        }
        Ok(WitnessPolicy { witnesses, quorum })
    }
}

/// A log directory, loaded.
#[derive(Debug)]
pub struct LogDir {
    pub path: PathBuf,
    pub info: LogInfo,
    pub entries: Vec<Vec<u8>>,
    /// `hashes.bin`, if present.
    pub leaf_hashes: Option<Vec<Hash>>,
    /// By size: the note text as found.
    pub checkpoints: BTreeMap<u64, String>,
    pub proofs: Vec<FetchedProof>,
    pub cosigned: Option<String>,
    /// Problems found while reading (framing, names): tampering, not I/O.
    pub damage: Vec<Finding>,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

impl LogDir {
    /// Reads a directory. I/O failures (missing files) are errors: the
    /// log could not be checked. Damaged contents are findings.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let info_path = dir.join("log.json");
        let info: LogInfo = serde_json::from_slice(&read(&info_path)?).map_err(|e| Error::Invalid(format!("{}: {e}", info_path.display())))?;
        let mut damage = Vec::new();
        let raw = read(&dir.join("entries.bin"))?;
        let mut entries = Vec::new();
        let mut at = 0usize;
        while at < raw.len() {
            let Some(len) = raw.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
                damage.push(finding("file", "entries.bin", format!("truncated length at byte {at} (after entry {})", entries.len())));
                break;
            };
            let Some(bytes) = raw.get(at + 4..at + 4 + len) else {
                damage.push(finding("file", "entries.bin", format!("entry {} at byte {at} claims {len} bytes; the file ends first", entries.len())));
                break;
            };
            entries.push(bytes.to_vec());
            at += 4 + len;
        }
        let leaf_hashes = match std::fs::read(dir.join("hashes.bin")) {
            Ok(raw) => {
                if raw.len() % 32 != 0 {
                    damage.push(finding("file", "hashes.bin", format!("{} bytes is not a whole number of 32-byte hashes", raw.len())));
                }
                Some(raw.chunks_exact(32).map(|c| c.try_into().unwrap_or([0; 32])).collect())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&dir.join("hashes.bin"), e)),
        };
        let mut checkpoints = BTreeMap::new();
        let cdir = dir.join("checkpoints");
        for item in std::fs::read_dir(&cdir).map_err(|e| Error::io(&cdir, e))? {
            let item = item.map_err(|e| Error::io(&cdir, e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            // One spelling per size: `05.note` beside `5.note` would be a
            // second, unchecked claim about the same tree.
            let Some(size) = name.strip_suffix(".note").and_then(|s| s.parse::<u64>().ok()).filter(|n| name == format!("{n}.note")) else {
                damage.push(finding("file", format!("checkpoints/{name}"), "not named <size>.note"));
                continue;
            };
            let bytes = read(&item.path())?;
            match String::from_utf8(bytes) {
                Ok(text) => {
                    checkpoints.insert(size, text);
                }
                Err(_) => damage.push(finding("checkpoint", size, "not UTF-8")),
            }
        }
        let proofs_path = dir.join("proofs.json");
        let proofs = match std::fs::read(&proofs_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                damage.push(finding("file", "proofs.json", e.to_string()));
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&proofs_path, e)),
        };
        let cosigned = match std::fs::read_to_string(dir.join("cosigned.note")) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&dir.join("cosigned.note"), e)),
        };
        Ok(LogDir { path: dir.to_owned(), info, entries, leaf_hashes, checkpoints, proofs, cosigned, damage })
    }

    /// Writes a directory (what `fetch` produces).
    pub fn write(
        dir: &Path,
        info: &LogInfo,
        entries: &[Vec<u8>],
        checkpoints: &[(u64, String)],
        proofs: &[FetchedProof],
        cosigned: Option<&str>,
    ) -> Result<(), Error> {
        let cdir = dir.join("checkpoints");
        std::fs::create_dir_all(&cdir).map_err(|e| Error::io(&cdir, e))?;
        let mut framed = Vec::with_capacity(entries.iter().map(|e| e.len() + 4).sum());
        for e in entries {
            framed.extend_from_slice(&(e.len() as u32).to_be_bytes());
            framed.extend_from_slice(e);
        }
        let put = |path: PathBuf, bytes: &[u8]| std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e));
        put(dir.join("entries.bin"), &framed)?;
        let hashes: Vec<u8> = entries.iter().flat_map(|e| merkle::leaf_hash(e)).collect();
        put(dir.join("hashes.bin"), &hashes)?;
        for (size, note) in checkpoints {
            put(cdir.join(format!("{size}.note")), note.as_bytes())?;
        }
        put(dir.join("proofs.json"), serde_json::to_string_pretty(proofs).unwrap_or_default().as_bytes())?;
        if let Some(c) = cosigned {
            put(dir.join("cosigned.note"), c.as_bytes())?;
        }
        // log.json last: its presence marks a complete fetch.
        put(dir.join("log.json"), serde_json::to_string_pretty(info).unwrap_or_default().as_bytes())?;
        Ok(())
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub origin: String,
    pub entries: u64,
    pub checkpoints: usize,
    /// Largest checkpoint size whose signature and root verified.
    pub verified_size: u64,
    /// Witnesses whose cosignature on `cosigned.note` verified.
    pub witnessed_by: Vec<String>,
    pub findings: Vec<Finding>,
}

/// Verifies a log directory against the log's key and, optionally, a
/// witness policy.
pub fn verify(dir: &LogDir, log_key: &Verifier, policy: Option<&WitnessPolicy>) -> Report {
    verify_keys(dir, std::slice::from_ref(log_key), policy)
}

/// [`verify`] for a log whose key was rotated: each checkpoint must be
/// signed by one of `log_keys` (all of the log's origin), the current key
/// and the ones before it.
pub fn verify_keys(dir: &LogDir, log_keys: &[Verifier], policy: Option<&WitnessPolicy>) -> Report {
    let mut findings = dir.damage.clone();
    for log_key in log_keys {
        if dir.info.origin != log_key.name() {
            findings.push(finding("file", "log.json", format!("origin {:?} is not the key's {:?}", dir.info.origin, log_key.name())));
        }
    }
    // Leaves, and the root at every checkpoint size.
    // Checking each entry's form and building the tree are independent:
    // one thread does each, so an audit goes at the pace of the slower.
    let (bad_entries, leaf_hashes, roots) = std::thread::scope(|s| {
        let checker = s.spawn(|| check_entries(&dir.entries));
        let leaf_hashes: Vec<Hash> = dir.entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        let roots = roots_at(&leaf_hashes, dir.checkpoints.keys().copied());
        let bad = checker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (bad, leaf_hashes, roots)
    });
    findings.extend(bad_entries);
    let mut verified_size = 0;
    let mut last_good = 0;
    let mut good: BTreeMap<u64, Checkpoint> = BTreeMap::new();
    for (&size, text) in &dir.checkpoints {
        let opened = log_keys.iter().map(|k| Checkpoint::open(text, k)).reduce(|a, b| a.or(b));
        let cp = match opened {
            Some(Ok((cp, _))) => cp,
            Some(Err(e)) => {
                findings.push(finding("checkpoint", size, e.to_string()));
                continue;
            }
            None => {
                findings.push(finding("checkpoint", size, "no verifier key given".to_owned()));
                continue;
            }
        };
        if cp.size != size {
            findings.push(finding("checkpoint", size, format!("file holds the checkpoint of size {}", cp.size)));
            continue;
        }
        match roots.get(&size) {
            None => findings.push(finding("checkpoint", size, format!("covers {size} entries, but only {} were found", dir.entries.len()))),
            Some(root) if *root != cp.root => {
                // Everything below the last verified checkpoint is sound, so
                // the change is in the entries since.
                let culprit = if size - last_good == 1 {
                    format!("entry {last_good} was changed")
                } else {
                    format!("one of entries {last_good}..{size} was changed, added or removed")
                };
                findings.push(finding("checkpoint", size, format!("signed root does not match entries 0..{size}: {culprit}")));
            }
            Some(_) => {
                verified_size = verified_size.max(size);
                last_good = size;
                good.insert(size, cp);
            }
        }
    }
    if dir.checkpoints.is_empty() {
        findings.push(finding("checkpoint", "-", "the directory holds no checkpoints"));
    }
    // Every entry must be covered by a verified signed checkpoint: entries
    // past the last one are claims nobody signed.
    if (dir.entries.len() as u64) > verified_size {
        findings.push(finding(
            "entry",
            verified_size,
            format!("entries {verified_size}..{} are not covered by any verified signed checkpoint", dir.entries.len()),
        ));
    }
    if verified_size < dir.info.size {
        findings.push(finding(
            "file",
            "log.json",
            format!("the log had {} entries when fetched; signed checkpoints verify only {verified_size}", dir.info.size),
        ));
    }
    // Name the entries that changed since the fetch, if the fetched hashes
    // are there; whether the entries or the hashes changed is told by the
    // signed roots.
    if let Some(fetched) = &dir.leaf_hashes {
        let roots_failed = findings.iter().any(|f| f.what == "checkpoint");
        if fetched.len() != leaf_hashes.len() {
            findings.push(finding("file", "hashes.bin", format!("{} hashes for {} entries", fetched.len(), leaf_hashes.len())));
        }
        for (i, (now, then)) in leaf_hashes.iter().zip(fetched).enumerate() {
            if now != then {
                findings.push(if roots_failed {
                    finding("entry", i, "changed since it was fetched (its hash differs from hashes.bin)")
                } else {
                    finding("file", "hashes.bin", format!("hash {i} was changed (the entries still match the signed checkpoints)"))
                });
            }
        }
    }
    // The proofs the log served must agree with its own checkpoints.
    for p in &dir.proofs {
        if !dir.checkpoints.contains_key(&p.old) || !dir.checkpoints.contains_key(&p.new) {
            findings.push(finding("proof", format!("{}->{}", p.old, p.new), "names a tree size with no checkpoint in the directory"));
            continue;
        }
        // A proof between checkpoints that already failed adds nothing.
        let (Some(a), Some(b)) = (good.get(&p.old), good.get(&p.new)) else { continue };
        let hashes: Result<Vec<Vec<u8>>, _> = p.hashes.iter().map(hex::decode).collect();
        let ok = hashes.map_err(|e| e.to_string()).and_then(|h| merkle::verify_consistency(a.size, b.size, &a.root, &b.root, &h).map_err(|e| e.to_string()));
        if let Err(e) = ok {
            findings.push(finding("proof", format!("{}->{}", p.old, p.new), format!("consistency proof served by the log does not verify: {e}")));
        }
    }
    let mut witnessed_by = Vec::new();
    if let Some(text) = &dir.cosigned {
        let opened = log_keys.iter().map(|k| Checkpoint::open(text, k)).reduce(|a, b| a.or(b));
        match opened.unwrap_or_else(|| Err(crate::Error::Invalid("no verifier key given".into()))) {
            Err(e) => findings.push(finding("witness", "cosigned.note", e.to_string())),
            Ok((cp, note)) => {
                let n = cp.size as usize;
                if n > leaf_hashes.len() {
                    findings.push(finding("witness", "cosigned.note", format!("cosigned size {n} is beyond the {} entries fetched", leaf_hashes.len())));
                } else if merkle::root(&leaf_hashes[..n]) != cp.root {
                    findings.push(finding("witness", "cosigned.note", format!("cosigned root for size {n} does not match the entries")));
                }
                if let Some(policy) = policy {
                    // A known witness's invalid cosignature fails the note,
                    // even when the others still make the quorum.
                    match note.verify_known(&policy.witnesses) {
                        Ok(signed) => witnessed_by.extend(policy.witnesses.iter().zip(signed).filter(|(_, s)| *s).map(|(w, _)| w.name().to_owned())),
                        Err(e) => findings.push(finding("witness", "cosigned.note", e.to_string())),
                    }
                }
            }
        }
    }
    if let Some(policy) = policy
        && witnessed_by.len() < policy.quorum
    {
        findings.push(finding(
            "witness",
            "cosigned.note",
            format!(
                "{} of the required {} witnesses cosigned{}",
                witnessed_by.len(),
                policy.quorum,
                if dir.cosigned.is_none() { " (no cosigned checkpoint in the directory)" } else { "" }
            ),
        ));
    }
    Report { origin: dir.info.origin.clone(), entries: dir.entries.len() as u64, checkpoints: dir.checkpoints.len(), verified_size, witnessed_by, findings }
}

/// A finding for each entry that is not a canonical v1 entry.
fn check_entries(entries: &[Vec<u8>]) -> Vec<Finding> {
    entries.iter().enumerate().filter_map(|(i, bytes)| crate::entry::check(bytes).err().map(|e| finding("entry", i, e.to_string()))).collect()
}

/// The root after each of `sizes` leaves (those within the leaves given).
fn roots_at(leaves: &[Hash], sizes: impl Iterator<Item = u64>) -> BTreeMap<u64, Hash> {
    let wanted: BTreeSet<u64> = sizes.collect();
    let mut wanted = wanted.into_iter().peekable();
    let mut out = BTreeMap::new();
    let mut f = Frontier::default();
    loop {
        while wanted.next_if(|&w| w < f.size()).is_some() {}
        if wanted.next_if_eq(&f.size()).is_some() {
            out.insert(f.size(), f.root());
        }
        let Some(leaf) = leaves.get(f.size() as usize) else { break };
        f.push(*leaf, |_, _, _| {});
    }
    out
}

/// The `what` of a finding that is no evidence of tampering, only of a
/// check that could not be made with what was fetched (exit 2, not 1).
pub const UNCHECKED: &str = "unchecked";

/// Whether `findings` show tampering (anything but [`UNCHECKED`]).
pub fn tampered(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.what != UNCHECKED)
}

/// Checks a fetched log against a checkpoint pinned earlier (as `watch`
/// keeps it): the log must still hold the pinned tree, the same entries
/// under the same root. A log cut short or rewritten since is reported.
pub fn check_pin(dir: &LogDir, log_keys: &[Verifier], pin: &str) -> Vec<Finding> {
    let opened = log_keys.iter().map(|k| Checkpoint::open(pin, k)).reduce(|a, b| a.or(b));
    let pinned = match opened {
        Some(Ok((cp, _))) => cp,
        Some(Err(e)) => return vec![finding("pin", "-", format!("the pinned checkpoint does not verify with the log's key: {e}"))],
        None => return vec![finding("pin", "-", "no verifier key given")],
    };
    let n = pinned.size as usize;
    if n > dir.entries.len() {
        return vec![finding(
            "pin",
            pinned.size,
            format!("the log was cut short: the pinned checkpoint covers {n} entries, the fetched log holds {}", dir.entries.len()),
        )];
    }
    let leaves: Vec<Hash> = dir.entries[..n].iter().map(|e| merkle::leaf_hash(e)).collect();
    if merkle::root(&leaves) != pinned.root {
        return vec![finding("pin", pinned.size, format!("the log's first {n} entries are not the tree pinned earlier: its history was rewritten"))];
    }
    Vec::new()
}

/// `verified.json`, written by `verify` beside what it verified: the keys
/// it verified with, so `cross-check` can verify again before it trusts
/// the directory (it refuses a directory without one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    pub vkeys: Vec<String>,
    pub verified_size: u64,
    pub at: String,
}

impl Stamp {
    pub const FILE: &'static str = "verified.json";

    pub fn write(dir: &Path, stamp: &Stamp) -> Result<(), Error> {
        let path = dir.join(Self::FILE);
        std::fs::write(&path, serde_json::to_string_pretty(stamp).unwrap_or_default()).map_err(|e| Error::io(&path, e))
    }

    /// The stamp, if `verify` passed on this directory.
    pub fn read(dir: &Path) -> Result<Option<Stamp>, Error> {
        let path = dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

/// A receipt as an auditor holds it: what the hub's release proof
/// (`/api/v1/releases/{member}/{leaf}/proof`) returns, optionally with the
/// leaf itself (`entry`, base64) from the member's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceiptFile {
    pub member_leaf: u64,
    pub leaf_hash: String,
    pub member_checkpoint: String,
    pub inclusion_proof: Vec<String>,
    #[serde(default)]
    pub entry: Option<String>,
}

/// Checks one receipt offline: the checkpoint's signature (strictly), the
/// leaf's inclusion in it, the leaf's form when present and, given a pin,
/// that the receipt's tree and the pinned one are one history. `log` (a
/// fetched directory of the same log) lets the consistency with the pin be
/// computed; without it a different size is [`UNCHECKED`].
pub fn check_receipt(r: &ReceiptFile, log_key: &Verifier, pin: Option<&str>, log: Option<&LogDir>) -> Vec<Finding> {
    let mut out = Vec::new();
    let at = format!("leaf {}", r.member_leaf);
    let cp = match Checkpoint::open(&r.member_checkpoint, log_key) {
        Ok((cp, _)) => cp,
        Err(e) => return vec![finding("receipt", at, format!("its checkpoint does not verify with {}: {e}", log_key.name()))],
    };
    let Some(leaf_hash) = hex::decode(&r.leaf_hash).ok().and_then(|h| <Hash>::try_from(h).ok()) else {
        return vec![finding("receipt", at, "leaf_hash is not 32 bytes of hex")];
    };
    if let Some(entry) = &r.entry {
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(entry) {
            Ok(bytes) if merkle::leaf_hash(&bytes) != leaf_hash => out.push(finding("receipt", &at, "the entry given is not the leaf the receipt names")),
            Ok(bytes) => {
                if let Err(e) = crate::entry::check(&bytes) {
                    out.push(finding("receipt", &at, format!("the entry is not a canonical entry: {e}")));
                }
            }
            Err(_) => out.push(finding("receipt", &at, "entry is not base64")),
        }
    }
    let proof: Result<Vec<Vec<u8>>, _> = r.inclusion_proof.iter().map(hex::decode).collect();
    match proof {
        Err(_) => out.push(finding("receipt", &at, "inclusion_proof holds a hash that is not hex")),
        Ok(p) => {
            if let Err(e) = merkle::verify_inclusion(r.member_leaf, cp.size, &leaf_hash, &p, &cp.root) {
                out.push(finding("receipt", &at, format!("the leaf is not proven in the signed tree of size {}: {e}", cp.size)));
            }
        }
    }
    let Some(pin) = pin else { return out };
    let pinned = match Checkpoint::open(pin, log_key) {
        Ok((p, _)) => p,
        Err(e) => {
            out.push(finding("pin", "-", format!("the pinned checkpoint does not verify: {e}")));
            return out;
        }
    };
    if pinned.size == cp.size {
        if pinned.root != cp.root {
            out.push(finding("pin", pinned.size, format!("the log signed two roots for size {}: it forked", cp.size)));
        }
        return out;
    }
    let Some(log) = log else {
        out.push(finding(
            UNCHECKED,
            "pin",
            format!("the receipt's tree ({}) and the pin ({}) differ in size; give the fetched log (--log) to prove them one history", cp.size, pinned.size),
        ));
        return out;
    };
    let leaves: Vec<Hash> = log.entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    for (what, c) in [("pin", &pinned), ("receipt", &cp)] {
        match leaves.get(..c.size as usize) {
            None => out.push(finding(UNCHECKED, what, format!("the fetched log holds {} entries, fewer than the tree of size {}", leaves.len(), c.size))),
            Some(prefix) if merkle::root(prefix) != c.root => {
                out.push(finding(what, c.size, format!("the fetched log's first {} entries do not have the signed root: two histories", c.size)))
            }
            Some(_) => {}
        }
    }
    out
}

/// Matches the hub's receipts with node logs, both ways. `nodes` maps a
/// member code to its log directory; `hub_peer` is the hub's identity as
/// nodes record it (`spiffe://alo/hub/alo`).
pub fn cross_check(hub: &LogDir, nodes: &BTreeMap<String, LogDir>, hub_peer: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut referenced: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut last_hub_time = i64::MIN;
    for (i, bytes) in hub.entries.iter().enumerate() {
        let Ok(entry) = Entry::decode(bytes) else {
            findings.push(finding("entry", format!("hub {i}"), "not a valid entry (run verify)"));
            continue;
        };
        last_hub_time = last_hub_time.max(entry.time_ms);
        for r in &entry.receipts {
            let Some(node) = nodes.get(&r.member) else { continue };
            referenced.entry(node.info.origin.as_str()).or_default().insert(r.index);
            let at = format!("hub {i} -> {} {}", r.member, r.index);
            // The hub saw a tree larger than the one fetched: the node's log
            // was fetched first. Nothing here says the entry is missing.
            if r.tree_size > node.entries.len() as u64 {
                findings.push(finding(
                    UNCHECKED,
                    at,
                    format!(
                        "the receipt is from the node's tree of size {}; the fetched node log holds {} entries (fetch it again after the hub)",
                        r.tree_size,
                        node.entries.len()
                    ),
                ));
                continue;
            }
            match node.entries.get(r.index as usize) {
                None => findings.push(finding("receipt", at, format!("the node log has no entry {} (it holds {})", r.index, node.entries.len()))),
                Some(leaf) if merkle::leaf_hash(leaf) != r.leaf_hash => {
                    findings.push(finding("receipt", at, "the node's entry at that index is not the one the receipt names (leaf hash differs)"))
                }
                Some(leaf) => match Entry::decode(leaf) {
                    Ok(e) if e.peer != hub_peer => findings.push(finding("receipt", at, format!("the node logged this answer for {}, not the hub", e.peer))),
                    Ok(_) => {}
                    Err(e) => findings.push(finding("receipt", at, e.to_string())),
                },
            }
        }
    }
    for (member, node) in nodes {
        let seen = referenced.get(node.info.origin.as_str());
        for (i, bytes) in node.entries.iter().enumerate() {
            let Ok(e) = Entry::decode(bytes) else { continue };
            // Answers the node gave the hub, up to the hub's last entry.
            let answered = e.kind == "query" && e.peer == hub_peer && e.decision != "invalid";
            if answered && e.time_ms <= last_hub_time && !seen.is_some_and(|s| s.contains(&(i as u64))) {
                findings.push(finding(
                    "orphan",
                    format!("{member} {i}"),
                    format!(
                        "the node answered the hub ({} under rule {:?}, query {}) but no hub entry holds its receipt",
                        e.decision,
                        e.rule_id,
                        e.query_digest.get(..16).unwrap_or(&e.query_digest)
                    ),
                ));
            }
        }
    }
    findings
}

/// Evidence that a log signed two histories that cannot both be true.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FraudProof {
    pub origin: String,
    pub vkey: String,
    /// The checkpoint pinned earlier.
    pub pinned: String,
    /// The later checkpoint that does not extend it.
    pub conflicting: String,
    /// The consistency proof the log served from `pinned` to `conflicting`, if any.
    pub consistency_proof: Vec<String>,
    pub reason: String,
}

/// What a fraud proof shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FraudVerdict {
    /// The log signed two trees that cannot both be true.
    Proven(String),
    /// The checkpoints are consistent (or the same): no fraud.
    NoFraud(String),
    /// The log has not proven consistency, but nothing here proves it
    /// cannot: ask it for a consistency proof between the two sizes.
    Inconclusive(String),
}

/// Checks a fraud proof using nothing but its contents.
pub fn check_fraud(proof: &FraudProof) -> Result<FraudVerdict, Error> {
    let key = Verifier::parse(&proof.vkey)?;
    let (a, _) = Checkpoint::open(&proof.pinned, &key)?;
    let (b, _) = Checkpoint::open(&proof.conflicting, &key)?;
    let (old, new) = if a.size <= b.size { (&a, &b) } else { (&b, &a) };
    if old.size == new.size {
        return Ok(if old.root == new.root {
            FraudVerdict::NoFraud("both checkpoints are the same tree".into())
        } else {
            FraudVerdict::Proven(format!("{} signed two different roots for tree size {}", a.origin, a.size))
        });
    }
    if old.size == 0 {
        return Ok(FraudVerdict::NoFraud("every tree extends the empty tree".into()));
    }
    let hashes: Vec<Vec<u8>> = proof.consistency_proof.iter().map(hex::decode).collect::<Result<_, _>>().map_err(|e| Error::Invalid(e.to_string()))?;
    if merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &hashes).is_ok() {
        return Ok(FraudVerdict::NoFraud(format!("the proof shows tree {} extends tree {}", new.size, old.size)));
    }
    // A proof that leads to the larger signed root commits that tree to a
    // prefix root; if that is not the smaller signed root, the log signed both.
    match merkle::consistency_roots(old.size, new.size, &old.root, &hashes) {
        Ok((prefix, full)) if full == new.root && prefix != old.root => Ok(FraudVerdict::Proven(format!(
            "{}'s tree {} has, by the log's own proof, a first {} leaves whose root is not the root it signed for tree {}",
            a.origin, new.size, old.size, old.size
        ))),
        _ => Ok(FraudVerdict::Inconclusive(format!("the log has not proven that tree {} extends tree {}; ask it for a consistency proof", new.size, old.size))),
    }
}

/// Whether a verifier string names a log key or cosigner key that parses;
/// accepts the key itself or `@path` to a file holding it.
pub fn read_vkey(arg: &str) -> Result<Verifier, Error> {
    if let Some(path) = arg.strip_prefix('@') {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(Path::new(path), e))?;
        return Verifier::parse(text.trim());
    }
    Verifier::parse(arg)
}

/// Parses the note of a checkpoint without checking signatures.
pub fn peek(note: &str) -> Result<Checkpoint, Error> {
    Checkpoint::parse(&Note::parse(note)?.text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::note::Signer;
    use crate::{Entry, Log, LogOptions};

    /// A log under `key` holding entries with the given details.
    fn log_of(dir: &Path, key: &str, details: &[&str]) -> Log {
        let log = Log::open_with(dir, Signer::from_skey(key).unwrap(), LogOptions { publish_interval: std::time::Duration::ZERO }).unwrap();
        for d in details {
            log.append(&Entry { detail: (*d).to_owned(), ..Entry::default() }, None).unwrap();
        }
        log
    }

    fn fraud(key: &Signer, pinned: String, conflicting: String, proof: Vec<Hash>) -> FraudProof {
        FraudProof {
            origin: key.name().to_owned(),
            vkey: key.verifier().to_string(),
            pinned,
            conflicting,
            consistency_proof: proof.iter().map(hex::encode).collect(),
            reason: String::new(),
        }
    }

    /// A fetched directory of a three-entry log whose latest checkpoint is
    /// cosigned by `witnesses`; returns the directory's path.
    fn cosigned_dir(root: &Path, log_key: &Signer, witnesses: &[Signer]) -> PathBuf {
        let log = log_of(&root.join("db"), &log_key.to_skey(), &["e0", "e1", "e2"]);
        let latest = log.latest().note.clone();
        let mut note = Note::parse(&latest).unwrap();
        for w in witnesses {
            note.add_lines(&w.cosign(&note.text, 1_700_000_000).unwrap()).unwrap();
        }
        let entries: Vec<Vec<u8>> = log.read(0, 3).unwrap().into_iter().map(|(_, e)| e.encode()).collect();
        let info = LogInfo { origin: log_key.name().into(), endpoint: String::new(), fetched_at: String::new(), size: 3 };
        let dir = root.join("fetched");
        LogDir::write(&dir, &info, &entries, &[(3, latest)], &[], Some(&note.to_text())).unwrap();
        dir
    }

    fn policy(witnesses: &[Signer], quorum: usize) -> WitnessPolicy {
        WitnessPolicy { witnesses: witnesses.iter().map(Signer::cosignature_verifier).collect(), quorum }
    }

    #[test]
    fn every_flipped_byte_of_a_cosigned_note_fails_verify() {
        let root = tempfile::tempdir().unwrap();
        let key = Signer::generate("alo/hub/alo").unwrap();
        let witnesses = [Signer::generate("alo/witness/MAR").unwrap(), Signer::generate("alo/witness/EGY").unwrap()];
        let dir = cosigned_dir(root.path(), &key, &witnesses);
        let all = policy(&witnesses, 2);
        let clean = verify(&LogDir::load(&dir).unwrap(), &key.verifier(), Some(&all));
        assert!(clean.findings.is_empty(), "{:?}", clean.findings);
        let original = std::fs::read(dir.join("cosigned.note")).unwrap();
        let mut flips = 0;
        for at in 0..original.len() {
            let mut bytes = original.clone();
            bytes[at] ^= 0x01;
            std::fs::write(dir.join("cosigned.note"), &bytes).unwrap();
            let report = verify(&LogDir::load(&dir).unwrap(), &key.verifier(), Some(&all));
            assert!(!report.findings.is_empty(), "flipping byte {at} of cosigned.note went unnoticed");
            flips += 1;
        }
        assert!(flips > 200, "{flips}");
        // A quorum of one still holds with one witness's line damaged, but
        // a known witness's invalid cosignature fails the note anyway.
        let one = policy(&witnesses, 1);
        let text = String::from_utf8(original.clone()).unwrap();
        let last = text.trim_end_matches('\n').rsplit('\n').next().unwrap().to_owned();
        let sig_at = text.rfind(&last).unwrap() + last.len() - 10; // inside the signature bytes, past the key ID
        let mut bytes = original.clone();
        bytes[sig_at] = if bytes[sig_at] == b'A' { b'B' } else { b'A' };
        std::fs::write(dir.join("cosigned.note"), &bytes).unwrap();
        let report = verify(&LogDir::load(&dir).unwrap(), &key.verifier(), Some(&one));
        assert!(report.findings.iter().any(|f| f.reason.contains("does not verify")), "{:?}", report.findings);
    }

    #[test]
    fn an_extra_invalid_line_by_the_log_key_fails_in_any_position() {
        let root = tempfile::tempdir().unwrap();
        let key = Signer::generate("alo/node/MAR").unwrap();
        let dir = cosigned_dir(root.path(), &key, &[]);
        let latest = std::fs::read_to_string(dir.join("checkpoints/3.note")).unwrap();
        let note = Note::parse(&latest).unwrap();
        let mut forged = note.signatures[0].clone();
        let n = forged.raw.len();
        forged.raw[n - 1] ^= 0x01;
        for position in 0..=note.signatures.len() {
            let mut signatures = note.signatures.clone();
            signatures.insert(position, forged.clone());
            let text = Note { text: note.text.clone(), signatures }.to_text();
            std::fs::write(dir.join("checkpoints/3.note"), &text).unwrap();
            let report = verify(&LogDir::load(&dir).unwrap(), &key.verifier(), None);
            assert!(
                report.findings.iter().any(|f| f.what == "checkpoint" && f.reason.contains("does not verify")),
                "position {position}: {:?}",
                report.findings
            );
        }
    }

    #[test]
    fn a_log_cut_short_or_rewritten_since_the_pin_is_caught() {
        let root = tempfile::tempdir().unwrap();
        let key = Signer::generate("alo/node/MAR").unwrap();
        let dir = cosigned_dir(root.path(), &key, &[]);
        let pin = std::fs::read_to_string(dir.join("checkpoints/3.note")).unwrap();
        let d = LogDir::load(&dir).unwrap();
        assert!(check_pin(&d, &[key.verifier()], &pin).is_empty());
        let short = LogDir { entries: d.entries[..2].to_vec(), ..LogDir::load(&dir).unwrap() };
        let found = check_pin(&short, &[key.verifier()], &pin);
        assert!(found.iter().any(|f| f.reason.contains("cut short")), "{found:?}");
        let mut changed = LogDir::load(&dir).unwrap();
        changed.entries[1] = Entry { detail: "other".into(), ..Entry::default() }.encode();
        let found = check_pin(&changed, &[key.verifier()], &pin);
        assert!(found.iter().any(|f| f.reason.contains("rewritten")), "{found:?}");
        // A pin signed by another key is no pin.
        let other = Signer::generate("alo/node/MAR").unwrap();
        assert!(!check_pin(&d, &[other.verifier()], &pin).is_empty());
    }

    #[test]
    fn fraud_proofs_prove_only_what_they_can() {
        let key = Signer::generate("alo/hub/alo").unwrap();
        let skey = key.to_skey();
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = log_of(da.path(), &skey, &["a0", "a1", "a2", "a3", "a4"]);
        let b = log_of(db.path(), &skey, &["a0", "a1", "x2", "a3", "a4", "b5", "b6", "b7"]);
        let (a5, b8) = (a.latest().note.clone(), b.latest().note.clone());
        // B's own proof from 5 to 8 commits B to a first-5 root that is not A's.
        let v = check_fraud(&fraud(&key, a5.clone(), b8.clone(), b.consistency_proof(5, 8).unwrap())).unwrap();
        assert!(matches!(v, FraudVerdict::Proven(ref why) if why.contains("first 5 leaves")), "{v:?}");
        // Without a proof, only suspicion.
        let v = check_fraud(&fraud(&key, a5.clone(), b8.clone(), vec![])).unwrap();
        assert!(matches!(v, FraudVerdict::Inconclusive(_)), "{v:?}");
        // An honest extension of A is no fraud, whatever order the checkpoints come in.
        for d in ["a5", "a6"] {
            a.append(&Entry { detail: d.into(), ..Entry::default() }, None).unwrap();
        }
        let a7 = a.latest().note.clone();
        let v = check_fraud(&fraud(&key, a7.clone(), a5.clone(), a.consistency_proof(5, 7).unwrap())).unwrap();
        assert!(matches!(v, FraudVerdict::NoFraud(_)), "{v:?}");
        // Same size, two roots: proven with no proof at all.
        let b7 = b.checkpoint_at(7).unwrap().unwrap();
        let v = check_fraud(&fraud(&key, a7, b7, vec![])).unwrap();
        assert!(matches!(v, FraudVerdict::Proven(ref why) if why.contains("two different roots")), "{v:?}");
        // A checkpoint not signed by the key is no evidence.
        let other = Signer::generate("alo/hub/alo").unwrap();
        let forged = other.sign(&Note::parse(&b8).unwrap().text).unwrap();
        assert!(check_fraud(&fraud(&key, a5, forged, vec![])).is_err());
    }
}
