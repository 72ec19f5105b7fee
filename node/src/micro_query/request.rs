//! Stage 1: the request, checked against the table's schema. Nothing here
//! looks at records or at the policy.

use std::collections::{BTreeMap, BTreeSet};

use tabadul_proto::pb;
use tabadul_proto::{InvalidQuery, MicroTable, REF_AREA, TIME_PERIOD};

use crate::disclosure::Statistic;
use crate::microdata::Schema;
use crate::policy::Rule;
use tabadul_certs::Identity;

/// A microdata query in the schema's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub statistic: Statistic,
    /// The statistic's variable and a ratio's denominator, as named.
    pub variables: [String; 2],
    /// Their numeric column indices.
    pub values: [Option<usize>; 2],
    /// Categorical columns broken down by, ascending.
    pub breakdown: Vec<usize>,
    /// Column -> allowed code indices (filters that allow every category
    /// are dropped: they restrict nothing).
    pub filters: BTreeMap<usize, BTreeSet<u32>>,
    pub start_period: String,
    pub end_period: String,
}

impl Request {
    /// The variables a magnitude reveals (none for counts).
    pub fn measured(&self) -> Vec<&str> {
        if !self.statistic.magnitude() {
            return Vec::new();
        }
        self.variables.iter().map(String::as_str).filter(|v| !v.is_empty()).collect()
    }
}

/// Checks `q` against `table`.
pub fn parse(table: &MicroTable, schema: &Schema, q: &pb::Query) -> Result<Request, InvalidQuery> {
    let agg = q.aggregation.clone().unwrap_or_default();
    let Some(statistic) = Statistic::parse(&agg.statistic) else {
        return Err(InvalidQuery(format!("statistic {:?} must be count, weighted-count, sum, mean or ratio", agg.statistic)));
    };
    let variable = |name: &str, what: &str| -> Result<Option<usize>, InvalidQuery> {
        if name.is_empty() {
            return Err(InvalidQuery(format!("a {} needs a {what} (one of: {})", statistic.word(), variables_of(table))));
        }
        if !table.has_variable(name) {
            return Err(InvalidQuery(format!("{} has no variable {name:?} (it has: {})", table.id, variables_of(table))));
        }
        Ok(schema.numeric_index(name))
    };
    let (values, variables) = match statistic {
        Statistic::Count | Statistic::WeightedCount => ([None, None], [String::new(), String::new()]),
        Statistic::Sum | Statistic::Mean => ([variable(&agg.variable, "variable")?, None], [agg.variable.clone(), String::new()]),
        Statistic::Ratio => {
            ([variable(&agg.variable, "variable")?, variable(&agg.denominator, "denominator")?], [agg.variable.clone(), agg.denominator.clone()])
        }
    };
    if statistic == Statistic::WeightedCount && table.weight.is_none() {
        return Err(InvalidQuery(format!("{} has no survey weight; ask for a count", table.id)));
    }
    let mut breakdown: Vec<usize> = Vec::new();
    for b in &q.breakdown {
        if b == REF_AREA || b == TIME_PERIOD {
            continue;
        }
        match schema.categorical_index(b) {
            Some(c) if !breakdown.contains(&c) => breakdown.push(c),
            Some(_) => {}
            None => return Err(InvalidQuery(format!("{} has no dimension {b:?} to break down by", table.id))),
        }
    }
    breakdown.sort_unstable();
    let mut filters: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    for f in &q.filters {
        let Some(c) = schema.categorical_index(&f.dimension).filter(|c| *c > 0) else {
            return Err(InvalidQuery(format!("{} has no dimension {:?} to filter on (periods: use start/end)", table.id, f.dimension)));
        };
        if f.codes.is_empty() {
            return Err(InvalidQuery(format!("filter on {} lists no codes", f.dimension)));
        }
        let mut set = BTreeSet::new();
        for code in &f.codes {
            if schema.totals[c].as_deref() == Some(code.as_str()) {
                set.extend(category_indices(schema, c));
                continue;
            }
            match schema.codes[c].iter().position(|x| x == code) {
                Some(i) => {
                    set.insert(i as u32);
                }
                None => return Err(InvalidQuery(format!("unknown code {code:?} for {}", f.dimension))),
            }
        }
        filters.entry(c).or_default().extend(set);
    }
    filters.retain(|c, set| !set.iter().copied().eq(category_indices(schema, *c)));
    for (p, what) in [(&q.start_period, "start"), (&q.end_period, "end")] {
        if !(p.is_empty() || (p.len() >= 4 && p.len() <= 7 && p.as_bytes()[..4].iter().all(u8::is_ascii_digit))) {
            return Err(InvalidQuery(format!("{what} period {p:?} is not an SDMX period")));
        }
    }
    Ok(Request { statistic, variables, values, breakdown, filters, start_period: q.start_period.clone(), end_period: q.end_period.clone() })
}

/// Narrows `req`'s filters to the rows `rule` grants `who` (`rows = {
/// NATIONALITY = "requester" }`): records outside them are never read.
/// Returns the note for the decision's withheld list when the request
/// reached beyond them (what the rule grants, nothing about the data), or
/// the refusal when it asked for none of them.
pub fn scope_rows(rule: &Rule, who: &Identity, schema: &Schema, req: &mut Request) -> Result<Option<(String, String)>, String> {
    let words = rule.rows_text(Some(who)).join(" and ");
    let mut note = None;
    for (dim, codes) in rule.rows_for(who) {
        let Some(c) = schema.categorical_index(&dim) else { continue };
        if schema.totals[c].as_deref().is_some_and(|t| codes.contains(t)) {
            continue; // the total is granted: every row is
        }
        let granted: BTreeSet<u32> = schema.codes[c].iter().enumerate().filter(|(_, code)| codes.contains(*code)).map(|(i, _)| i as u32).collect();
        let asked: BTreeSet<u32> = req.filters.get(&c).cloned().unwrap_or_else(|| category_indices(schema, c).collect());
        let kept: BTreeSet<u32> = asked.intersection(&granted).copied().collect();
        if kept.is_empty() {
            return Err(format!(
                "rule {} grants only the rows where {words}; this query asks for none of them (ask with {dim} in the breakdown or filtered to those codes)",
                rule.id
            ));
        }
        if kept != asked {
            note = Some((format!("not granted: rule {} grants only the rows where {words}", rule.id), format!("other codes of {dim}")));
        }
        req.filters.insert(c, kept);
    }
    Ok(note)
}

fn variables_of(t: &MicroTable) -> String {
    t.variables.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join(", ")
}

/// The code indices of a dimension column that a record may hold (all but the total).
pub fn category_indices(schema: &Schema, c: usize) -> impl Iterator<Item = u32> + '_ {
    schema.codes[c].iter().enumerate().filter(move |(_, code)| schema.totals[c].as_deref() != Some(code.as_str())).map(|(i, _)| i as u32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture() -> (tabadul_proto::Dictionary, String) {
        // Unit tests run in the crate directory.
        let dict = tabadul_proto::Dictionary::load(std::path::Path::new("../deploy/dictionary.toml")).unwrap();
        (dict, "PES_JOBSEEKER_RECORDS".to_owned())
    }

    fn q(statistic: &str, variable: &str, breakdown: &[&str], filters: &[(&str, &[&str])]) -> pb::Query {
        pb::Query {
            dataflow: "PES_JOBSEEKER_RECORDS".into(),
            breakdown: breakdown.iter().map(|s| s.to_string()).collect(),
            filters: filters.iter().map(|(d, c)| pb::DimensionFilter { dimension: d.to_string(), codes: c.iter().map(|s| s.to_string()).collect() }).collect(),
            aggregation: Some(pb::Aggregation { statistic: statistic.into(), variable: variable.into(), denominator: String::new() }),
            ..Default::default()
        }
    }

    #[test]
    fn reads_a_request_in_the_schemas_terms() {
        let (dict, id) = fixture();
        let table = dict.microdata(&id).unwrap();
        let schema = Schema::of(&dict, table);
        let r = parse(table, &schema, &q("mean", "MONTHS_REGISTERED", &["SEX", "REF_AREA", "SEX", "REGION"], &[("SEX", &["F"])])).unwrap();
        assert_eq!(r.statistic, Statistic::Mean);
        assert_eq!(r.breakdown.len(), 2, "duplicates and REF_AREA dropped");
        assert!(r.breakdown.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r.measured(), ["MONTHS_REGISTERED"]);
        assert_eq!(r.filters.len(), 1);
        // A filter listing every category restricts nothing.
        let all = parse(table, &schema, &q("count", "", &[], &[("SEX", &["F", "M"])])).unwrap();
        assert!(all.filters.is_empty());
        assert!(all.measured().is_empty());
    }

    #[test]
    fn says_what_is_wrong() {
        let (dict, id) = fixture();
        let table = dict.microdata(&id).unwrap();
        let schema = Schema::of(&dict, table);
        let err = |q: pb::Query| parse(table, &schema, &q).unwrap_err().0;
        assert!(err(q("median", "", &[], &[])).contains("statistic \"median\""));
        assert!(err(q("mean", "", &[], &[])).contains("needs a variable"));
        assert!(err(q("sum", "SALARY", &[], &[])).contains("no variable \"SALARY\""));
        assert!(err(q("count", "", &["COLOUR"], &[])).contains("no dimension \"COLOUR\""));
        assert!(err(q("count", "", &[], &[("SEX", &["Q"])])).contains("unknown code \"Q\""));
        assert!(err(q("count", "", &[], &[("SEX", &[])])).contains("lists no codes"));
        let mut bad = q("count", "", &[], &[]);
        bad.start_period = "last year".into();
        assert!(err(bad).contains("not an SDMX period"));
    }
}
