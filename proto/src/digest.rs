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
    for f in &mut canonical.filters {
        f.codes.sort();
        f.codes.dedup();
    }
    canonical.filters.sort_by(|a, b| a.dimension.cmp(&b.dimension));
    let bytes = canonical.encode_to_vec();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_but_content_does() {
        let a = pb::Query {
            dataflow: "UNE_RATE".into(),
            breakdown: vec!["SEX".into(), "AGE".into()],
            ..Default::default()
        };
        let mut b = a.clone();
        b.breakdown.reverse();
        assert_eq!(query_digest(&a), query_digest(&b));
        b.start_period = "2020".into();
        assert_ne!(query_digest(&a), query_digest(&b));
    }
}
