//! Checking a query against the dictionary, before anyone acts on it.
//!
//! The node runs this before its policy; the hub runs the same check before
//! it fans a query out, so an operator's typo is one precise error rather
//! than twenty-two failed members.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Dataflow, Dictionary, REF_AREA, TIME_PERIOD, pb};

/// A query that does not make sense against the dictionary.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid query: {0}")]
pub struct InvalidQuery(pub String);

/// A checked query: what varies, what is fixed.
#[derive(Debug, Clone)]
pub struct Resolved<'d> {
    pub flow: &'d Dataflow,
    /// Per dimension (in key order, REF_AREA excluded as `None`): the codes a
    /// cell may have there.
    pub allowed_codes: Vec<Option<BTreeSet<String>>>,
    /// Dimensions whose detail would be released (breakdowns and filters
    /// away from the total).
    pub released: BTreeSet<String>,
    pub start: Option<String>,
    pub end: Option<String>,
}

pub fn resolve<'d>(dict: &'d Dictionary, q: &pb::Query) -> Result<Resolved<'d>, InvalidQuery> {
    let flow = dict.dataflow(&q.dataflow).ok_or_else(|| InvalidQuery(format!("unknown dataflow {:?} (dictionary {})", q.dataflow, dict.version)))?;
    let mut breakdown = BTreeSet::new();
    for b in &q.breakdown {
        if b == REF_AREA || b == TIME_PERIOD {
            continue; // always present
        }
        if flow.position(b).is_none() {
            return Err(InvalidQuery(format!("{} has no dimension {b:?} to break down by", flow.id)));
        }
        breakdown.insert(b.clone());
    }
    let mut filters: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for f in &q.filters {
        if f.dimension == REF_AREA || f.dimension == TIME_PERIOD {
            return Err(InvalidQuery(format!("filter on {}: use the member list (REF_AREA) or start/end period (TIME_PERIOD)", f.dimension)));
        }
        if flow.position(&f.dimension).is_none() {
            return Err(InvalidQuery(format!("{} has no dimension {:?} to filter on", flow.id, f.dimension)));
        }
        if f.codes.is_empty() {
            return Err(InvalidQuery(format!("filter on {} lists no codes", f.dimension)));
        }
        for c in &f.codes {
            if !dict.has_code(&f.dimension, c) {
                return Err(InvalidQuery(format!("unknown code {c:?} for {}", f.dimension)));
            }
        }
        filters.entry(&f.dimension).or_default().extend(f.codes.iter().cloned());
    }
    let mut released = breakdown.clone();
    let mut allowed_codes = Vec::with_capacity(flow.dimensions.len());
    for dim in &flow.dimensions {
        if dim == REF_AREA {
            allowed_codes.push(None);
            continue;
        }
        let total = dict.dimension(dim).and_then(|d| d.total.clone()).unwrap_or_default();
        let codes = match (filters.get(dim.as_str()), breakdown.contains(dim)) {
            (Some(f), _) => {
                if f.iter().any(|c| *c != total) {
                    released.insert(dim.clone());
                }
                Some(f.clone())
            }
            (None, true) => None,
            (None, false) => Some(BTreeSet::from([total])),
        };
        allowed_codes.push(codes);
    }
    let period = |p: &str, which: &str| -> Result<Option<String>, InvalidQuery> {
        if p.is_empty() {
            Ok(None)
        } else if p.len() >= 4 && p.as_bytes()[..4].iter().all(u8::is_ascii_digit) && p.len() <= 7 {
            Ok(Some(p.to_owned()))
        } else {
            Err(InvalidQuery(format!("{which} period {p:?} is not an SDMX period")))
        }
    };
    Ok(Resolved { flow, allowed_codes, released, start: period(&q.start_period, "start")?, end: period(&q.end_period, "end")? })
}
