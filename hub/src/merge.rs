//! Merging member answers and computing regional aggregates. Pure functions.
//!
//! A regional figure is computed only from what members released and says
//! which members it covers. Counts are summed (after bringing every cell to
//! the dataflow's UNIT_MULT); rates are recomputed as the sum of numerators
//! over the sum of denominators, over members that released both for that
//! cell, never as an average of national rates.

use std::collections::BTreeMap;

use tabadul_proto::pb;

/// One member's released cells (keys start with REF_AREA).
#[derive(Debug, Clone, Copy)]
pub struct Released<'a> {
    pub member: &'a str,
    pub cells: &'a [pb::Cell],
}

/// All released cells in one table, ordered by key (REF_AREA first).
pub fn table(released: &[Released<'_>]) -> Vec<pb::Cell> {
    let mut cells: Vec<pb::Cell> = once_each(released).flat_map(|r| r.cells.iter().cloned()).collect();
    cells.sort_by(|a, b| a.key.cmp(&b.key));
    cells
}

/// Whether a cell carries a value an aggregate may use.
fn usable(cell: &pb::Cell) -> bool {
    !matches!(cell.conf_status.as_str(), "C" | "D") && cell.value.is_finite()
}

fn scaled(cell: &pb::Cell, to_unit_mult: i32) -> f64 {
    cell.value * 10f64.powi(cell.unit_mult - to_unit_mult)
}

/// The first answer of each member. The hub asks each member once
/// ([`tabadul_proto::distinct_members`]); this keeps an aggregate honest
/// even if a repeat ever slipped through: a member counts once.
fn once_each<'r, 'a>(released: &'r [Released<'a>]) -> impl Iterator<Item = &'r Released<'a>> {
    let mut seen: Vec<&str> = Vec::new();
    released.iter().filter(move |r| {
        let first = !seen.contains(&r.member);
        seen.push(r.member);
        first
    })
}

/// Sum per key (without REF_AREA), expressed in `unit_mult`.
pub fn sum(released: &[Released<'_>], unit_mult: i32) -> Vec<pb::AggregateCell> {
    let mut acc: BTreeMap<Vec<String>, (f64, Vec<String>)> = BTreeMap::new();
    for r in once_each(released) {
        // A withheld cell (CONF_STATUS C or D) has no value to add: the
        // aggregate then does not cover that member for that cell.
        for c in r.cells.iter().filter(|c| usable(c)) {
            let e = acc.entry(c.key[1..].to_vec()).or_default();
            e.0 += scaled(c, unit_mult);
            e.1.push(r.member.to_owned());
        }
    }
    acc.into_iter()
        .map(|(key, (value, mut covers))| {
            covers.sort();
            covers.dedup();
            pb::AggregateCell { key, value, unit_mult, covers }
        })
        .collect()
}

/// `sum(numerator) / sum(denominator) * scale` per key, over the members
/// that released both parts of that key.
pub fn rate(numerators: &[Released<'_>], denominators: &[Released<'_>], scale: f64) -> Vec<pb::AggregateCell> {
    let by_key =
        |r: &Released<'_>| -> BTreeMap<Vec<String>, f64> { r.cells.iter().filter(|c| usable(c)).map(|c| (c.key[1..].to_vec(), scaled(c, 0))).collect() };
    let mut acc: BTreeMap<Vec<String>, (f64, f64, Vec<String>)> = BTreeMap::new();
    for num in once_each(numerators) {
        let Some(den) = denominators.iter().find(|d| d.member == num.member) else { continue };
        let dens = by_key(den);
        for (key, n) in by_key(num) {
            if let Some(d) = dens.get(&key) {
                let e = acc.entry(key).or_default();
                e.0 += n;
                e.1 += d;
                e.2.push(num.member.to_owned());
            }
        }
    }
    acc.into_iter()
        .filter(|(_, (_, d, _))| *d > 0.0)
        .map(|(key, (n, d, mut covers))| {
            covers.sort();
            pb::AggregateCell { key, value: n / d * scale, unit_mult: 0, covers }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cell(key: &[&str], value: f64, unit_mult: i32) -> pb::Cell {
        pb::Cell { key: key.iter().map(|s| s.to_string()).collect(), value, obs_status: "A".into(), unit_mult, ..Default::default() }
    }

    #[test]
    fn sums_in_one_unit_and_names_members() {
        let mar = [cell(&["MAR", "T", "2024"], 1.5, 3)];
        let egy = [cell(&["EGY", "T", "2024"], 2000.0, 0), cell(&["EGY", "T", "2023"], 1.0, 3)];
        let agg = sum(&[Released { member: "MAR", cells: &mar }, Released { member: "EGY", cells: &egy }], 3);
        assert_eq!(agg.len(), 2);
        let y2024 = agg.iter().find(|a| a.key == ["T", "2024"]).unwrap();
        assert!((y2024.value - 3.5).abs() < 1e-9);
        assert_eq!(y2024.covers, ["EGY", "MAR"]);
        let y2023 = agg.iter().find(|a| a.key == ["T", "2023"]).unwrap();
        assert_eq!(y2023.covers, ["EGY"]);
    }

    #[test]
    fn rates_come_from_parts_never_from_averaging_rates() {
        // MAR: 100 of 1000 unemployed (10%); EGY: 300 of 1000 (30%) -> 20%,
        // JOR released only the numerator: not covered.
        let (mn, md) = ([cell(&["MAR", "T", "2024"], 100.0, 0)], [cell(&["MAR", "T", "2024"], 1.0, 3)]);
        let (en, ed) = ([cell(&["EGY", "T", "2024"], 300.0, 0)], [cell(&["EGY", "T", "2024"], 1000.0, 0)]);
        let jn = [cell(&["JOR", "T", "2024"], 999.0, 0)];
        let agg = rate(
            &[Released { member: "MAR", cells: &mn }, Released { member: "EGY", cells: &en }, Released { member: "JOR", cells: &jn }],
            &[Released { member: "MAR", cells: &md }, Released { member: "EGY", cells: &ed }],
            100.0,
        );
        assert_eq!(agg.len(), 1);
        assert!((agg[0].value - 20.0).abs() < 1e-9, "{}", agg[0].value);
        assert_eq!(agg[0].covers, ["EGY", "MAR"]);
        // Unequal sizes: an average of rates would give 20 too, so check a lopsided case.
        let en2 = [cell(&["EGY", "T", "2024"], 300.0, 0)];
        let ed2 = [cell(&["EGY", "T", "2024"], 9000.0, 0)];
        let agg = rate(
            &[Released { member: "MAR", cells: &mn }, Released { member: "EGY", cells: &en2 }],
            &[Released { member: "MAR", cells: &md }, Released { member: "EGY", cells: &ed2 }],
            100.0,
        );
        assert!((agg[0].value - 4.0).abs() < 1e-9, "{}", agg[0].value);
    }

    /// A seeded xorshift: the property test below is reproducible without
    /// a property-testing crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Over random member lists (repeats, any order, any length up to the
    /// membership): the list the hub acts on is distinct, its aggregate is
    /// the sum over distinct members, and its cache key is the key of its
    /// distinct set, so a cached answer for a list is the fresh answer for
    /// its distinct set.
    #[test]
    fn any_member_list_counts_each_member_once() {
        const POOL: [&str; 6] = ["MAR", "EGY", "JOR", "TUN", "LBY", "DZA"];
        let mut rng = Rng(0x7ab4_d001_5eed_0013);
        let figures: Vec<Vec<pb::Cell>> = POOL.iter().enumerate().map(|(i, m)| vec![cell(&[m, "T", "2024"], 1000.0 * (i + 1) as f64 + 7.0, 0)]).collect();
        let query = pb::Query { dataflow: "UNE_PERS".into(), ..Default::default() };
        for round in 0..2000 {
            let len = rng.below(POOL.len() + 1);
            let named: Vec<String> = (0..len).map(|_| POOL[rng.below(POOL.len())].to_owned()).collect();
            let acted = tabadul_proto::distinct_members(&named, POOL.len()).unwrap();
            let mut sorted = acted.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), acted.len(), "round {round}: {named:?} -> {acted:?} still repeats");
            let released_for = |codes: &[String]| -> Vec<Released<'_>> {
                codes
                    .iter()
                    .map(|c| {
                        let i = POOL.iter().position(|p| p == c).unwrap();
                        Released { member: POOL[i], cells: &figures[i] }
                    })
                    .collect()
            };
            let expected: f64 = sorted.iter().map(|c| figures[POOL.iter().position(|p| p == c).unwrap()][0].value).sum();
            for got in [sum(&released_for(&acted), 0), sum(&released_for(&named), 0)] {
                if named.is_empty() {
                    assert!(got.is_empty());
                    continue;
                }
                assert_eq!(got.len(), 1);
                assert!((got[0].value - expected).abs() < 1e-9, "round {round}: {named:?} summed to {} not {expected}", got[0].value);
                assert_eq!(got[0].covers, sorted, "round {round}");
            }
            // The key the hub caches under is the key of the distinct set,
            // in whatever order it comes.
            let request = |members: Vec<String>| pb::FederatedQueryRequest { query: Some(query.clone()), members, regional_aggregate: true, deadline_ms: 0 };
            let mut shuffled = sorted.clone();
            shuffled.reverse();
            assert_eq!(crate::cache::key(&request(acted.clone())), crate::cache::key(&request(shuffled)), "round {round}");
            assert_eq!(table(&released_for(&named)).len(), sorted.len(), "round {round}: the table lists each member once");
        }
        let too_many: Vec<String> = vec!["MAR".to_owned(); POOL.len() + 1];
        assert!(tabadul_proto::distinct_members(&too_many, POOL.len()).is_err());
    }
}
