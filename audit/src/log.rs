//! The signed, append-only Merkle log on RocksDB.
//!
//! Column families:
//! - `entries`: leaf index (u64 BE) → entry bytes ([`crate::Entry`] v1);
//! - `hashes`: level (u8) ‖ index (u64 BE) → the root of every complete
//!   subtree, leaf hashes at level 0, so any proof costs O(log n) reads;
//! - `checkpoints`: tree size (u64 BE) → the signed checkpoint note;
//! - `salts`: leaf index → the salt of its `released` digest (never served
//!   to auditors; handed to the receiving hub inside the receipt);
//! - `meta`: the origin, witness state and the latest cosigned checkpoint.
//!
//! Appends are group-committed: callers queue entries, one of them (the
//! leader) extends the tree, signs a checkpoint for the new size, and writes
//! entries and hashes in one synced RocksDB batch. So every acknowledged
//! entry is on disk, and its caller holds a signed checkpoint covering it
//! (for the receipt); a crash leaves either all of a batch or none of it.
//!
//! Checkpoints are *published* (stored in `checkpoints`, listed to
//! auditors) at most once per [`LogOptions::publish_interval`], in the same
//! batch as the entries they cover, and when the log is closed. Publishing
//! every batch's checkpoint would make an audit cost one signature check
//! per batch; the unpublished ones are still signed statements that any
//! holder can check against the log.
//!
//! Recovery runs the normal commit path: it loads the frontier of the last
//! published checkpoint and replays the entries written after it through
//! the same [`Log::commit`] that appends use, which signs and publishes a
//! checkpoint for the recovered size.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::Error;
use crate::checkpoint::Checkpoint;
use crate::merkle::{self, Frontier, Hash};
use crate::note::Signer;

const ENTRIES: &str = "entries";
const HASHES: &str = "hashes";
const CHECKPOINTS: &str = "checkpoints";
const SALTS: &str = "salts";
const META: &str = "meta";
const ALL_CFS: [&str; 5] = [ENTRIES, HASHES, CHECKPOINTS, SALTS, META];

const META_ORIGIN: &[u8] = b"origin";
const META_COSIGNED: &[u8] = b"cosigned";
const META_WITNESSED: &str = "witnessed/";
const META_PINNED: &str = "pinned/";
const META_FORKED: &str = "forked/";

/// What an append gives back: where the entry is and a signed checkpoint
/// whose tree includes it.
#[derive(Debug, Clone)]
pub struct Appended {
    pub index: u64,
    pub leaf_hash: Hash,
    pub checkpoint: Arc<SignedCheckpoint>,
}

/// A checkpoint with its signed note text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// Tuning of a [`Log`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Least time between two published checkpoints. Zero publishes the
    /// checkpoint of every batch.
    pub publish_interval: std::time::Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { publish_interval: std::time::Duration::from_secs(1) }
    }
}

/// The log. Cheap to share behind an `Arc`; appends from many threads
/// batch together.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    db: DB,
    signer: Signer,
    options: LogOptions,
    state: Mutex<AppendState>,
    written: Condvar,
    /// False only in tests that simulate a crash.
    publish_on_drop: bool,
}

#[derive(Debug)]
struct AppendState {
    /// Index the next appended entry gets.
    next: u64,
    /// Queued, not yet written: (index, entry bytes, salt).
    pending: Vec<Pending>,
    /// Whether a leader is writing a batch right now.
    writing: bool,
    /// Set when a write failed; the log then refuses appends until reopened,
    /// because indices handed out after a failed batch would leave a gap.
    failed: Option<String>,
    /// The durable tree and its latest checkpoint.
    frontier: Frontier,
    latest: Arc<SignedCheckpoint>,
    /// Size of the last published checkpoint, and when it was published.
    published: u64,
    published_at: std::time::Instant,
}

#[derive(Debug)]
struct Pending {
    index: u64,
    bytes: Vec<u8>,
    salt: Option<[u8; 16]>,
}

impl Log {
    /// Opens (or creates) the log whose origin is the signer's name.
    pub fn open(path: &Path, signer: Signer) -> Result<Self, Error> {
        Self::open_with(path, signer, LogOptions::default())
    }

    pub fn open_with(path: &Path, signer: Signer, options: LogOptions) -> Result<Self, Error> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Entries are small: 4 MB memtables flush often enough that a disk
        // problem shows up within minutes, not after 64 MB of preallocated WAL.
        let cf_options = || {
            let mut o = Options::default();
            o.set_write_buffer_size(4 << 20);
            o
        };
        opts.set_write_buffer_size(4 << 20);
        let cfs = ALL_CFS.iter().map(|n| ColumnFamilyDescriptor::new(*n, cf_options()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| Error::Db { path: path.to_owned(), source })?;
        let empty = Arc::new(SignedCheckpoint {
            checkpoint: Checkpoint { origin: String::new(), size: 0, root: merkle::empty_root(), extensions: vec![] },
            note: String::new(),
        });
        let log = Log {
            path: path.to_owned(),
            db,
            signer,
            options,
            state: Mutex::new(AppendState {
                next: 0,
                pending: Vec::new(),
                writing: false,
                failed: None,
                frontier: Frontier::default(),
                latest: empty,
                published: 0,
                published_at: std::time::Instant::now(),
            }),
            written: Condvar::new(),
            publish_on_drop: true,
        };
        log.recover()?;
        Ok(log)
    }

    fn recover(&self) -> Result<(), Error> {
        let origin = self.signer.name().to_owned();
        match self.get(META, META_ORIGIN)? {
            None => self.db.put_cf(self.cf(META), META_ORIGIN, origin.as_bytes()).map_err(|e| self.db_err(e))?,
            Some(stored) if stored == origin.as_bytes() => {}
            Some(stored) => {
                return Err(Error::Invalid(format!(
                    "log at {} belongs to origin {:?}, but the signing key is for {origin:?}",
                    self.path.display(),
                    String::from_utf8_lossy(&stored)
                )));
            }
        }
        // Start from the last published checkpoint: its size and root are
        // what the stored hashes must reproduce.
        let (size, root) = match self.last(CHECKPOINTS)? {
            Some((size, note)) => {
                let text = String::from_utf8(note).map_err(|_| self.corrupt(size, "checkpoint is not UTF-8"))?;
                let note = crate::note::Note::parse(&text)?;
                let cp = Checkpoint::parse(&note.text)?;
                (cp.size, Some(cp.root))
            }
            None => (0, None),
        };
        let frontier = Frontier::load(size, &mut |level, i| self.node(level, i))?;
        if let Some(root) = root
            && frontier.root() != root
        {
            return Err(self.corrupt(size, "stored hashes do not reproduce the last checkpoint's root"));
        }
        // Entries past the checkpoint are replayed through the append path.
        let mut replay = Vec::new();
        for item in self.db.iterator_cf(self.cf(ENTRIES), IteratorMode::From(&size.to_be_bytes(), Direction::Forward)) {
            let (key, bytes) = item.map_err(|e| self.db_err(e))?;
            let index = decode_u64(&key).ok_or_else(|| self.corrupt(size, "entry key is not an index"))?;
            if index != size + replay.len() as u64 {
                return Err(self.corrupt(index, "gap in the entries after the last checkpoint"));
            }
            let salt = self.get(SALTS, &key)?.and_then(|s| s.try_into().ok());
            replay.push(Pending { index, bytes: bytes.to_vec(), salt });
        }
        if !replay.is_empty() {
            tracing::info!(entries = replay.len(), from = size, "replaying the entries written after the last published checkpoint");
        }
        let had_checkpoint = root.is_some();
        let mut state = self.lock();
        state.frontier = frontier;
        state.next = size;
        state.published = size;
        if !replay.is_empty() || !had_checkpoint {
            // An empty log gets its size-0 checkpoint here, so there is
            // always a published checkpoint to serve.
            let (frontier, latest) = self.commit(&state.frontier, &replay, true)?;
            state.frontier = frontier;
            state.next = state.frontier.size();
            state.published = state.next;
            state.latest = latest;
        } else {
            let (_, note) = self.last(CHECKPOINTS)?.ok_or_else(|| self.corrupt(size, "checkpoint vanished"))?;
            let note = String::from_utf8(note).map_err(|_| self.corrupt(size, "checkpoint is not UTF-8"))?;
            let checkpoint = Checkpoint::parse(&crate::note::Note::parse(&note)?.text)?;
            state.latest = Arc::new(SignedCheckpoint { checkpoint, note });
        }
        Ok(())
    }

    /// Extends `frontier` by `batch`, signs the new checkpoint, and writes
    /// entries, salts, subtree hashes and (if `publish`) the checkpoint in
    /// one synced batch. The only writer of tree data, for appends and
    /// recovery alike.
    fn commit(&self, frontier: &Frontier, batch: &[Pending], publish: bool) -> Result<(Frontier, Arc<SignedCheckpoint>), Error> {
        #[cfg(test)]
        tests::PANIC_IN_COMMIT.with(|p| assert!(!p.get(), "injected panic in commit"));
        let mut frontier = frontier.clone();
        let mut wb = WriteBatch::default();
        for p in batch {
            debug_assert_eq!(p.index, frontier.size());
            wb.put_cf(self.cf(ENTRIES), p.index.to_be_bytes(), &p.bytes);
            if let Some(salt) = p.salt {
                wb.put_cf(self.cf(SALTS), p.index.to_be_bytes(), salt);
            }
            frontier.push(merkle::leaf_hash(&p.bytes), |level, i, h| wb.put_cf(self.cf(HASHES), node_key(level, i), h));
        }
        let checkpoint = Checkpoint { origin: self.signer.name().to_owned(), size: frontier.size(), root: frontier.root(), extensions: vec![] };
        let note = self.signer.sign(&checkpoint.body())?;
        if publish {
            wb.put_cf(self.cf(CHECKPOINTS), checkpoint.size.to_be_bytes(), note.as_bytes());
        }
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        // Crash point: before this write returns nothing of the batch is
        // acknowledged; RocksDB applies the batch whole or not at all, so
        // after a crash the log ends at the previous checkpoint or this one.
        self.db.write_opt(wb, &sync).map_err(|e| self.db_err(e))?;
        Ok((frontier, Arc::new(SignedCheckpoint { checkpoint, note })))
    }

    /// Appends an entry; returns once it is durable, with a checkpoint
    /// that includes it. `salt` is the salt of the entry's `released`
    /// digest, kept beside the log.
    pub fn append(&self, entry: &crate::Entry, salt: Option<[u8; 16]>) -> Result<Appended, Error> {
        let bytes = entry.encode();
        let leaf_hash = merkle::leaf_hash(&bytes);
        let mut state = self.lock();
        if let Some(reason) = &state.failed {
            return Err(self.stopped(reason));
        }
        let index = state.next;
        state.next += 1;
        state.pending.push(Pending { index, bytes, salt });
        loop {
            if state.frontier.size() > index {
                return Ok(Appended { index, leaf_hash, checkpoint: state.latest.clone() });
            }
            if let Some(reason) = &state.failed {
                return Err(self.stopped(reason));
            }
            if state.writing {
                state = self.written.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead: commit everything queued so far, ours included.
            state.writing = true;
            let batch = std::mem::take(&mut state.pending);
            let frontier = state.frontier.clone();
            let publish = state.published_at.elapsed() >= self.options.publish_interval;
            drop(state);
            // Crash point: a panic inside the commit (a bug here, or in
            // RocksDB's binding) must not leave `writing` set, or every
            // later append would wait forever. Fail-stop instead: the log
            // refuses appends from now on, saying why; what was durable
            // stays durable, and a restart recovers as after any crash.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit(&frontier, &batch, publish)))
                .unwrap_or_else(|panic| Err(self.stopped(&format!("a write panicked: {}", panic_text(&panic)))));
            state = self.lock();
            state.writing = false;
            match result {
                Ok((frontier, latest)) => {
                    state.frontier = frontier;
                    if publish {
                        state.published = latest.checkpoint.size;
                        state.published_at = std::time::Instant::now();
                    }
                    state.latest = latest;
                }
                Err(e) => state.failed = Some(e.to_string()),
            }
            self.written.notify_all();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AppendState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the log stopped accepting appends, if it did (a failed write).
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// The log's origin line (`<network>/node/MAR`).
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The signing key; node witnesses cosign with it.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Number of durable entries.
    pub fn len(&self) -> u64 {
        self.lock().frontier.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest signed checkpoint (published or not).
    pub fn latest(&self) -> Arc<SignedCheckpoint> {
        self.lock().latest.clone()
    }

    /// The size of the last published checkpoint and how long ago it was
    /// published (or the log opened).
    pub fn published(&self) -> (u64, std::time::Duration) {
        let state = self.lock();
        (state.published, state.published_at.elapsed())
    }

    /// Publishes the latest checkpoint now if it is not yet (on close, and
    /// for callers that want an up-to-date published tree).
    pub fn publish(&self) -> Result<(), Error> {
        let mut state = self.lock();
        if state.published == state.latest.checkpoint.size {
            return Ok(());
        }
        let latest = state.latest.clone();
        self.put_synced(CHECKPOINTS, &latest.checkpoint.size.to_be_bytes(), latest.note.as_bytes())?;
        state.published = latest.checkpoint.size;
        state.published_at = std::time::Instant::now();
        Ok(())
    }

    /// Entry bytes for indices `start..end` (clamped to the durable size).
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, Error> {
        let end = end.min(self.len());
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        for item in self.db.iterator_cf(self.cf(ENTRIES), IteratorMode::From(&start.to_be_bytes(), Direction::Forward)) {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            let index = decode_u64(&key).ok_or_else(|| self.corrupt(start, "entry key is not an index"))?;
            if index >= end {
                break;
            }
            if index != start + out.len() as u64 {
                return Err(self.corrupt(index, "entries have a gap"));
            }
            out.push(value.to_vec());
        }
        if (out.len() as u64) < end - start {
            return Err(self.corrupt(start + out.len() as u64, "entry missing"));
        }
        Ok(out)
    }

    /// Parses the entries `start..end`.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<(u64, crate::Entry)>, Error> {
        self.entries(start, end)?
            .into_iter()
            .zip(start..)
            .map(|(b, i)| crate::Entry::decode(&b).map(|e| (i, e)).map_err(|e| self.corrupt(i, &e.to_string())))
            .collect()
    }

    /// The salt of entry `index`'s released digest, if it has one.
    pub fn salt(&self, index: u64) -> Result<Option<Vec<u8>>, Error> {
        self.get(SALTS, &index.to_be_bytes())
    }

    /// Signed checkpoints with size in `from..=to`, oldest first, at most `limit`.
    pub fn checkpoints(&self, from: u64, to: u64, limit: usize) -> Result<Vec<(u64, String)>, Error> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CHECKPOINTS), IteratorMode::From(&from.to_be_bytes(), Direction::Forward)) {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            let size = decode_u64(&key).ok_or_else(|| self.corrupt(from, "checkpoint key is not a size"))?;
            if size > to || out.len() >= limit {
                break;
            }
            out.push((size, String::from_utf8(value.to_vec()).map_err(|_| self.corrupt(size, "checkpoint is not UTF-8"))?));
        }
        Ok(out)
    }

    /// The signed checkpoint for tree size `size`, if one was made.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>, Error> {
        self.get(CHECKPOINTS, &size.to_be_bytes())?.map(|b| String::from_utf8(b).map_err(|_| self.corrupt(size, "checkpoint is not UTF-8"))).transpose()
    }

    fn check_size(&self, size: u64) -> Result<(), Error> {
        let len = self.len();
        if size > len {
            return Err(Error::Invalid(format!("tree size {size} is beyond the log's {len} entries")));
        }
        Ok(())
    }

    /// The audit path of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(size)?;
        if index >= size {
            return Err(Error::Invalid(format!("leaf {index} is not in a tree of {size}")));
        }
        merkle::inclusion_proof_with(index, size, &mut |l, i| self.node(l, i))
    }

    /// The proof that the tree of `old` leaves is a prefix of that of `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(new)?;
        if old > new {
            return Err(Error::Invalid(format!("old size {old} is larger than new size {new}")));
        }
        merkle::consistency_proof_with(old, new, &mut |l, i| self.node(l, i))
    }

    /// The root of the tree of `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, Error> {
        self.check_size(size)?;
        merkle::range_root(0, size, &mut |l, i| self.node(l, i))
    }

    /// The hash of leaf `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, Error> {
        self.node(0, index)
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, Error> {
        let key = node_key(level, index);
        let value = self.get(HASHES, &key)?.ok_or_else(|| self.corrupt(index, &format!("subtree hash ({level},{index}) missing")))?;
        value.try_into().map_err(|_| self.corrupt(index, &format!("subtree hash ({level},{index}) is not 32 bytes")))
    }

    /// Writes a consistent copy of the log (a RocksDB checkpoint: hard
    /// links where it can) to the new directory `dir`, first publishing the
    /// latest checkpoint so the copy opens without replay. Returns that
    /// checkpoint; the copy holds exactly the entries it covers.
    pub fn backup_to(&self, dir: &Path) -> Result<Arc<SignedCheckpoint>, Error> {
        // Become the writer (appends queue behind us), so the copy holds
        // exactly the entries of the checkpoint returned, without holding
        // the state lock through the flush: readers keep going.
        let mut state = self.lock();
        while state.writing {
            state = self.written.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.writing = true;
        let latest = state.latest.clone();
        let publish = state.published != latest.checkpoint.size;
        drop(state);
        // The same fail-stop as `append` if the checkpoint panics.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if publish {
                self.put_synced(CHECKPOINTS, &latest.checkpoint.size.to_be_bytes(), latest.note.as_bytes())?;
            }
            rocksdb::checkpoint::Checkpoint::new(&self.db).and_then(|c| c.create_checkpoint(dir)).map_err(|e| self.db_err(e))
        }))
        .unwrap_or_else(|panic| Err(self.stopped(&format!("a backup panicked: {}", panic_text(&panic)))));
        let mut state = self.lock();
        state.writing = false;
        if let Err(e @ Error::Stopped { .. }) = &result {
            state.failed = Some(e.to_string());
        }
        if publish && result.is_ok() {
            state.published = latest.checkpoint.size;
            state.published_at = std::time::Instant::now();
        }
        drop(state);
        // Appends that queued meanwhile need a leader.
        self.written.notify_all();
        result.map(|()| latest)
    }

    // ---------------------------------------------------------- witnessing

    /// The last checkpoint of log `origin` that this log's owner cosigned
    /// as a witness.
    pub fn witnessed(&self, origin: &str) -> Result<Option<String>, Error> {
        self.meta_text(META_WITNESSED, origin)
    }

    /// Records, durably, that checkpoint `note` of `origin` is the latest
    /// this witness cosigned. Must return before the cosignature is released.
    pub fn set_witnessed(&self, origin: &str, note: &str) -> Result<(), Error> {
        let key = format!("{META_WITNESSED}{origin}");
        self.put_synced(META, key.as_bytes(), note.as_bytes())
    }

    /// The latest checkpoint of log `origin` that this log's owner verified
    /// as a client (the hub, of each node's log).
    pub fn pinned(&self, origin: &str) -> Result<Option<String>, Error> {
        self.meta_text(META_PINNED, origin)
    }

    /// Records a newer pin. Not synced: after a crash an older pin comes
    /// back, which later checkpoints extend just the same.
    pub fn set_pinned(&self, origin: &str, note: &str) -> Result<(), Error> {
        let key = format!("{META_PINNED}{origin}");
        self.db.put_cf(self.cf(META), key.as_bytes(), note.as_bytes()).map_err(|e| self.db_err(e))
    }

    /// Why log `origin` was found forked, if it was (kept until unpinned).
    pub fn forked(&self, origin: &str) -> Result<Option<String>, Error> {
        self.meta_text(META_FORKED, origin)
    }

    pub fn set_forked(&self, origin: &str, why: &str) -> Result<(), Error> {
        let key = format!("{META_FORKED}{origin}");
        self.put_synced(META, key.as_bytes(), why.as_bytes())
    }

    /// Forgets the pin of log `origin`, and any fork found in it (after its
    /// owner restored a backup and the rollback was accepted). Synced: an
    /// operator's decision.
    pub fn clear_pinned(&self, origin: &str) -> Result<(), Error> {
        let key = format!("{META_PINNED}{origin}");
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.delete_cf_opt(self.cf(META), key.as_bytes(), &sync).map_err(|e| self.db_err(e))?;
        let key = format!("{META_FORKED}{origin}");
        self.db.delete_cf_opt(self.cf(META), key.as_bytes(), &sync).map_err(|e| self.db_err(e))
    }

    /// A text value of the meta column family, keyed `<prefix><origin>`.
    fn meta_text(&self, prefix: &str, origin: &str) -> Result<Option<String>, Error> {
        let key = format!("{prefix}{origin}");
        self.get(META, key.as_bytes())?.map(|b| String::from_utf8(b).map_err(|_| self.corrupt(0, &format!("meta value {key} is not UTF-8")))).transpose()
    }

    /// The latest checkpoint of this log with witness cosignatures.
    pub fn cosigned(&self) -> Result<Option<String>, Error> {
        self.get(META, META_COSIGNED)?.map(|b| String::from_utf8(b).map_err(|_| self.corrupt(0, "cosigned checkpoint is not UTF-8"))).transpose()
    }

    pub fn set_cosigned(&self, note: &str) -> Result<(), Error> {
        self.put_synced(META, META_COSIGNED, note.as_bytes())
    }

    // ---------------------------------------------------------- plumbing

    fn put_synced(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.put_cf_opt(self.cf(cf), key, value, &sync).map_err(|e| self.db_err(e))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.db.get_cf(self.cf(cf), key).map_err(|e| self.db_err(e))
    }

    fn last(&self, cf: &str) -> Result<Option<(u64, Vec<u8>)>, Error> {
        match self.db.iterator_cf(self.cf(cf), IteratorMode::End).next() {
            None => Ok(None),
            Some(Err(e)) => Err(self.db_err(e)),
            Some(Ok((key, value))) => {
                let n = decode_u64(&key).ok_or_else(|| self.corrupt(u64::MAX, &format!("{cf} key is not a number")))?;
                Ok(Some((n, value.to_vec())))
            }
        }
    }

    fn db_err(&self, source: rocksdb::Error) -> Error {
        Error::Db { path: self.path.clone(), source }
    }

    fn stopped(&self, reason: &str) -> Error {
        Error::Stopped { path: self.path.clone(), reason: reason.to_owned() }
    }

    fn corrupt(&self, index: u64, reason: &str) -> Error {
        Error::Corrupt { path: self.path.clone(), index, reason: reason.to_owned() }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // A clean close leaves the latest checkpoint published; after a
        // crash, recovery signs and publishes one instead.
        if !self.publish_on_drop {
            return;
        }
        if let Err(e) = self.publish() {
            tracing::error!(error = %e, "could not publish the last checkpoint on close");
        }
    }
}

fn node_key(level: u32, index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = level as u8;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

fn decode_u64(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// What a caught panic said, when it said it as text.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic.downcast_ref::<&str>().map(|s| (*s).to_owned()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Entry;
    use crate::note::Note;

    thread_local! {
        /// Makes the next commit on this thread panic.
        pub(super) static PANIC_IN_COMMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    #[test]
    fn a_panic_while_writing_stops_the_log_instead_of_hanging_it() {
        let dir = tempfile::tempdir().unwrap();
        let skey = key().to_skey();
        let log = Log::open_with(dir.path(), Signer::from_skey(&skey).unwrap(), every_batch()).unwrap();
        log.append(&Entry::now("query", "p"), None).unwrap();
        PANIC_IN_COMMIT.with(|p| p.set(true));
        let err = log.append(&Entry::now("query", "p"), None).unwrap_err();
        PANIC_IN_COMMIT.with(|p| p.set(false));
        assert!(err.to_string().contains("a write panicked: injected panic in commit"), "{err}");
        // Fail-stop: later appends are refused at once (before the fix they
        // waited forever on the flag the panic left set).
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(log);
        let l = log.clone();
        std::thread::spawn(move || tx.send(l.append(&Entry::now("query", "p"), None).map(|a| a.index)));
        let later = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("an append after the panic hung");
        assert!(matches!(later, Err(Error::Stopped { .. })), "{later:?}");
        assert!(log.failure().unwrap().contains("panicked"));
        assert_eq!(log.len(), 1, "what was durable stays");
        drop(log);
        // A restart recovers as after any crash.
        let log = Log::open_with(dir.path(), Signer::from_skey(&skey).unwrap(), every_batch()).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log.append(&Entry::now("query", "p"), None).unwrap().index, 1);
    }

    fn every_batch() -> LogOptions {
        LogOptions { publish_interval: std::time::Duration::ZERO }
    }

    fn key() -> Signer {
        Signer::from_skey(&Signer::generate("alo/node/MAR").unwrap().to_skey()).unwrap()
    }

    #[test]
    fn appends_are_dense_checkpointed_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let skey = key().to_skey();
        let vkey = Signer::from_skey(&skey).unwrap().verifier();
        let mut leaves = Vec::new();
        {
            let log = Log::open_with(dir.path(), Signer::from_skey(&skey).unwrap(), every_batch()).unwrap();
            assert_eq!(log.latest().checkpoint.size, 0);
            for i in 0..5 {
                let mut e = Entry::now("query", "spiffe://alo/hub/alo");
                e.detail = format!("event {i}");
                let a = log.append(&e, Some([i as u8; 16])).unwrap();
                assert_eq!(a.index, i);
                assert!(a.checkpoint.checkpoint.size > i);
                leaves.push(merkle::leaf_hash(&e.encode()));
            }
        }
        let log = std::sync::Arc::new(Log::open_with(dir.path(), Signer::from_skey(&skey).unwrap(), every_batch()).unwrap());
        assert_eq!(log.len(), 5);
        assert_eq!(log.latest().checkpoint.root, merkle::root(&leaves));
        // Concurrent appenders share batches and still get dense indices.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || (0..40).map(|_| log.append(&Entry::now("q", "p"), None).unwrap().index).collect::<Vec<_>>())
            })
            .collect();
        let mut indices: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        indices.sort_unstable();
        assert_eq!(indices, (5..325).collect::<Vec<_>>());
        let all: Vec<Hash> = log.entries(0, 325).unwrap().iter().map(|b| merkle::leaf_hash(b)).collect();
        assert_eq!(log.latest().checkpoint.root, merkle::root(&all));
        assert_eq!(log.salt(3).unwrap(), Some(vec![3; 16]));
        assert_eq!(log.read(1, 3).unwrap()[0].1.detail, "event 1");
        // Every stored checkpoint is signed and matches the tree at its size.
        let cps = log.checkpoints(0, u64::MAX, 10_000).unwrap();
        assert!(cps.len() >= 7, "one checkpoint per batch");
        for (size, note) in &cps {
            let (cp, _) = Checkpoint::open(note, &vkey).unwrap();
            assert_eq!(cp.size, *size);
            assert_eq!(cp.root, merkle::root(&all[..*size as usize]));
        }
        // Proofs from stored subtrees verify against those checkpoints.
        for (size, note) in cps.iter().filter(|(s, _)| *s > 0) {
            let root = Checkpoint::parse(&Note::parse(note).unwrap().text).unwrap().root;
            for index in [0, size / 2, size - 1] {
                let proof: Vec<Vec<u8>> = log.inclusion_proof(index, *size).unwrap().iter().map(|h| h.to_vec()).collect();
                merkle::verify_inclusion(index, *size, &all[index as usize], &proof, &root).unwrap();
            }
            let proof: Vec<Vec<u8>> = log.consistency_proof(*size, 325).unwrap().iter().map(|h| h.to_vec()).collect();
            merkle::verify_consistency(*size, 325, &root, &log.latest().checkpoint.root, &proof).unwrap();
        }
        assert!(log.inclusion_proof(0, 326).is_err(), "no proofs beyond the durable tree");
    }

    #[test]
    fn unpublished_checkpoints_are_recovered_by_replay_and_published_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let skey = key().to_skey();
        let hour = LogOptions { publish_interval: std::time::Duration::from_secs(3600) };
        let receipt_root;
        {
            let log = Log::open_with(dir.path(), Signer::from_skey(&skey).unwrap(), hour.clone()).unwrap();
            for _ in 0..10 {
                log.append(&Entry::now("q", "p"), None).unwrap();
            }
            // Signed for receipts, not yet published.
            assert_eq!(log.latest().checkpoint.size, 10);
            assert_eq!(log.checkpoints(0, u64::MAX, 100).unwrap().len(), 1, "only the size-0 one");
            receipt_root = log.latest().checkpoint.root;
            // A crash: the process dies without closing the log.
            let mut log = log;
            log.publish_on_drop = false;
        }
        {
            let log = Log::open_with(dir.path(), Signer::from_skey(&skey).unwrap(), hour.clone()).unwrap();
            // Recovery replayed the ten entries and published their checkpoint.
            let cps = log.checkpoints(0, u64::MAX, 100).unwrap();
            assert_eq!(cps.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [0, 10]);
            assert_eq!(log.root_at(10).unwrap(), receipt_root);
            log.append(&Entry::now("q", "p"), None).unwrap();
        }
        let log = Log::open_with(dir.path(), Signer::from_skey(&skey).unwrap(), hour).unwrap();
        assert_eq!(log.checkpoints(0, u64::MAX, 100).unwrap().last().unwrap().0, 11, "published on close");
    }

    #[test]
    fn a_log_refuses_a_key_for_another_origin() {
        let dir = tempfile::tempdir().unwrap();
        drop(Log::open(dir.path(), key()).unwrap());
        let e = Log::open(dir.path(), Signer::generate("alo/node/EGY").unwrap()).unwrap_err();
        assert!(e.to_string().contains("belongs to origin \"alo/node/MAR\""), "{e}");
    }
}
