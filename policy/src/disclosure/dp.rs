//! Differential privacy for counts: the discrete Laplace (two-sided
//! geometric) mechanism.
//!
//! Noise is integer-valued, so no floating-point output leaks the low bits
//! of a continuous sample (the weakness Mironov showed in textbook Laplace).
//! `P(X = k) ∝ exp(−|k| / scale)`; with `scale = Δ / ε` it gives ε-DP for
//! a query of L1 sensitivity Δ. Randomness comes from the OS CSPRNG.

use ring::rand::{SecureRandom, SystemRandom};

/// The operating system's random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngFailed;

/// Draws discrete Laplace noise with the given scale.
pub fn discrete_laplace(scale: f64, rng: &SystemRandom) -> Result<i64, RngFailed> {
    // X = G1 − G2 with G ~ Geometric(1 − e^(−1/scale)) on {0, 1, ...}.
    let q = (-1.0 / scale).exp();
    Ok(geometric(q, rng)? - geometric(q, rng)?)
}

/// Failures before the first success, success probability `1 − q`.
fn geometric(q: f64, rng: &SystemRandom) -> Result<i64, RngFailed> {
    let mut bytes = [0u8; 8];
    rng.fill(&mut bytes).map_err(|_| RngFailed)?;
    // Uniform in (0, 1]: 53 random bits, never 0.
    let u = ((u64::from_le_bytes(bytes) >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let g = (u.ln() / q.ln()).floor();
    Ok(if g.is_finite() { g.min(1e12) as i64 } else { 0 })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn has_the_laplace_spread() {
        let rng = SystemRandom::new();
        let scale = 4.0;
        let draws: Vec<i64> = (0..20_000).map(|_| discrete_laplace(scale, &rng).unwrap()).collect();
        let mean = draws.iter().sum::<i64>() as f64 / draws.len() as f64;
        let var = draws.iter().map(|d| (*d as f64 - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        // Discrete Laplace variance: 2q / (1 − q)^2 with q = e^(−1/scale) (≈ 31.5 here).
        let q = (-1.0f64 / scale).exp();
        let expected = 2.0 * q / (1.0 - q).powi(2);
        assert!(mean.abs() < 0.3, "mean {mean}");
        assert!((var / expected - 1.0).abs() < 0.1, "variance {var} vs {expected}");
        assert!(draws.iter().any(|d| *d < 0) && draws.iter().any(|d| *d > 0));
    }
}
