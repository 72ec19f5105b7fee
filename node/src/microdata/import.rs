//! Importing unit records from CSV, all or nothing: the file is parsed and
//! validated by `tabadul_formats::microdata` (every problem with file, line,
//! column and reason), then stored in one synced batch, so a rejected
//! import writes nothing.

use std::path::Path;

use rocksdb::{WriteBatch, WriteOptions};
use tabadul_proto::Dictionary;

use tabadul_formats::microdata::parse_records;

use super::{CHUNK, KEY_COLUMN, Schema, TableMeta, meta};
use crate::Error;
use crate::store::{CF_MICRO, Store};
use crate::store::{micro_chunk_key as chunk_key, micro_meta_key as meta_key};

static IMPORT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What an import stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroImportReport {
    pub table: String,
    pub records: u64,
    /// Records in the table after the import.
    pub total: u64,
    pub validate_time: std::time::Duration,
    pub write_time: std::time::Duration,
}

/// Imports the records in `path` into microdata table `table`.
pub fn import_records(store: &Store, dict: &Dictionary, table: &str, path: &Path, progress: &indicatif::ProgressBar) -> Result<MicroImportReport, Error> {
    let started = std::time::Instant::now();
    let t = dict.microdata(table).ok_or_else(|| {
        let known: Vec<&str> = dict.microdata_tables().map(|t| t.id.as_str()).collect();
        Error::Invalid(format!("unknown microdata table {table:?} (the dictionary has {})", known.join(", ")))
    })?;
    let schema = Schema::of(dict, t);
    // Two imports at once would both append at the same chunk numbers.
    let _one_at_a_time = IMPORT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut meta = meta(store, table)?;
    let columns = parse_records(&schema, &mut meta.periods, path, progress)?;
    let validate_time = started.elapsed();
    let records = columns.len();

    // Keys are drawn from the OS's CSPRNG: a record key an outsider could
    // predict would let them predict the cell-key noise.
    let mut keys = vec![0u8; records];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut keys)
        .map_err(|_| Error::Invalid("the system random number generator failed".into()))?;

    let cf = store.cf(CF_MICRO);
    let mut batch = WriteBatch::default();
    for (i, start) in (0..records).step_by(CHUNK).enumerate() {
        let end = (start + CHUNK).min(records);
        let chunk = meta.chunks + u32::try_from(i).map_err(|_| Error::Invalid("too many chunks".into()))?;
        for (name, col) in schema.categorical.iter().zip(&columns.categorical) {
            let bytes: Vec<u8> = col[start..end].iter().flat_map(|v| v.to_le_bytes()).collect();
            batch.put_cf(cf, chunk_key(table, chunk, name), bytes);
        }
        for (name, col) in schema.numeric.iter().zip(&columns.numeric) {
            let bytes: Vec<u8> = col[start..end].iter().flat_map(|v| v.to_le_bytes()).collect();
            batch.put_cf(cf, chunk_key(table, chunk, name), bytes);
        }
        batch.put_cf(cf, chunk_key(table, chunk, KEY_COLUMN), &keys[start..end]);
    }
    meta.import_starts.push(meta.chunks);
    meta.chunks += u32::try_from(records.div_ceil(CHUNK)).map_err(|_| Error::Invalid("too many chunks".into()))?;
    meta.records += records as u64;
    meta.imports += 1;
    let encoded = serde_json::to_vec(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
    batch.put_cf(cf, meta_key(table), encoded);
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    // Crash point: one batch, so after a crash either every chunk and the
    // new meta are there, or none is (chunks beyond meta.chunks are never read).
    store.db().write_opt(batch, &wo).map_err(|e| store.err(e))?;
    store.invalidate_micro(table);
    Ok(MicroImportReport {
        table: table.to_owned(),
        records: records as u64,
        total: meta.records,
        validate_time,
        write_time: started.elapsed() - validate_time,
    })
}

/// Parses and validates a records file for `table` as [`import_records`]
/// does, writing nothing: the number of records, or every problem found.
pub fn check_records(dict: &Dictionary, table: &str, path: &Path) -> Result<u64, Error> {
    let t = dict.microdata(table).ok_or_else(|| Error::Invalid(format!("unknown microdata table {table:?}")))?;
    let schema = Schema::of(dict, t);
    let columns = parse_records(&schema, &mut TableMeta::default().periods, path, &indicatif::ProgressBar::hidden())?;
    Ok(columns.len() as u64)
}
