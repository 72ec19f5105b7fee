//! The release ledger and differential-privacy budgets, in the store's
//! `ledger` column family.
//!
//! For every requester and microdata table the ledger holds each cell
//! definition ("box": per dimension the codes it covers) that was released
//! or withheld, so secondary suppression can reason about everything the
//! requester already holds. Keys:
//! - `r 0x1f <requester> 0x1f <table> 0x1f <box>` → flags (1 released, 2 withheld,
//!   4 withheld for its magnitudes only);
//! - `b 0x1f <requester> 0x1f <table>` → ε spent so far (f64 LE).
//!
//! The requester is a ledger *subject* ([`subject`]): every hub of a network
//! shares one, because several hub replicas answer the same operators and
//! the same public, and what one replica was given the others' users can
//! combine with what they get.
//!
//! A box's text is canonical: dimensions in order, codes sorted and joined
//! by `+`, a dimension absent when it covers every code. Writes are synced
//! and happen before the answer leaves: after a crash the ledger may hold a
//! release that never reached the requester (safe), never the reverse.

use std::collections::BTreeMap;

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use crate::Error;
use crate::store::{CF_LEDGER, Store};

/// One cell definition: dimension → codes (absent dimension: all codes).
pub type BoxDef = BTreeMap<String, Vec<String>>;

/// The pseudo-dimension of a box that records how many imports the table
/// held when the box was released.
pub const VERSION: &str = "_VERSION";

/// The pseudo-dimension naming the variables a magnitude release (sum,
/// mean, ratio) revealed; absent for counts.
pub const MEASURE: &str = "_MEASURE";

/// Whose ledger a release goes into: one per node identity, one for all the
/// hubs of a network (replicas must not be a way around differencing
/// protection: a query split across two replicas is checked as one).
pub fn subject(who: &tabadul_certs::Identity) -> String {
    match who.role() {
        tabadul_certs::Role::Hub => format!("spiffe://{}/hub/*", who.network()),
        _ => who.to_string(),
    }
}

pub const RELEASED: u8 = 1;
pub const WITHHELD: u8 = 2;
/// Withheld only because a magnitude was dominated (dominance, p%): its
/// count may still be released.
pub const WITHHELD_MAGNITUDE: u8 = 4;

/// The canonical text of a box.
pub fn box_text(b: &BoxDef) -> String {
    b.iter()
        .map(|(d, codes)| {
            let mut codes = codes.clone();
            codes.sort();
            codes.dedup();
            format!("{d}={}", codes.join("+"))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses [`box_text`].
pub fn parse_box(text: &str) -> Option<BoxDef> {
    let mut out = BoxDef::new();
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (d, codes) = part.split_once('=')?;
        out.insert(d.to_owned(), codes.split('+').map(str::to_owned).collect());
    }
    Some(out)
}

fn prefix(requester: &str, table: &str) -> Vec<u8> {
    format!("r\x1f{requester}\x1f{table}\x1f").into_bytes()
}

fn budget_key(requester: &str, table: &str) -> Vec<u8> {
    format!("b\x1f{requester}\x1f{table}").into_bytes()
}

/// Everything released to or withheld from `requester` from `table`.
pub fn load(store: &Store, requester: &str, table: &str) -> Result<Vec<(BoxDef, u8)>, Error> {
    let p = prefix(requester, table);
    let mut out = Vec::new();
    let iter = store.db().iterator_cf(store.cf(CF_LEDGER), IteratorMode::From(&p, rocksdb::Direction::Forward));
    for item in iter {
        let (k, v) = item.map_err(|e| store.err(e))?;
        if !k.starts_with(&p) {
            break;
        }
        let text = std::str::from_utf8(&k[p.len()..]).ok().and_then(parse_box).ok_or_else(|| {
            Error::Invalid(format!("release ledger entry {:?} is damaged", String::from_utf8_lossy(&k)))
        })?;
        out.push((text, v.first().copied().unwrap_or(RELEASED)));
    }
    Ok(out)
}

/// ε spent by `requester` on `table`.
pub fn spent(store: &Store, requester: &str, table: &str) -> Result<f64, Error> {
    Ok(store
        .db()
        .get_cf(store.cf(CF_LEDGER), budget_key(requester, table))
        .map_err(|e| store.err(e))?
        .and_then(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(f64::from_le_bytes))
        .unwrap_or(0.0))
}

/// What one answer adds to the ledger.
#[derive(Debug, Clone, Default)]
pub struct Release {
    pub requester: String,
    pub table: String,
    pub boxes: Vec<(BoxDef, u8)>,
    /// ε this answer spends.
    pub epsilon: f64,
}

/// Records a release, synced, before the answer is sent.
pub fn record(store: &Store, release: &Release) -> Result<(), Error> {
    let cf = store.cf(CF_LEDGER);
    let p = prefix(&release.requester, &release.table);
    let mut merged: BTreeMap<Vec<u8>, u8> = BTreeMap::new();
    for (b, flags) in &release.boxes {
        let mut key = p.clone();
        key.extend_from_slice(box_text(b).as_bytes());
        *merged.entry(key).or_default() |= flags;
    }
    let mut batch = WriteBatch::default();
    for (key, flags) in merged {
        let old = store.db().get_cf(cf, &key).map_err(|e| store.err(e))?.and_then(|v| v.first().copied()).unwrap_or(0);
        if old | flags != old {
            batch.put_cf(cf, key, [old | flags]);
        }
    }
    if release.epsilon > 0.0 {
        let total = spent(store, &release.requester, &release.table)? + release.epsilon;
        batch.put_cf(cf, budget_key(&release.requester, &release.table), total.to_le_bytes());
    }
    if batch.is_empty() {
        // Nothing new (a repeated query): no write, no fsync.
        return Ok(());
    }
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    store.db().write_opt(batch, &wo).map_err(|e| store.err(e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_canonical_and_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = BoxDef::new();
        b.insert("SEX".into(), vec!["M".into()]);
        b.insert("REGION".into(), vec!["MA-06".into(), "MA-01".into()]);
        assert_eq!(box_text(&b), "REGION=MA-01+MA-06;SEX=M");
        assert_eq!(box_text(&parse_box(&box_text(&b)).unwrap()), box_text(&b));
        {
            let store = Store::open(dir.path()).unwrap();
            let r = Release { requester: "hub".into(), table: "T".into(), boxes: vec![(b.clone(), RELEASED), (b.clone(), WITHHELD)], epsilon: 0.5 };
            record(&store, &r).unwrap();
            record(&store, &Release { epsilon: 0.25, boxes: vec![], ..r }).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let got = load(&store, "hub", "T").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, RELEASED | WITHHELD);
        assert!((spent(&store, "hub", "T").unwrap() - 0.75).abs() < 1e-12);
        assert!(load(&store, "hub2", "T").unwrap().is_empty());
        assert_eq!(spent(&store, "hub", "U").unwrap(), 0.0);
    }
}
