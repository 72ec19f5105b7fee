//! What an attacker can compute from released totals: linear algebra over
//! atoms.
//!
//! Every released cell is the sum of the atoms it covers (an atom being a
//! group of records no released cell splits). Whoever holds the released
//! values can compute exactly the linear combinations of those rows, so a
//! protected set of atoms is *determined* when its indicator vector lies in
//! the span of the released rows. [`Span`] answers that, first by peeling
//! (a row with one unknown atom reveals it: the common case of released
//! interior cells), then by Gaussian elimination over what remains.
//!
//! Arithmetic is exact, modulo the prime 2^31 − 1. Rank over the rationals
//! equals rank modulo p unless p divides certain minors of the 0/1 matrix;
//! for such matrices that needs entries in the billions, and the failure
//! could only make the check stricter or looser on one specific matrix,
//! which the disclosure checks accept as a documented, negligible risk.

pub(crate) const P: u64 = (1 << 31) - 1;

/// `x mod p` for `x < 2^62`, by the Mersenne identity 2^31 ≡ 1: two folds
/// and a subtraction rather than a 64-bit division, which dominated the
/// audit's time.
#[inline]
pub(crate) fn modp(x: u64) -> u64 {
    let x = (x & P) + (x >> 31);
    let x = (x & P) + (x >> 31);
    if x >= P { x - P } else { x }
}

/// A basis row: its non-zero entries (column, value), by column. Ledger
/// rows cover few atoms and stay sparse under reduction, so reducing by a
/// row costs its entries, not the system's width.
pub type Sparse = Vec<(u32, u64)>;

pub fn sparse(v: &[u64]) -> Sparse {
    v.iter().enumerate().filter(|(_, x)| **x != 0).map(|(c, x)| (c as u32, *x)).collect()
}

/// The span of a set of released rows over `atoms` atoms.
#[derive(Debug, Clone)]
pub struct Span {
    known: Vec<bool>,
    /// Unknown atom -> its column in the residual system.
    column: Vec<Option<u32>>,
    /// Residual columns.
    width: usize,
    /// Echelon rows over the residual columns, each with its pivot
    /// (normalised to 1), every row reduced by all earlier ones.
    basis: Vec<(usize, Sparse)>,
}

/// An echelon basis of vectors (mod p), for spans of projections.
#[derive(Debug, Clone, Default)]
pub struct Echelon {
    basis: Vec<(usize, Sparse)>,
}

impl Echelon {
    /// Reduces `v` by the basis; true when it was in the span (now zero).
    pub fn reduce(&self, v: &mut [u64]) -> bool {
        for (pivot, row) in &self.basis {
            let f = v[*pivot];
            if f != 0 {
                eliminate(v, row, f);
            }
        }
        v.iter().all(|x| *x == 0)
    }

    /// Adds `v` (already reduced, non-zero).
    pub fn push(&mut self, v: Vec<u64>) {
        if let Some(row) = normalised(&v) {
            self.basis.push(row);
        }
    }
}

/// `v` scaled to 1 at its first non-zero entry, sparse, with that pivot.
fn normalised(v: &[u64]) -> Option<(usize, Sparse)> {
    let pivot = v.iter().position(|x| *x != 0)?;
    let inv = pow(v[pivot], P - 2);
    Some((pivot, v.iter().enumerate().filter(|(_, x)| **x != 0).map(|(c, x)| (c as u32, modp(x * inv))).collect()))
}

/// `v −= f × row` (mod p). With `row` a basis row (1 at its pivot) and
/// `f = v[pivot]`, that reduces `v` by the row.
pub fn eliminate(v: &mut [u64], row: &[(u32, u64)], f: u64) {
    for &(c, r) in row {
        let x = &mut v[c as usize];
        // x + p² − f·r < 2^62: one reduction per entry.
        *x = modp(*x + P * P - f * r);
    }
}

/// Entry `c` of a sparse vector.
pub fn sparse_get(v: &[(u32, u64)], c: usize) -> u64 {
    v.binary_search_by_key(&(c as u32), |e| e.0).map_or(0, |i| v[i].1)
}

/// [`eliminate`] for a sparse `v`: `v −= f × row`, zeros dropped. The
/// targets' residuals are kept this way: thousands of them, each touching
/// a few columns of a wide system.
pub fn eliminate_sparse(v: &mut Sparse, row: &[(u32, u64)], f: u64) {
    let mut out = Vec::with_capacity(v.len() + row.len());
    let (mut i, mut j) = (0, 0);
    while i < v.len() || j < row.len() {
        let (c, x) = match (v.get(i), row.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                i += 1;
                j += 1;
                (a.0, modp(a.1 + P * P - f * b.1))
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                i += 1;
                *a
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                j += 1;
                (b.0, modp(P * P - f * b.1))
            }
            (Some(a), None) => {
                i += 1;
                *a
            }
            (None, None) => break,
        };
        if x != 0 {
            out.push((c, x));
        }
    }
    *v = out;
}

/// The residual system would be too large to solve in reasonable time.
#[derive(Debug, Clone, PartialEq)]
pub struct TooComplex {
    pub unknown_atoms: usize,
}

/// Above this many atoms left after peeling, the check refuses rather than
/// run for minutes.
pub const MAX_RESIDUAL_ATOMS: usize = 6_000;

impl Span {
    /// Builds the span of `rows` (each a list of atom indices below `atoms`).
    pub fn new(atoms: usize, rows: &[&[u32]]) -> Result<Span, TooComplex> {
        Span::with_room(atoms, rows, &[])
    }

    /// Builds the span of `rows`, with room for the atoms of `later` rows
    /// (offered one at a time with [`Span::residual`] and [`Span::push`]).
    pub fn with_room(atoms: usize, rows: &[&[u32]], later: &[&[u32]]) -> Result<Span, TooComplex> {
        let mut known = vec![false; atoms];
        // Peel: a row with a single unknown atom reveals it. Repeat until
        // nothing changes (each pass is linear in the rows' sizes).
        let mut live: Vec<&[u32]> = rows.iter().copied().filter(|r| !r.is_empty()).collect();
        loop {
            let mut changed = false;
            live.retain(|row| {
                let mut unknown = row.iter().filter(|a| !known[**a as usize]);
                match (unknown.next(), unknown.next()) {
                    (None, _) => false,
                    (Some(a), None) => {
                        known[*a as usize] = true;
                        changed = true;
                        false
                    }
                    _ => true,
                }
            });
            if !changed {
                break;
            }
        }
        let mut column = vec![None; atoms];
        let mut next = 0u32;
        for row in live.iter().chain(later) {
            for a in row.iter() {
                if !known[*a as usize] && column[*a as usize].is_none() {
                    column[*a as usize] = Some(next);
                    next += 1;
                }
            }
        }
        if next as usize > MAX_RESIDUAL_ATOMS {
            return Err(TooComplex { unknown_atoms: next as usize });
        }
        let mut span = Span { known, column, width: next as usize, basis: Vec::new() };
        for row in live {
            let v = span.dense(row).unwrap_or_default();
            span.insert(v);
        }
        Ok(span)
    }

    /// Gives every atom of `rows` a residual column if it has none (and is
    /// not known): a span kept from an earlier answer takes in the rows
    /// and cells of this one. Basis rows are sparse, so nothing already
    /// reduced changes.
    pub fn add_room(&mut self, rows: &[&[u32]]) -> Result<(), TooComplex> {
        for row in rows {
            for a in row.iter() {
                let a = *a as usize;
                if a >= self.known.len() {
                    self.known.resize(a + 1, false);
                    self.column.resize(a + 1, None);
                }
                if !self.known[a] && self.column[a].is_none() {
                    self.column[a] = Some(self.width as u32);
                    self.width += 1;
                }
            }
        }
        if self.width > MAX_RESIDUAL_ATOMS {
            return Err(TooComplex { unknown_atoms: self.width });
        }
        Ok(())
    }

    /// Adds a released row (its atoms must have room: [`Span::add_room`]).
    pub fn add_row(&mut self, row: &[u32]) {
        if let Some(v) = self.dense(row) {
            self.insert(v);
        }
    }

    /// Residual columns.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows in the basis.
    pub fn rank(&self) -> usize {
        self.basis.len()
    }

    /// A residual kept (sparse) while the span held its first `from` basis
    /// rows, brought up to date: reduced by the rows added since. Earlier
    /// rows need not be applied again: later rows are zero at their pivots.
    pub fn catch_up(&self, mut kept: Sparse, from: usize) -> Sparse {
        for (pivot, row) in &self.basis[from.min(self.basis.len())..] {
            let f = sparse_get(&kept, *pivot);
            if f != 0 {
                eliminate_sparse(&mut kept, row, f);
            }
        }
        kept
    }

    /// `set` as a vector over the residual columns; None when one of its
    /// atoms has no column (no row holds it: nothing can reveal the set).
    fn dense(&self, set: &[u32]) -> Option<Vec<u64>> {
        let mut v = vec![0u64; self.width];
        for a in set {
            let a = *a as usize;
            if self.known[a] {
                continue;
            }
            let c = self.column[a]?;
            v[c as usize] = modp(v[c as usize] + 1);
        }
        Some(v)
    }

    /// What of `set` the span does not determine: zero when it does, None
    /// when it never can (an atom of it is in no row, now or offered).
    /// Adding a row whose residual is `r` determines a set with residual
    /// `t` exactly when `t` is a multiple of `r`.
    pub fn residual(&self, set: &[u32]) -> Option<Vec<u64>> {
        let mut v = self.dense(set)?;
        self.reduce(&mut v);
        Some(v)
    }

    /// Adds a row given by its residual (from [`Span::residual`], reduced
    /// since by every push). Returns the pushed row, normalised, with its
    /// pivot: reduce other residuals by it with [`eliminate`].
    pub fn push(&mut self, residual: Vec<u64>) -> Option<(usize, &[(u32, u64)])> {
        let pivot = self.insert(residual)?;
        self.basis.last().map(|(_, r)| (pivot, r.as_slice()))
    }

    fn reduce(&self, v: &mut [u64]) {
        for (pivot, row) in &self.basis {
            let f = v[*pivot];
            if f != 0 {
                eliminate(v, row, f);
            }
        }
    }

    fn insert(&mut self, mut v: Vec<u64>) -> Option<usize> {
        self.reduce(&mut v);
        let row = normalised(&v)?;
        let pivot = row.0;
        self.basis.push(row);
        Some(pivot)
    }

    /// Whether the released rows determine the sum over `target` atoms.
    pub fn determines(&self, target: &[u32]) -> bool {
        self.residual(target).is_some_and(|v| v.iter().all(|x| *x == 0))
    }

    /// Every group of records the released rows determine exactly and
    /// that holds fewer than `below` records: each a set of atoms whose sum
    /// lies in the span (found among atoms whose `sizes` are under `below`,
    /// since a small group can hold no large atom). At most `limit` groups
    /// are returned, and a search that would take more than [`MAX_STEPS`]
    /// steps is [`TooComplex`].
    ///
    /// This is the exact small-support audit: any linear combination of
    /// released cells (A − B − C as well as nested pairs) that equals the
    /// count, or sum, of a small group shows up here. The subspace of the
    /// span supported on small atoms is found by eliminating the other
    /// columns first; its 0/1 vectors are then enumerated over its pivot
    /// columns, pruned by size (a pivot atom taken adds its records).
    pub fn small_groups(&self, sizes: &[u64], below: u64, limit: usize) -> Result<Vec<Vec<u32>>, TooComplex> {
        let width = self.width;
        if width == 0 || self.basis.is_empty() || below <= 1 {
            return Ok(Vec::new());
        }
        let mut atom_of = vec![0u32; width];
        for (a, c) in self.column.iter().enumerate() {
            if let Some(c) = c {
                atom_of[*c as usize] = a as u32;
            }
        }
        let small: Vec<bool> = atom_of.iter().map(|a| (1..below).contains(&sizes[*a as usize])).collect();
        if !small.iter().any(|s| *s) {
            return Ok(Vec::new());
        }
        // Eliminate the large columns first: rows left with no pivot among
        // them lie in the span and vanish outside the small atoms.
        let mut rows: Vec<Vec<u64>> = self.rows().collect();
        let mut used = vec![false; rows.len()];
        let order: Vec<usize> = (0..width).filter(|c| !small[*c]).chain((0..width).filter(|c| small[*c])).collect();
        let mut pivots: Vec<(usize, usize)> = Vec::new();
        for &col in &order {
            let Some(r) = (0..rows.len()).find(|r| !used[*r] && rows[*r][col] != 0) else { continue };
            used[r] = true;
            let inv = pow(rows[r][col], P - 2);
            for x in &mut rows[r] {
                *x = modp(*x * inv);
            }
            let pivot = sparse(&rows[r]);
            for (i, row) in rows.iter_mut().enumerate() {
                let f = row[col];
                if i != r && f != 0 {
                    eliminate(row, &pivot, f);
                }
            }
            pivots.push((col, r));
        }
        // Rows pivoted on a small column are zero on every large column
        // (those were all eliminated before), and in reduced form: a 0/1
        // vector of that subspace takes 0 or 1 at each such pivot.
        let basis: Vec<(usize, &Vec<u64>)> = pivots.iter().filter(|(c, _)| small[*c]).map(|(c, r)| (*c, &rows[*r])).collect();
        let mut found = Vec::new();
        let mut steps = 0usize;
        let mut chosen: Vec<usize> = Vec::new();
        search(&basis, &atom_of, sizes, below, 0, 0, &mut chosen, &mut found, limit, &mut steps)?;
        Ok(found)
    }

    /// Which residual columns hold an atom of `1..below` records: only
    /// those can be part of a small group.
    pub fn small_columns(&self, sizes: &[u64], below: u64) -> Vec<bool> {
        let mut small = vec![false; self.width];
        for (a, c) in self.column.iter().enumerate() {
            if let Some(c) = c {
                small[*c as usize] = (1..below).contains(&sizes[a]);
            }
        }
        small
    }

    /// The basis rows (dense, over the residual columns), for projections
    /// of the span.
    pub fn rows(&self) -> impl Iterator<Item = Vec<u64>> + '_ {
        self.basis.iter().map(|(_, r)| {
            let mut v = vec![0u64; self.width];
            for &(c, x) in r {
                v[c as usize] = x;
            }
            v
        })
    }

    /// Atoms revealed one by one (for explanations and tests).
    pub fn known(&self, atom: u32) -> bool {
        self.known[atom as usize]
    }
}

/// The most combinations [`Span::small_groups`] tries.
pub const MAX_STEPS: usize = 200_000;

/// Depth-first over which basis vectors (pivot atoms) a group takes.
#[allow(clippy::too_many_arguments)]
fn search(
    basis: &[(usize, &Vec<u64>)],
    atom_of: &[u32],
    sizes: &[u64],
    below: u64,
    from: usize,
    size: u64,
    chosen: &mut Vec<usize>,
    found: &mut Vec<Vec<u32>>,
    limit: usize,
    steps: &mut usize,
) -> Result<(), TooComplex> {
    for i in from..basis.len() {
        if found.len() >= limit {
            return Ok(());
        }
        *steps += 1;
        if *steps > MAX_STEPS {
            return Err(TooComplex { unknown_atoms: basis.len() });
        }
        let grown = size + sizes[atom_of[basis[i].0] as usize];
        if grown >= below {
            continue;
        }
        chosen.push(i);
        let width = basis[i].1.len();
        let mut v = vec![0u64; width];
        for j in chosen.iter() {
            for (x, r) in v.iter_mut().zip(basis[*j].1.iter()) {
                *x = modp(*x + r);
            }
        }
        if v.iter().all(|x| *x <= 1) {
            let atoms: Vec<u32> = v.iter().enumerate().filter(|(_, x)| **x == 1).map(|(c, _)| atom_of[c]).collect();
            let total: u64 = atoms.iter().map(|a| sizes[*a as usize]).sum();
            if (1..below).contains(&total) {
                let mut atoms = atoms;
                atoms.sort_unstable();
                found.push(atoms);
            }
        }
        search(basis, atom_of, sizes, below, i + 1, grown, chosen, found, limit, steps)?;
        chosen.pop();
    }
    Ok(())
}

pub(crate) fn pow(mut b: u64, mut e: u64) -> u64 {
    let mut r = 1;
    b %= P;
    while e > 0 {
        if e & 1 == 1 {
            r = modp(r * b);
        }
        b = modp(b * b);
        e >>= 1;
    }
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_mersenne_reduction_is_the_remainder() {
        let mut rnd = crate::disclosure::xorshift(0x9E37_79B9_7F4A_7C15);
        for edge in [0, 1, P - 1, P, P + 1, 2 * P, P * P, P * P + P - 1, (1 << 62) - 1] {
            assert_eq!(modp(edge), edge % P, "{edge}");
        }
        for _ in 0..100_000 {
            let v = rnd() >> 2;
            assert_eq!(modp(v), v % P, "{v}");
        }
    }

    #[test]
    fn sparse_elimination_agrees_with_dense() {
        let mut rnd = crate::disclosure::xorshift(0x1234_5678_9ABC_DEF1);
        let mut next = move |n: u64| rnd() % n;
        for _ in 0..2_000 {
            let width = 1 + next(12) as usize;
            let mut dense_v: Vec<u64> = (0..width).map(|_| if next(2) == 0 { 0 } else { next(P) }).collect();
            let row: Vec<u64> = (0..width).map(|_| if next(2) == 0 { 0 } else { next(P) }).collect();
            let f = next(P);
            let mut sparse_v = sparse(&dense_v);
            let row_sparse = sparse(&row);
            eliminate(&mut dense_v, &row_sparse, f);
            eliminate_sparse(&mut sparse_v, &row_sparse, f);
            assert_eq!(sparse_v, sparse(&dense_v));
            for (c, x) in dense_v.iter().enumerate() {
                assert_eq!(sparse_get(&sparse_v, c), *x);
            }
        }
    }

    #[test]
    fn differencing_is_seen() {
        // Atoms 0..4; released: total {0,1,2,3} and {0,1,2}: atom 3 is determined.
        let span = Span::new(4, &[&[0, 1, 2, 3], &[0, 1, 2]]).unwrap();
        assert!(span.determines(&[3]));
        assert!(span.determines(&[0, 1, 2]));
        assert!(!span.determines(&[0]));
        assert!(!span.determines(&[0, 1]));
    }

    #[test]
    fn two_by_two_table_with_margins() {
        // a b | a+b ; c d | c+d ; columns a+c, b+d. Rank 3 of 4: no single
        // interior cell is determined, but a+b+c+d is.
        let rows: [&[u32]; 4] = [&[0, 1], &[2, 3], &[0, 2], &[1, 3]];
        let span = Span::new(4, &rows).unwrap();
        for a in 0..4 {
            assert!(!span.determines(&[a]), "{a}");
        }
        assert!(span.determines(&[0, 1, 2, 3]));
        // Releasing one interior cell then determines all of them.
        let rows: [&[u32]; 5] = [&[0, 1], &[2, 3], &[0, 2], &[1, 3], &[0]];
        let span = Span::new(4, &rows).unwrap();
        for a in 0..4 {
            assert!(span.determines(&[a]), "{a}");
        }
    }

    #[test]
    fn agrees_with_brute_force_on_random_systems() {
        // Compare against rank computed in f64 with full pivoting on small
        // random 0/1 systems.
        let mut rnd = crate::disclosure::xorshift(7);
        for _ in 0..300 {
            let atoms = 2 + (rnd() % 6) as usize;
            let nrows = 1 + (rnd() % 7) as usize;
            let rows: Vec<Vec<u32>> = (0..nrows).map(|_| (0..atoms as u32).filter(|_| rnd().is_multiple_of(2)).collect()).collect();
            let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
            let span = Span::new(atoms, &refs).unwrap();
            let target: Vec<u32> = (0..atoms as u32).filter(|_| rnd().is_multiple_of(2)).collect();
            let dense = |r: &[u32]| (0..atoms as u32).map(|a| if r.contains(&a) { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
            let mut m: Vec<Vec<f64>> = rows.iter().map(|r| dense(r)).collect();
            let r0 = rank(m.clone());
            m.push(dense(&target));
            let r1 = rank(m);
            assert_eq!(span.determines(&target), r0 == r1, "rows {rows:?} target {target:?}");
        }
    }

    #[test]
    fn a_small_group_is_found_whatever_combination_reveals_it() {
        // A = {0,1,2,3,4}, B = {0,1}, C = {2}: A − B − C = {3,4}. Atoms 3
        // and 4 hold 2 and 3 records: a group of 5, neither a cell nor a
        // nested difference (A \ B = {2,3,4} is large).
        let sizes = [40, 40, 30, 2, 3];
        let rows: [&[u32]; 3] = [&[0, 1, 2, 3, 4], &[0, 1], &[2]];
        let span = Span::new(5, &rows).unwrap();
        assert!(!span.determines(&[3]) && !span.determines(&[4]));
        let groups = span.small_groups(&sizes, 10, 16).unwrap();
        assert_eq!(groups, vec![vec![3, 4]]);
        // Without C the pair is not determined, and nothing small is.
        let span = Span::new(5, &rows[..2]).unwrap();
        assert!(span.small_groups(&sizes, 10, 16).unwrap().is_empty());
        // A large group is no secret: raise the sizes.
        let span = Span::new(5, &rows).unwrap();
        assert!(span.small_groups(&[40, 40, 30, 20, 30], 10, 16).unwrap().is_empty());
    }

    #[test]
    fn small_groups_agree_with_brute_force() {
        let mut rnd = crate::disclosure::xorshift(11);
        for _ in 0..300 {
            let atoms = 2 + (rnd() % 7) as usize;
            let sizes: Vec<u64> = (0..atoms).map(|_| if rnd().is_multiple_of(2) { 1 + rnd() % 6 } else { 10 + rnd() % 30 }).collect();
            let nrows = 1 + (rnd() % 8) as usize;
            let rows: Vec<Vec<u32>> = (0..nrows).map(|_| (0..atoms as u32).filter(|_| rnd().is_multiple_of(2)).collect()).collect();
            let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
            let span = Span::new(atoms, &refs).unwrap();
            let mut got = span.small_groups(&sizes, 10, 1 << 12).unwrap();
            got.sort();
            // Brute force: every subset of unpeeled atoms with 1..9 records
            // that the span determines (peeled atoms are targets by themselves).
            let mut want = Vec::new();
            for mask in 1u32..(1 << atoms) {
                let set: Vec<u32> = (0..atoms as u32).filter(|a| mask & (1 << a) != 0).collect();
                if set.iter().any(|a| span.known(*a) || span.column[*a as usize].is_none()) {
                    continue;
                }
                let n: u64 = set.iter().map(|a| sizes[*a as usize]).sum();
                if (1..10).contains(&n) && span.determines(&set) {
                    want.push(set);
                }
            }
            want.sort();
            assert_eq!(got, want, "rows {rows:?} sizes {sizes:?}");
        }
    }

    fn rank(mut m: Vec<Vec<f64>>) -> usize {
        let mut rank = 0;
        let cols = m.first().map_or(0, Vec::len);
        for c in 0..cols {
            let Some(p) = (rank..m.len()).max_by(|a, b| m[*a][c].abs().total_cmp(&m[*b][c].abs())) else { break };
            if m[p][c].abs() < 1e-9 {
                continue;
            }
            m.swap(rank, p);
            let pivot = m[rank].clone();
            for (r, row) in m.iter_mut().enumerate() {
                if r != rank {
                    let f = row[c] / pivot[c];
                    for (x, p) in row.iter_mut().zip(&pivot) {
                        *x -= f * p;
                    }
                }
            }
            rank += 1;
        }
        rank
    }
}
