//! Stage 5: which cells may leave. Primary rules and the group rule on
//! each cell, then secondary suppression over every measure the answer
//! reveals, against the ledger subject's earlier releases.
//!
//! Statistics of the same records are one linked release: a count adds a
//! row to the *count* measure, a sum to its variable's measure, a mean to
//! both (its cell's count and sum are as good as released), a ratio to both
//! of its variables. Each measure the answer touches is checked with every
//! row released before in that measure.

use std::collections::HashMap;

use crate::disclosure::secondary::{Candidate, Kept, Layout, SecondaryOutcome, System};
use crate::disclosure::span::TooComplex;
use crate::disclosure::{self, Params, Statistic, Target};
use crate::ledger::{self, BoxDef};

use super::atoms::{Atoms, Sets};
use super::cells::CellDef;
use super::request::Request;

/// One box of the ledger, with what it covers now.
#[derive(Debug)]
pub struct Earlier {
    pub target: Target,
    pub measures: Vec<String>,
    pub flags: u8,
}

impl Earlier {
    pub fn new(atoms: &Atoms, sets: &Sets, b: &BoxDef, flags: u8) -> Earlier {
        Earlier { target: atoms.target_of(sets), measures: ledger::measures(b), flags }
    }
}

/// The measures a statistic reveals.
pub fn measures_of(req: &Request) -> Vec<String> {
    let count = || ledger::COUNT.to_owned();
    let vars = req.variables.iter().filter(|v| !v.is_empty()).cloned();
    match req.statistic {
        Statistic::Count | Statistic::WeightedCount => vec![count()],
        Statistic::Sum | Statistic::Ratio => vars.collect(),
        Statistic::Mean => std::iter::once(count()).chain(vars).collect(),
    }
}

/// What protection decided.
#[derive(Debug, Default)]
pub struct Protection {
    pub released: Vec<bool>,
    /// Why each withheld cell is withheld (rule names).
    pub why: Vec<Vec<&'static str>>,
    /// Withheld by a primary rule (or the group rule) rather than as a complement.
    pub primary: Vec<bool>,
    pub outcome: SecondaryOutcome,
}

/// Decides for every cell. Under differential privacy nothing is
/// suppressed: a cell withheld because it holds 1..9 people (or released
/// because it holds 0) would itself reveal what the noise hides.
pub fn protect(params: &Params, req: &Request, atoms: &Atoms, cells: &[CellDef], earlier: &[Earlier]) -> Result<Protection, TooComplex> {
    protect_kept(params, req, atoms, cells, earlier, None)
}

/// The spans kept between answers ([`Kept`]), by ledger subject, table and
/// measure. Answers are serialised (the release lock), so one lock around
/// the map costs nothing.
#[derive(Debug, Default)]
pub struct KeptSpans(std::sync::Mutex<HashMap<String, Kept>>);

/// How many spans are kept at most (each holds a measure's ledger rows).
const MAX_KEPT: usize = 64;

/// [`protect`], starting each measure's audit from the span kept for
/// `key` (subject and table) where it still fits, and keeping the new one.
pub fn protect_kept(
    params: &Params,
    req: &Request,
    atoms: &Atoms,
    cells: &[CellDef],
    earlier: &[Earlier],
    kept: Option<(&KeptSpans, &str)>,
) -> Result<Protection, TooComplex> {
    if params.dp.is_some() {
        return Ok(Protection {
            released: vec![true; cells.len()],
            why: vec![Vec::new(); cells.len()],
            primary: vec![false; cells.len()],
            ..Default::default()
        });
    }
    let mut why: Vec<Vec<&'static str>> = cells.iter().map(|c| disclosure::primary(params, req.statistic, &c.stats)).collect();
    for (i, rule) in group_rule(params, atoms, cells) {
        if !why[i].contains(&rule) {
            why[i].push(rule);
        }
    }
    let mut released: Vec<bool> = why.iter().map(Vec::is_empty).collect();
    let primary: Vec<bool> = released.iter().map(|r| !r).collect();

    // Atoms the primary rules protect, as targets of their own. An atom
    // of fewer than `threshold` records needs none: it is a small group,
    // and the small-group search finds any combination that isolates it
    // (in every measure), so a target per small atom would only repeat
    // that check at the cost of one residual each, thousands of them on a
    // finely split table. What remains are the atoms of `threshold` or
    // more records whose magnitude is dominated.
    let sensitive_magnitude: Vec<Target> = if req.statistic.magnitude() {
        (0..atoms.nonempty.len())
            .filter(|k| {
                let stats = &atoms.stats[atoms.nonempty[*k] as usize];
                stats.n >= params.threshold && !disclosure::primary(params, req.statistic, stats).is_empty()
            })
            .map(|k| atoms.single(k))
            .collect()
    } else {
        Vec::new()
    };
    let systems: Vec<System<'_>> = measures_of(req)
        .iter()
        .map(|m| {
            let is_count = m == ledger::COUNT;
            let in_measure = |e: &&Earlier| e.measures.iter().any(|x| x == m);
            let ledger = earlier.iter().filter(|e| e.flags & ledger::RELEASED != 0).filter(in_measure).map(|e| e.target.atoms.as_slice()).collect();
            let mut targets: Vec<&Target> = earlier
                .iter()
                .filter(|e| e.flags & ledger::WITHHELD != 0 || (!is_count && e.flags & ledger::WITHHELD_MAGNITUDE != 0 && in_measure(e)))
                .map(|e| &e.target)
                .collect();
            if !is_count {
                targets.extend(&sensitive_magnitude);
            }
            System { ledger, targets }
        })
        .collect();
    let candidates: Vec<Candidate<'_>> = cells.iter().map(|c| Candidate { target: &c.target, n: c.stats.n, margin: c.margin() }).collect();
    let layout = Layout { atoms: atoms.stats.len(), fingerprint: atoms.fingerprint() };
    let names: Vec<String> = measures_of(req).iter().map(|m| format!("{}\x1f{m}", kept.map_or("", |(_, key)| key))).collect();
    let mut slots: Vec<Option<Kept>> = match kept {
        Some((spans, _)) => {
            let mut map = spans.0.lock().unwrap_or_else(|p| p.into_inner());
            names.iter().map(|n| map.remove(n)).collect()
        }
        None => vec![None; names.len()],
    };
    let outcome = disclosure::secondary::secondary_kept(layout, &atoms.sizes(), params.threshold, &systems, &candidates, &mut released, &mut slots)?;
    if let Some((spans, _)) = kept {
        let mut map = spans.0.lock().unwrap_or_else(|p| p.into_inner());
        for (name, slot) in names.into_iter().zip(slots) {
            if let Some(k) = slot {
                if map.len() >= MAX_KEPT {
                    map.clear();
                }
                map.insert(name, k);
            }
        }
    }
    for i in &outcome.withheld {
        why[*i].push("secondary");
    }
    Ok(Protection { released, why, primary, outcome })
}

/// The group rule on each cell: against each group it is a part of by one
/// restriction (a breakdown code or a filter) lifted. Returns the cells it
/// withholds.
fn group_rule(params: &Params, atoms: &Atoms, cells: &[CellDef]) -> Vec<(usize, &'static str)> {
    if params.group.is_none() {
        return Vec::new();
    }
    let mut wholes: HashMap<Sets, u64> = HashMap::new();
    let mut out = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        // Column 0 (periods) is no group: every cell is one period.
        for col in 1..c.sets.len() {
            if c.sets[col].is_none() {
                continue;
            }
            let mut lifted = c.sets.clone();
            lifted[col] = None;
            let whole = *wholes.entry(lifted).or_insert_with_key(|sets| atoms.stats_of(&atoms.target_of(sets)).n);
            if disclosure::homogeneous(params, c.stats.n, whole) {
                out.push((i, "group"));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::disclosure::AtomStats;
    use crate::micro_query::atoms::grouping_for;

    /// One breakdown column (index 1) of four categories, one period: the
    /// atoms are the categories, holding `sizes` records of value 5.
    fn table(sizes: &[u64]) -> (Atoms, Vec<CellDef>) {
        let k = sizes.len() as u32;
        let sets = vec![vec![BTreeSet::from([0])], (0..k).map(|c| BTreeSet::from([c])).collect()];
        let grouping = grouping_for(&sets, |c| if c == 0 { 1 } else { k as usize });
        let stats = sizes
            .iter()
            .map(|n| {
                let mut s = AtomStats { n: *n, w: *n as f64, s: [5.0 * *n as f64, 0.0], ..Default::default() };
                for _ in 0..(*n).min(4) {
                    s.push_top(5.0);
                }
                s
            })
            .collect();
        let atoms = Atoms::new(grouping, stats);
        let mut cells = Vec::new();
        for code in (0..k).map(Some).chain(std::iter::once(None)) {
            let sets: Sets = vec![Some(BTreeSet::from([0])), code.map(|c| BTreeSet::from([c])), None];
            let target = atoms.target_of(&sets);
            let stats = atoms.stats_of(&target);
            cells.push(CellDef { coords: vec![code], period: 0, sets, boxdef: BTreeMap::new(), target, stats });
        }
        (atoms, cells)
    }

    fn request(statistic: Statistic) -> Request {
        Request {
            statistic,
            variables: [if statistic == Statistic::Count { String::new() } else { "V".into() }, String::new()],
            values: [None, None],
            breakdown: vec![1],
            filters: BTreeMap::new(),
            start_period: String::new(),
            end_period: String::new(),
        }
    }

    #[test]
    fn a_small_cell_gets_a_complement_and_the_margin_survives() {
        let (atoms, cells) = table(&[3, 40, 50, 60]);
        let p = protect(&Params::default(), &request(Statistic::Count), &atoms, &cells, &[]).unwrap();
        assert!(!p.released[0] && p.primary[0] && p.why[0] == ["threshold"]);
        // The smallest other category complements it; the total stays.
        assert!(!p.released[1] && !p.primary[1] && p.why[1] == ["secondary"]);
        assert!(p.released[2] && p.released[3] && p.released[4]);
    }

    #[test]
    fn a_count_released_before_links_with_a_mean_now() {
        // Earlier: the count of the total. Now a mean by category, whose
        // cells carry counts too: releasing the three large ones would give
        // the small one's count by difference.
        let (atoms, cells) = table(&[3, 40, 50, 60]);
        let total = Earlier { target: cells[4].target.clone(), measures: vec![ledger::COUNT.into()], flags: ledger::RELEASED };
        let mean = protect(&Params::default(), &request(Statistic::Mean), &atoms, &cells[..4], std::slice::from_ref(&total)).unwrap();
        assert_eq!(mean.released.iter().filter(|r| **r).count(), 2, "{:?}", mean.why);
        // A sum reveals no count: the count ledger is no help to it, but
        // the sum of the three large ones and the sum of the total would be.
        let sum = protect(&Params::default(), &request(Statistic::Sum), &atoms, &cells[..4], std::slice::from_ref(&total)).unwrap();
        assert_eq!(sum.released.iter().filter(|r| **r).count(), 3, "{:?}", sum.why);
    }

    #[test]
    fn the_group_rule_withholds_the_zero_of_a_small_group() {
        // 30 people, all in category 1: categories 0, 2, 3 are zeros of a
        // small group, category 1 its whole.
        let (atoms, cells) = table(&[0, 30, 0, 0]);
        let p = protect(&Params::default(), &request(Statistic::Count), &atoms, &cells, &[]).unwrap();
        for i in 0..4 {
            assert!(!p.released[i] && p.why[i].contains(&"group"), "{i}: {:?}", p.why[i]);
        }
        // In a large group, zeros are just zeros.
        let (atoms, cells) = table(&[0, 300, 0, 0]);
        let p = protect(&Params::default(), &request(Statistic::Count), &atoms, &cells, &[]).unwrap();
        assert!(p.released.iter().all(|r| *r), "{:?}", p.why);
    }

    #[test]
    fn measures_follow_the_statistic() {
        assert_eq!(measures_of(&request(Statistic::Count)), [ledger::COUNT]);
        assert_eq!(measures_of(&request(Statistic::Sum)), ["V"]);
        assert_eq!(measures_of(&request(Statistic::Mean)), [ledger::COUNT, "V"]);
    }
}
