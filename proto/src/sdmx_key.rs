//! SDMX 2.1 REST data-query references: the `flowRef` and the dotted series
//! key, turned into the members to ask and a [`pb::Query`]'s breakdown and
//! filters. Pure, so the hub's front door and the fuzzer run the same code.
//!
//! Key semantics: parts follow the dataflow's dimensions (REF_AREA first);
//! `+` separates codes; an empty part is a wildcard. REF_AREA codes choose
//! the members; a wildcard in another dimension breaks the answer down by
//! it (every code, the total included); listed codes filter it. `all` (or
//! an empty key) is every part wildcarded.

use crate::{Dataflow, Dictionary, REF_AREA, pb};

/// A flowRef: `ID`, `AGENCY,ID` or `AGENCY,ID,VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRef<'a> {
    pub agency: Option<&'a str>,
    pub id: &'a str,
    pub version: Option<&'a str>,
}

/// Why a reference cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Malformed: the request itself is wrong (HTTP 400).
    Syntax(String),
    /// Well formed but names a code the dictionary does not have, so no
    /// data can match (HTTP 404).
    UnknownCode(String),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Syntax(m) | KeyError::UnknownCode(m) => f.write_str(m),
        }
    }
}

pub fn parse_flow_ref(flow_ref: &str) -> Result<FlowRef<'_>, KeyError> {
    let parts: Vec<&str> = flow_ref.split(',').collect();
    let r = match parts.as_slice() {
        [id] => FlowRef { agency: None, id, version: None },
        [agency, id] => FlowRef { agency: Some(agency), id, version: None },
        [agency, id, version] => FlowRef { agency: Some(agency), id, version: Some(version) },
        _ => return Err(KeyError::Syntax(format!("flowRef {flow_ref:?} must be ID, AGENCY,ID or AGENCY,ID,VERSION"))),
    };
    if r.id.is_empty() {
        return Err(KeyError::Syntax(format!("flowRef {flow_ref:?} names no dataflow")));
    }
    Ok(r)
}

/// What a series key asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyQuery {
    /// Member codes from the REF_AREA part (empty: every member).
    pub members: Vec<String>,
    pub breakdown: Vec<String>,
    pub filters: Vec<pb::DimensionFilter>,
}

/// Longest key accepted: far above any real one (22 members, every code).
pub const MAX_KEY_LEN: usize = 8192;

pub fn parse_key(dict: &Dictionary, flow: &Dataflow, key: &str) -> Result<KeyQuery, KeyError> {
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::Syntax(format!("the key is {} bytes long; at most {MAX_KEY_LEN}", key.len())));
    }
    let pieces: Vec<&str> = if key == "all" || key.is_empty() { vec![""; flow.dimensions.len()] } else { key.split('.').collect() };
    if pieces.len() != flow.dimensions.len() {
        return Err(KeyError::Syntax(format!(
            "key {key:?} has {} parts; {} has {} dimensions: {}",
            pieces.len(),
            flow.id,
            flow.dimensions.len(),
            flow.dimensions.join(".")
        )));
    }
    let mut out = KeyQuery::default();
    for (dim, piece) in flow.dimensions.iter().zip(&pieces) {
        let mut codes: Vec<String> = Vec::new();
        for c in piece.split('+').filter(|c| !c.is_empty()) {
            if !dict.has_code(dim, c) {
                let codelist = dict.dimension(dim).map(|d| d.codelist.as_str()).unwrap_or_default();
                return Err(KeyError::UnknownCode(format!("no data for {dim}={c}: {c:?} is not a code of {codelist}")));
            }
            if !codes.iter().any(|x| x == c) {
                codes.push(c.to_owned());
            }
        }
        if dim == REF_AREA {
            out.members = codes;
        } else if codes.is_empty() {
            out.breakdown.push(dim.clone());
        } else {
            out.filters.push(pb::DimensionFilter { dimension: dim.clone(), codes });
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dict() -> Dictionary {
        Dictionary::parse(include_str!("../../deploy/dictionary.toml"), "dictionary.toml").unwrap()
    }

    #[test]
    fn keys_map_to_members_breakdowns_and_filters() {
        let d = dict();
        let flow = d.dataflow("UNE_RATE").unwrap();
        let k = parse_key(&d, flow, "MAR.F.Y_GE15._T.X").unwrap_err();
        assert!(matches!(k, KeyError::Syntax(_)), "five parts for four dimensions");
        let k = parse_key(&d, flow, "MAR+TUN+MAR.F+M.Y_GE15.").unwrap();
        assert_eq!(k.members, ["MAR", "TUN"], "duplicates dropped");
        assert_eq!(k.breakdown, ["REGION"]);
        assert_eq!(k.filters.len(), 2);
        assert_eq!(parse_key(&d, flow, "all").unwrap().breakdown, ["SEX", "AGE", "REGION"]);
        assert!(matches!(parse_key(&d, flow, "MAR.X..").unwrap_err(), KeyError::UnknownCode(_)));
        assert_eq!(parse_flow_ref("ALO,UNE_RATE,latest").unwrap().version, Some("latest"));
        assert!(parse_flow_ref("a,b,c,d").is_err());
        assert!(parse_flow_ref("ALO,").is_err());
    }

    /// Seeded random keys whose REF_AREA part repeats codes: the members
    /// come out distinct, in first-named order, and what the hub then does
    /// with them (`distinct_members`) changes nothing but enforces the cap.
    #[test]
    fn repeated_members_in_random_keys_come_out_once() {
        let d = dict();
        let flow = d.dataflow("UNE_RATE").unwrap();
        let pool = ["MAR", "EGY", "JOR", "TUN", "DZA", "SAU"];
        let mut state: u64 = 0x5d3a_13a0_0000_0001;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for round in 0..2000 {
            let len = 1 + next(40);
            let named: Vec<&str> = (0..len).map(|_| pool[next(pool.len())]).collect();
            let key = format!("{}.F+M.Y_GE15._T", named.join("+"));
            let k = parse_key(&d, flow, &key).unwrap();
            let mut expected: Vec<String> = Vec::new();
            for m in &named {
                if !expected.iter().any(|e| e == m) {
                    expected.push((*m).to_owned());
                }
            }
            assert_eq!(k.members, expected, "round {round}: {key}");
            assert_eq!(crate::distinct_members(&k.members, pool.len()).unwrap(), expected, "round {round}");
            assert!(crate::distinct_members(&k.members, expected.len() - 1).is_err(), "round {round}: the cap");
        }
    }
}
