//! One pass over a table's columns, grouping records into "atoms".
//!
//! The caller partitions each categorical column's codes into classes; an
//! atom is one combination of classes. Every released or protected cell is
//! a union of atoms, so one scan yields every cell of an answer (margins
//! included) and the atoms the disclosure checks reason about. Per atom it
//! keeps what the rules need: contributors, weights, the record-key sums,
//! sums of up to two variables and the largest contributions.

pub use tabadul_policy::disclosure::{AtomStats, TOP_K};

use super::{KEY_COLUMN, Schema, TableMeta};
use crate::Error;
use crate::store::{ColumnChunks, Store};

/// How to group: per categorical column used, the class of each code index.
#[derive(Debug, Clone, Default)]
pub struct Grouping {
    /// (categorical column index, class of each code index, number of
    /// classes). Index `schema.categorical.len()` is the version
    /// pseudo-column: the import each record came with (class per import).
    pub dims: Vec<(usize, Vec<u32>, u32)>,
    /// Numeric columns to sum (the statistic's variable and denominator).
    pub values: [Option<usize>; 2],
    /// The weight column, if contributions are weighted.
    pub weight: Option<usize>,
    /// Keep the largest contributions of `values[0]` (for dominance rules).
    pub top: bool,
}

impl Grouping {
    /// Number of atoms (the product of the class counts).
    /// Number of atoms (saturating: an overflow reads as too many).
    pub fn atoms(&self) -> usize {
        self.dims.iter().try_fold(1usize, |acc, d| acc.checked_mul(d.2 as usize)).unwrap_or(usize::MAX)
    }
    /// The class of each grouped column for dense atom index `atom`.
    pub fn classes_of(&self, mut atom: usize) -> Vec<u32> {
        let mut out = vec![0; self.dims.len()];
        for (i, d) in self.dims.iter().enumerate().rev() {
            out[i] = (atom % d.2 as usize) as u32;
            atom /= d.2 as usize;
        }
        out
    }
}

/// Scans every record of `table` and returns the stats of every atom
/// (dense, in mixed-radix order of `grouping.dims`).
pub fn scan(store: &Store, schema: &Schema, meta: &TableMeta, grouping: &Grouping) -> Result<Vec<AtomStats>, Error> {
    let table = &schema.table.id;
    // The column one past the categorical ones is the version pseudo-column:
    // constant within a chunk (an import writes whole chunks).
    let version_col = schema.categorical.len();
    let cat: Vec<Option<ColumnChunks>> = grouping
        .dims
        .iter()
        .map(|(c, _, _)| if *c == version_col { Ok(None) } else { store.micro_column(table, &schema.categorical[*c], meta.chunks).map(Some) })
        .collect::<Result<_, _>>()?;
    let num = |i: Option<usize>| i.map(|i| store.micro_column(table, &schema.numeric[i], meta.chunks)).transpose();
    let values = [num(grouping.values[0])?, num(grouping.values[1])?];
    let weight = num(grouping.weight)?;
    let keys = store.micro_column(table, KEY_COLUMN, meta.chunks)?;

    // Per grouped column: code index -> its contribution to the atom index.
    let mut strides = vec![1usize; grouping.dims.len()];
    for i in (0..grouping.dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * grouping.dims[i + 1].2 as usize;
    }
    let offsets: Vec<Vec<u32>> =
        grouping.dims.iter().zip(&strides).map(|((_, classes, _), stride)| classes.iter().map(|c| c * *stride as u32).collect()).collect();
    let atoms = grouping.atoms();

    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(meta.chunks.max(1) as usize);
    let partials: Vec<Vec<AtomStats>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (cat, values, weight, keys, offsets) = (&cat, &values, &weight, &keys, &offsets);
                scope.spawn(move || {
                    let mut acc = vec![AtomStats::default(); atoms];
                    let mut idx = Vec::new();
                    for chunk in (t..meta.chunks as usize).step_by(threads) {
                        let k = &keys[chunk];
                        idx.clear();
                        idx.resize(k.len(), 0u32);
                        for (col, off) in cat.iter().zip(offsets) {
                            if off.iter().all(|o| *o == 0) {
                                continue; // one class: contributes nothing to the index
                            }
                            let Some(col) = col else {
                                let add = off.get(meta.import_of(chunk as u32) as usize).copied().unwrap_or(0);
                                idx.iter_mut().for_each(|slot| *slot += add);
                                continue;
                            };
                            for (slot, b) in idx.iter_mut().zip(col[chunk].chunks_exact(2)) {
                                // A code beyond the map (a newer codelist) joins class 0.
                                *slot += off.get(usize::from(u16::from_le_bytes([b[0], b[1]]))).copied().unwrap_or(0);
                            }
                        }
                        let column = |c: &Option<ColumnChunks>| c.as_ref().map(|c| c[chunk].clone());
                        let (v0, v1, w) = (column(&values[0]), column(&values[1]), column(weight));
                        let at = |bytes: &[u8], i: usize| f64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
                        if v0.is_none() && v1.is_none() && w.is_none() {
                            // Counts: contributors and keys only (weights are 1, set below).
                            for (&a, &key) in idx.iter().zip(k.iter()) {
                                let s = &mut acc[a as usize];
                                s.n += 1;
                                s.key = s.key.wrapping_add(key);
                            }
                            continue;
                        }
                        let first = (chunk * super::CHUNK) as u64;
                        for (i, &a) in idx.iter().enumerate() {
                            let s = &mut acc[a as usize];
                            s.n += 1;
                            s.key = s.key.wrapping_add(k[i]);
                            // Positions are permanent (records are only appended).
                            s.wkey = s.wkey.wrapping_add(tabadul_policy::disclosure::magnitude::record_key(first + i as u64));
                            let wi = w.as_ref().map_or(1.0, |w| at(w, i));
                            s.w += wi;
                            if let Some(v) = &v0 {
                                let c = at(v, i) * wi;
                                s.s[0] += c;
                                if grouping.top {
                                    s.push_top(c.abs());
                                }
                            }
                            if let Some(v) = &v1 {
                                let c = at(v, i) * wi;
                                s.s[1] += c;
                                if grouping.top {
                                    s.push_top2(c.abs());
                                }
                            }
                        }
                    }
                    if grouping.values == [None, None] && grouping.weight.is_none() {
                        for s in &mut acc {
                            s.w = s.n as f64;
                        }
                    }
                    acc
                })
            })
            .collect();
        // A panicking scan thread must not turn into missing records.
        workers.into_iter().map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let mut out = vec![AtomStats::default(); atoms];
    for p in partials {
        for (o, a) in out.iter_mut().zip(&p) {
            o.add(a);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn top_contributions_merge_in_order() {
        let mut a = AtomStats::default();
        for v in [3.0, 9.0, 1.0, 7.0, 5.0] {
            a.push_top(v);
        }
        assert_eq!(a.top, [9.0, 7.0, 5.0, 3.0]);
        let mut b = AtomStats::default();
        b.push_top(8.0);
        b.push_top(2.0);
        a.add(&b);
        assert_eq!(a.top, [9.0, 8.0, 7.0, 5.0]);
    }

    #[test]
    fn atom_classes_round_trip() {
        let g = Grouping { dims: vec![(0, vec![], 3), (1, vec![], 4), (2, vec![], 2)], ..Default::default() };
        assert_eq!(g.atoms(), 24);
        // index = c0 * 8 + c1 * 2 + c2
        assert_eq!(g.classes_of(2 * 8 + 3 * 2 + 1), vec![2, 3, 1]);
    }
}
