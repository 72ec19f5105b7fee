//! The node's observation store in RocksDB.
//!
//! Keys are `dataflow 0x00 code 0x1f code ... 0x1f time_period`, so one
//! dataflow's observations are contiguous and sorted by series key then
//! period. Values are `f64 LE | unit_mult i8 | obs_status bytes`. The
//! encoding is written once, in `tabadul_formats::encoding`, because
//! imports arrive already encoded. Imports
//! arrive as sorted SST files that RocksDB ingests in one step.
//! Withdrawals ("reservations") live in their own column family and are read
//! on every query, so a withdrawal applies to the very next one.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteOptions};
use serde::{Deserialize, Serialize};

use tabadul_formats::encoding::KEY_SEP;

use crate::Error;

const CF_WITHDRAWALS: &str = "withdrawals";
/// Microdata column chunks and table metadata (see [`crate::microdata`]).
pub(crate) const CF_MICRO: &str = "micro";

/// Where a microdata table's meta lives in `CF_MICRO`.
pub(crate) fn micro_meta_key(table: &str) -> Vec<u8> {
    format!("m\x1f{table}").into_bytes()
}

/// Where one chunk of one column of a microdata table lives in `CF_MICRO`.
pub(crate) fn micro_chunk_key(table: &str, chunk: u32, column: &str) -> Vec<u8> {
    format!("c\x1f{table}\x1f{chunk:08x}\x1f{column}").into_bytes()
}
/// The release ledger and differential-privacy budgets (see [`crate::ledger`]).
pub(crate) const CF_LEDGER: &str = "ledger";
/// Codes plus the period: more than any dataflow has.
const MAX_KEY_PARTS: usize = 32;

/// One observation, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub dataflow: String,
    /// Codes in the dataflow's dimension order (REF_AREA first).
    pub key: Vec<String>,
    pub time_period: String,
    pub value: f64,
    pub unit_mult: i8,
    pub obs_status: String,
}

/// A reservation: a dataflow, or the series of it matching a key pattern,
/// taken out of circulation by the national team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub dataflow: String,
    /// SDMX key pattern without TIME_PERIOD (`MAR.F..`); empty = whole dataflow.
    pub series_key: String,
    pub reason: String,
    pub at: String,
}

impl Withdrawal {
    pub fn id(&self) -> String {
        if self.series_key.is_empty() { self.dataflow.clone() } else { format!("{}/{}", self.dataflow, self.series_key) }
    }

    /// Whether this withdrawal covers a series (codes in dimension order).
    pub fn covers(&self, dataflow: &str, key: &[String]) -> bool {
        if self.dataflow != dataflow {
            return false;
        }
        if self.series_key.is_empty() {
            return true;
        }
        let parts: Vec<&str> = self.series_key.split('.').collect();
        parts.len() == key.len() && parts.iter().zip(key).all(|(p, k)| p.is_empty() || p.split('+').any(|alt| alt == k))
    }
}

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    db: DB,
    micro_cache: MicroCache,
}

/// Microdata columns already read, per (table, column): one byte buffer per
/// chunk. Records are append-only and an import invalidates its table, so
/// a cached column is never stale.
#[derive(Default)]
struct MicroCache(std::sync::Mutex<std::collections::HashMap<(String, String), ColumnChunks>>);

/// One microdata column: a byte buffer per chunk.
pub(crate) type ColumnChunks = std::sync::Arc<Vec<std::sync::Arc<[u8]>>>;

impl std::fmt::Debug for MicroCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "MicroCache({n} columns)")
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, Error> {
        // Microdata and the release ledger live here: 0700 before RocksDB
        // fills it (the import CLI opens it before any server ran).
        crate::private::create_dir(path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, Options::default()),
            ColumnFamilyDescriptor::new(CF_WITHDRAWALS, Options::default()),
            ColumnFamilyDescriptor::new(CF_MICRO, Options::default()),
            ColumnFamilyDescriptor::new(CF_LEDGER, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| store_err(path, e))?;
        // An import killed while writing its SST file leaves it behind. We
        // hold RocksDB's lock, so no other import can be writing one now.
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("import-") && name.ends_with(".sst.tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(Store { path: path.to_owned(), db, micro_cache: MicroCache::default() })
    }

    pub(crate) fn err(&self, e: rocksdb::Error) -> Error {
        store_err(&self.path, e)
    }

    /// One column of a microdata table, every chunk, from the cache or the store.
    pub(crate) fn micro_column(&self, table: &str, column: &str, chunks: u32) -> Result<ColumnChunks, Error> {
        let key = (table.to_owned(), column.to_owned());
        if let Some(c) = self.micro_cache.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && c.len() == chunks as usize
        {
            return Ok(c.clone());
        }
        let cf = self.cf(CF_MICRO);
        let keys: Vec<Vec<u8>> = (0..chunks).map(|c| micro_chunk_key(table, c, column)).collect();
        let mut out = Vec::with_capacity(keys.len());
        for (k, got) in keys.iter().zip(self.db.batched_multi_get_cf(cf, &keys, false)) {
            let value = got.map_err(|e| self.err(e))?.ok_or_else(|| {
                Error::Invalid(format!("microdata table {table}: chunk {} of column {column} is missing from the store", String::from_utf8_lossy(k)))
            })?;
            out.push(std::sync::Arc::<[u8]>::from(&value[..]));
        }
        let out = std::sync::Arc::new(out);
        self.micro_cache.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key, out.clone());
        Ok(out)
    }

    /// Forgets the cached columns of `table` (after an import).
    pub(crate) fn invalidate_micro(&self, table: &str) {
        self.micro_cache.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|(t, _), _| t != table);
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("the store opens every column family it names")
    }

    /// Writes observations atomically (imports use [`Store::put_sorted`]).
    #[cfg(test)]
    pub fn put_all(&self, observations: &[Observation]) -> Result<(), Error> {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = observations
            .iter()
            .map(|o| {
                let (mut key, mut value) = (Vec::new(), Vec::new());
                tabadul_formats::encoding::append_key(&mut key, &o.dataflow, o.key.iter().map(String::as_str), &o.time_period);
                tabadul_formats::encoding::append_value(&mut value, o.value, o.unit_mult, &o.obs_status);
                (key, value)
            })
            .collect();
        entries.sort();
        entries.dedup_by(|a, b| a.0 == b.0);
        self.put_sorted(vec![entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))])
    }

    /// Writes already-encoded entries (see [`crate::import`]) as one atomic
    /// step. Each run must be in strictly increasing key order, and every
    /// key of a run must sort before every key of the next.
    ///
    /// Each run goes into its own SST file, written on its own thread, and
    /// RocksDB ingests them all in one call: an ingestion is recorded in the
    /// manifest as a unit, so after a crash either every entry is there or
    /// none is, and a bulk load skips the memtable and the write-ahead log.
    pub fn put_sorted<'a, I>(&self, runs: Vec<I>) -> Result<(), Error>
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Send,
    {
        let paths: Vec<PathBuf> = (0..runs.len()).map(|i| self.path.join(format!("import-{}-{i}.sst.tmp", std::process::id()))).collect();
        let written: Vec<Result<bool, rocksdb::Error>> = std::thread::scope(|scope| {
            let writers: Vec<_> = runs.into_iter().zip(&paths).map(|(run, path)| scope.spawn(move || write_sst(path, run))).collect();
            writers.into_iter().map(|w| w.join().expect("an SST writer thread panicked")).collect()
        });
        let remove_all = || paths.iter().for_each(|p| drop(std::fs::remove_file(p)));
        let mut files = Vec::new();
        for (result, path) in written.into_iter().zip(&paths) {
            match result {
                Ok(true) => files.push(path),
                Ok(false) => {}
                Err(e) => {
                    remove_all();
                    return Err(self.err(e));
                }
            }
        }
        if files.is_empty() {
            remove_all();
            return Ok(());
        }
        let mut ingest = rocksdb::IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        // Crash point: before the manifest records the ingestion nothing of
        // this import is visible; after it, all of it is.
        let result = self.db.ingest_external_file_opts(&ingest, files).map_err(|e| self.err(e));
        remove_all();
        result
    }

    /// All observations of a dataflow, in key order.
    pub fn scan(&self, dataflow: &str, each: impl FnMut(Observation)) -> Result<(), Error> {
        self.scan_where(dataflow, |_, _| true, each)
    }

    /// The observations of a dataflow for which `keep(codes, time_period)`
    /// holds, in key order. `keep` sees the raw key, so cells a query does
    /// not want cost no allocation.
    pub fn scan_where(&self, dataflow: &str, mut keep: impl FnMut(&[&str], &str) -> bool, mut each: impl FnMut(Observation)) -> Result<(), Error> {
        let mut prefix = dataflow.as_bytes().to_vec();
        prefix.push(0);
        let corrupt = || Error::Invalid(format!("store at {}: corrupt entry in {dataflow}", self.path.display()));
        let iter = self.db.iterator(IteratorMode::From(&prefix, rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let text = std::str::from_utf8(&k[prefix.len()..]).map_err(|_| corrupt())?;
            let mut parts: [&str; MAX_KEY_PARTS] = [""; MAX_KEY_PARTS];
            let mut n = 0;
            for part in text.split(KEY_SEP as char) {
                *parts.get_mut(n).ok_or_else(corrupt)? = part;
                n += 1;
            }
            let Some((time, codes)) = parts[..n].split_last() else { return Err(corrupt()) };
            if keep(codes, time) {
                each(decode(dataflow, &k[prefix.len()..], &v).ok_or_else(corrupt)?);
            }
        }
        Ok(())
    }

    /// Where the store lives on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a consistent copy of the store (a RocksDB checkpoint) to the
    /// new directory `dir`.
    pub fn backup_to(&self, dir: &Path) -> Result<(), Error> {
        rocksdb::checkpoint::Checkpoint::new(&self.db).and_then(|c| c.create_checkpoint(dir)).map_err(|source| Error::Store { path: dir.to_owned(), source })
    }

    /// Number of observations in the store at `path` (a backup, say),
    /// opened read-only so that it is left byte for byte as it was.
    pub fn count_at(path: &Path) -> Result<u64, Error> {
        let cfs = [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, CF_WITHDRAWALS, CF_MICRO, CF_LEDGER];
        let db = DB::open_cf_for_read_only(&Options::default(), path, cfs, false).map_err(|e| store_err(path, e))?;
        let mut n = 0;
        for item in db.iterator(IteratorMode::Start) {
            item.map_err(|e| store_err(path, e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Number of observations stored (exact; walks the keys).
    pub fn count(&self) -> Result<u64, Error> {
        let mut n = 0;
        for item in self.db.iterator(IteratorMode::Start) {
            item.map_err(|e| self.err(e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Every key and value of every column family, for tests that prove an
    /// import or a refused query changed nothing.
    pub fn snapshot_digest(&self) -> Result<String, Error> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for cf in [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, CF_WITHDRAWALS, CF_MICRO, CF_LEDGER] {
            ctx.update(cf.as_bytes());
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (k, v) = item.map_err(|e| self.err(e))?;
                ctx.update(&(k.len() as u64).to_le_bytes());
                ctx.update(&k);
                ctx.update(&(v.len() as u64).to_le_bytes());
                ctx.update(&v);
            }
        }
        Ok(hex::encode(ctx.finish()))
    }

    pub fn withdraw(&self, w: &Withdrawal) -> Result<(), Error> {
        let cf = self.cf_withdrawals();
        let value = serde_json::to_vec(w).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_cf_opt(cf, w.id().as_bytes(), value, &wo).map_err(|e| self.err(e))
    }

    /// Removes a withdrawal; returns whether there was one.
    pub fn reinstate(&self, dataflow: &str, series_key: &str) -> Result<bool, Error> {
        let probe = Withdrawal { dataflow: dataflow.into(), series_key: series_key.into(), reason: String::new(), at: String::new() };
        let cf = self.cf_withdrawals();
        let existed = self.db.get_cf(cf, probe.id().as_bytes()).map_err(|e| self.err(e))?.is_some();
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.delete_cf_opt(cf, probe.id().as_bytes(), &wo).map_err(|e| self.err(e))?;
        Ok(existed)
    }

    pub fn withdrawals(&self) -> Result<Vec<Withdrawal>, Error> {
        let cf = self.cf_withdrawals();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (_, v) = item.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(&v).map_err(|e| Error::Invalid(format!("corrupt withdrawal: {e}")))?);
        }
        Ok(out)
    }

    fn cf_withdrawals(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_WITHDRAWALS).expect("opened with this column family")
    }
}

fn store_err(path: &Path, source: rocksdb::Error) -> Error {
    Error::Store { path: path.to_owned(), source }
}

/// Writes one sorted run to an SST file; `false` when the run was empty.
fn write_sst<'a>(path: &Path, run: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Result<bool, rocksdb::Error> {
    // A leftover from an import killed while writing this file is garbage.
    let _ = std::fs::remove_file(path);
    let opts = Options::default();
    let mut writer = rocksdb::SstFileWriter::create(&opts);
    writer.open(path)?;
    let mut any = false;
    for (k, v) in run {
        writer.put(k, v)?;
        any = true;
    }
    if any {
        writer.finish()?;
    }
    Ok(any)
}

fn decode(dataflow: &str, key: &[u8], value: &[u8]) -> Option<Observation> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts: Vec<String> = text.split(KEY_SEP as char).map(str::to_owned).collect();
    let time_period = parts.pop()?;
    if value.len() < 9 {
        return None;
    }
    Some(Observation {
        dataflow: dataflow.to_owned(),
        key: parts,
        time_period,
        value: f64::from_le_bytes(value[..8].try_into().ok()?),
        unit_mult: value[8] as i8,
        obs_status: String::from_utf8(value[9..].to_vec()).ok()?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn obs(key: &[&str], time: &str, value: f64) -> Observation {
        Observation {
            dataflow: "UNE_RATE".into(),
            key: key.iter().map(|s| s.to_string()).collect(),
            time_period: time.into(),
            value,
            unit_mult: 0,
            obs_status: "A".into(),
        }
    }

    #[test]
    fn round_trip_and_prefix_isolation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = obs(&["MAR", "F"], "2024", 11.5);
        let mut other = obs(&["MAR", "F"], "2024", 1.0);
        other.dataflow = "UNE_RATE2".into();
        store.put_all(&[a.clone(), other]).unwrap();
        let mut seen = Vec::new();
        store.scan("UNE_RATE", |o| seen.push(o)).unwrap();
        assert_eq!(seen, vec![a]);
    }

    #[test]
    fn withdrawal_patterns() {
        let w = Withdrawal { dataflow: "UNE_RATE".into(), series_key: "MAR.F+M.".into(), reason: "r".into(), at: "t".into() };
        let key = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(w.covers("UNE_RATE", &key(&["MAR", "F", "Y15T24"])));
        assert!(!w.covers("UNE_RATE", &key(&["MAR", "T", "Y15T24"])));
        assert!(!w.covers("LF_PERS", &key(&["MAR", "F", "Y15T24"])));
    }
}
