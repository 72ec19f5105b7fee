//! Tabadul's exchange record: the append-only event store that node and hub
//! write every decision to.
//!
//! Each event (who asked, the query digest, the decision, the rule and the
//! policy version) is appended under a dense, gap-free index in its own
//! RocksDB database. Events are never updated or deleted through this API.
//!
//! [`merkle`] holds the RFC 6962 / 9162 tree and proof maths (pure
//! functions) that the signed log will apply to these entries; the store
//! does not yet build a tree, sign checkpoints or serve proofs.
//!
//! Appends are group-committed through RocksDB's write-ahead log, so an
//! acknowledged event survives the process being killed; surviving power
//! loss needs the fsync that arrives with the signed log.
#![forbid(unsafe_code)]

pub mod merkle;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Version of the event encoding; bumped on any incompatible change.
pub const EVENT_FORMAT: u32 = 1;

/// Why the event store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("event store at {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    /// An earlier write failed; the store accepts no more appends until reopened.
    #[error("event store at {path} stopped after a failed write: {reason}")]
    Stopped { path: PathBuf, reason: String },
    #[error("event store at {path}: entry {index} is corrupt: {reason}")]
    Corrupt { path: PathBuf, index: u64, reason: String },
}

/// One exchange event. No data values ever go in here: only who, what was
/// asked (as a digest), and what was decided under which rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Encoding version ([`EVENT_FORMAT`]).
    pub v: u32,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// What happened: `query`, `describe`, `withdraw`, `reinstate`, `import`,
    /// `policy-load`, `federated-query`.
    pub kind: String,
    /// The verified identity of the requester (or `local-admin`).
    pub peer: String,
    pub query_digest: String,
    /// `allowed`, `partly-allowed`, `refused`, `ok`, `failed`.
    pub decision: String,
    pub rule_id: String,
    pub policy_version: String,
    /// A short human explanation (a refusal reason, member statuses, ...).
    pub detail: String,
}

impl Event {
    /// An event stamped with the current time.
    pub fn now(kind: &str, peer: &str) -> Self {
        Event {
            v: EVENT_FORMAT,
            time_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
            kind: kind.to_owned(),
            peer: peer.to_owned(),
            query_digest: String::new(),
            decision: String::new(),
            rule_id: String::new(),
            policy_version: String::new(),
            detail: String::new(),
        }
    }
}

/// The append-only store.
///
/// Appends are group-committed: concurrent callers queue their events, one
/// of them writes everything queued as a single RocksDB batch, and each
/// caller returns once the batch holding its event is written. A failed
/// write stops the store (every later append fails too), because the
/// indices handed out after it could otherwise leave a gap.
#[derive(Debug)]
pub struct EventStore {
    path: PathBuf,
    db: rocksdb::DB,
    state: Mutex<AppendState>,
    written: std::sync::Condvar,
}

#[derive(Debug)]
struct AppendState {
    /// Index the next appended event gets.
    next: u64,
    /// Every event below this index is written.
    durable: u64,
    /// Queued, not yet written: (index, encoded event).
    pending: Vec<(u64, Vec<u8>)>,
    /// Whether some caller is writing a batch right now.
    writing: bool,
    /// Set when a write failed; the store then refuses appends.
    failed: Option<String>,
}

impl EventStore {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = rocksdb::DB::open(&opts, path).map_err(|source| Error::Db { path: path.to_owned(), source })?;
        // Recovery: the next index is one past the last key on disk, the same
        // rule a normal append uses, so there is nothing separate to get wrong.
        let next = match db.iterator(rocksdb::IteratorMode::End).next() {
            Some(Ok((key, _))) => decode_index(&key).map(|i| i + 1).ok_or_else(|| Error::Corrupt {
                path: path.to_owned(),
                index: u64::MAX,
                reason: format!("key of length {} is not an index", key.len()),
            })?,
            Some(Err(source)) => return Err(Error::Db { path: path.to_owned(), source }),
            None => 0,
        };
        let state = AppendState { next, durable: next, pending: Vec::new(), writing: false, failed: None };
        Ok(EventStore { path: path.to_owned(), db, state: Mutex::new(state), written: std::sync::Condvar::new() })
    }

    /// Appends an event and returns its index. When this returns, the event
    /// is in RocksDB's write-ahead log.
    pub fn append(&self, event: &Event) -> Result<u64, Error> {
        let bytes = serde_json::to_vec(event).expect("an Event always serialises");
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = &state.failed {
            return Err(self.stopped(reason));
        }
        let index = state.next;
        state.next += 1;
        state.pending.push((index, bytes));
        loop {
            if state.durable > index {
                return Ok(index);
            }
            if let Some(reason) = &state.failed {
                return Err(self.stopped(reason));
            }
            if state.writing {
                state = self.written.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead: write everything queued so far, ours included.
            state.writing = true;
            let batch_events = std::mem::take(&mut state.pending);
            drop(state);
            let mut batch = rocksdb::WriteBatch::default();
            for (i, bytes) in &batch_events {
                batch.put(i.to_be_bytes(), bytes);
            }
            // Crash point: before this write none of the batch exists; after
            // it, all of it does, and recovery starts after its last index.
            let result = self.db.write(batch);
            state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.writing = false;
            match result {
                Ok(()) => state.durable = batch_events.last().map_or(state.durable, |(i, _)| i + 1),
                Err(e) => state.failed = Some(e.to_string()),
            }
            self.written.notify_all();
        }
    }

    fn stopped(&self, reason: &str) -> Error {
        Error::Stopped { path: self.path.clone(), reason: reason.to_owned() }
    }

    /// Number of events stored.
    pub fn len(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).durable
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events with index in `start..end`, in order.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<(u64, Event)>, Error> {
        let mut out = Vec::new();
        let from = start.to_be_bytes();
        let iter = self.db.iterator(rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|source| Error::Db { path: self.path.clone(), source })?;
            let index = decode_index(&key).ok_or_else(|| self.corrupt(u64::MAX, "bad key"))?;
            if index >= end {
                break;
            }
            let event = serde_json::from_slice(&value).map_err(|e| self.corrupt(index, &e.to_string()))?;
            out.push((index, event));
        }
        Ok(out)
    }

    fn corrupt(&self, index: u64, reason: &str) -> Error {
        Error::Corrupt { path: self.path.clone(), index, reason: reason.to_owned() }
    }
}

fn decode_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_dense_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EventStore::open(dir.path()).unwrap();
            for i in 0..5 {
                let mut e = Event::now("query", "spiffe://alo/hub/alo");
                e.detail = format!("event {i}");
                assert_eq!(store.append(&e).unwrap(), i);
            }
        }
        let store = EventStore::open(dir.path()).unwrap();
        assert_eq!(store.len(), 5);
        let e = Event::now("query", "x");
        assert_eq!(store.append(&e).unwrap(), 5);
        // Concurrent appenders share batches and still get dense indices.
        let store = std::sync::Arc::new(store);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || (0..50).map(|_| store.append(&Event::now("q", "p")).unwrap()).collect::<Vec<_>>())
            })
            .collect();
        let mut indices: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        indices.sort_unstable();
        assert_eq!(indices, (6..406).collect::<Vec<_>>());
        assert_eq!(store.len(), 406);
        assert_eq!(store.read(0, 406).unwrap().len(), 406);
        let events = store.read(1, 3).unwrap();
        assert_eq!(events.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(events[0].1.detail, "event 1");
    }
}
