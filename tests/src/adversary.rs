//! The attacker's side of disclosure control, independent of the node's
//! code: from nothing but the cells a requester received, the tightest
//! bounds exact linear algebra and linear programming give on what the
//! rules protect.
//!
//! The unknowns are, per atom (a group of records the attacker can name by
//! its codes), its count `n_a` and its sum `s_a` of the one variable. What
//! the attacker knows:
//! - every released count, sum and mean as a linear constraint (a mean `m`
//!   of box B says `Σ s − m·Σ n = 0`), widened by the noise bound the
//!   policy publishes (cell-key `D`, the magnitude noise's scale);
//! - that counts are non-negative and every record's value lies in a public
//!   range, so `lo·n_a ≤ s_a ≤ hi·n_a`.
//!
//! [`Adversary::determined`] asks whether a group's count or sum is an
//! exact linear combination of exact releases; [`Adversary::bounds`] solves
//! two linear programmes for its feasible interval, as τ-ARGUS's audit does.

use microlp::{ComparisonOp, OptimizationDirection, Problem, SolveOutcome};

/// Which unknowns of an atom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Count,
    Sum,
}

/// One thing learnt: `lo ≤ Σ coeff·unknown ≤ hi`.
#[derive(Debug, Clone)]
struct Row {
    terms: Vec<(usize, f64)>,
    lo: f64,
    hi: f64,
}

/// Everything one requester (or coalition) received.
#[derive(Debug, Clone)]
pub struct Adversary {
    atoms: usize,
    rows: Vec<Row>,
    /// The public range of one record's value.
    value_range: (f64, f64),
}

impl Adversary {
    pub fn new(atoms: usize, value_range: (f64, f64)) -> Adversary {
        Adversary { atoms, rows: Vec::new(), value_range }
    }

    fn var(&self, measure: Measure, atom: usize) -> usize {
        match measure {
            Measure::Count => atom,
            Measure::Sum => self.atoms + atom,
        }
    }

    /// Observations so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// A released count (or sum) of `atoms`, true within `± slack`.
    pub fn observe(&mut self, measure: Measure, atoms: &[usize], value: f64, slack: f64) {
        let terms = atoms.iter().map(|a| (self.var(measure, *a), 1.0)).collect();
        self.rows.push(Row { terms, lo: value - slack, hi: value + slack });
    }

    /// A released mean of `atoms`: `Σ s − mean·Σ n` within `± slack`.
    pub fn observe_mean(&mut self, atoms: &[usize], mean: f64, slack: f64) {
        let mut terms: Vec<(usize, f64)> = atoms.iter().map(|a| (self.var(Measure::Sum, *a), 1.0)).collect();
        terms.extend(atoms.iter().map(|a| (self.var(Measure::Count, *a), -mean)));
        self.rows.push(Row { terms, lo: -slack, hi: slack });
    }

    /// Whether the exact releases determine the count (or sum) of `target`.
    pub fn determined(&self, measure: Measure, target: &[usize]) -> bool {
        let width = 2 * self.atoms;
        let dense = |terms: &[(usize, f64)]| {
            let mut v = vec![0.0; width];
            for (i, c) in terms {
                v[*i] += c;
            }
            v
        };
        let mut m: Vec<Vec<f64>> = self.rows.iter().filter(|r| r.lo == r.hi).map(|r| dense(&r.terms)).collect();
        let before = rank(m.clone());
        let t: Vec<(usize, f64)> = target.iter().map(|a| (self.var(measure, *a), 1.0)).collect();
        m.push(dense(&t));
        rank(m) == before
    }

    /// The feasible interval of the count (or sum) of `target`: `None` when
    /// the observations contradict each other (the noise bound was wrong).
    pub fn bounds(&self, measure: Measure, target: &[usize]) -> Option<(f64, f64)> {
        let solve = |direction| -> Option<f64> {
            let mut p = Problem::new(direction);
            let mut vars = Vec::with_capacity(2 * self.atoms);
            for v in 0..2 * self.atoms {
                let in_target = if v < self.atoms {
                    measure == Measure::Count && target.contains(&v)
                } else {
                    measure == Measure::Sum && target.contains(&(v - self.atoms))
                };
                vars.push(p.add_var(if in_target { 1.0 } else { 0.0 }, (0.0, f64::INFINITY)));
            }
            let (vmin, vmax) = self.value_range;
            for a in 0..self.atoms {
                p.add_constraint([(vars[self.atoms + a], 1.0), (vars[a], -vmax)], ComparisonOp::Le, 0.0);
                p.add_constraint([(vars[self.atoms + a], 1.0), (vars[a], -vmin)], ComparisonOp::Ge, 0.0);
            }
            for r in &self.rows {
                let expr: Vec<(microlp::Variable, f64)> = r.terms.iter().map(|(i, c)| (vars[*i], *c)).collect();
                if r.lo == r.hi {
                    p.add_constraint(expr, ComparisonOp::Eq, r.lo);
                } else {
                    p.add_constraint(expr.clone(), ComparisonOp::Ge, r.lo);
                    p.add_constraint(expr, ComparisonOp::Le, r.hi);
                }
            }
            match p.solve() {
                Ok(SolveOutcome::Solution(s)) => Some(s.objective()),
                Ok(_) => None,
                // Unbounded above: no release bounds it.
                Err(microlp::Error::Unbounded) => Some(f64::INFINITY),
                Err(_) => None,
            }
        };
        Some((solve(OptimizationDirection::Minimize)?, solve(OptimizationDirection::Maximize)?))
    }
}

/// Rank by Gaussian elimination with partial pivoting (f64).
pub fn rank(mut m: Vec<Vec<f64>>) -> usize {
    let cols = m.first().map_or(0, Vec::len);
    let mut rank = 0;
    for c in 0..cols {
        let Some(p) = (rank..m.len()).max_by(|a, b| m[*a][c].abs().total_cmp(&m[*b][c].abs())) else { break };
        if m[p][c].abs() < 1e-7 {
            continue;
        }
        m.swap(rank, p);
        let pivot = m[rank].clone();
        for (i, row) in m.iter_mut().enumerate() {
            if i != rank && row[c] != 0.0 {
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

/// A count's full protection standard: the attacker must not be able to
/// tell a group of `1..threshold` records apart from an empty one or from a
/// group at the threshold, so its interval must reach 0 or the threshold.
/// (The node guarantees the exact part of this: no count pinned. See
/// docs/disclosure.md for the interval part.)
pub fn count_protected((lo, hi): (f64, f64), threshold: f64) -> bool {
    lo < 0.5 || hi > threshold - 0.5
}

/// A magnitude's protection standard (the p% rule's protection interval):
/// the attacker's interval for a sum reaches at least `p`% of the largest
/// contribution below and above the true sum.
pub fn sum_protected((lo, hi): (f64, f64), sum: f64, largest: f64, p: f64) -> bool {
    let margin = p / 100.0 * largest;
    lo <= sum - margin + 1e-6 && hi >= sum + margin - 1e-6
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_difference_and_bounds_by_non_negativity() {
        // Atoms 0, 1, 2. Total 20 and total without atom 2: 17.
        let mut a = Adversary::new(3, (1.0, 24.0));
        a.observe(Measure::Count, &[0, 1, 2], 20.0, 0.0);
        a.observe(Measure::Count, &[0, 1], 17.0, 0.0);
        assert!(a.determined(Measure::Count, &[2]));
        let (lo, hi) = a.bounds(Measure::Count, &[2]).unwrap();
        assert!((lo - 3.0).abs() < 1e-6 && (hi - 3.0).abs() < 1e-6);
        assert!(!count_protected((lo, hi), 10.0));
        // Atom 0 alone: anywhere in 0..17.
        assert!(!a.determined(Measure::Count, &[0]));
        let (lo, hi) = a.bounds(Measure::Count, &[0]).unwrap();
        assert!(lo.abs() < 1e-6 && (hi - 17.0).abs() < 1e-6);
        assert!(count_protected((lo, hi), 10.0));
    }

    #[test]
    fn links_a_count_and_a_mean() {
        // Count of {0,1} = 12, mean of {0,1} = 5: the sum is 60, and with a
        // sum of {0} = 55 the sum of atom 1 is pinned at 5.
        let mut a = Adversary::new(2, (1.0, 24.0));
        a.observe(Measure::Count, &[0, 1], 12.0, 0.0);
        a.observe_mean(&[0, 1], 5.0, 0.0);
        a.observe(Measure::Sum, &[0], 55.0, 0.0);
        assert!(a.determined(Measure::Sum, &[1]));
        let (lo, hi) = a.bounds(Measure::Sum, &[1]).unwrap();
        assert!((lo - 5.0).abs() < 1e-6 && (hi - 5.0).abs() < 1e-6);
        assert!(!sum_protected((lo, hi), 5.0, 5.0, 10.0));
    }

    #[test]
    fn noise_widens_the_interval() {
        let mut a = Adversary::new(3, (1.0, 24.0));
        a.observe(Measure::Count, &[0, 1, 2], 20.0, 4.0);
        a.observe(Measure::Count, &[0, 1], 17.0, 4.0);
        assert!(!a.determined(Measure::Count, &[2]));
        let (lo, hi) = a.bounds(Measure::Count, &[2]).unwrap();
        assert!(lo < 0.5 && hi > 9.5, "{lo} {hi}");
    }
}
