//! Unit-record microdata: the records that never leave the node.
//!
//! A table (declared under `[microdata.*]` in the dictionary) is stored in
//! column chunks of up to [`CHUNK`] records: one RocksDB value per chunk and
//! column, so a scan reads only the columns a query touches, as flat arrays,
//! never a record at a time. Categorical columns (TIME_PERIOD and the
//! dimensions) hold `u16` code indices; numeric columns `f64`; every record
//! also has a permanent random key byte (`_KEY`) drawn at import, which the
//! cell-key method sums ([`crate::disclosure`]). Records are only ever
//! appended, so keys never change.
//!
//! Layout in the store's `micro` column family:
//! - `m 0x1f <table>`: [`TableMeta`] (JSON);
//! - `c 0x1f <table> 0x1f <chunk: 8 hex> 0x1f <column>`: one column of one chunk;
//! - `s 0x1f <table>`: the secret that keys its magnitude noise ([`noise_secret`]).
//!
//! An import is validated in full first and then written as one synced
//! `WriteBatch` (chunks and the new meta together): all or nothing.

mod import;
mod scan;

pub use import::{MicroImportReport, check_records, import_records};
pub use scan::{AtomStats, Grouping, TOP_K, scan};

use serde::{Deserialize, Serialize};
pub use tabadul_formats::microdata::Schema;
use tabadul_proto::Dictionary;

use crate::Error;
use crate::store::{CF_MICRO, Store, micro_meta_key as meta_key};

/// Records per chunk.
pub const CHUNK: usize = 65_536;
/// The column of record keys.
pub const KEY_COLUMN: &str = "_KEY";

/// What the store knows about one table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TableMeta {
    pub records: u64,
    pub chunks: u32,
    /// TIME_PERIOD codes by stored index.
    pub periods: Vec<String>,
    pub imports: u32,
    /// The first chunk of each import, in order (records never move).
    #[serde(default)]
    pub import_starts: Vec<u32>,
}

impl TableMeta {
    /// The import (0-based) that wrote `chunk`.
    pub fn import_of(&self, chunk: u32) -> u32 {
        self.import_starts.partition_point(|s| *s <= chunk).saturating_sub(1) as u32
    }
}

/// The stored meta of a table (empty when nothing was imported).
pub fn meta(store: &Store, table: &str) -> Result<TableMeta, Error> {
    match store.db().get_cf(store.cf(CF_MICRO), meta_key(table)).map_err(|e| store.err(e))? {
        None => Ok(TableMeta::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("stored metadata of microdata table {table} is damaged: {e}"))),
    }
}

/// Records held in every microdata table, for `status`.
pub fn record_counts(store: &Store, dict: &Dictionary) -> Result<Vec<(String, u64)>, Error> {
    dict.microdata_tables().map(|t| Ok((t.id.clone(), meta(store, &t.id)?.records))).collect()
}

fn secret_key(table: &str) -> Vec<u8> {
    format!("s\x1f{table}").into_bytes()
}

/// The table's secret for magnitude noise, made (from the OS's CSPRNG) and
/// stored, synced, the first time it is needed. It never leaves the node:
/// whoever knew it could compute the noise and remove it.
pub fn noise_secret(store: &Store, table: &str) -> Result<tabadul_policy::disclosure::magnitude::NoiseSecret, Error> {
    let cf = store.cf(CF_MICRO);
    if let Some(v) = store.db().get_cf(cf, secret_key(table)).map_err(|e| store.err(e))?
        && let Ok(secret) = <[u8; 32]>::try_from(v.as_slice())
    {
        return Ok(secret);
    }
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| Error::Invalid("the system random number generator failed".into()))?;
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    store.db().put_cf_opt(cf, secret_key(table), secret, &wo).map_err(|e| store.err(e))?;
    Ok(secret)
}
