//! Answers one structured query: validate it against the dictionary, ask
//! the policy, read the store, and withhold what embargoes, period limits
//! and withdrawals hold back. Pure apart from reading the store, so
//! `policy explain` and the gRPC service run the very same code.

use std::collections::{BTreeMap, BTreeSet};

use tabadul_certs::Identity;
use tabadul_proto::pb::{self, DecisionKind};
use tabadul_proto::{Dataflow, Dictionary, REF_AREA, TIME_PERIOD};

use crate::policy::{Grant, Policy};
use crate::store::{Store, Withdrawal};

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
    let flow = dict
        .dataflow(&q.dataflow)
        .ok_or_else(|| InvalidQuery(format!("unknown dataflow {:?} (dictionary {})", q.dataflow, dict.version)))?;
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
            return Err(InvalidQuery(format!(
                "filter on {}: use the member list (REF_AREA) or start/end period (TIME_PERIOD)", f.dimension)));
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
    Ok(Resolved {
        flow,
        allowed_codes,
        released,
        start: period(&q.start_period, "start")?,
        end: period(&q.end_period, "end")?,
    })
}

/// The outcome: the decision message and the cells to send.
#[derive(Debug, Clone)]
pub struct Answer {
    pub decision: pb::Decision,
    pub cells: Vec<pb::Cell>,
}

/// Any error from reading the store.
pub type StoreError = crate::Error;

/// Decides and answers `q` for `who`.
pub fn answer(
    store: Option<&Store>,
    dict: &Dictionary,
    policy: &Policy,
    withdrawals: &[Withdrawal],
    who: &Identity,
    q: &pb::Query,
    today: time::Date,
) -> Result<Result<Answer, InvalidQuery>, StoreError> {
    let r = match resolve(dict, q) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let mut dimensions = r.flow.dimensions.clone();
    dimensions.push(TIME_PERIOD.to_owned());
    let mut decision = pb::Decision {
        kind: DecisionKind::Refused as i32,
        policy_version: policy.version.clone(),
        dimensions,
        query_digest: tabadul_proto::query_digest(q),
        ..Default::default()
    };
    let rule = match policy.decide(who, r.flow, &r.released) {
        Grant::Refused { rule_id, reason } => {
            decision.rule_id = rule_id;
            decision.reason = reason;
            return Ok(Ok(Answer { decision, cells: Vec::new() }));
        }
        Grant::Allowed(rule) => rule,
    };
    decision.rule_id = rule.id.clone();
    if let Some(w) = withdrawals.iter().find(|w| w.dataflow == r.flow.id && w.series_key.is_empty()) {
        decision.reason = format!("{} is withdrawn by the member since {}: {}", r.flow.id, w.at, w.reason);
        return Ok(Ok(Answer { decision, cells: Vec::new() }));
    }
    let series_withdrawals: Vec<&Withdrawal> =
        withdrawals.iter().filter(|w| w.dataflow == r.flow.id && !w.series_key.is_empty()).collect();

    let mut cells = Vec::new();
    // reason -> the periods or series it held back
    let mut withheld: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(store) = store {
        let wanted = |codes: &[&str], time: &str| {
            codes.iter().zip(&r.allowed_codes).all(|(code, allowed)| allowed.as_ref().is_none_or(|a| a.contains(*code)))
                && crate::policy::period_in(time, r.start.as_deref(), r.end.as_deref())
        };
        store.scan_where(&r.flow.id, wanted, |o| {
            if !rule.period_in_range(&o.time_period) {
                let range = format!(
                    "{}..{}",
                    rule.start_period.as_deref().unwrap_or(""),
                    rule.end_period.as_deref().unwrap_or("")
                );
                withheld
                    .entry(format!("outside the periods {range} granted by rule {}", rule.id))
                    .or_default()
                    .insert(o.time_period);
                return;
            }
            if let Some(e) = rule.embargo_on(&o.time_period, today) {
                withheld
                    .entry(format!("under embargo until {} (rule {})", e.until, rule.id))
                    .or_default()
                    .insert(o.time_period);
                return;
            }
            if let Some(w) = series_withdrawals.iter().find(|w| w.covers(&o.dataflow, &o.key)) {
                withheld
                    .entry(format!("series withdrawn by the member since {}: {}", w.at, w.reason))
                    .or_default()
                    .insert(format!("{}.{}", o.dataflow, w.series_key));
                return;
            }
            cells.push(pb::Cell {
                key: o.key.into_iter().chain(std::iter::once(o.time_period)).collect(),
                value: o.value,
                obs_status: o.obs_status,
                unit_mult: i32::from(o.unit_mult),
            });
        })?;
    }
    decision.withheld = withheld
        .iter()
        .map(|(reason, what)| format!("{}: {reason}", what.iter().cloned().collect::<Vec<_>>().join(", ")))
        .collect();
    decision.kind = match (cells.is_empty(), withheld.is_empty()) {
        (_, true) => DecisionKind::Allowed,
        (false, false) => DecisionKind::PartlyAllowed,
        (true, false) => DecisionKind::Refused,
    } as i32;
    decision.reason = match DecisionKind::try_from(decision.kind) {
        Ok(DecisionKind::Allowed) if cells.is_empty() => format!("allowed by rule {}; no data matches", rule.id),
        Ok(DecisionKind::Allowed) => format!("allowed by rule {}", rule.id),
        Ok(DecisionKind::PartlyAllowed) => format!("allowed by rule {}, some cells withheld: {}", rule.id, decision.withheld.join("; ")),
        _ => format!("everything asked for is withheld: {}", decision.withheld.join("; ")),
    };
    Ok(Ok(Answer { decision, cells }))
}

/// The grants a requester holds, for `Describe` and `policy explain`.
pub fn grants(dict: &Dictionary, policy: &Policy, withdrawals: &[Withdrawal], who: &Identity) -> Vec<pb::DataflowGrant> {
    let mut out = Vec::new();
    for flow in dict.dataflows() {
        let Some(rule) = policy.rules.iter().find(|r| r.requester.matches(who) && r.dataflows.contains(&flow.id)) else {
            continue;
        };
        out.push(pb::DataflowGrant {
            dataflow: flow.id.clone(),
            rule_id: rule.id.clone(),
            breakdowns: rule.breakdowns.iter().cloned().collect(),
            start_period: rule.start_period.clone().unwrap_or_default(),
            end_period: rule.end_period.clone().unwrap_or_default(),
            embargoes: rule.embargoes.iter().map(|e| format!("{} until {}", e.period, e.until)).collect(),
            withdrawn: withdrawals
                .iter()
                .filter(|w| w.dataflow == flow.id)
                .map(|w| if w.series_key.is_empty() { "(whole dataflow)".to_owned() } else { w.series_key.clone() })
                .collect(),
        });
    }
    out
}
