//! Tabadul's exchange record: the append-only event store that node and hub
//! write every decision to.
//!
//! Each event (who asked, the query digest, the decision, the rule and the
//! policy version) is appended under a dense, gap-free index in its own
//! RocksDB database. Events are never updated or deleted through this API.
//!
//! It does not yet make a Merkle tree, sign checkpoints or serve proofs:
//! that is the signed-log work, which will hash these same entries as leaves.
//! Appends go through RocksDB's write-ahead log, so an acknowledged event
//! survives the process being killed; surviving power loss needs the
//! batched fsync that arrives with the signed log.
#![forbid(unsafe_code)]

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
#[derive(Debug)]
pub struct EventStore {
    path: PathBuf,
    db: rocksdb::DB,
    /// Index of the next event; the lock also serialises appends so that
    /// indices stay dense and ordered.
    next: Mutex<u64>,
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
        Ok(EventStore { path: path.to_owned(), db, next: Mutex::new(next) })
    }

    /// Appends an event and returns its index. When this returns, the event
    /// is in RocksDB's write-ahead log.
    pub fn append(&self, event: &Event) -> Result<u64, Error> {
        let bytes = serde_json::to_vec(event).expect("an Event always serialises");
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let index = *next;
        // Crash point: before this put the event does not exist; after it,
        // it exists under `index` and recovery will start after it.
        self.db
            .put(index.to_be_bytes(), bytes)
            .map_err(|source| Error::Db { path: self.path.clone(), source })?;
        *next = index + 1;
        Ok(index)
    }

    /// Number of events stored.
    pub fn len(&self) -> u64 {
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
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
        let events = store.read(1, 3).unwrap();
        assert_eq!(events.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(events[0].1.detail, "event 1");
    }
}
