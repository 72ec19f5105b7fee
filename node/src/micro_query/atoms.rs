//! Stage 3: the atoms. Per column, the coarsest partition of codes that
//! every cell of this answer and every box of the ledger respects; an atom
//! is one combination of classes, and every cell (now or before) is a union
//! of atoms, so one scan computes them all and the disclosure checks reason
//! over them.
//!
//! One more pseudo-column, VERSION, is the import that brought each record:
//! a box released when the table held its first v imports covers only
//! their records, so the same box asked again after an import is a new
//! equation, and "before minus after" isolates the records added.

use std::collections::{BTreeSet, HashMap};

use crate::disclosure::{AtomStats, Target};
use crate::ledger::{self, BoxDef};
use crate::microdata::{Grouping, Schema, TableMeta};

use super::request::category_indices;

/// Code-index sets per column (`None`: every code), the VERSION column last.
pub type Sets = Vec<Option<BTreeSet<u32>>>;

/// The scanned atoms.
#[derive(Debug)]
pub struct Atoms {
    pub grouping: Grouping,
    pub stats: Vec<AtomStats>,
    /// Atoms holding at least one record, ascending.
    pub nonempty: Vec<u32>,
    /// Their classes per grouped column.
    classes: Vec<Vec<u32>>,
}

impl Atoms {
    pub fn new(grouping: Grouping, stats: Vec<AtomStats>) -> Atoms {
        let nonempty: Vec<u32> = (0..stats.len() as u32).filter(|a| stats[*a as usize].n > 0).collect();
        let classes = nonempty.iter().map(|a| grouping.classes_of(*a as usize)).collect();
        Atoms { grouping, stats, nonempty, classes }
    }

    /// A box as a target over the (non-empty) atoms. Empty atoms are left
    /// out: an attacker who knew them empty would know more, so this is the
    /// strongest attacker's view.
    pub fn target_of(&self, sets: &[Option<BTreeSet<u32>>]) -> Target {
        // Per grouped column, which of its classes the box takes.
        let allowed: Vec<Vec<bool>> = self
            .grouping
            .dims
            .iter()
            .map(|(c, map, count)| match &sets[*c] {
                None => vec![true; *count as usize],
                Some(s) => {
                    let mut v = vec![false; *count as usize];
                    for class in s.iter().filter_map(|i| map.get(*i as usize)) {
                        v[*class as usize] = true;
                    }
                    v
                }
            })
            .collect();
        let combos = allowed.iter().try_fold(1usize, |acc, a| acc.checked_mul(a.iter().filter(|x| **x).count())).unwrap_or(usize::MAX);
        // A box is checked against every ledger box on every answer: walk
        // whichever is smaller, its own combinations of classes (in
        // ascending atom order) or the non-empty atoms.
        let atoms: Vec<u32> = if combos < self.nonempty.len() {
            let mut out = Vec::with_capacity(combos);
            let mut index = vec![0usize];
            for ((_, _, count), a) in self.grouping.dims.iter().zip(&allowed) {
                index = index.iter().flat_map(|base| a.iter().enumerate().filter(|(_, x)| **x).map(move |(class, _)| base * *count as usize + class)).collect();
            }
            out.extend(index.into_iter().filter(|a| self.stats.get(*a).is_some_and(|s| s.n > 0)).map(|a| a as u32));
            out
        } else {
            self.nonempty.iter().zip(&self.classes).filter(|(_, ac)| ac.iter().zip(&allowed).all(|(a, ok)| ok[*a as usize])).map(|(a, _)| *a).collect()
        };
        Target { atoms }
    }

    pub fn stats_of(&self, t: &Target) -> AtomStats {
        let mut s = AtomStats::default();
        for a in &t.atoms {
            s.add(&self.stats[*a as usize]);
        }
        s
    }

    /// Which atoms these are: a hash of how the codes were grouped. Two
    /// answers with the same fingerprint (and sizes) index the same
    /// groups of records the same way.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.grouping.dims.hash(&mut h);
        h.finish()
    }

    /// Records per atom (dense).
    pub fn sizes(&self) -> Vec<u64> {
        self.stats.iter().map(|s| s.n).collect()
    }

    /// One atom as a target of its own.
    pub fn single(&self, k: usize) -> Target {
        Target { atoms: vec![self.nonempty[k]] }
    }
}

/// The grouping that splits every set of `sets` (per column, the sets a
/// cell or ledger box uses).
pub fn grouping_for(sets: &[Vec<BTreeSet<u32>>], code_count: impl Fn(usize) -> usize) -> Grouping {
    let mut grouping = Grouping::default();
    for (c, s) in sets.iter().enumerate() {
        if s.is_empty() {
            continue;
        }
        let (classes, count) = partition(code_count(c), s);
        grouping.dims.push((c, classes, count));
    }
    grouping
}

/// Groups codes `0..n` by which of `sets` contain them: the coarsest
/// partition in which every set is a union of classes.
pub fn partition(n: usize, sets: &[BTreeSet<u32>]) -> (Vec<u32>, u32) {
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
pub fn box_to_sets(schema: &Schema, meta: &TableMeta, b: &BoxDef) -> Sets {
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
pub fn sets_to_box(schema: &Schema, periods: &[String], sets: &[Option<BTreeSet<u32>>]) -> BoxDef {
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

    #[test]
    fn targets_cover_exactly_the_nonempty_atoms_of_a_box() {
        // Two columns of 3 and 2 codes, each its own class.
        let sets = vec![vec![BTreeSet::from([0]), BTreeSet::from([1]), BTreeSet::from([2])], vec![BTreeSet::from([0]), BTreeSet::from([1])]];
        let grouping = grouping_for(&sets, |c| [3, 2][c]);
        assert_eq!(grouping.atoms(), 6);
        // Atom (r, c) at index r * 2 + c holds r + c records: (0,0) is empty.
        let stats: Vec<AtomStats> = (0..6).map(|i| AtomStats { n: (i / 2 + i % 2) as u64, ..Default::default() }).collect();
        let atoms = Atoms::new(grouping, stats);
        assert_eq!(atoms.nonempty, [1, 2, 3, 4, 5]);
        let row0 = atoms.target_of(&[Some(BTreeSet::from([0])), None]);
        assert_eq!(row0.atoms, [1], "the empty atom (0,0) is left out");
        let col1 = atoms.target_of(&[None, Some(BTreeSet::from([1]))]);
        assert_eq!(col1.atoms, [1, 3, 5]);
        assert_eq!(atoms.stats_of(&col1).n, 1 + 2 + 3);
        assert_eq!(atoms.target_of(&[None, None]).atoms.len(), 5);
    }
}
