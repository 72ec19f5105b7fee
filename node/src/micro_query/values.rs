//! Stage 6: the value of each released cell, perturbed.
//!
//! Counts get the cell-key method (a p-table row picked by the cell's 8-bit
//! key) or discrete-Laplace noise under differential privacy. Sums get the
//! keyed magnitude noise of [`crate::disclosure::magnitude`]; a mean is its
//! perturbed sum over its perturbed count, and a ratio the quotient of its
//! two perturbed sums, so every statistic of the same records carries the
//! same noise and linking them removes none of it.

use crate::disclosure::magnitude::{self, NoiseSecret};
use crate::disclosure::{AtomStats, Params, Statistic};

/// What a value needs besides the cell.
#[allow(missing_debug_implementations)] // borrows a RNG that has no Debug
pub struct Perturb<'a> {
    pub params: &'a Params,
    pub table: &'a str,
    /// The statistic's variable and denominator (empty when unused).
    pub variables: [&'a str; 2],
    pub secret: &'a NoiseSecret,
    /// ε of this answer (0 without differential privacy).
    pub epsilon: f64,
    /// The answer's L1 sensitivity for counts.
    pub sensitivity: f64,
    pub rng: &'a ring::rand::SystemRandom,
}

/// The system's random number generator failed.
#[derive(Debug, Clone, Copy)]
pub struct RngFailed;

impl Perturb<'_> {
    fn count(&self, s: &AtomStats) -> Result<(f64, Option<&'static str>), RngFailed> {
        let n = s.n;
        if self.epsilon > 0.0 {
            let noise = crate::disclosure::dp::discrete_laplace(self.sensitivity / self.epsilon, self.rng).map_err(|_| RngFailed)?;
            return Ok(((n as i64 + noise).max(0) as f64, Some("dp-laplace")));
        }
        Ok(match &self.params.cell_key {
            Some((t, _)) => ((n as i64 + t.perturbation(n, s.key)).max(0) as f64, Some("cell-key")),
            None => (n as f64, None),
        })
    }

    fn sum(&self, s: &AtomStats, which: usize) -> (f64, Option<&'static str>) {
        let sum = s.s[which];
        match &self.params.cell_key {
            Some((_, m)) if *m > 0.0 => {
                let u = magnitude::unit(self.secret, self.table, self.variables[which], s.wkey);
                (sum + magnitude::perturbation(*m, sum, s.n, u), Some("cell-key"))
            }
            _ => (sum, None),
        }
    }

    /// The released value of a cell and how it was perturbed.
    pub fn value(&self, statistic: Statistic, s: &AtomStats) -> Result<(f64, Option<&'static str>), RngFailed> {
        Ok(match statistic {
            Statistic::Count => self.count(s)?,
            Statistic::WeightedCount => {
                let (n2, how) = self.count(s)?;
                if s.n == 0 { (0.0, None) } else { (s.w * n2 / s.n as f64, how) }
            }
            Statistic::Sum => self.sum(s, 0),
            Statistic::Mean => {
                if s.n == 0 {
                    return Ok((f64::NAN, None));
                }
                let (sum, how) = self.sum(s, 0);
                let (n2, _) = self.count(s)?;
                let denominator = if n2 > 0.0 { s.w * n2 / s.n as f64 } else { s.w };
                (sum / denominator, how)
            }
            Statistic::Ratio => {
                let (a, how) = self.sum(s, 0);
                let (b, _) = self.sum(s, 1);
                if b == 0.0 { (f64::NAN, None) } else { (a / b, how) }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::disclosure::ptable::{PTable, PTableParams};

    fn cell(values: &[f64], first: u64) -> AtomStats {
        let mut s = AtomStats::default();
        for (i, v) in values.iter().enumerate() {
            let one =
                AtomStats { n: 1, w: 1.0, key: (first + i as u64) as u8, wkey: magnitude::record_key(first + i as u64), s: [*v, 0.0], ..Default::default() };
            s.add(&one);
        }
        s
    }

    #[test]
    fn a_mean_times_its_count_gives_only_the_perturbed_sum() {
        let table = PTable::new(PTableParams { d: 4, v: 2.0, js: 2 }).unwrap();
        let params = Params { cell_key: Some((Arc::new(table), 0.1)), ..Params::default() };
        let rng = ring::rand::SystemRandom::new();
        let p = Perturb { params: &params, table: "T", variables: ["V", ""], secret: &[9; 32], epsilon: 0.0, sensitivity: 1.0, rng: &rng };
        let s = cell(&[12.0; 40], 0);
        let (sum, _) = p.value(Statistic::Sum, &s).unwrap();
        let (mean, _) = p.value(Statistic::Mean, &s).unwrap();
        let (count, _) = p.value(Statistic::Count, &s).unwrap();
        assert!((mean * count - sum).abs() < 1e-6, "linked statistics carry one noise");
        let true_sum = 480.0;
        // Noise of at least half the scale m·|sum|/√n, never on an integer grid.
        let scale = 0.1 * true_sum / 40f64.sqrt();
        assert!((sum - true_sum).abs() >= 0.5 * scale - 1e-9 && (sum - true_sum).abs() <= scale + 1e-9, "{sum}");
        assert!((sum - sum.round()).abs() > 1e-6);
        // Asking again gives the same figure.
        assert_eq!(p.value(Statistic::Sum, &s).unwrap().0, sum);
    }

    #[test]
    fn the_noise_does_not_follow_the_largest_record() {
        // Two cells that share their one large contribution: their noises
        // are not proportional to it (the decoding attack of issue 12).
        let table = PTable::new(PTableParams { d: 4, v: 2.0, js: 2 }).unwrap();
        let params = Params { cell_key: Some((Arc::new(table), 0.1)), ..Params::default() };
        let rng = ring::rand::SystemRandom::new();
        let p = Perturb { params: &params, table: "T", variables: ["V", ""], secret: &[3; 32], epsilon: 0.0, sensitivity: 1.0, rng: &rng };
        let mut ratios = Vec::new();
        for first in 0..50u64 {
            let mut v = vec![2.0; 30];
            v[0] = 100.0;
            let s = cell(&v, first * 100);
            let noise = p.value(Statistic::Sum, &s).unwrap().0 - s.s[0];
            ratios.push(noise / 100.0);
        }
        // The ratios are spread continuously, not on the grid k/d.
        let mut distinct: Vec<i64> = ratios.iter().map(|r| (r * 1e6).round() as i64).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 49, "{ratios:?}");
    }
}
