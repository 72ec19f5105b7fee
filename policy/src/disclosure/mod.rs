//! Statistical disclosure control: what may leave the node from microdata.
//!
//! Pure functions over cells that the node's microdata query computed from
//! the records. In order:
//! 1. **primary suppression** of each cell on its own: the threshold rule on
//!    contributors, and for magnitudes the (n,k) dominance rule and the p%
//!    rule ([`primary`]);
//! 2. the **group rule**: a cell holding (nearly) all or (nearly) none of a
//!    small group is withheld, whether the group is a margin of the answer
//!    or the same query without one of its filters ([`homogeneous`]);
//! 3. **secondary suppression** ([`secondary`]): no suppressed cell of this
//!    answer or of earlier answers to the same ledger subject, and no small
//!    or dominated group of records, may be computable as a linear
//!    combination of what was released now and before, in any measure the
//!    releases link (counts, and each variable's sums);
//! 4. **perturbation** of what is released: the cell-key method
//!    ([`ptable`]) for counts, keyed noise for magnitudes ([`magnitude`]),
//!    both consistent for identical record sets, or differential privacy
//!    ([`dp`]) against a budget per requester tier.
//!
//! The threat model and the standard each rule meets are in
//! `docs/disclosure.md`. This module decides; it neither reads the store nor
//! writes the ledger.

mod atom;
pub mod dp;
pub mod magnitude;
pub mod ptable;
pub mod secondary;
pub mod span;

/// A xorshift generator for the tests' random systems: deterministic, so a
/// failure reproduces.
#[cfg(test)]
pub(crate) fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

use std::sync::Arc;

pub use secondary::{System, Target, secondary};

pub use atom::{AtomStats, TOP_K};
use ptable::PTable;

/// The disclosure-control settings in force for one dataset and requester.
#[derive(Debug, Clone)]
pub struct Params {
    /// Fewest contributors a released cell may have.
    pub threshold: u64,
    /// (n,k) rule: the `n` largest contributions may not exceed `k` % of the cell total.
    pub dominance: Option<(usize, f64)>,
    /// p% rule: the total minus the two largest contributions must be at
    /// least `p` % of the largest.
    pub p_percent: Option<f64>,
    /// Group rule: in a group of at most `max_size` contributors, no
    /// category may hold `share` (0..1] or more of them.
    pub group: Option<(u64, f64)>,
    /// Cell-key perturbation, with the magnitude noise factor for sums.
    pub cell_key: Option<(Arc<PTable>, f64)>,
    /// Differential privacy: ε per query and the total budget of each
    /// requester tier (members, hubs' operators, the public).
    pub dp: Option<(f64, f64)>,
    /// Who counts as one requester for the release ledger and budgets.
    pub ledger: LedgerScope,
}

/// Whose earlier releases an answer is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LedgerScope {
    /// Everyone of the network is one requester: every member, every hub
    /// replica, their operators and the public. Members who pool their
    /// answers, or a member with the hub, hold nothing the checks missed.
    #[default]
    Network,
    /// Each node identity its own ledger (all hubs still share one). Only
    /// safe where requesters cannot pool what they receive.
    DangerousPerRequester,
}

impl Default for Params {
    /// A national statistics office's usual starting point.
    fn default() -> Self {
        Params {
            threshold: 10,
            dominance: Some((2, 85.0)),
            p_percent: Some(10.0),
            group: Some((50, 0.9)),
            cell_key: None,
            dp: None,
            ledger: LedgerScope::Network,
        }
    }
}

/// The statistic an answer computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Count,
    WeightedCount,
    Sum,
    Mean,
    Ratio,
}

impl Statistic {
    pub fn parse(s: &str) -> Option<Statistic> {
        Some(match s {
            "" | "count" => Statistic::Count,
            "weighted-count" => Statistic::WeightedCount,
            "sum" => Statistic::Sum,
            "mean" => Statistic::Mean,
            "ratio" => Statistic::Ratio,
            _ => return None,
        })
    }
    pub fn word(self) -> &'static str {
        match self {
            Statistic::Count => "count",
            Statistic::WeightedCount => "weighted-count",
            Statistic::Sum => "sum",
            Statistic::Mean => "mean",
            Statistic::Ratio => "ratio",
        }
    }
    /// Whether the statistic reveals magnitudes of a variable (so the
    /// dominance rules apply).
    pub fn magnitude(self) -> bool {
        matches!(self, Statistic::Sum | Statistic::Mean | Statistic::Ratio)
    }
}

/// The primary rules a cell breaks on its own (empty: it may be released).
pub fn primary(params: &Params, statistic: Statistic, s: &AtomStats) -> Vec<&'static str> {
    let mut fired = Vec::new();
    if s.n == 0 {
        return fired;
    }
    if s.n < params.threshold {
        fired.push("threshold");
    }
    if statistic.magnitude() {
        // Both parts of a ratio are magnitudes the requester could isolate.
        let parts: &[(f64, &[f64; TOP_K])] = if statistic == Statistic::Ratio { &[(s.s[0], &s.top), (s.s[1], &s.top2)] } else { &[(s.s[0], &s.top)] };
        for (sum, top) in parts {
            for rule in dominated(params, s.n, *sum, top) {
                if !fired.contains(&rule) {
                    fired.push(rule);
                }
            }
        }
    }
    fired
}

/// The dominance rules a magnitude breaks, given its contributors, sum and
/// largest contributions.
fn dominated(params: &Params, n: u64, sum: f64, top: &[f64; TOP_K]) -> Vec<&'static str> {
    let mut fired = Vec::new();
    let total: f64 = sum.abs().max(top.iter().take(n as usize).sum());
    if let Some((k_n, k)) = params.dominance
        && total > 0.0
        && top.iter().take(k_n.min(n as usize)).sum::<f64>() > k / 100.0 * total
    {
        fired.push("dominance");
    }
    if let Some(p) = params.p_percent
        && n >= 2
        && total - top[0] - top[1] < p / 100.0 * top[0]
    {
        fired.push("p-percent");
    }
    fired
}

/// The group rule for one cell inside a larger group (the same cell with
/// one of its restrictions lifted: a margin of the answer, or the query
/// without one of its filters). A group of at most `max_size` records is
/// small enough that "(nearly) all of them" or "(nearly) none of them" is
/// news about each member of it, so a cell holding a `share` or more of it,
/// or `1 − share` or less (zeros included), is withheld.
pub fn homogeneous(params: &Params, part: u64, whole: u64) -> bool {
    let Some((max_size, share)) = params.group else { return false };
    if whole == 0 || whole > max_size || part > whole {
        return false;
    }
    let f = part as f64 / whole as f64;
    f >= share || f <= 1.0 - share + 1e-12
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stats(values: &[f64]) -> AtomStats {
        let mut s = AtomStats::default();
        for v in values {
            let mut one = AtomStats { n: 1, w: 1.0, s: [*v, 0.0], ..Default::default() };
            one.top[0] = v.abs();
            s.add(&one);
        }
        s
    }

    #[test]
    fn primary_rules() {
        let p = Params::default();
        assert_eq!(primary(&p, Statistic::Count, &stats(&[1.0; 9])), ["threshold"]);
        assert!(primary(&p, Statistic::Count, &stats(&[1.0; 10])).is_empty());
        // Twelve contributors, one dominant: (2,85) and p% both fire.
        let mut v = vec![1.0; 11];
        v.push(1000.0);
        assert_eq!(primary(&p, Statistic::Sum, &stats(&v)), ["dominance", "p-percent"]);
        // Counting the same records reveals no magnitude: no dominance.
        assert!(primary(&p, Statistic::Count, &stats(&v)).is_empty());
        // Even contributions pass.
        assert!(primary(&p, Statistic::Mean, &stats(&[5.0; 20])).is_empty());
        // p% alone: two large similar contributors can estimate each other.
        let mut v = vec![1.0; 9];
        v.extend([100.0, 95.0]);
        let p2 = Params { dominance: Some((1, 90.0)), ..Params::default() };
        assert_eq!(primary(&p2, Statistic::Sum, &stats(&v)), ["p-percent"]);
    }

    #[test]
    fn group_rule_withholds_the_majority_and_the_minority_of_a_small_group() {
        let p = Params::default();
        // 40 of 41 are women: both the women and the man are withheld.
        assert!(homogeneous(&p, 40, 41));
        assert!(homogeneous(&p, 1, 41));
        // ... and the zero of a small group too, however it is asked for.
        assert!(homogeneous(&p, 0, 30));
        // A large group may be homogeneous: that is a statistic, not a disclosure.
        assert!(!homogeneous(&p, 4000, 4100));
        assert!(!homogeneous(&p, 0, 4100));
        // A mixed small group is fine.
        assert!(!homogeneous(&p, 20, 41));
        // Without the rule nothing is.
        assert!(!homogeneous(&Params { group: None, ..p }, 40, 41));
    }

    #[test]
    fn the_statistic_words_are_the_networks() {
        for word in tabadul_proto::STATISTICS {
            assert_eq!(super::Statistic::parse(word).map(super::Statistic::word), Some(word));
        }
        assert!(super::Statistic::parse("median").is_none());
    }
}
