//! Secondary suppression against everything the requester already holds.
//!
//! The requester knows the values of every cell released to it for this
//! dataset (the release ledger) plus the cells released now. From those it
//! can compute any linear combination. We forbid that any *target* be
//! computable: a cell suppressed now or in an earlier answer, or an atom (a
//! group of records no released cell splits) that the primary rules would
//! suppress, such as one person isolated by "total minus total without
//! them". While a target is computable, one more cell of this answer is
//! withheld, preferring a cell that differs from the target in one
//! dimension only (the classic complementary suppression in the same row
//! or column), then the smallest. Earlier releases cannot be taken back:
//! a target that the ledger alone already reveals (the data changed since)
//! is left to the caller to report, and does not block this answer.

use super::span::{Span, TooComplex};

/// Something that must stay incomputable: its atoms and, per grouped
/// column, the classes it spans (to find cells in the same row or column).
#[derive(Debug, Clone)]
pub struct Target {
    pub atoms: Vec<u32>,
    pub classes: Vec<Vec<u32>>,
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

/// Withholds cells of the answer (`released[i] = false`) until no target is
/// computable from `ledger` rows plus the released cells.
///
/// `fixed` are the ledger's protected cells and the sensitive atoms; the
/// cells of this answer already withheld are targets too.
pub fn secondary(
    atoms: usize,
    ledger: &[&[u32]],
    fixed: &[Target],
    cells: &[Candidate<'_>],
    released: &mut [bool],
) -> Result<SecondaryOutcome, TooComplex> {
    let mut out = SecondaryOutcome::default();
    let base = Span::new(atoms, ledger)?;
    let mut live: Vec<&Target> = Vec::new();
    for t in fixed.iter().chain(cells.iter().enumerate().filter(|(i, _)| !released[*i]).map(|(_, c)| c.target)) {
        if t.atoms.is_empty() {
            continue;
        }
        if base.determines(&t.atoms) {
            out.already_revealed += 1;
        } else {
            live.push(t);
        }
    }
    // Withholding a cell the ledger already reveals protects nothing.
    let useful: Vec<bool> = cells.iter().map(|c| !c.target.atoms.is_empty() && !base.determines(&c.target.atoms)).collect();
    let mut rounds = 0usize;
    loop {
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(TooComplex { unknown_atoms: 0 });
        }
        let mut rows: Vec<&[u32]> = ledger.to_vec();
        rows.extend(cells.iter().enumerate().filter(|(i, _)| released[*i]).map(|(_, c)| c.target.atoms.as_slice()));
        let span = Span::new(atoms, &rows)?;
        let exposed: Vec<&Target> = live.iter().filter(|t| span.determines(&t.atoms)).copied().collect();
        if exposed.is_empty() {
            break;
        }
        // The best complement for any exposed target: a same-row-or-column
        // cell beats a cell overlapping the target beats anything; interior
        // beats margin; fewer contributors beat more.
        let choice = exposed
            .iter()
            .flat_map(|t| {
                cells.iter().enumerate().filter(|(i, c)| released[*i] && useful[*i] && !c.target.atoms.is_empty()).map(move |(i, c)| {
                    let tier = if sibling(&c.target.classes, &t.classes) {
                        0
                    } else if c.target.atoms.iter().any(|a| t.atoms.binary_search(a).is_ok()) {
                        1
                    } else {
                        2
                    };
                    ((tier, c.margin, c.n), i)
                })
            })
            .min()
            .map(|(_, i)| i);
        let Some(i) = choice else {
            // Nothing of this answer is left to withhold: the exposure comes
            // from the ledger, which `base` should have caught.
            break;
        };
        released[i] = false;
        out.withheld.push(i);
        live.push(cells[i].target);
    }
    Ok(out)
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
        let out = secondary(9, &[], &[], &cells, &mut released).unwrap();
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
        let out = secondary(2, &earlier, std::slice::from_ref(&sensitive), &cells, &mut released).unwrap();
        assert_eq!(out.withheld, [0]);
        assert!(!released[0]);
        // Without that history it is released.
        let mut released = vec![true];
        secondary(2, &[], std::slice::from_ref(&sensitive), &cells, &mut released).unwrap();
        assert!(released[0]);
    }
}
