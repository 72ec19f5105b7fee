//! Answers a query on a microdata table: validate, ask the policy, compute
//! every cell (margins included) in one scan, then apply disclosure control
//! ([`crate::disclosure`]) against the requester's release ledger.
//!
//! The answer's dimensions are REF_AREA, the breakdown dimensions (in the
//! table's order) and TIME_PERIOD; a total code stands for a margin. The
//! caller records [`MicroAnswer::release`] in the ledger (synced) before it
//! sends anything; `policy preview` runs this same code and records nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tabadul_certs::Identity;
use tabadul_proto::pb::{self, DecisionKind};
use tabadul_proto::{Dictionary, InvalidQuery, REF_AREA, TIME_PERIOD};

use crate::disclosure::secondary::Candidate;
use crate::disclosure::{self, Params, Statistic, Target};
use crate::ledger::{self, BoxDef, Release};
use crate::microdata::{self, AtomStats, Grouping, Schema};
use crate::policy::{Grant, Policy};
use crate::query::Answer;
use crate::store::{Store, Withdrawal};

/// The most cells one answer may have (margins included).
pub const MAX_CELLS: usize = 100_000;
/// The most atoms a scan may group into.
pub const MAX_ATOMS: usize = 4_000_000;

/// An answer plus what it adds to the release ledger.
#[derive(Debug, Clone)]
pub struct MicroAnswer {
    pub answer: Answer,
    /// None when nothing was computed (refused, withdrawn, no data).
    pub release: Option<Release>,
}

/// One cell being built.
struct CellDef {
    /// Per breakdown dimension: code index, or None for the total.
    coords: Vec<Option<u32>>,
    period: u32,
    boxdef: BoxDef,
    target: Target,
    stats: AtomStats,
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
) -> Result<Result<MicroAnswer, InvalidQuery>, crate::Error> {
    let Some(table) = dict.microdata(&q.dataflow) else {
        return Ok(Err(InvalidQuery(format!("unknown microdata table {:?}", q.dataflow))));
    };
    let schema = Schema::of(dict, table);
    // ---- the request, checked against the dictionary
    let agg = q.aggregation.clone().unwrap_or_default();
    let Some(statistic) = Statistic::parse(&agg.statistic) else {
        return Ok(Err(InvalidQuery(format!("statistic {:?} must be count, weighted-count, sum, mean or ratio", agg.statistic))));
    };
    let variable = |name: &str, what: &str| -> Result<Option<usize>, InvalidQuery> {
        if name.is_empty() {
            return Err(InvalidQuery(format!("a {} needs a {what} (one of: {})", statistic.word(), variables_of(table))));
        }
        if !table.has_variable(name) {
            return Err(InvalidQuery(format!("{} has no variable {name:?} (it has: {})", table.id, variables_of(table))));
        }
        Ok(schema.numeric_index(name))
    };
    let values = match statistic {
        Statistic::Count | Statistic::WeightedCount => [None, None],
        Statistic::Sum | Statistic::Mean => match variable(&agg.variable, "variable") {
            Ok(v) => [v, None],
            Err(e) => return Ok(Err(e)),
        },
        Statistic::Ratio => match (variable(&agg.variable, "variable"), variable(&agg.denominator, "denominator")) {
            (Ok(a), Ok(b)) => [a, b],
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        },
    };
    if statistic == Statistic::WeightedCount && table.weight.is_none() {
        return Ok(Err(InvalidQuery(format!("{} has no survey weight; ask for a count", table.id))));
    }
    let mut breakdown: Vec<usize> = Vec::new();
    for b in &q.breakdown {
        if b == REF_AREA || b == TIME_PERIOD {
            continue;
        }
        match schema.categorical_index(b) {
            Some(c) if !breakdown.contains(&c) => breakdown.push(c),
            Some(_) => {}
            None => return Ok(Err(InvalidQuery(format!("{} has no dimension {b:?} to break down by", table.id)))),
        }
    }
    breakdown.sort_unstable();
    // Filters: column -> allowed code indices.
    let mut filters: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    for f in &q.filters {
        let Some(c) = schema.categorical_index(&f.dimension).filter(|c| *c > 0) else {
            return Ok(Err(InvalidQuery(format!("{} has no dimension {:?} to filter on (periods: use start/end)", table.id, f.dimension))));
        };
        if f.codes.is_empty() {
            return Ok(Err(InvalidQuery(format!("filter on {} lists no codes", f.dimension))));
        }
        let mut set = BTreeSet::new();
        for code in &f.codes {
            if schema.totals[c].as_deref() == Some(code.as_str()) {
                set.extend(category_indices(&schema, c));
                continue;
            }
            match schema.codes[c].iter().position(|x| x == code) {
                Some(i) => {
                    set.insert(i as u32);
                }
                None => return Ok(Err(InvalidQuery(format!("unknown code {code:?} for {}", f.dimension)))),
            }
        }
        filters.entry(c).or_default().extend(set);
    }
    let all_categories = |c: usize| -> BTreeSet<u32> { category_indices(&schema, c).collect() };
    filters.retain(|c, set| *set != all_categories(*c));
    let period_ok = |p: &str, what: &str| -> Result<(), InvalidQuery> {
        if p.is_empty() || (p.len() >= 4 && p.len() <= 7 && p.as_bytes()[..4].iter().all(u8::is_ascii_digit)) {
            Ok(())
        } else {
            Err(InvalidQuery(format!("{what} period {p:?} is not an SDMX period")))
        }
    };
    if let Err(e) = period_ok(&q.start_period, "start").and(period_ok(&q.end_period, "end")) {
        return Ok(Err(e));
    }

    let mut dimensions = vec![REF_AREA.to_owned()];
    dimensions.extend(breakdown.iter().map(|c| schema.categorical[*c].clone()));
    dimensions.push(TIME_PERIOD.to_owned());
    let mut decision = crate::query::refused_until_decided(policy, dimensions, q);

    // ---- the policy
    let released_dims: BTreeSet<String> =
        breakdown.iter().chain(filters.keys()).map(|c| schema.categorical[*c].clone()).collect();
    let rule = match policy.decide_id(who, &table.id, &released_dims) {
        Grant::Refused { rule_id, reason } => {
            decision.rule_id = rule_id;
            return Ok(Ok(refuse(&mut decision, reason)));
        }
        Grant::Allowed(rule) => rule,
    };
    decision.rule_id = rule.id.clone();
    let granted: Vec<&str> = if rule.statistics.is_empty() { vec!["count"] } else { rule.statistics.iter().map(String::as_str).collect() };
    if !granted.contains(&statistic.word()) {
        return Ok(Ok(refuse(&mut decision, format!("rule {} grants {} of {}, not {}", rule.id, granted.join(", "), table.id, statistic.word()))));
    }
    for v in [&agg.variable, &agg.denominator] {
        if statistic.magnitude() && !v.is_empty() && !rule.variables.contains(v) {
            return Ok(Ok(refuse(&mut decision, format!("rule {} does not grant variable {v} of {}", rule.id, table.id))));
        }
    }
    let Some(params) = policy.disclosure_params(&rule.id, &table.id).cloned() else {
        return Ok(Ok(refuse(&mut decision, format!("rule {} has no disclosure settings for {}", rule.id, table.id))));
    };
    if params.dp.is_some() && statistic != Statistic::Count {
        return Ok(Ok(refuse(&mut decision, format!("rule {} protects {} with differential privacy, which this node applies to counts only", rule.id, table.id))));
    }
    if let Some(w) = withdrawals.iter().find(|w| w.dataflow == table.id) {
        decision.reason = format!("{} is withdrawn by the member since {}: {}", table.id, w.at, w.reason);
        return Ok(Ok(MicroAnswer { answer: Answer { decision, cells: Vec::new() }, release: None }));
    }

    // ---- periods
    let meta = microdata::meta(store, &table.id)?;
    if meta.import_starts.len() != meta.imports as usize {
        return Err(crate::Error::Invalid(format!(
            "microdata table {} was stored without its import history ({} imports, {} recorded); re-import it so the release ledger can tell its versions apart",
            table.id, meta.imports, meta.import_starts.len())));
    }
    let mut withheld: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut periods: Vec<u32> = Vec::new();
    for (i, p) in meta.periods.iter().enumerate() {
        let asked = (q.start_period.is_empty() || p.as_str() >= q.start_period.as_str() || p.starts_with(&q.start_period))
            && crate::policy::period_in(p, None, (!q.end_period.is_empty()).then_some(q.end_period.as_str()));
        if !asked {
            continue;
        }
        if !rule.period_in_range(p) {
            withheld.entry(format!("outside the periods granted by rule {}", rule.id)).or_default().insert(p.clone());
        } else if let Some(e) = rule.embargo_on(p, today) {
            withheld.entry(format!("under embargo until {} (rule {})", e.until, rule.id)).or_default().insert(p.clone());
        } else {
            periods.push(i as u32);
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

    // ---- the cells asked for, as code-index sets per column
    let requester = ledger::subject(who);
    let history = ledger::load(store, &requester, &table.id)?;
    let mut per_axis: Vec<Vec<Option<u32>>> = Vec::new();
    for c in &breakdown {
        let codes: Vec<u32> = filters.get(c).map_or_else(|| all_categories(*c).into_iter().collect(), |f| f.iter().copied().collect());
        per_axis.push(codes.into_iter().map(Some).chain(std::iter::once(None)).collect());
    }
    let combos: usize = per_axis
        .iter()
        .map(Vec::len)
        .chain(std::iter::once(periods.len()))
        .try_fold(1usize, |acc, n| acc.checked_mul(n))
        .unwrap_or(usize::MAX);
    if combos > MAX_CELLS {
        return Ok(Ok(refuse(&mut decision, format!("the answer would have {combos} cells; at most {MAX_CELLS} are computed at once (narrow the breakdown or the periods)"))));
    }

    // ---- the atoms: per column, the coarsest partition of codes that every
    // current cell and every ledger box respects.
    // One more pseudo-column, VERSION: the import that brought each record.
    // A box released when the table held its first v imports covers only
    // their records, so the same box asked again after an import is a new
    // equation, and "before minus after" isolates the records added.
    let ncols = schema.categorical.len();
    let version_col = ncols;
    let code_count = |c: usize| match c {
        0 => meta.periods.len(),
        c if c == version_col => meta.imports as usize,
        c => schema.codes[c].len(),
    };
    let mut sets: Vec<Vec<BTreeSet<u32>>> = vec![Vec::new(); ncols + 1];
    sets[0].extend(periods.iter().map(|p| BTreeSet::from([*p])));
    for c in &breakdown {
        let base = filters.get(c).cloned().unwrap_or_else(|| all_categories(*c));
        sets[*c].extend(base.iter().map(|i| BTreeSet::from([*i])));
        sets[*c].push(base);
    }
    for (c, f) in &filters {
        sets[*c].push(f.clone());
    }
    let history_sets: Vec<(Vec<Option<BTreeSet<u32>>>, u8)> = history
        .iter()
        .map(|(b, flags)| (box_to_sets(&schema, &meta, b), *flags))
        .collect();
    for (hs, _) in &history_sets {
        for (c, s) in hs.iter().enumerate() {
            if let Some(s) = s {
                sets[c].push(s.clone());
            }
        }
    }
    let mut grouping = Grouping { values, weight: schema.weight_index(), top: statistic.magnitude(), ..Default::default() };
    for (c, s) in sets.iter().enumerate() {
        if s.is_empty() {
            continue;
        }
        let (classes, count) = partition(code_count(c), s);
        grouping.dims.push((c, classes, count));
    }
    if grouping.atoms() > MAX_ATOMS {
        return Ok(Ok(refuse(&mut decision, format!(
            "this query together with the {} cells already released to {requester} from {} would need {} groups of records to check; at most {MAX_ATOMS}",
            history.len(), table.id, grouping.atoms()))));
    }
    let scan_started = std::time::Instant::now();
    let atoms = microdata::scan(store, &schema, &meta, &grouping)?;
    let scanned = scan_started.elapsed();
    let nonempty: Vec<u32> = (0..atoms.len() as u32).filter(|a| atoms[*a as usize].n > 0).collect();
    let atom_classes: Vec<Vec<u32>> = nonempty.iter().map(|a| grouping.classes_of(*a as usize)).collect();

    // A box (code sets per column, None = all) as a target over the atoms.
    let target_of = |sets: &[Option<BTreeSet<u32>>]| -> Target {
        let classes: Vec<Vec<u32>> = grouping
            .dims
            .iter()
            .map(|(c, map, count)| match &sets[*c] {
                None => (0..*count).collect(),
                Some(s) => {
                    let mut v: Vec<u32> = s.iter().filter_map(|i| map.get(*i as usize).copied()).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                }
            })
            .collect();
        let atoms: Vec<u32> = nonempty
            .iter()
            .zip(&atom_classes)
            .filter(|(_, ac)| ac.iter().zip(&classes).all(|(a, cs)| cs.binary_search(a).is_ok()))
            .map(|(a, _)| *a)
            .collect();
        Target { atoms, classes }
    };

    // Categories no record holds are left out of the answer (a Moroccan
    // table has no Egyptian regions); that they are empty is no secret.
    // A category counts as held if a record of the granted periods holds it
    // (a category seen only in an embargoed period must not show). Filters
    // are ignored on purpose: dropping a category because no record of a
    // filtered group holds it would reveal that zero, which the group rule
    // may be hiding. Under differential privacy every category is listed.
    let mut universe: Vec<Option<BTreeSet<u32>>> = vec![None; ncols + 1];
    universe[0] = Some(periods.iter().copied().collect());
    let inside = target_of(&universe).atoms;
    let occurs: Vec<Vec<bool>> = breakdown
        .iter()
        .map(|c| {
            let Some((pos, (_, map, _))) = grouping.dims.iter().enumerate().find(|(_, d)| d.0 == *c) else { return Vec::new() };
            let held: BTreeSet<u32> = inside.iter().map(|a| grouping.classes_of(*a as usize)[pos]).collect();
            map.iter().map(|class| params.dp.is_some() || held.contains(class)).collect()
        })
        .collect();

    // ---- every cell
    let mut cells: Vec<CellDef> = Vec::with_capacity(combos);
    let per_period: usize = per_axis.iter().map(Vec::len).product();
    for &period in &periods {
        for flat in 0..per_period {
            // Mixed radix over the axes, the last axis fastest.
            let mut rest = flat;
            let mut coords = vec![None; breakdown.len()];
            for k in (0..breakdown.len()).rev() {
                coords[k] = per_axis[k][rest % per_axis[k].len()];
                rest /= per_axis[k].len();
            }
            if coords.iter().zip(&occurs).any(|(c, held)| c.is_some_and(|code| !held.get(code as usize).copied().unwrap_or(false))) {
                continue;
            }
            let mut sets_c: Vec<Option<BTreeSet<u32>>> = vec![None; ncols + 1];
            sets_c[0] = Some(BTreeSet::from([period]));
            for (c, f) in &filters {
                sets_c[*c] = Some(f.clone());
            }
            for (k, c) in breakdown.iter().enumerate() {
                if let Some(code) = coords[k] {
                    sets_c[*c] = Some(BTreeSet::from([code]));
                }
            }
            let target = target_of(&sets_c);
            let mut stats = AtomStats::default();
            for a in &target.atoms {
                stats.add(&atoms[*a as usize]);
            }
            let mut boxdef = sets_to_box(&schema, &meta.periods, &sets_c);
            boxdef.insert(ledger::VERSION.to_owned(), vec![meta.imports.to_string()]);
            cells.push(CellDef { coords, period, boxdef, target, stats });
        }
    }

    let cells_built = scan_started.elapsed();

    // ---- primary rules and the group rule
    let mut fired: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Under differential privacy nothing is suppressed on exact counts: a
    // cell withheld because it holds 1..9 people (or released because it
    // holds 0) would itself reveal what the noise hides.
    let dp = params.dp.is_some();
    let mut flags: Vec<Vec<&'static str>> =
        cells.iter().map(|c| if dp { Vec::new() } else { disclosure::primary(&params, statistic, &c.stats) }).collect();
    let coords_p: Vec<Vec<Option<u32>>> = cells.iter().map(|c| c.coords.iter().copied().chain(std::iter::once(Some(c.period))).collect()).collect();
    let ns: Vec<u64> = cells.iter().map(|c| c.stats.n).collect();
    for i in if dp { Vec::new() } else { disclosure::group_rule(&params, &coords_p, &ns) } {
        if !flags[i].contains(&"group") {
            flags[i].push("group");
        }
    }
    let mut released: Vec<bool> = flags.iter().map(Vec::is_empty).collect();
    let primary_out: Vec<bool> = released.iter().map(|r| !r).collect();

    // ---- secondary suppression against this answer and the ledger
    // What the requester can compute depends on what it was given: counts
    // of a box say nothing of its sum of months, so a magnitude answer is
    // checked against magnitude releases of the same variables, and a
    // count answer (conservatively) against every release.
    let measured: Vec<&str> = [agg.variable.as_str(), agg.denominator.as_str()].into_iter().filter(|v| statistic.magnitude() && !v.is_empty()).collect();
    let relevant = |measure: &Option<Vec<String>>| -> bool {
        match measure {
            None => !statistic.magnitude(),
            Some(vars) => !statistic.magnitude() || vars.iter().any(|v| measured.contains(&v.as_str())),
        }
    };
    let protected_flags = if statistic.magnitude() { ledger::WITHHELD | ledger::WITHHELD_MAGNITUDE } else { ledger::WITHHELD };
    let ledger_targets: Vec<(Target, u8, bool)> = history_sets
        .iter()
        .zip(&history)
        .map(|((sets, f), (b, _))| (target_of(sets), *f, relevant(&b.get(ledger::MEASURE).cloned())))
        .collect();
    let ledger_rows: Vec<&[u32]> = ledger_targets
        .iter()
        .filter(|(_, f, relevant)| *relevant && f & ledger::RELEASED != 0)
        .map(|(t, _, _)| t.atoms.as_slice())
        .collect();
    let mut fixed: Vec<Target> = ledger_targets
        .iter()
        .filter(|(_, f, relevant)| (f & ledger::WITHHELD != 0) || (*relevant && f & protected_flags != 0))
        .map(|(t, _, _)| t.clone())
        .collect();
    if !dp {
        for (a, ac) in nonempty.iter().zip(&atom_classes) {
            if !disclosure::primary(&params, statistic, &atoms[*a as usize]).is_empty() {
                fixed.push(Target { atoms: vec![*a], classes: ac.iter().map(|c| vec![*c]).collect() });
            }
        }
        // Nested differences: a cell of this answer inside (or around) a
        // cell released now or before differs from it by a group of
        // records; if that group is small, it is a target too. (Any small
        // difference has 0 < n(A) − n(B) < threshold, which filters pairs
        // before the subset test.)
        let count_of = |t: &Target| t.atoms.iter().map(|a| atoms[*a as usize].n).sum::<u64>();
        let others: Vec<(&Target, u64)> = ledger_targets
            .iter()
            .filter(|(_, f, relevant)| *relevant && f & ledger::RELEASED != 0)
            .map(|(t, _, _)| t)
            .chain(cells.iter().map(|c| &c.target))
            .map(|t| (t, count_of(t)))
            .collect();
        for c in &cells {
            let n = c.stats.n;
            for (other, m) in &others {
                let (big, small, gap) = if n > *m { (&c.target, *other, n - m) } else { (*other, &c.target, m.saturating_sub(n)) };
                if gap == 0 || gap >= params.threshold || !is_subset(&small.atoms, &big.atoms) {
                    continue;
                }
                let atoms_d: Vec<u32> = big.atoms.iter().copied().filter(|a| small.atoms.binary_search(a).is_err()).collect();
                fixed.push(Target { atoms: atoms_d, classes: big.classes.clone() });
            }
        }
    }
    let candidates: Vec<Candidate<'_>> =
        cells.iter().map(|c| Candidate { target: &c.target, n: c.stats.n, margin: c.coords.iter().any(Option::is_none) }).collect();
    let outcome = if dp {
        disclosure::secondary::SecondaryOutcome::default()
    } else {
        match disclosure::secondary(atoms.len(), &ledger_rows, &fixed, &candidates, &mut released) {
            Ok(o) => o,
            Err(_) => {
                return Ok(Ok(refuse(&mut decision, format!(
                    "checking this answer against the {} cells already released to {requester} from {} is too large a problem to solve here, so nothing is released (narrow the query)",
                    history.len(), table.id))));
            }
        }
    };
    for i in &outcome.withheld {
        flags[*i].push("secondary");
    }
    if outcome.already_revealed > 0 {
        tracing::warn!(table = %table.id, %requester, groups = outcome.already_revealed,
            "earlier releases (on data that has changed since) already reveal protected groups");
    }

    // ---- differential-privacy budget
    let mut epsilon = 0.0;
    if let Some((eps, budget)) = params.dp {
        let spent = ledger::spent(store, &requester, &table.id)?;
        if spent + eps > budget + 1e-12 {
            return Ok(Ok(refuse(&mut decision, format!(
                "differential-privacy budget exhausted: this query costs ε = {eps}, and {requester} has {:.4} of its {budget} left for {}",
                (budget - spent).max(0.0), table.id))));
        }
        epsilon = eps;
    }
    let rng = ring::rand::SystemRandom::new();
    // Each record falls in one cell per combination of interior/margin
    // along the breakdown dimensions: that is the answer's L1 sensitivity.
    let sensitivity = f64::from(1u32 << breakdown.len().min(20));

    // ---- values
    let mut out = Vec::with_capacity(cells.len());
    for (i, c) in cells.iter().enumerate() {
        let mut key: Vec<String> = vec![member.to_owned()];
        for (k, col) in breakdown.iter().enumerate() {
            key.push(match c.coords[k] {
                Some(code) => schema.codes[*col][code as usize].clone(),
                None => schema.totals[*col].clone().unwrap_or_default(),
            });
        }
        key.push(meta.periods[c.period as usize].clone());
        let mut cell = pb::Cell { key, value: f64::NAN, obs_status: "A".into(), unit_mult: 0, conf_status: "F".into(), flags: Vec::new() };
        if !released[i] {
            cell.conf_status = if primary_out[i] { "C" } else { "D" }.into();
            cell.flags = flags[i].iter().map(|f| (*f).to_owned()).collect();
        } else {
            let s = &c.stats;
            let (value, how) = value_of(statistic, [agg.variable.as_str(), agg.denominator.as_str()], s, &params, epsilon, sensitivity, &rng)?;
            cell.value = value;
            if value.is_nan() {
                cell.obs_status = "M".into();
            }
            if let Some(how) = how {
                cell.flags.push(how.to_owned());
            }
        }
        for f in &cell.flags {
            *fired.entry(match f.as_str() {
                "threshold" => "threshold",
                "dominance" => "dominance",
                "p-percent" => "p-percent",
                "group" => "group",
                "secondary" => "secondary",
                "cell-key" => "cell-key",
                _ => "dp-laplace",
            }).or_default() += 1;
        }
        out.push(cell);
    }
    tracing::debug!(records = meta.records, atoms = atoms.len(), cells = cells.len(), ledger = history.len(),
        scan_ms = scanned.as_secs_f64() * 1e3, cells_ms = (cells_built - scanned).as_secs_f64() * 1e3,
        disclosure_ms = (scan_started.elapsed() - cells_built).as_secs_f64() * 1e3, "microdata answer computed");
    decision.rules_fired = fired.iter().map(|(r, n)| format!("{r}: {n} cell{}", if *n == 1 { "" } else { "s" })).collect();

    let release = Release {
        requester,
        table: table.id.clone(),
        boxes: cells
            .iter()
            .zip(&released)
            .zip(&flags)
            .map(|((c, r), why)| {
                let flag = if *r {
                    ledger::RELEASED
                } else if why.iter().all(|f| matches!(*f, "dominance" | "p-percent")) {
                    ledger::WITHHELD_MAGNITUDE
                } else {
                    ledger::WITHHELD
                };
                let mut b = c.boxdef.clone();
                if !measured.is_empty() {
                    b.insert(ledger::MEASURE.to_owned(), measured.iter().map(|v| (*v).to_owned()).collect());
                }
                (b, flag)
            })
            .collect(),
        epsilon,
    };
    decision.kind = if withheld.is_empty() { DecisionKind::Allowed } else { DecisionKind::PartlyAllowed } as i32;
    let protected = released.iter().filter(|r| !**r).count();
    decision.reason = format!(
        "allowed by rule {}: {} of {} {} over {} records; {} cells withheld by disclosure control{}",
        rule.id,
        statistic.word(),
        table.id,
        if breakdown.is_empty() { "in total".to_owned() } else { format!("by {}", decision.dimensions[1..decision.dimensions.len() - 1].join(" × ")) },
        meta.records,
        protected,
        if decision.withheld.is_empty() { String::new() } else { format!("; periods withheld: {}", decision.withheld.join("; ")) },
    );
    Ok(Ok(MicroAnswer { answer: Answer { decision, cells: out }, release: Some(release) }))
}

/// The released value of a cell and how it was perturbed.
fn value_of(
    statistic: Statistic,
    variables: [&str; 2],
    s: &AtomStats,
    params: &Params,
    epsilon: f64,
    sensitivity: f64,
    rng: &ring::rand::SystemRandom,
) -> Result<(f64, Option<&'static str>), crate::Error> {
    let noisy_count = |n: u64| -> Result<(f64, Option<&'static str>), crate::Error> {
        if epsilon > 0.0 {
            let noise = disclosure::dp::discrete_laplace(sensitivity / epsilon, rng)
                .map_err(|_| crate::Error::Invalid("the system random number generator failed".into()))?;
            return Ok(((n as i64 + noise).max(0) as f64, Some("dp-laplace")));
        }
        match &params.cell_key {
            Some((t, _)) => Ok(((n as i64 + t.perturbation(n, s.key)).max(0) as f64, Some("cell-key"))),
            None => Ok((n as f64, None)),
        }
    };
    // A second and third key for magnitudes: a bijection of the cell key, so
    // the noise on a sum is as consistent as the noise on its count.
    // The noise on a sum is keyed by the cell and the variable (the same
    // variable always gets the same noise, whichever statistic asks) and
    // scaled by that variable's largest contribution.
    let magnitude = |sum: f64, key: u8, top: f64| -> (f64, Option<&'static str>) {
        match &params.cell_key {
            Some((t, m)) if *m > 0.0 => {
                let u = t.perturbation(u64::MAX, key) as f64 / f64::from(t.params.d);
                (sum + top * m * u, Some("cell-key"))
            }
            _ => (sum, None),
        }
    };
    let key_of = |variable: &str| -> u8 {
        let salt = variable.bytes().fold(0u8, |h, b| h.wrapping_mul(31).wrapping_add(b));
        s.key.wrapping_mul(167).wrapping_add(89).wrapping_add(salt.wrapping_mul(2).wrapping_add(1))
    };
    let (k2, k3) = (key_of(variables[0]), key_of(variables[1]));
    Ok(match statistic {
        Statistic::Count => noisy_count(s.n)?,
        Statistic::WeightedCount => {
            let (n2, how) = noisy_count(s.n)?;
            if s.n == 0 { (0.0, None) } else { (s.w * n2 / s.n as f64, how) }
        }
        Statistic::Sum => magnitude(s.s[0], k2, s.top[0]),
        Statistic::Mean => {
            if s.n == 0 {
                return Ok((f64::NAN, None));
            }
            let (sum, how) = magnitude(s.s[0], k2, s.top[0]);
            let (n2, _) = noisy_count(s.n)?;
            let denominator = if n2 > 0.0 { s.w * n2 / s.n as f64 } else { s.w };
            (sum / denominator, how)
        }
        Statistic::Ratio => {
            let (a, how) = magnitude(s.s[0], k2, s.top[0]);
            let (b, _) = magnitude(s.s[1], k3, s.top2[0]);
            if b == 0.0 { (f64::NAN, None) } else { (a / b, how) }
        }
    })
}

fn variables_of(t: &tabadul_proto::MicroTable) -> String {
    t.variables.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join(", ")
}

/// Whether sorted `small` is a subset of sorted `big`.
fn is_subset(small: &[u32], big: &[u32]) -> bool {
    if small.len() > big.len() {
        return false;
    }
    let mut j = 0;
    for a in small {
        while j < big.len() && big[j] < *a {
            j += 1;
        }
        if j == big.len() || big[j] != *a {
            return false;
        }
        j += 1;
    }
    true
}

/// The code indices of a dimension column that a record may hold (all but the total).
fn category_indices(schema: &Schema, c: usize) -> impl Iterator<Item = u32> + '_ {
    schema.codes[c].iter().enumerate().filter(move |(_, code)| schema.totals[c].as_deref() != Some(code.as_str())).map(|(i, _)| i as u32)
}

/// Groups codes `0..n` by which of `sets` contain them: the coarsest
/// partition in which every set is a union of classes.
fn partition(n: usize, sets: &[BTreeSet<u32>]) -> (Vec<u32>, u32) {
    let mut signature_class: HashMap<Vec<bool>, u32> = HashMap::new();
    let mut classes = Vec::with_capacity(n);
    for code in 0..n as u32 {
        let sig: Vec<bool> = sets.iter().map(|s| s.contains(&code)).collect();
        let next = signature_class.len() as u32;
        classes.push(*signature_class.entry(sig).or_insert(next));
    }
    let count = signature_class.len().max(1) as u32;
    (classes, count)
}

/// A ledger box as code-index sets per column (None = every code), plus
/// the version pseudo-column last: the imports the table held at release.
fn box_to_sets(schema: &Schema, meta: &microdata::TableMeta, b: &BoxDef) -> Vec<Option<BTreeSet<u32>>> {
    let mut out = vec![None; schema.categorical.len() + 1];
    for (dim, codes) in b {
        if dim == ledger::VERSION {
            let held = codes.first().and_then(|v| v.parse::<u32>().ok()).unwrap_or(meta.imports).min(meta.imports);
            if held < meta.imports {
                out[schema.categorical.len()] = Some((0..held).collect());
            }
            continue;
        }
        let Some(c) = schema.categorical_index(dim) else { continue };
        let universe: &[String] = if c == 0 { &meta.periods } else { &schema.codes[c] };
        out[c] = Some(codes.iter().filter_map(|code| universe.iter().position(|x| x == code)).map(|i| i as u32).collect());
    }
    out
}

/// Code-index sets as a ledger box (a column covering every category is left out).
fn sets_to_box(schema: &Schema, periods: &[String], sets: &[Option<BTreeSet<u32>>]) -> BoxDef {
    let mut b = BoxDef::new();
    for (c, s) in sets.iter().enumerate().take(schema.categorical.len()) {
        let Some(s) = s else { continue };
        if c > 0 && s.iter().copied().eq(category_indices(schema, c)) {
            continue;
        }
        let universe: &[String] = if c == 0 { periods } else { &schema.codes[c] };
        b.insert(schema.categorical[c].clone(), s.iter().map(|i| universe[*i as usize].clone()).collect());
    }
    b
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_the_coarsest_common_refinement() {
        let sets = [BTreeSet::from([0, 1, 2]), BTreeSet::from([2, 3])];
        let (classes, count) = partition(5, &sets);
        assert_eq!(count, 4);
        assert_eq!(classes[0], classes[1]);
        assert_ne!(classes[1], classes[2]);
        assert_ne!(classes[2], classes[3]);
        assert_ne!(classes[3], classes[4]);
    }
}
