//! Answers a query on a microdata table, in stages that each have their
//! own module and tests:
//! 1. [`request`]: the query in the schema's terms;
//! 2. the policy (here): rule, statistic, variables, disclosure settings,
//!    granted periods;
//! 3. [`atoms`]: one scan that groups records into the atoms every cell,
//!    now or in the ledger, is a union of;
//! 4. [`cells`]: every cell, margins included;
//! 5. [`protection`]: primary rules, the group rule, secondary suppression
//!    over every linked measure against the ledger subject's releases;
//! 6. [`values`]: perturbed values of what is released.
//!
//! The answer's dimensions are REF_AREA, the breakdown dimensions (in the
//! table's order) and TIME_PERIOD; a total code stands for a margin. The
//! caller records [`MicroAnswer::release`] in the ledger (synced) before it
//! sends anything; `policy preview` runs this same code and records nothing.
//!
//! What a requester sees says nothing exact that the cells do not: no
//! record count in any reason or log line, one confidentiality status for
//! every withheld cell, and the protections in force rather than which of
//! them fired where ([`Detail::Requester`]). The national team's own views
//! (preview, explain) show everything ([`Detail::Owner`]).

pub mod atoms;
pub mod cells;
pub mod protection;
pub mod request;
pub mod values;

use std::collections::{BTreeMap, BTreeSet};

use tabadul_certs::Identity;
use tabadul_proto::pb::{self, DecisionKind};
use tabadul_proto::{Dictionary, InvalidQuery, REF_AREA, TIME_PERIOD};

use crate::disclosure::{Params, Statistic};
use crate::ledger::{self, Release};
use crate::microdata::{self, Grouping, Schema};
use crate::policy::{Grant, Policy};
use crate::query::Answer;
use crate::store::{Store, Withdrawal};

use atoms::{Atoms, Sets, box_to_sets};
use protection::Earlier;
use request::{Request, category_indices};

/// The most cells one answer may have (margins included).
pub const MAX_CELLS: usize = 100_000;
/// The most atoms a scan may group into.
pub const MAX_ATOMS: usize = 4_000_000;
/// The most periods an answer under differential privacy covers.
const MAX_DP_PERIODS: usize = 120;
/// How many years back an open-started query under differential privacy
/// reaches.
const DP_OPEN_YEARS: i32 = 10;

/// An answer plus what it adds to the release ledger.
#[derive(Debug, Clone)]
pub struct MicroAnswer {
    pub answer: Answer,
    /// None when nothing was computed (refused, withdrawn, no data).
    pub release: Option<Release>,
}

/// How much an answer explains about its withheld cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// A requester of the network: every withheld cell looks the same.
    Requester,
    /// The member's own team (preview, explain): which rule withheld what.
    Owner,
}

fn refuse(decision: &mut pb::Decision, reason: String) -> MicroAnswer {
    decision.kind = DecisionKind::Refused as i32;
    decision.reason = reason;
    MicroAnswer { answer: Answer { decision: decision.clone(), cells: Vec::new() }, release: None }
}

/// Decides and answers `q` (a microdata table) for `who`.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    store: &Store,
    dict: &Dictionary,
    member: &str,
    policy: &Policy,
    withdrawals: &[Withdrawal],
    who: &Identity,
    q: &pb::Query,
    today: time::Date,
    detail: Detail,
    kept: Option<&protection::KeptSpans>,
) -> Result<Result<MicroAnswer, InvalidQuery>, crate::Error> {
    let Some(table) = dict.microdata(&q.dataflow) else {
        return Ok(Err(InvalidQuery(format!("unknown microdata table {:?}", q.dataflow))));
    };
    let schema = Schema::of(dict, table);
    let mut req = match request::parse(table, &schema, q) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let mut dimensions = vec![REF_AREA.to_owned()];
    dimensions.extend(req.breakdown.iter().map(|c| schema.categorical[*c].clone()));
    dimensions.push(TIME_PERIOD.to_owned());
    let mut decision = crate::query::refused_until_decided(policy, dimensions, q);

    // ---- stage 2: the policy
    let released_dims: BTreeSet<String> = req.breakdown.iter().chain(req.filters.keys()).map(|c| schema.categorical[*c].clone()).collect();
    let rule = match policy.decide_id(who, &table.id, &released_dims) {
        Grant::Refused { rule_id, reason } => {
            decision.rule_id = rule_id;
            return Ok(Ok(refuse(&mut decision, reason)));
        }
        Grant::Allowed(rule) => rule,
    };
    decision.rule_id = rule.id.clone();
    let statistic = req.statistic;
    let granted: Vec<&str> = if rule.statistics.is_empty() { vec!["count"] } else { rule.statistics.iter().map(String::as_str).collect() };
    if !granted.contains(&statistic.word()) {
        return Ok(Ok(refuse(&mut decision, format!("rule {} grants {} of {}, not {}", rule.id, granted.join(", "), table.id, statistic.word()))));
    }
    for v in req.measured() {
        if !rule.variables.iter().any(|x| x.as_str() == v) {
            return Ok(Ok(refuse(&mut decision, format!("rule {} does not grant variable {v} of {}", rule.id, table.id))));
        }
    }
    let Some(params) = policy.disclosure_params(&rule.id, &table.id).cloned() else {
        return Ok(Ok(refuse(&mut decision, format!("rule {} has no disclosure settings for {}", rule.id, table.id))));
    };
    let dp = params.dp.is_some();
    if dp && statistic != Statistic::Count {
        return Ok(Ok(refuse(
            &mut decision,
            format!("rule {} protects {} with differential privacy, which this node applies to counts only", rule.id, table.id),
        )));
    }
    if let Some(w) = withdrawals.iter().find(|w| w.dataflow == table.id) {
        decision.reason = format!("{} is withdrawn by the member since {}: {}", table.id, w.at, w.reason);
        return Ok(Ok(MicroAnswer { answer: Answer { decision, cells: Vec::new() }, release: None }));
    }

    let rows_note = match request::scope_rows(&rule, who, &schema, &mut req) {
        Ok(note) => note,
        Err(reason) => return Ok(Ok(refuse(&mut decision, reason))),
    };
    let meta = microdata::meta(store, &table.id)?;
    if meta.import_starts.len() != meta.imports as usize {
        return Err(crate::Error::Invalid(format!(
            "microdata table {} was stored without its import history ({} imports, {} recorded); re-import it so the release ledger can tell its versions apart",
            table.id,
            meta.imports,
            meta.import_starts.len()
        )));
    }
    let mut withheld: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some((why, what)) = rows_note {
        withheld.entry(why).or_default().insert(what);
    }
    let mut periods: Vec<u32> = Vec::new();
    let mut period_names = meta.periods.clone();
    // Under differential privacy which periods hold records is itself exact
    // data ("no data" against a noised cell says whether anyone is there),
    // so the periods answered come from the request, the rule and the date
    // alone, held or not. Otherwise, the table's own periods.
    let candidates: Vec<String> = if dp {
        match dp_periods(&req, &rule, today, &meta.periods) {
            Ok(window) => window,
            Err(e) => return Ok(Ok(refuse(&mut decision, e))),
        }
    } else {
        meta.periods.iter().filter(|p| asked(&req, p)).cloned().collect()
    };
    for p in &candidates {
        if !rule.period_in_range(p) {
            withheld.entry(format!("outside the periods granted by rule {}", rule.id)).or_default().insert(p.clone());
        } else if let Some(e) = rule.embargo_on(p, today) {
            withheld.entry(format!("under embargo until {} (rule {})", e.until, rule.id)).or_default().insert(p.clone());
        } else if let Some(i) = period_names.iter().position(|n| n == p) {
            periods.push(i as u32);
        } else {
            periods.push(period_names.len() as u32);
            period_names.push(p.clone());
        }
    }
    decision.withheld = withheld.iter().map(|(why, what)| format!("{}: {why}", what.iter().cloned().collect::<Vec<_>>().join(", "))).collect();
    if periods.is_empty() {
        decision.kind = if withheld.is_empty() { DecisionKind::Allowed } else { DecisionKind::Refused } as i32;
        decision.reason = if withheld.is_empty() {
            format!("allowed by rule {}; no data matches", rule.id)
        } else {
            format!("everything asked for is withheld: {}", decision.withheld.join("; "))
        };
        return Ok(Ok(MicroAnswer { answer: Answer { decision, cells: Vec::new() }, release: None }));
    }

    // ---- the size of the answer, before any work
    let per_axis = cells::axes(&schema, &req);
    let combos: usize = per_axis.iter().map(Vec::len).chain(std::iter::once(periods.len())).try_fold(1usize, |acc, n| acc.checked_mul(n)).unwrap_or(usize::MAX);
    if combos > MAX_CELLS {
        return Ok(Ok(refuse(
            &mut decision,
            format!("the answer would have {combos} cells; at most {MAX_CELLS} are computed at once (narrow the breakdown or the periods)"),
        )));
    }

    // ---- stage 3: the atoms, split by this answer and the ledger
    let subject = ledger::subject(who, params.ledger);
    let history = ledger::load(store, &subject, &table.id)?;
    let ncols = schema.categorical.len();
    let version_col = ncols;
    let all_categories = |c: usize| -> BTreeSet<u32> { category_indices(&schema, c).collect() };
    let mut sets: Vec<Vec<BTreeSet<u32>>> = vec![Vec::new(); ncols + 1];
    sets[0].extend(periods.iter().filter(|p| (**p as usize) < meta.periods.len()).map(|p| BTreeSet::from([*p])));
    for c in &req.breakdown {
        let base = req.filters.get(c).cloned().unwrap_or_else(|| all_categories(*c));
        sets[*c].extend(base.iter().map(|i| BTreeSet::from([*i])));
        sets[*c].push(base);
    }
    for (c, f) in &req.filters {
        sets[*c].push(f.clone());
    }
    let history_sets: Vec<Sets> = history.iter().map(|(b, _)| box_to_sets(&schema, &meta, b)).collect();
    for hs in &history_sets {
        for (c, s) in hs.iter().enumerate() {
            if let Some(s) = s {
                sets[c].push(s.clone());
            }
        }
    }
    let code_count = |c: usize| match c {
        0 => meta.periods.len(),
        c if c == version_col => meta.imports as usize,
        c => schema.codes[c].len(),
    };
    let grouping = Grouping { values: req.values, weight: schema.weight_index(), top: statistic.magnitude(), ..atoms::grouping_for(&sets, code_count) };
    if grouping.atoms() > MAX_ATOMS {
        return Ok(Ok(refuse(
            &mut decision,
            format!(
                "this query together with the {} cells already released from {} would need {} groups of records to check; at most {MAX_ATOMS}",
                history.len(),
                table.id,
                grouping.atoms()
            ),
        )));
    }
    let started = std::time::Instant::now();
    let stats = microdata::scan(store, &schema, &meta, &grouping)?;
    let atoms = Atoms::new(grouping, stats);
    let scanned = started.elapsed();

    // ---- stage 4: the cells
    let cells = cells::build(&schema, &meta, &period_names, &req, &periods, &atoms, dp);
    let built = started.elapsed();

    // ---- stage 5: protection
    let earlier: Vec<Earlier> = history.iter().zip(&history_sets).map(|((b, flags), sets)| Earlier::new(&atoms, sets, b, *flags)).collect();
    let kept_key = format!("{subject}\x1f{}", table.id);
    let protection = match protection::protect_kept(&params, &req, &atoms, &cells, &earlier, kept.map(|k| (k, kept_key.as_str()))) {
        Ok(p) => p,
        Err(_) => {
            return Ok(Ok(refuse(
                &mut decision,
                format!(
                    "checking this answer against the {} cells already released from {} is too large a problem to solve here, so nothing is released (narrow the query)",
                    history.len(),
                    table.id
                ),
            )));
        }
    };
    if protection.outcome.already_revealed > 0 {
        tracing::warn!(table = %table.id, %subject, groups = protection.outcome.already_revealed,
            "earlier releases (on data that has changed since) already reveal protected groups");
    }

    // ---- differential-privacy budget, per tier
    let public = q.audience == "public";
    let budget_subject = ledger::budget_subject(who, params.ledger, public);
    let mut epsilon = 0.0;
    if let Some((eps, budget)) = params.dp {
        let spent = ledger::spent(store, &budget_subject, &table.id)?;
        if spent + eps > budget + 1e-12 {
            return Ok(Ok(refuse(
                &mut decision,
                format!(
                    "differential-privacy budget exhausted: this query costs ε = {eps}, and {} has {:.4} of its {budget} left for {}",
                    tier_name(who, public),
                    (budget - spent).max(0.0),
                    table.id
                ),
            )));
        }
        epsilon = eps;
    }

    // ---- stage 6: values
    let secret = microdata::noise_secret(store, &table.id)?;
    let rng = ring::rand::SystemRandom::new();
    let perturb = values::Perturb {
        params: &params,
        table: &table.id,
        variables: [req.variables[0].as_str(), req.variables[1].as_str()],
        secret: &secret,
        epsilon,
        // Each record falls in one cell per combination of interior/margin
        // along the breakdown dimensions: the answer's L1 sensitivity.
        sensitivity: f64::from(1u32 << req.breakdown.len().min(20)),
        rng: &rng,
    };
    let mut out = Vec::with_capacity(cells.len());
    let mut fired: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (i, c) in cells.iter().enumerate() {
        let mut key: Vec<String> = vec![member.to_owned()];
        for (k, col) in req.breakdown.iter().enumerate() {
            key.push(match c.coords[k] {
                Some(code) => schema.codes[*col][code as usize].clone(),
                None => schema.totals[*col].clone().unwrap_or_default(),
            });
        }
        key.push(period_names[c.period as usize].clone());
        let mut cell = pb::Cell { key, value: f64::NAN, obs_status: "A".into(), unit_mult: 0, conf_status: "F".into(), flags: Vec::new() };
        if !protection.released[i] {
            for f in &protection.why[i] {
                *fired.entry(*f).or_default() += 1;
            }
            match detail {
                Detail::Owner => {
                    cell.conf_status = if protection.primary[i] { "C" } else { "D" }.into();
                    cell.flags = protection.why[i].iter().map(|f| (*f).to_owned()).collect();
                }
                // Primary or complement, small or homogeneous: the same mark,
                // or the mark would tell which cells hold few people.
                Detail::Requester => cell.conf_status = "C".into(),
            }
        } else {
            let (value, how) = perturb.value(statistic, &c.stats).map_err(|_| crate::Error::Invalid("the system random number generator failed".into()))?;
            cell.value = value;
            if value.is_nan() {
                cell.obs_status = "M".into();
            }
            if let Some(how) = how {
                cell.flags.push(how.to_owned());
                *fired.entry(how).or_default() += 1;
            }
        }
        out.push(cell);
    }
    tracing::debug!(
        atoms = atoms.stats.len(),
        cells = cells.len(),
        ledger = history.len(),
        kept_spans_reused = protection.outcome.reused,
        scan_ms = scanned.as_secs_f64() * 1e3,
        cells_ms = (built - scanned).as_secs_f64() * 1e3,
        protection_ms = (started.elapsed() - built).as_secs_f64() * 1e3,
        "microdata answer computed"
    );
    decision.rules_fired = match detail {
        Detail::Owner => fired.iter().map(|(r, n)| format!("{r}: {n} cell{}", if *n == 1 { "" } else { "s" })).collect(),
        Detail::Requester => in_force(&params),
    };

    let measures = protection::measures_of(&req);
    let release = Release {
        requester: subject,
        budget: budget_subject,
        table: table.id.clone(),
        boxes: cells
            .iter()
            .zip(&protection.released)
            .zip(&protection.why)
            .map(|((c, r), why)| {
                let flag = if *r {
                    ledger::RELEASED
                } else if why.iter().all(|f| matches!(*f, "dominance" | "p-percent")) {
                    ledger::WITHHELD_MAGNITUDE
                } else {
                    ledger::WITHHELD
                };
                let mut b = c.boxdef.clone();
                if measures != [ledger::COUNT] {
                    b.insert(ledger::MEASURE.to_owned(), measures.clone());
                }
                (b, flag)
            })
            .collect(),
        epsilon,
    };
    decision.kind = if withheld.is_empty() { DecisionKind::Allowed } else { DecisionKind::PartlyAllowed } as i32;
    let protected = protection.released.iter().filter(|r| !**r).count();
    decision.reason = format!(
        "allowed by rule {}: {} of {} {}; {} of {} cells withheld by disclosure control{}",
        rule.id,
        statistic.word(),
        table.id,
        if req.breakdown.is_empty() { "in total".to_owned() } else { format!("by {}", decision.dimensions[1..decision.dimensions.len() - 1].join(" × ")) },
        protected,
        cells.len(),
        if decision.withheld.is_empty() { String::new() } else { format!("; also withheld: {}", decision.withheld.join("; ")) },
    );
    Ok(Ok(MicroAnswer { answer: Answer { decision, cells: out }, release: Some(release) }))
}

/// The protections a rule applies, as a requester may be told them: the
/// settings, never where they fired.
fn in_force(params: &Params) -> Vec<String> {
    let mut out = vec![format!("threshold {}", params.threshold)];
    if let Some((n, k)) = params.dominance {
        out.push(format!("dominance ({n},{k})"));
    }
    if let Some(p) = params.p_percent {
        out.push(format!("p-percent {p}"));
    }
    if params.group.is_some() {
        out.push("group".into());
    }
    out.push("secondary".into());
    if params.cell_key.is_some() {
        out.push("cell-key".into());
    }
    if let Some((eps, _)) = params.dp {
        out = vec![format!("dp-laplace ε={eps}")];
    }
    out
}

fn tier_name(who: &Identity, public: bool) -> String {
    match who.role() {
        _ if public => format!("the public of {}", who.network()),
        tabadul_certs::Role::Hub => format!("the hubs' operators of {}", who.network()),
        _ => format!("the members of {}", who.network()),
    }
}

/// The periods an answer under differential privacy covers, from the
/// request, the rule and `today` only, never from the data: the years from
/// the start (the request's, else `DP_OPEN_YEARS` before the end or the
/// rule's start, whichever is later) to the end (the request's, else the
/// rule's, else this year),
/// in the table's frequency (years, quarters or months, as its periods are
/// written; years for an empty table).
fn dp_periods(req: &Request, rule: &crate::policy::Rule, today: time::Date, held: &[String]) -> Result<Vec<String>, String> {
    let year = |p: Option<&str>| p.filter(|p| !p.is_empty()).and_then(|p| p.get(..4)).and_then(|y| y.parse::<i32>().ok());
    let end = year(Some(&req.end_period)).or(year(rule.end_period.as_deref())).unwrap_or(today.year());
    let recent = end - (DP_OPEN_YEARS - 1);
    let start = year(Some(&req.start_period)).unwrap_or_else(|| year(rule.start_period.as_deref()).map_or(recent, |r| r.max(recent)));
    let within: Vec<String> = match held.first().map(|p| p.get(4..6).unwrap_or("")) {
        Some("-Q") => (1..=4).map(|q| format!("-Q{q}")).collect(),
        Some("-M") => (1..=12).map(|m| format!("-M{m:02}")).collect(),
        _ => vec![String::new()],
    };
    let count = usize::try_from(end - start + 1).unwrap_or(0).saturating_mul(within.len());
    if count > MAX_DP_PERIODS {
        return Err(format!(
            "under differential privacy an answer covers every period asked for, held or not, at most {MAX_DP_PERIODS}; {start} to {end} is {count}: ask for a shorter range"
        ));
    }
    Ok((start..=end).flat_map(|y| within.iter().map(move |w| format!("{y}{w}"))).filter(|p| asked(req, p)).collect())
}

/// `period` lies within the request's start and end (either may be open).
fn asked(req: &Request, period: &str) -> bool {
    (req.start_period.is_empty() || period >= req.start_period.as_str() || period.starts_with(&req.start_period))
        && crate::policy::period_in(period, None, (!req.end_period.is_empty()).then_some(req.end_period.as_str()))
}
