//! Secondary suppression against everything the requester already holds.
//!
//! The requester knows the values of every cell released to it for this
//! table (the release ledger) plus the cells released now, and from those
//! it can compute any linear combination. Releases are linked by the
//! records they cover: a count and a mean of the same box give its sum, so
//! each *measure* (the count, each variable's sum) is its own [`System`] of
//! rows, and a release adds rows to every measure it reveals.
//!
//! In each system the answer touches, no *target* may be computable:
//! - a cell suppressed now or in an earlier answer;
//! - a group of records the primary rules would suppress (an atom that no
//!   released cell splits, such as one person isolated by "total minus
//!   total without them");
//! - **any** group of fewer than `threshold` records that some linear
//!   combination of the rows isolates (A − B − C as well as nested pairs),
//!   found by the exact small-support search of [`Span::small_groups`].
//!
//! The answer's cells are offered margins first, then largest first; a
//! cell whose release would make a target computable is withheld instead
//! (in a table that is the smallest cell of the row or column completing
//! the equation: the classic complementary suppression). Earlier releases
//! cannot be taken back: a target that the ledger alone
//! already reveals (the data changed since) is left to the caller to
//! report, and does not block this answer.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use super::span::{Echelon, P, Span, Sparse, TooComplex, eliminate_sparse, modp, pow, sparse, sparse_get};

/// Something that must stay incomputable: the atoms it covers (sorted).
#[derive(Debug, Clone)]
pub struct Target {
    pub atoms: Vec<u32>,
}

/// One measure the requester can combine releases in.
#[derive(Debug, Clone, Default)]
pub struct System<'a> {
    /// Rows released before in this measure.
    pub ledger: Vec<&'a [u32]>,
    /// What must stay incomputable in it (beyond this answer's withheld
    /// cells and small groups, which are targets everywhere).
    pub targets: Vec<&'a Target>,
}

/// One cell of the current answer.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub target: &'a Target,
    /// Contributors (smaller cells are cheaper to withhold).
    pub n: u64,
    /// A margin (a total in some breakdown dimension): withheld last.
    pub margin: bool,
}

/// What the secondary pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecondaryOutcome {
    /// Cells of this answer withheld by this pass.
    pub withheld: Vec<usize>,
    /// Targets the ledger alone already reveals.
    pub already_revealed: usize,
    /// Measures whose audit started from a kept span (for the debug log).
    pub reused: usize,
}

/// How many small groups the ledger alone may already reveal (after the
/// data changed) before the check gives up.
const MAX_OLD_GROUPS: usize = 1_024;

/// How many small groups one search reports (one is enough to act on).
const GROUPS_PER_SEARCH: usize = 64;

/// Withholds cells of the answer (`released[i] = false`) until no target
/// is computable in any of `systems` (the measures this answer adds rows
/// to) from its ledger rows plus the released cells.
///
/// `sizes` gives each atom's records; groups of `1..threshold` records
/// are targets wherever a combination isolates them.
///
/// The cells are offered one at a time, margins first and then the
/// largest, to a span that grows with each one released. A cell is
/// withheld when its row would make a target computable, and it becomes a
/// target itself (so the complement cannot be had later either); or when
/// its row would let a combination isolate a new small group. The latter
/// can only happen when the row grows the part of the span that lies on
/// small atoms alone, which is cheap to see (the row's projection off the
/// small atoms is already in the projected span); only then is the exact
/// search run. Each offer costs a reduction and one update per target,
/// never a fresh elimination, so the check grows with the answer and the
/// ledger, not with their product.
pub fn secondary(
    atoms: usize,
    sizes: &[u64],
    threshold: u64,
    systems: &[System<'_>],
    cells: &[Candidate<'_>],
    released: &mut [bool],
) -> Result<SecondaryOutcome, TooComplex> {
    let mut kept = vec![None; systems.len()];
    secondary_kept(Layout { atoms, fingerprint: 0 }, sizes, threshold, systems, cells, released, &mut kept)
}

/// Which atoms the rows are over: their number and a fingerprint of how
/// they were formed (the caller's grouping), so that a [`Kept`] span is
/// only reused over the very same atoms.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub atoms: usize,
    pub fingerprint: u64,
}

/// A measure's span over the rows released so far, kept between answers:
/// the next answer over the same atoms adds only the rows it does not
/// hold, instead of eliminating the whole ledger again (the audit's cost
/// grew with the ledger's size squared). Order does not matter to a span,
/// so the rows are kept as a set; if any of them is not in the next
/// answer's ledger (a release that was never recorded, a restore), the
/// span is rebuilt from the ledger.
#[derive(Debug, Clone)]
pub struct Kept {
    fingerprint: u64,
    rows: HashSet<Vec<u32>>,
    span: Span,
    /// Small groups the rows reveal (see [`Measure::old`]).
    old: BTreeSet<Vec<u32>>,
    off_small: Echelon,
    /// The targets' residuals (sparse; empty when already determined), as
    /// of the span's first `rank` rows: most targets are the same from one
    /// answer to the next, and their residuals were the audit's main cost.
    residuals: HashMap<Vec<u32>, Sparse>,
    rank: usize,
}

/// [`secondary`], reusing the spans in `kept` (one slot per system) where
/// they fit and leaving there the spans after this answer, its released
/// cells included, for the next one.
pub fn secondary_kept(
    layout: Layout,
    sizes: &[u64],
    threshold: u64,
    systems: &[System<'_>],
    cells: &[Candidate<'_>],
    released: &mut [bool],
    kept: &mut [Option<Kept>],
) -> Result<SecondaryOutcome, TooComplex> {
    let mut out = SecondaryOutcome::default();
    let later: Vec<&[u32]> = cells.iter().map(|c| c.target.atoms.as_slice()).collect();
    let fingerprint = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (layout.atoms, layout.fingerprint, sizes, threshold).hash(&mut h);
        h.finish()
    };
    let mut measures = Vec::with_capacity(systems.len());
    let mut rows_of = Vec::with_capacity(systems.len());
    for (sys, slot) in systems.iter().zip(kept.iter_mut()) {
        let ledger: HashSet<&[u32]> = sys.ledger.iter().copied().filter(|r| !r.is_empty()).collect();
        let fits = |k: &Kept| k.fingerprint == fingerprint && k.rows.iter().all(|r| ledger.contains(r.as_slice()));
        let (span, old, off_small, rows, (cached, cached_rank)) = match slot.take().filter(fits) {
            Some(k) => {
                out.reused += 1;
                let new: Vec<&[u32]> = ledger.iter().copied().filter(|r| !k.rows.contains(*r)).collect();
                let (mut span, mut off_small, mut rows) = (k.span, k.off_small, k.rows);
                let cached = (k.residuals, k.rank);
                span.add_room(&new)?;
                span.add_room(&later)?;
                let small = span.small_columns(sizes, threshold);
                for row in &new {
                    add_row(&mut span, &mut off_small, &small, row);
                    rows.insert(row.to_vec());
                }
                // The kept groups stand while no row came in unchecked:
                // every row an answer released was checked to reveal no
                // group beyond them.
                let old = if new.is_empty() { k.old } else { span.small_groups(sizes, threshold, MAX_OLD_GROUPS)?.into_iter().collect() };
                (span, old, off_small, rows, cached)
            }
            None => {
                let span = Span::with_room(layout.atoms, &sys.ledger, &later)?;
                let old: BTreeSet<Vec<u32>> = span.small_groups(sizes, threshold, MAX_OLD_GROUPS)?.into_iter().collect();
                let small = span.small_columns(sizes, threshold);
                let mut off_small = Echelon::default();
                for row in span.rows() {
                    let mut v = project(&row, &small);
                    if !off_small.reduce(&mut v) {
                        off_small.push(v);
                    }
                }
                (span, old, off_small, ledger.iter().map(|r| r.to_vec()).collect(), (HashMap::new(), 0))
            }
        };
        out.already_revealed += old.len();
        let small = span.small_columns(sizes, threshold);
        rows_of.push(rows);
        let withheld_now = cells.iter().enumerate().filter(|(i, _)| !released[*i]).map(|(_, c)| c.target);
        let mut live = Vec::new();
        let mut revealed = Vec::new();
        // A target released as it is in this measure (a box withheld in a
        // later answer for another measure's sake, say) has nothing left to
        // protect here, and is no sign of a leak.
        for t in sys.targets.iter().copied().filter(|t| !ledger.contains(t.atoms.as_slice())).chain(withheld_now) {
            let residual = match cached.get(&t.atoms) {
                Some(kept) => Some(span.catch_up(kept.clone(), cached_rank)),
                None => span.residual(&t.atoms).map(|r| sparse(&r)),
            };
            match residual {
                None => {}
                Some(r) if r.is_empty() => {
                    // A withheld cell of `threshold` or more records that
                    // this measure determines is a complement chosen for
                    // another measure's sake (its count was released before,
                    // say): only a small one is a group revealed.
                    let n: u64 = t.atoms.iter().map(|a| sizes.get(*a as usize).copied().unwrap_or(0)).sum();
                    out.already_revealed += usize::from((1..threshold).contains(&n));
                    revealed.push(t.atoms.clone());
                }
                Some(r) => live.push((t.atoms.clone(), r)),
            }
        }
        measures.push(Measure { span, old, live, revealed, off_small, small });
    }
    let mut order: Vec<usize> = (0..cells.len()).filter(|i| released[*i] && !cells[*i].target.atoms.is_empty()).collect();
    order.sort_by_key(|i| (!cells[*i].margin, std::cmp::Reverse(cells[*i].n)));
    for i in order.iter().copied() {
        let atoms_i = cells[i].target.atoms.as_slice();
        let rows: Vec<Option<Vec<u64>>> = measures.iter().map(|m| m.span.residual(atoms_i).filter(|r| r.iter().any(|x| *x != 0))).collect();
        let mut exposes = false;
        for (m, row) in measures.iter().zip(&rows) {
            let Some(row) = row else { continue };
            let p = row.iter().position(|x| *x != 0).unwrap_or(0);
            let nnz = row.iter().filter(|x| **x != 0).count();
            if m.live.iter().any(|(_, t)| parallel(t, row, p, nnz)) || m.isolates(row, sizes, threshold)? {
                exposes = true;
                break;
            }
        }
        if exposes {
            released[i] = false;
            out.withheld.push(i);
            for (m, row) in measures.iter_mut().zip(rows) {
                m.live.extend(row.map(|r| (atoms_i.to_vec(), sparse(&r))));
            }
            continue;
        }
        for (m, row) in measures.iter_mut().zip(rows) {
            let Some(row) = row else { continue };
            let mut projected = project(&row, &m.small);
            if !m.off_small.reduce(&mut projected) {
                m.off_small.push(projected);
            }
            if let Some((pivot, pushed)) = m.span.push(row) {
                for (_, t) in m.live.iter_mut() {
                    let f = sparse_get(t, pivot);
                    if f != 0 {
                        eliminate_sparse(t, pushed, f);
                    }
                }
            }
        }
    }
    // What the next answer over the same atoms starts from: the ledger
    // plus this answer's released cells, as it will find them recorded.
    for ((m, mut rows), slot) in measures.into_iter().zip(rows_of).zip(kept.iter_mut()) {
        rows.extend(order.iter().filter(|i| released[**i]).map(|i| cells[*i].target.atoms.clone()));
        // Only a complete set of groups can be carried over.
        if m.old.len() < MAX_OLD_GROUPS {
            let mut residuals: HashMap<Vec<u32>, Sparse> = m.live.into_iter().collect();
            residuals.extend(m.revealed.into_iter().map(|key| (key, Sparse::new())));
            let rank = m.span.rank();
            *slot = Some(Kept { fingerprint, rows, span: m.span, old: m.old, off_small: m.off_small, residuals, rank });
        }
    }
    Ok(out)
}

/// Adds a released row to a kept span and to its projection off the small
/// atoms.
fn add_row(span: &mut Span, off_small: &mut Echelon, small: &[bool], row: &[u32]) {
    let Some(residual) = span.residual(row) else { return };
    let mut projected = project(&residual, small);
    if !off_small.reduce(&mut projected) {
        off_small.push(projected);
    }
    span.push(residual);
}

/// One measure's state while the answer's cells are offered.
struct Measure {
    span: Span,
    /// Small groups the ledger alone reveals: not this answer's doing.
    old: BTreeSet<Vec<u32>>,
    /// Residuals of the targets still hidden (sparse), by the target's atoms.
    live: Vec<(Vec<u32>, Sparse)>,
    /// Targets already determined (by the ledger alone).
    revealed: Vec<Vec<u32>>,
    /// The span projected off the small atoms, and which columns those are.
    off_small: Echelon,
    small: Vec<bool>,
}

impl Measure {
    /// Whether adding `row` lets some combination isolate a small group
    /// the span did not already isolate. Only a row whose projection off
    /// the small atoms is already in the projected span adds a vector
    /// supported on small atoms alone; only then is the search run.
    fn isolates(&self, row: &[u64], sizes: &[u64], threshold: u64) -> Result<bool, TooComplex> {
        let mut projected = project(row, &self.small);
        if !self.off_small.reduce(&mut projected) {
            return Ok(false);
        }
        let mut trial = self.span.clone();
        trial.push(row.to_vec());
        Ok(trial.small_groups(sizes, threshold, GROUPS_PER_SEARCH + self.old.len())?.iter().any(|g| !self.old.contains(g)))
    }
}

/// `v` with the small atoms' columns zeroed.
fn project(v: &[u64], small: &[bool]) -> Vec<u64> {
    v.iter().zip(small).map(|(x, s)| if *s { 0 } else { *x }).collect()
}

/// Whether residual `t` (sparse) is a multiple of `row` (whose first
/// non-zero entry is at `p`, `nnz` entries non-zero): adding `row` to the
/// span would determine `t`.
fn parallel(t: &[(u32, u64)], row: &[u64], p: usize, nnz: usize) -> bool {
    if t.len() != nnz {
        return false;
    }
    let f = modp(sparse_get(t, p) * pow(row[p], P - 2));
    if f == 0 {
        return false;
    }
    t.iter().all(|&(c, x)| x == modp(f * row[c as usize]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A 3×3 table with margins over atoms r*3+c; cell (r,c) with None for total.
    fn table() -> Vec<(Option<u32>, Option<u32>, Target)> {
        let mut out = Vec::new();
        for r in [Some(0), Some(1), Some(2), None] {
            for c in [Some(0), Some(1), Some(2), None] {
                let rs: Vec<u32> = r.map_or(vec![0, 1, 2], |r| vec![r]);
                let cs: Vec<u32> = c.map_or(vec![0, 1, 2], |c| vec![c]);
                let mut atoms: Vec<u32> = rs.iter().flat_map(|r| cs.iter().map(move |c| r * 3 + c)).collect();
                atoms.sort();
                out.push((r, c, Target { atoms }));
            }
        }
        out
    }

    #[test]
    fn one_suppressed_cell_gets_complements_and_margins_survive() {
        let t = table();
        let n: Vec<u64> = t
            .iter()
            .map(|(r, c, _)| match (r, c) {
                (Some(0), Some(0)) => 3,
                _ => 50,
            })
            .collect();
        let cells: Vec<Candidate<'_>> = t.iter().zip(&n).map(|((r, c, target), n)| Candidate { target, n: *n, margin: r.is_none() || c.is_none() }).collect();
        let mut released: Vec<bool> = n.iter().map(|n| *n >= 10).collect();
        let sizes = [50u64; 9];
        let out = secondary(9, &sizes, 10, &[System::default()], &cells, &mut released).unwrap();
        // At least a rectangle: (0,0) plus three complements, margins kept.
        assert!(out.withheld.len() >= 3, "{out:?}");
        for (i, (r, c, _)) in t.iter().enumerate() {
            if r.is_none() || c.is_none() {
                assert!(released[i], "margin ({r:?},{c:?}) withheld");
            }
        }
        // And no withheld cell is computable from what is released.
        let rows: Vec<&[u32]> = cells.iter().enumerate().filter(|(i, _)| released[*i]).map(|(_, c)| c.target.atoms.as_slice()).collect();
        let span = Span::new(9, &rows).unwrap();
        for (i, c) in cells.iter().enumerate() {
            if !released[i] {
                assert!(!span.determines(&c.target.atoms), "cell {i} computable");
            }
        }
    }

    /// Random answers over the same atoms, each against everything
    /// released before: the kept span must decide exactly as a span built
    /// afresh from the ledger, answer after answer, and a kept span holding
    /// a row the ledger lacks must not be used.
    #[test]
    fn a_kept_span_decides_as_a_fresh_one() {
        let mut rnd = crate::disclosure::xorshift(0x2545_F491_4F6C_DD1D);
        let mut next = move |n: u64| rnd() % n;
        for _ in 0..20 {
            let atoms = 24;
            let sizes: Vec<u64> = (0..atoms).map(|_| if next(4) == 0 { 1 + next(9) } else { 10 + next(40) }).collect();
            let mut ledger: Vec<Vec<u32>> = Vec::new();
            let mut withheld: Vec<Target> = Vec::new();
            let mut kept = vec![None];
            let layout = Layout { atoms, fingerprint: 7 };
            for answer in 0..12 {
                let cells: Vec<Target> = (0..1 + next(6))
                    .map(|_| {
                        let mut a: Vec<u32> = (0..atoms as u32).filter(|_| next(3) == 0).collect();
                        if a.is_empty() {
                            a.push(next(atoms as u64) as u32);
                        }
                        Target { atoms: a }
                    })
                    .collect();
                let n: Vec<u64> = cells.iter().map(|c| c.atoms.iter().map(|a| sizes[*a as usize]).sum()).collect();
                let candidates: Vec<Candidate<'_>> = cells.iter().zip(&n).map(|(t, n)| Candidate { target: t, n: *n, margin: false }).collect();
                let rows: Vec<&[u32]> = ledger.iter().map(Vec::as_slice).collect();
                let sys = System { ledger: rows, targets: withheld.iter().collect() };
                let primary: Vec<bool> = n.iter().map(|n| *n >= 10).collect();
                let mut fresh = primary.clone();
                let a = secondary(atoms, &sizes, 10, std::slice::from_ref(&sys), &candidates, &mut fresh).unwrap();
                let mut again = primary.clone();
                let b = secondary_kept(layout, &sizes, 10, std::slice::from_ref(&sys), &candidates, &mut again, &mut kept).unwrap();
                assert_eq!(fresh, again, "answer {answer}");
                assert_eq!((&a.withheld, a.already_revealed), (&b.withheld, b.already_revealed), "answer {answer}");
                assert_eq!(b.reused, usize::from(answer > 0), "answer {answer}: the kept span was not used");
                assert!(kept[0].is_some());
                for (i, c) in cells.iter().enumerate() {
                    if fresh[i] {
                        ledger.push(c.atoms.clone());
                    } else {
                        withheld.push(c.clone());
                    }
                }
                // Now and then a release the kept span did not see (one
                // answered over other atoms): it must be taken in.
                if next(3) == 0 {
                    ledger.push((0..atoms as u32).filter(|_| next(2) == 0).collect());
                }
            }
            // A span that took in a release the ledger never recorded is
            // not reused: the answer is decided from the ledger alone.
            let mut stale = kept.clone();
            if let Some(k) = stale[0].as_mut() {
                k.rows.insert(vec![0]);
                k.span.add_row(&[0]);
            }
            let probe = Target { atoms: vec![1] };
            let candidates = [Candidate { target: &probe, n: sizes[1], margin: false }];
            let rows: Vec<&[u32]> = ledger.iter().map(Vec::as_slice).collect();
            let sys = System { ledger: rows, targets: withheld.iter().collect() };
            let mut fresh = vec![sizes[1] >= 10];
            secondary(atoms, &sizes, 10, std::slice::from_ref(&sys), &candidates, &mut fresh).unwrap();
            let mut again = fresh.clone();
            again[0] = sizes[1] >= 10;
            secondary_kept(layout, &sizes, 10, std::slice::from_ref(&sys), &candidates, &mut again, &mut stale).unwrap();
            assert_eq!(fresh, again);
        }
    }

    #[test]
    fn the_ledger_counts() {
        // Earlier the requester got the total of atoms {0,1}; now it asks
        // for atom 1 alone while atom 0 is a sensitive group: withheld.
        let earlier: [&[u32]; 1] = [&[0, 1]];
        let sensitive = Target { atoms: vec![0] };
        let now = Target { atoms: vec![1] };
        let cells = [Candidate { target: &now, n: 40, margin: false }];
        let mut released = vec![true];
        let sys = System { ledger: earlier.to_vec(), targets: vec![&sensitive] };
        let out = secondary(2, &[40, 40], 10, std::slice::from_ref(&sys), &cells, &mut released).unwrap();
        assert_eq!(out.withheld, [0]);
        assert!(!released[0]);
        // Without that history it is released.
        let mut released = vec![true];
        let sys = System { ledger: vec![], targets: vec![&sensitive] };
        secondary(2, &[40, 40], 10, std::slice::from_ref(&sys), &cells, &mut released).unwrap();
        assert!(released[0]);
    }

    #[test]
    fn a_combination_of_three_releases_isolating_a_small_group_is_refused() {
        // Before: A = {0..4} and B = {0,1}. Now C = {2}: A − B − C is the
        // group {3,4} of five people, though neither atom alone, nor any
        // nested pair, reveals it.
        let earlier: [&[u32]; 2] = [&[0, 1, 2, 3, 4], &[0, 1]];
        let c = Target { atoms: vec![2] };
        let cells = [Candidate { target: &c, n: 30, margin: false }];
        let sys = System { ledger: earlier.to_vec(), targets: vec![] };
        let sizes = [40, 40, 30, 2, 3];
        let mut released = vec![true];
        let out = secondary(5, &sizes, 10, std::slice::from_ref(&sys), &cells, &mut released).unwrap();
        assert_eq!(out.withheld, [0]);
        // If the group were large, C would be released.
        let mut released = vec![true];
        secondary(5, &[40, 40, 30, 20, 30], 10, std::slice::from_ref(&sys), &cells, &mut released).unwrap();
        assert!(released[0]);
    }

    #[test]
    fn each_measure_is_checked_with_its_own_rows() {
        // The count of {0,1} was released; the sum of {1} now: in the sum
        // system nothing else is known, so atom 0 stays hidden there,
        // whereas in the count system releasing {1} would isolate it.
        let earlier: [&[u32]; 1] = [&[0, 1]];
        let zero = Target { atoms: vec![0] };
        let one = Target { atoms: vec![1] };
        let cells = [Candidate { target: &one, n: 40, margin: false }];
        let counts = System { ledger: earlier.to_vec(), targets: vec![&zero] };
        let sums = System { ledger: vec![], targets: vec![&zero] };
        let mut released = vec![true];
        secondary(2, &[40, 40], 10, std::slice::from_ref(&sums), &cells, &mut released).unwrap();
        assert!(released[0]);
        // A mean reveals both measures: withheld.
        let mut released = vec![true];
        secondary(2, &[40, 40], 10, &[counts, sums], &cells, &mut released).unwrap();
        assert!(!released[0]);
    }
}
