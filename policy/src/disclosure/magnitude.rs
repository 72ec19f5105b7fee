//! Perturbation of magnitudes (sums, and the sums behind means and ratios).
//!
//! The noise on a cell's sum is `m × |sum| / √n × u`:
//! - **scaled by the cell, not by a person.** A scale equal to the largest
//!   contribution (what this replaced) made the noise itself disclose that
//!   contribution: two cells sharing their largest record shared their
//!   noise scale. `|sum| / √n` is what the released figure already shows
//!   to within the noise, so the scale tells nothing new, and it shrinks
//!   relative to the sum as cells grow (utility where it is safe).
//! - **continuous and secret.** `u` is a pseudo-random function of the
//!   node's secret, the table, the variable and the record set (the sum of
//!   the records' 64-bit keys): never on a grid an integer variable could be
//!   decoded against, and unpredictable without the secret. Its magnitude
//!   lies in [1/2, 1], never near zero, so no released sum is almost exact.
//! - **consistent.** The same records and variable always get the same
//!   `u`, whichever statistic asks (a sum, or the sum inside a mean), so
//!   repeating or rephrasing a query averages nothing away, and a mean
//!   times its released count gives back only the perturbed sum.
//!
//! This follows the ABS's approach for magnitude tables (noise from the
//! records' keys, bounded away from zero) with the scale of Eurostat's
//! cell-key guidance for sums (relative to the cell, not to one unit).

use ring::hmac;

/// The node's secret that keys the magnitude noise (per table).
pub type NoiseSecret = [u8; 32];

/// The noise unit `u` for a record set: sign and size from a keyed hash,
/// `|u|` uniform in [1/2, 1].
pub fn unit(secret: &NoiseSecret, table: &str, variable: &str, record_set: u64) -> f64 {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    for part in [table.as_bytes(), &[0x1f], variable.as_bytes(), &[0x1f], &record_set.to_le_bytes()] {
        ctx.update(part);
    }
    let tag = ctx.sign();
    let mut bits = [0u8; 8];
    bits.copy_from_slice(&tag.as_ref()[..8]);
    let bits = u64::from_le_bytes(bits);
    // 52 bits of magnitude, one of sign.
    let r = (bits >> 12) as f64 / (1u64 << 52) as f64;
    let size = 0.5 + 0.5 * r;
    if bits & 1 == 1 { -size } else { size }
}

/// The perturbation added to a sum of `n` contributors, for noise factor `m`.
pub fn perturbation(m: f64, sum: f64, n: u64, u: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    m * sum.abs() / (n as f64).sqrt() * u
}

/// A record's 64-bit key from its position in the table (records are only
/// ever appended, so positions are permanent). Public: the secrecy is in
/// [`unit`]'s key; this only has to spread record sets over 2^64 values.
pub fn record_key(position: u64) -> u64 {
    // splitmix64's finaliser: a bijection that mixes every bit.
    let mut z = position.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn units_are_continuous_bounded_away_from_zero_and_centred() {
        let secret = [7u8; 32];
        let us: Vec<f64> = (0..20_000u64).map(|k| unit(&secret, "T", "V", record_key(k))).collect();
        assert!(us.iter().all(|u| (0.5..=1.0).contains(&u.abs())));
        let mean = us.iter().sum::<f64>() / us.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        // Not on a grid: (nearly) every draw is distinct.
        let mut distinct: Vec<u64> = us.iter().map(|u| u.to_bits()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 19_990, "{}", distinct.len());
    }

    #[test]
    fn consistent_per_record_set_and_keyed() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(unit(&a, "T", "V", 42), unit(&a, "T", "V", 42));
        assert_ne!(unit(&a, "T", "V", 42), unit(&b, "T", "V", 42));
        assert_ne!(unit(&a, "T", "V", 42), unit(&a, "T", "W", 42));
        assert_ne!(unit(&a, "T", "V", 42), unit(&a, "T", "V", 43));
    }

    #[test]
    fn the_scale_follows_the_cell_not_its_largest_record() {
        // Two cells with the same total and size but different largest
        // contributions get the same scale.
        let u = 0.75;
        assert_eq!(perturbation(0.1, 1000.0, 100, u), perturbation(0.1, 1000.0, 100, u));
        assert!((perturbation(0.1, 1000.0, 100, u) - 7.5).abs() < 1e-9);
        assert_eq!(perturbation(0.1, 1000.0, 0, u), 0.0);
    }
}
