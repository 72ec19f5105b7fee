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

const P: u64 = (1 << 31) - 1;

/// The span of a set of released rows over `atoms` atoms.
#[derive(Debug, Clone)]
pub struct Span {
    known: Vec<bool>,
    /// Unknown atom -> its column in the residual system.
    column: Vec<Option<u32>>,
    /// Echelon rows over the residual columns, each with its pivot
    /// (normalised to 1), every row reduced by all earlier ones.
    basis: Vec<(usize, Vec<u64>)>,
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
        for row in &live {
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
        let mut span = Span { known, column, basis: Vec::new() };
        for row in live {
            let mut v = vec![0u64; next as usize];
            for a in row {
                if let Some(c) = span.column[*a as usize] {
                    v[c as usize] = (v[c as usize] + 1) % P;
                }
            }
            span.insert(v);
        }
        Ok(span)
    }

    fn reduce(&self, v: &mut [u64]) {
        for (pivot, row) in &self.basis {
            let f = v[*pivot];
            if f != 0 {
                for (x, r) in v.iter_mut().zip(row) {
                    if *r != 0 {
                        *x = (*x + P - f * r % P) % P;
                    }
                }
            }
        }
    }

    fn insert(&mut self, mut v: Vec<u64>) {
        self.reduce(&mut v);
        let Some(pivot) = v.iter().position(|x| *x != 0) else { return };
        let inv = pow(v[pivot], P - 2);
        for x in &mut v {
            *x = *x * inv % P;
        }
        self.basis.push((pivot, v));
    }

    /// Whether the released rows determine the sum over `target` atoms.
    pub fn determines(&self, target: &[u32]) -> bool {
        let mut v = vec![0u64; self.basis.first().map_or(0, |b| b.1.len())];
        for a in target {
            let a = *a as usize;
            if self.known[a] {
                continue;
            }
            match self.column[a] {
                Some(c) => v[c as usize] = (v[c as usize] + 1) % P,
                // In no released row at all: nothing can reveal it.
                None => return false,
            }
        }
        self.reduce(&mut v);
        v.iter().all(|x| *x == 0)
    }

    /// Atoms revealed one by one (for explanations and tests).
    pub fn known(&self, atom: u32) -> bool {
        self.known[atom as usize]
    }
}

fn pow(mut b: u64, mut e: u64) -> u64 {
    let mut r = 1;
    b %= P;
    while e > 0 {
        if e & 1 == 1 {
            r = r * b % P;
        }
        b = b * b % P;
        e >>= 1;
    }
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
        let mut seed = 7u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let atoms = 2 + (rnd() % 6) as usize;
            let nrows = 1 + (rnd() % 7) as usize;
            let rows: Vec<Vec<u32>> = (0..nrows)
                .map(|_| (0..atoms as u32).filter(|_| rnd() % 2 == 0).collect())
                .collect();
            let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
            let span = Span::new(atoms, &refs).unwrap();
            let target: Vec<u32> = (0..atoms as u32).filter(|_| rnd() % 2 == 0).collect();
            let dense = |r: &[u32]| (0..atoms as u32).map(|a| if r.contains(&a) { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
            let mut m: Vec<Vec<f64>> = rows.iter().map(|r| dense(r)).collect();
            let r0 = rank(m.clone());
            m.push(dense(&target));
            let r1 = rank(m);
            assert_eq!(span.determines(&target), r0 == r1, "rows {rows:?} target {target:?}");
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
