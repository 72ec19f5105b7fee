use prost::Message;

use crate::pb;

/// A stable digest of a query (hex SHA-256 of its canonical protobuf form).
///
/// Breakdown dimensions, filters and filter codes are sorted first, so two
/// queries that ask the same thing in a different order get the same digest;
/// node and hub logs can then be joined on it.
pub fn query_digest(query: &pb::Query) -> String {
    let mut canonical = query.clone();
    canonical.breakdown.sort();
    canonical.breakdown.dedup();
    // Two filters on one dimension mean the union of their codes (as
    // `resolve` reads them), so they are merged: otherwise their order
    // would change the digest (found by the `query` fuzz target).
    let mut merged: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = std::collections::BTreeMap::new();
    for f in &canonical.filters {
        merged.entry(f.dimension.clone()).or_default().extend(f.codes.iter().cloned());
    }
    canonical.filters = merged.into_iter().map(|(dimension, codes)| pb::DimensionFilter { dimension, codes: codes.into_iter().collect() }).collect();
    let bytes = canonical.encode_to_vec();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
}

/// The canonical bytes of what a node released in answer to a query: the
/// decision's dimensions, then one line per cell in the order sent. The log
/// commits to these (salted) so a receipt proves exactly which figures left.
///
/// Line format: codes, the value's IEEE-754 bits in hex, OBS_STATUS and
/// UNIT_MULT, separated by 0x1f; lines end with `\n`. A cell that carries
/// disclosure-control marks adds CONF_STATUS and its flags (joined by `,`)
/// as two more fields, so the log commits to what was suppressed and
/// perturbed too. The number of fields per line is fixed by the dimensions,
/// so the two forms cannot be confused.
pub fn released_canonical(decision: &pb::Decision, cells: &[pb::Cell]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + cells.len() * 48);
    out.extend_from_slice(decision.dimensions.join("\x1f").as_bytes());
    out.push(b'\n');
    for c in cells {
        for code in &c.key {
            out.extend_from_slice(code.as_bytes());
            out.push(0x1f);
        }
        out.extend_from_slice(format!("{:016x}\x1f{}\x1f{}", c.value.to_bits(), c.obs_status, c.unit_mult).as_bytes());
        if !c.conf_status.is_empty() || !c.flags.is_empty() {
            out.extend_from_slice(format!("\x1f{}\x1f{}", c.conf_status, c.flags.join(",")).as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// The word for a decision kind in logs and CLIs (`allowed`, `refused`, ...).
pub fn decision_word(kind: i32) -> &'static str {
    match pb::DecisionKind::try_from(kind) {
        Ok(pb::DecisionKind::Allowed) => "allowed",
        Ok(pb::DecisionKind::PartlyAllowed) => "partly-allowed",
        Ok(pb::DecisionKind::Refused) => "refused",
        _ => "unspecified",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_but_content_does() {
        let a = pb::Query { dataflow: "UNE_RATE".into(), breakdown: vec!["SEX".into(), "AGE".into()], ..Default::default() };
        let mut b = a.clone();
        b.breakdown.reverse();
        assert_eq!(query_digest(&a), query_digest(&b));
        b.start_period = "2020".into();
        assert_ne!(query_digest(&a), query_digest(&b));
        // Two filters on one dimension are their union, in any order.
        let filter = |codes: &[&str]| pb::DimensionFilter { dimension: "OCU".into(), codes: codes.iter().map(|c| c.to_string()).collect() };
        let mut c = a.clone();
        c.filters = vec![filter(&["5", "1"]), filter(&["0", "1"])];
        let mut d = a.clone();
        d.filters = vec![filter(&["0", "1"]), filter(&["1", "5"])];
        let mut e = a.clone();
        e.filters = vec![filter(&["0", "1", "5"])];
        assert_eq!(query_digest(&c), query_digest(&d));
        assert_eq!(query_digest(&c), query_digest(&e));
    }
}
