//! Answers one structured query: validate it against the dictionary
//! ([`resolve`], shared with the hub), ask the policy, read the store, and withhold what embargoes, period limits
//! and withdrawals hold back. Pure apart from reading the store, so
//! `policy explain` and the gRPC service run the very same code.

use std::collections::{BTreeMap, BTreeSet};

use tabadul_certs::Identity;
use tabadul_proto::pb::{self, DecisionKind};
use tabadul_proto::{Dictionary, TIME_PERIOD};
pub use tabadul_proto::{InvalidQuery, Resolved, resolve};

use crate::policy::{Grant, Policy, Rule};
use crate::store::{Store, Withdrawal};

/// The outcome: the decision message and the cells to send.
#[derive(Debug, Clone)]
pub struct Answer {
    pub decision: pb::Decision,
    pub cells: Vec<pb::Cell>,
}

/// Decides and answers `q` for `who`.
pub fn answer(
    store: Option<&Store>,
    dict: &Dictionary,
    policy: &Policy,
    withdrawals: &[Withdrawal],
    who: &Identity,
    q: &pb::Query,
    today: time::Date,
) -> Result<Result<Answer, InvalidQuery>, crate::Error> {
    let r = match resolve(dict, q) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let mut dimensions = r.flow.dimensions.clone();
    dimensions.push(TIME_PERIOD.to_owned());
    let mut decision = refused_until_decided(policy, dimensions, q);
    let rule = match policy.decide(who, r.flow, &r.released) {
        Grant::Refused { rule_id, reason } => {
            decision.rule_id = rule_id;
            decision.reason = reason;
            return Ok(Ok(Answer { decision, cells: Vec::new() }));
        }
        Grant::Allowed(rule) => rule,
    };
    decision.rule_id = rule.id.clone();
    let mut r = r;
    // reason -> the periods, series or rows it held back
    let mut withheld: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let rows_note = match scope_rows(&rule, who, &mut r) {
        Ok(note) => note,
        Err(reason) => {
            decision.reason = reason;
            return Ok(Ok(Answer { decision, cells: Vec::new() }));
        }
    };
    if let Some(w) = withdrawals.iter().find(|w| w.dataflow == r.flow.id && w.series_key.is_empty()) {
        decision.reason = format!("{} is withdrawn by the member since {}: {}", r.flow.id, w.at, w.reason);
        return Ok(Ok(Answer { decision, cells: Vec::new() }));
    }
    let series_withdrawals: Vec<&Withdrawal> = withdrawals.iter().filter(|w| w.dataflow == r.flow.id && !w.series_key.is_empty()).collect();

    let mut cells = Vec::new();
    if let Some(store) = store {
        store.scan_where(
            &r.flow.id,
            |codes, time| wanted(&r, codes, time),
            |o| {
                if !rule.period_in_range(&o.time_period) {
                    let range = format!("{}..{}", rule.start_period.as_deref().unwrap_or(""), rule.end_period.as_deref().unwrap_or(""));
                    withheld.entry(format!("outside the periods {range} granted by rule {}", rule.id)).or_default().insert(o.time_period);
                    return;
                }
                if let Some(e) = rule.embargo_on(&o.time_period, today) {
                    withheld.entry(format!("under embargo until {} (rule {})", e.until, rule.id)).or_default().insert(o.time_period);
                    return;
                }
                if let Some(w) = series_withdrawals.iter().find(|w| w.covers(&o.dataflow, &o.key)) {
                    withheld
                        .entry(format!("series withdrawn by the member since {}: {}", w.at, w.reason))
                        .or_default()
                        .insert(format!("{}.{}", o.dataflow, w.series_key));
                    return;
                }
                cells.push(cell_of(o));
            },
        )?;
    }
    decision.withheld =
        withheld.iter().map(|(reason, what)| format!("{}: {reason}", what.iter().cloned().collect::<Vec<_>>().join(", "))).chain(rows_note.clone()).collect();
    // Rows the rule never grants do not make an answer without data a
    // refusal (the request was granted, for its rows).
    decision.kind = match (cells.is_empty(), withheld.is_empty()) {
        (false, true) if rows_note.is_some() => DecisionKind::PartlyAllowed,
        (_, true) => DecisionKind::Allowed,
        (false, false) => DecisionKind::PartlyAllowed,
        (true, false) => DecisionKind::Refused,
    } as i32;
    let scope = if rule.rows.is_empty() { String::new() } else { format!(" for the rows where {}", rule.rows_text(Some(who)).join(" and ")) };
    decision.reason = match DecisionKind::try_from(decision.kind) {
        Ok(DecisionKind::Allowed) if cells.is_empty() => format!("allowed by rule {}{scope}; no data matches", rule.id),
        Ok(DecisionKind::Allowed) => format!("allowed by rule {}{scope}", rule.id),
        Ok(DecisionKind::PartlyAllowed) => format!("allowed by rule {}, some cells withheld: {}", rule.id, decision.withheld.join("; ")),
        _ => format!("everything asked for is withheld: {}", decision.withheld.join("; ")),
    };
    Ok(Ok(Answer { decision, cells }))
}

/// Narrows the codes `r` may return to the rows `rule` grants `who`
/// (`rows = { NATIONALITY = "requester" }`). Returns the note for the
/// decision's withheld list when the request reached beyond them (what the
/// rule grants, nothing about the data), or the refusal when it asked for
/// none of them.
fn scope_rows(rule: &Rule, who: &Identity, r: &mut Resolved<'_>) -> Result<Option<String>, String> {
    let mut note = None;
    let granted = rule.rows_for(who);
    let words = rule.rows_text(Some(who));
    for (dim, codes) in &granted {
        // allowed_codes runs over the dataflow's key, REF_AREA included.
        let Some(pos) = r.flow.dimensions.iter().position(|d| d == dim) else { continue };
        let asked = r.allowed_codes[pos].take();
        let beyond = asked.as_ref().is_none_or(|a| a.iter().any(|c| !codes.contains(c)));
        let kept: BTreeSet<String> = match asked {
            None => codes.clone(),
            Some(a) => a.intersection(codes).cloned().collect(),
        };
        if kept.is_empty() {
            return Err(format!(
                "rule {} grants only the rows where {}; this query asks for none of them (ask with {dim} in the breakdown or filtered to those codes)",
                rule.id,
                words.join(" and ")
            ));
        }
        if beyond {
            note = Some(format!("other codes of {dim}: not granted: rule {} grants only the rows where {}", rule.id, words.join(" and ")));
        }
        r.allowed_codes[pos] = Some(kept);
    }
    Ok(note)
}

/// The node's own observations matching `q`, for its own team through the
/// admin socket: no policy, no withholding (the figures are theirs), and
/// aggregate dataflows only (unit records leave only through disclosure
/// control, even locally: `policy preview`).
pub fn own(store: &Store, dict: &Dictionary, q: &pb::Query) -> Result<Result<Vec<pb::Cell>, InvalidQuery>, crate::Error> {
    if dict.microdata(&q.dataflow).is_some() {
        return Ok(Err(InvalidQuery(format!("{} holds unit records: see them through policy preview, under disclosure control", q.dataflow))));
    }
    let r = match resolve(dict, q) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let mut cells = Vec::new();
    store.scan_where(&r.flow.id, |codes, time| wanted(&r, codes, time), |o| cells.push(cell_of(o)))?;
    Ok(Ok(cells))
}

/// An observation's key codes and period are among those `r` asks for.
fn wanted(r: &Resolved<'_>, codes: &[&str], time: &str) -> bool {
    codes.iter().zip(&r.allowed_codes).all(|(code, allowed)| allowed.as_ref().is_none_or(|a| a.contains(*code)))
        && crate::policy::period_in(time, r.start.as_deref(), r.end.as_deref())
}

/// A stored observation as the cell that carries it.
fn cell_of(o: crate::store::Observation) -> pb::Cell {
    pb::Cell {
        key: o.key.into_iter().chain(std::iter::once(o.time_period)).collect(),
        value: o.value,
        obs_status: o.obs_status,
        unit_mult: i32::from(o.unit_mult),
        ..Default::default()
    }
}

/// The decision every answer starts from: refused, under this policy, for
/// cells of these dimensions, until a rule allows it.
pub(crate) fn refused_until_decided(policy: &Policy, dimensions: Vec<String>, q: &pb::Query) -> pb::Decision {
    pb::Decision {
        kind: DecisionKind::Refused as i32,
        policy_version: policy.version.clone(),
        dimensions,
        query_digest: tabadul_proto::query_digest(q),
        ..Default::default()
    }
}

/// The grants a requester holds, for `Describe` and `policy explain`.
pub fn grants(dict: &Dictionary, policy: &Policy, withdrawals: &[Withdrawal], who: &Identity) -> Vec<pb::DataflowGrant> {
    let mut out = Vec::new();
    for flow in dict.dataflows() {
        let Some(rule) = policy.rules.iter().find(|r| r.applies_to(who) && r.dataflows.contains(&flow.id)) else {
            continue;
        };
        out.push(pb::DataflowGrant {
            dataflow: flow.id.clone(),
            rule_id: rule.id.clone(),
            breakdowns: rule.breakdowns.iter().cloned().collect(),
            rows: rule.rows_text(Some(who)),
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
