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
    let mut cells: Vec<pb::Cell> = released.iter().flat_map(|r| r.cells.iter().cloned()).collect();
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

/// Sum per key (without REF_AREA), expressed in `unit_mult`.
pub fn sum(released: &[Released<'_>], unit_mult: i32) -> Vec<pb::AggregateCell> {
    let mut acc: BTreeMap<Vec<String>, (f64, Vec<String>)> = BTreeMap::new();
    for r in released {
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
    let by_key = |r: &Released<'_>| -> BTreeMap<Vec<String>, f64> {
        r.cells.iter().filter(|c| usable(c)).map(|c| (c.key[1..].to_vec(), scaled(c, 0))).collect()
    };
    let mut acc: BTreeMap<Vec<String>, (f64, f64, Vec<String>)> = BTreeMap::new();
    for num in numerators {
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
}
