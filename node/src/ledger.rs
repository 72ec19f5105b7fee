//! The release ledger and differential-privacy budgets, in the store's
//! `ledger` column family.
//!
//! For every requester and microdata table the ledger holds each cell
//! definition ("box": per dimension the codes it covers) that was released
//! or withheld, so secondary suppression can reason about everything the
//! requester already holds. Keys:
//! - `r 0x1f <requester> 0x1f <table> 0x1f <box>` → flags (1 released, 2 withheld,
//!   4 withheld for its magnitudes only);
//! - `b 0x1f <budget subject> 0x1f <table>` → ε spent so far (f64 LE).
//!
//! The requester is a ledger *subject* ([`subject`]). By default the whole
//! network is one subject: members can pool what they receive, a member can
//! collude with the hub, and hub replicas answer the same operators and the
//! same public, so a difference split across any of them must be checked
//! as one. A policy may narrow this per table
//! (`ledger = "dangerous-per-requester"`). Loading a network's ledger reads
//! every subject of that network, so releases recorded under a narrower
//! scope (or before this default) still count.
//!
//! Budgets for differential privacy are kept per *tier* within the subject
//! ([`budget_subject`]): members, the hubs' operators and the public each
//! spend their own, so anonymous callers cannot exhaust the operators'.
//!
//! A box's text is canonical: dimensions in order, codes sorted and joined
//! by `+`, a dimension absent when it covers every code. Writes are synced
//! and happen before the answer leaves: after a crash the ledger may hold a
//! release that never reached the requester (safe), never the reverse.

use std::collections::BTreeMap;

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use tabadul_policy::disclosure::LedgerScope;

use crate::Error;
use crate::store::{CF_LEDGER, Store};

/// One cell definition: dimension → codes (absent dimension: all codes).
pub type BoxDef = BTreeMap<String, Vec<String>>;

/// The pseudo-dimension of a box that records how many imports the table
/// held when the box was released.
pub const VERSION: &str = "_VERSION";

/// The pseudo-dimension naming the measures a release revealed: [`COUNT`]
/// and the variables whose sums it gives away. Absent (releases recorded
/// before measures were linked): the count alone.
pub const MEASURE: &str = "_MEASURE";

/// The measure of record counts.
pub const COUNT: &str = "_N";

/// The measures a recorded box revealed.
pub fn measures(b: &BoxDef) -> Vec<String> {
    b.get(MEASURE).cloned().unwrap_or_else(|| vec![COUNT.to_owned()])
}

/// Whose ledger a release goes into.
pub fn subject(who: &tabadul_certs::Identity, scope: LedgerScope) -> String {
    match (scope, who.role()) {
        (LedgerScope::Network, _) => format!("spiffe://{}/*", who.network()),
        (LedgerScope::DangerousPerRequester, tabadul_certs::Role::Hub) => format!("spiffe://{}/hub/*", who.network()),
        (LedgerScope::DangerousPerRequester, _) => who.to_string(),
    }
}

/// Whether releases recorded under `recorded` count for `subject`: the
/// network subject holds every subject of its network.
fn covers(subject: &str, recorded: &str) -> bool {
    match subject.strip_suffix('*') {
        Some(prefix) => recorded.starts_with(prefix),
        None => subject == recorded,
    }
}

/// Whose differential-privacy budget an answer spends: the ledger subject
/// and the requester's tier.
pub fn budget_subject(who: &tabadul_certs::Identity, scope: LedgerScope, public: bool) -> String {
    let tier = match who.role() {
        _ if public => "public",
        tabadul_certs::Role::Hub => "operators",
        _ => "members",
    };
    match scope {
        LedgerScope::Network => format!("{}#{tier}", subject(who, scope)),
        // The key budgets had before tiers, for a non-public requester.
        LedgerScope::DangerousPerRequester if !public => subject(who, scope),
        LedgerScope::DangerousPerRequester => format!("{}#{tier}", subject(who, scope)),
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

/// Everything released to or withheld from `requester` (every subject it
/// covers) from `table`, each box once with its flags merged.
pub fn load(store: &Store, requester: &str, table: &str) -> Result<Vec<(BoxDef, u8)>, Error> {
    let scan_from: Vec<u8> = match requester.strip_suffix('*') {
        Some(prefix) => format!("r\x1f{prefix}").into_bytes(),
        None => prefix(requester, table),
    };
    let mut merged: BTreeMap<String, u8> = BTreeMap::new();
    let iter = store.db().iterator_cf(store.cf(CF_LEDGER), IteratorMode::From(&scan_from, rocksdb::Direction::Forward));
    for item in iter {
        let (k, v) = item.map_err(|e| store.err(e))?;
        if !k.starts_with(&scan_from) {
            break;
        }
        let damaged = || Error::Invalid(format!("release ledger entry {:?} is damaged", String::from_utf8_lossy(&k)));
        let text = std::str::from_utf8(&k[2..]).map_err(|_| damaged())?;
        let mut parts = text.splitn(3, '\x1f');
        let (Some(who), Some(t), Some(boxtext)) = (parts.next(), parts.next(), parts.next()) else { return Err(damaged()) };
        if t != table || !covers(requester, who) {
            continue;
        }
        *merged.entry(boxtext.to_owned()).or_default() |= v.first().copied().unwrap_or(RELEASED);
    }
    merged
        .into_iter()
        .map(|(text, flags)| parse_box(&text).map(|b| (b, flags)).ok_or_else(|| Error::Invalid(format!("release ledger entry {text:?} of {table} is damaged"))))
        .collect()
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
    /// The ledger subject ([`subject`]).
    pub requester: String,
    /// Whose budget ε is spent from ([`budget_subject`]).
    pub budget: String,
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
        let total = spent(store, &release.budget, &release.table)? + release.epsilon;
        batch.put_cf(cf, budget_key(&release.budget, &release.table), total.to_le_bytes());
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
            let r = Release {
                requester: "hub".into(),
                budget: "hub".into(),
                table: "T".into(),
                boxes: vec![(b.clone(), RELEASED), (b.clone(), WITHHELD)],
                epsilon: 0.5,
            };
            record(&store, &r).unwrap();
            record(&store, &Release { epsilon: 0.25, boxes: vec![], ..r }).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let got = load(&store, "hub", "T").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, RELEASED | WITHHELD);
        assert!((spent(&store, "hub", "T").unwrap() - 0.75).abs() < 1e-12);
        assert!(load(&store, "hub2", "T").unwrap().is_empty());
    }

    #[test]
    fn the_network_subject_holds_every_subject_of_its_network() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut b = BoxDef::new();
        b.insert("SEX".into(), vec!["M".into()]);
        let mut c = BoxDef::new();
        c.insert("SEX".into(), vec!["F".into()]);
        for (who, bx) in [("spiffe://alo/node/EGY", &b), ("spiffe://alo/hub/*", &c), ("spiffe://oic/node/EGY", &c)] {
            record(&store, &Release { requester: who.into(), budget: who.into(), table: "T".into(), boxes: vec![(bx.clone(), RELEASED)], epsilon: 0.0 })
                .unwrap();
        }
        let all = load(&store, "spiffe://alo/*", "T").unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(load(&store, "spiffe://oic/*", "T").unwrap().len(), 1);
        assert_eq!(load(&store, "spiffe://alo/node/EGY", "T").unwrap().len(), 1);
        assert!(load(&store, "spiffe://alo/*", "U").unwrap().is_empty());
        assert_eq!(spent(&store, "hub", "U").unwrap(), 0.0);
    }
}
