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
//! While a target is computable, one more cell of this answer is withheld,
//! preferring a cell in the same row or column as the target (the classic
//! complementary suppression), then one overlapping it, then the smallest.
//! Earlier releases cannot be taken back: a target that the ledger alone
//! already reveals (the data changed since) is left to the caller to
//! report, and does not block this answer.

use std::collections::BTreeSet;

use super::span::{Span, TooComplex};

/// Something that must stay incomputable: its atoms and, per grouped
/// column, the classes it spans (to find cells in the same row or column).
#[derive(Debug, Clone)]
pub struct Target {
    pub atoms: Vec<u32>,
    pub classes: Vec<Vec<u32>>,
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
}

/// More complements than this for one answer: the check gives up (and the
/// caller releases nothing) rather than hold the node for minutes.
pub const MAX_ROUNDS: usize = 2_000;

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
pub fn secondary(
    atoms: usize,
    sizes: &[u64],
    threshold: u64,
    systems: &[System<'_>],
    cells: &[Candidate<'_>],
    released: &mut [bool],
) -> Result<SecondaryOutcome, TooComplex> {
    let mut out = SecondaryOutcome::default();
    struct State<'s> {
        /// Small groups the ledger alone reveals: not this answer's doing.
        old_groups: BTreeSet<Vec<u32>>,
        live: Vec<&'s [u32]>,
        useful: Vec<bool>,
    }
    let mut states: Vec<State<'_>> = Vec::new();
    for sys in systems {
        let base = Span::new(atoms, &sys.ledger)?;
        let old_groups: BTreeSet<Vec<u32>> = base.small_groups(sizes, threshold, MAX_OLD_GROUPS)?.into_iter().collect();
        out.already_revealed += old_groups.len();
        let mut live = Vec::new();
        let withheld_now = cells.iter().enumerate().filter(|(i, _)| !released[*i]).map(|(_, c)| c.target);
        for t in sys.targets.iter().copied().chain(withheld_now) {
            if t.atoms.is_empty() {
                continue;
            }
            if base.determines(&t.atoms) {
                out.already_revealed += 1;
            } else {
                live.push(t.atoms.as_slice());
            }
        }
        // Withholding a cell the ledger already reveals protects nothing.
        let useful = cells.iter().map(|c| !c.target.atoms.is_empty() && !base.determines(&c.target.atoms)).collect();
        states.push(State { old_groups, live, useful });
    }
    let mut rounds = 0usize;
    loop {
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(TooComplex { unknown_atoms: 0 });
        }
        let mut chosen = None;
        for (sys, st) in systems.iter().zip(&states) {
            let mut rows: Vec<&[u32]> = sys.ledger.clone();
            rows.extend(cells.iter().enumerate().filter(|(i, _)| released[*i]).map(|(_, c)| c.target.atoms.as_slice()));
            let span = Span::new(atoms, &rows)?;
            let mut exposed: Vec<Vec<u32>> = st.live.iter().filter(|t| span.determines(t)).map(|t| t.to_vec()).collect();
            if exposed.is_empty() {
                exposed = span
                    .small_groups(sizes, threshold, GROUPS_PER_SEARCH + st.old_groups.len())?
                    .into_iter()
                    .filter(|g| !st.old_groups.contains(g))
                    .collect();
            }
            // Nothing of this answer left to withhold for an exposure means
            // the ledger alone exposes it (reported above as already revealed).
            if let Some(i) = complement(&exposed, cells, released, &st.useful) {
                chosen = Some(i);
                break;
            }
        }
        let Some(i) = chosen else { break };
        released[i] = false;
        out.withheld.push(i);
        for st in &mut states {
            st.live.push(cells[i].target.atoms.as_slice());
        }
    }
    Ok(out)
}

/// The best complement for any exposed group: a same-row-or-column cell
/// beats a cell overlapping the group beats anything; interior beats
/// margin; fewer contributors beat more.
fn complement(exposed: &[Vec<u32>], cells: &[Candidate<'_>], released: &[bool], useful: &[bool]) -> Option<usize> {
    let classes_of = |g: &[u32]| -> Option<&Vec<Vec<u32>>> {
        cells.iter().find(|c| c.target.atoms == g).map(|c| &c.target.classes)
    };
    exposed
        .iter()
        .flat_map(|g| {
            let g_classes = classes_of(g);
            cells.iter().enumerate().filter(|(i, c)| released[*i] && useful[*i] && !c.target.atoms.is_empty()).map(move |(i, c)| {
                let tier = if g_classes.is_some_and(|gc| sibling(&c.target.classes, gc)) {
                    0
                } else if c.target.atoms.iter().any(|a| g.binary_search(a).is_ok()) {
                    1
                } else {
                    2
                };
                ((tier, c.margin, c.n), i)
            })
        })
        .min()
        .map(|(_, i)| i)
}

/// Same classes in every column but one, and disjoint there: a cell in
/// the same row or column of the table.
fn sibling(a: &[Vec<u32>], b: &[Vec<u32>]) -> bool {
    let mut differing = a.iter().zip(b).filter(|(x, y)| x != y);
    match (differing.next(), differing.next()) {
        (Some((x, y)), None) => x.iter().all(|c| y.binary_search(c).is_err()),
        _ => false,
    }
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
                out.push((r, c, Target { atoms, classes: vec![rs, cs] }));
            }
        }
        out
    }

    #[test]
    fn one_suppressed_cell_gets_complements_and_margins_survive() {
        let t = table();
        let n: Vec<u64> = t.iter().map(|(r, c, _)| match (r, c) {
            (Some(0), Some(0)) => 3,
            _ => 50,
        }).collect();
        let cells: Vec<Candidate<'_>> = t
            .iter()
            .zip(&n)
            .map(|((r, c, target), n)| Candidate { target, n: *n, margin: r.is_none() || c.is_none() })
            .collect();
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

    #[test]
    fn the_ledger_counts() {
        // Earlier the requester got the total of atoms {0,1}; now it asks
        // for atom 1 alone while atom 0 is a sensitive group: withheld.
        let earlier: [&[u32]; 1] = [&[0, 1]];
        let sensitive = Target { atoms: vec![0], classes: vec![vec![0]] };
        let now = Target { atoms: vec![1], classes: vec![vec![1]] };
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
        let c = Target { atoms: vec![2], classes: vec![vec![2]] };
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
        let zero = Target { atoms: vec![0], classes: vec![vec![0]] };
        let one = Target { atoms: vec![1], classes: vec![vec![1]] };
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
