use crate::pb;

/// Builds a query from its command-line spelling, shared by the node's and
/// the hub's CLIs: filters as `DIM=CODE[+CODE...]`, the period as
/// `START:END` (either side may be empty) or a single period.
pub fn query_from_args(dataflow: String, breakdown: Vec<String>, filters: &[String], period: Option<&str>) -> Result<pb::Query, String> {
    let mut q = pb::Query { dataflow, breakdown, ..Default::default() };
    for f in filters {
        let Some((dim, codes)) = f.split_once('=').filter(|(d, c)| !d.is_empty() && !c.is_empty()) else {
            return Err(format!("filter {f:?} must be DIM=CODE[+CODE...]"));
        };
        q.filters.push(pb::DimensionFilter { dimension: dim.into(), codes: codes.split('+').map(str::to_owned).collect() });
    }
    if let Some(p) = period {
        let (start, end) = p.split_once(':').unwrap_or((p, p));
        q.start_period = start.into();
        q.end_period = end.into();
    }
    Ok(q)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spelling() {
        let q = query_from_args("UNE_RATE".into(), vec!["SEX".into()], &["AGE=Y15T24+Y_GE25".into()], Some("2020:")).unwrap();
        assert_eq!(q.filters[0].codes, ["Y15T24", "Y_GE25"]);
        assert_eq!((q.start_period.as_str(), q.end_period.as_str()), ("2020", ""));
        let q = query_from_args("UNE_RATE".into(), vec![], &[], Some("2024")).unwrap();
        assert_eq!((q.start_period.as_str(), q.end_period.as_str()), ("2024", "2024"));
        assert!(query_from_args("UNE_RATE".into(), vec![], &["AGE".into()], None).is_err());
        assert!(query_from_args("UNE_RATE".into(), vec![], &["=X".into()], None).is_err());
    }
}
