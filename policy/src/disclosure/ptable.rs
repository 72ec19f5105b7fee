//! The cell-key method's perturbation table (p-table), ABS / ONS style.
//!
//! For an original count `n`, the p-table is a distribution over
//! perturbations `v` with `|v| ≤ D`, mean 0 (unbiased), variance `V` where
//! the bounds allow it, `n + v ≥ 0`, and no published value in `1..=js`
//! (small counts are shown as 0 or as more than `js`). A zero stays zero.
//! Among the distributions that meet those constraints it takes the one of
//! maximum entropy, `p(v) ∝ exp(a·v + b·v²)`, solving `a` for the mean and
//! `b` for the variance by bisection: robust, and deterministic, so every
//! node with the same parameters builds the same table.
//!
//! A cell's key (the sum of its records' keys mod 256) picks the
//! perturbation: the 256 key values are laid over the cumulative
//! distribution. The same records always give the same key and so the same
//! noise, which is why repeating a query, or asking it another way, averages
//! nothing away.

/// Parameters of the p-table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PTableParams {
    /// Maximum absolute perturbation.
    pub d: u32,
    /// Target variance of the perturbation.
    pub v: f64,
    /// No published count in `1..=js`.
    pub js: u32,
}

/// A built p-table: for each original count `0..=rows-1` (and the last row
/// for every larger count), perturbations with cumulative probabilities.
#[derive(Debug, Clone)]
pub struct PTable {
    pub params: PTableParams,
    rows: Vec<Vec<(i64, f64)>>,
}

impl PTable {
    /// Builds the table. `d` must exceed `js`, or small counts could not be
    /// moved out of `1..=js` without bias.
    pub fn new(params: PTableParams) -> Result<PTable, String> {
        if params.d == 0 || params.d > 50 {
            return Err(format!("cell-key d = {} must be between 1 and 50", params.d));
        }
        if params.js >= params.d {
            return Err(format!("cell-key js = {} must be smaller than d = {}", params.js, params.d));
        }
        if !(params.v > 0.0 && params.v.is_finite()) {
            return Err(format!("cell-key v = {} must be a positive variance", params.v));
        }
        let (d, js) = (i64::from(params.d), i64::from(params.js));
        // Beyond n = d + js + 1 the constraints no longer bind: every larger
        // count uses the last row.
        let last = d + js + 1;
        let mut rows = vec![vec![(0, 1.0)]];
        for n in 1..=last {
            let support: Vec<i64> = ((n - d).max(0)..=n + d).filter(|t| *t == 0 || *t > js).map(|t| t - n).collect();
            let probs = max_entropy(&support, params.v);
            let mut cumulative = 0.0;
            let row = support
                .iter()
                .zip(probs)
                .map(|(v, p)| {
                    cumulative += p;
                    (*v, cumulative)
                })
                .collect();
            rows.push(row);
        }
        Ok(PTable { params, rows })
    }

    /// The perturbation for a cell of `n` records whose key is `key`.
    pub fn perturbation(&self, n: u64, key: u8) -> i64 {
        let row = &self.rows[(n as usize).min(self.rows.len() - 1)];
        let u = (f64::from(key) + 0.5) / 256.0;
        row.iter().find(|(_, c)| u <= *c).or(row.last()).map_or(0, |(v, _)| *v)
    }

    /// Mean and variance of the perturbation of a count `n` over the 256
    /// keys (what a user of the figures can be told).
    pub fn moments(&self, n: u64) -> (f64, f64) {
        let vs: Vec<f64> = (0..=255u8).map(|k| self.perturbation(n, k) as f64).collect();
        let mean = vs.iter().sum::<f64>() / 256.0;
        (mean, vs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 256.0)
    }
}

/// `p(v) ∝ exp(a·v + b·v²)` over `support`, with mean 0 and variance as
/// close to `target` as the support allows.
fn max_entropy(support: &[i64], target: f64) -> Vec<f64> {
    let dist = |a: f64, b: f64| -> Vec<f64> {
        let logits: Vec<f64> = support.iter().map(|&v| a * v as f64 + b * (v * v) as f64).collect();
        let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
        let z: f64 = w.iter().sum();
        w.into_iter().map(|x| x / z).collect()
    };
    let mean = |p: &[f64]| support.iter().zip(p).map(|(v, p)| *v as f64 * p).sum::<f64>();
    let var = |p: &[f64]| support.iter().zip(p).map(|(v, p)| (*v as f64).powi(2) * p).sum::<f64>();
    // For fixed b the mean rises with a: bisect a to centre the distribution.
    let centred = |b: f64| -> Vec<f64> {
        let (mut lo, mut hi) = (-60.0, 60.0);
        for _ in 0..200 {
            let mid = (lo + hi) / 2.0;
            if mean(&dist(mid, b)) < 0.0 { lo = mid } else { hi = mid }
        }
        dist((lo + hi) / 2.0, b)
    };
    // Variance rises with b; bisect b (clamped: an unreachable target gets
    // the nearest reachable variance).
    let (mut lo, mut hi) = (-20.0, 5.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if var(&centred(mid)) < target { lo = mid } else { hi = mid }
    }
    centred((lo + hi) / 2.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn meets_its_constraints() {
        let t = PTable::new(PTableParams { d: 4, v: 2.0, js: 2 }).unwrap();
        for n in 0..40u64 {
            for key in 0..=255u8 {
                let v = t.perturbation(n, key);
                let out = n as i64 + v;
                assert!(v.abs() <= 4, "n={n} v={v}");
                assert!(out >= 0, "n={n} published {out}");
                assert!(!(1..=2).contains(&out), "n={n} published {out}, inside 1..=js");
                if n == 0 {
                    assert_eq!(v, 0);
                }
            }
            let (mean, var) = t.moments(n);
            // 256 key positions quantise the distribution; unbiased within that.
            assert!(mean.abs() < 0.05, "n={n} mean {mean}");
            if n >= 8 {
                assert!((var - 2.0).abs() < 0.15, "n={n} variance {var}");
            }
        }
    }

    #[test]
    fn same_key_same_noise_and_keys_spread() {
        let t = PTable::new(PTableParams { d: 3, v: 1.0, js: 0 }).unwrap();
        assert_eq!(t.perturbation(100, 17), t.perturbation(100, 17));
        let distinct: std::collections::BTreeSet<i64> = (0..=255u8).map(|k| t.perturbation(100, k)).collect();
        assert!(distinct.len() >= 5, "{distinct:?}");
    }

    #[test]
    fn refuses_impossible_parameters() {
        assert!(PTable::new(PTableParams { d: 2, v: 1.0, js: 2 }).is_err());
        assert!(PTable::new(PTableParams { d: 0, v: 1.0, js: 0 }).is_err());
        assert!(PTable::new(PTableParams { d: 3, v: -1.0, js: 0 }).is_err());
    }
}
