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

/// An SDMX `startPeriod`/`endPeriod` in the forms this network stores
/// periods in (`YYYY`, `YYYY-Qn`, `YYYY-Sn`, `YYYY-MM`): a year, a month, a
/// quarter or half stay as they are; a date or date-time, a reporting
/// month (`2024-M06`), week (`2024-W01`, its Monday's month) or day
/// (`2024-D001`) becomes the month that holds it; a reporting year
/// (`2024-A1`) the year. Coarser stored periods are matched by prefix, so
/// `2024-03` still selects the year 2024.
pub fn period_param(p: &str) -> Result<String, KeyError> {
    let bad =
        || KeyError::Syntax(format!("period {p:?}: use YYYY, YYYY-MM, YYYY-MM-DD, a date-time, or a reporting period (YYYY-A1, -Sn, -Qn, -Mnn, -Wnn, -Dnnn)"));
    let p = p.trim();
    let year: i32 = p.get(..4).filter(|y| y.bytes().all(|b| b.is_ascii_digit())).and_then(|y| y.parse().ok()).ok_or_else(bad)?;
    let rest = &p[4..];
    let number = |s: &str, digits: usize, max: u32| -> Option<u32> {
        (s.len() == digits && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok()).flatten().filter(|n| (1..=max).contains(n))
    };
    let month_of = |ordinal: i64| -> String {
        // Days before each month, for a year's ordinal day (1-based).
        let (mut y, mut d) = (i64::from(year), ordinal);
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = |y: i64| if leap(y) { 366 } else { 365 };
        while d < 1 {
            y -= 1;
            d += len(y);
        }
        while d > len(y) {
            d -= len(y);
            y += 1;
        }
        let months = [31, if leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let mut m = 0;
        while d > months[m] {
            d -= months[m];
            m += 1;
        }
        format!("{y:04}-{:02}", m + 1)
    };
    Ok(match rest.as_bytes() {
        [] => format!("{year:04}"),
        [b'-', b'A', b'1'] => format!("{year:04}"),
        [b'-', b'Q' | b'S', ..] => {
            let max = if rest.as_bytes()[1] == b'Q' { 4 } else { 2 };
            number(&rest[2..], 1, max).ok_or_else(bad)?;
            p.to_owned()
        }
        [b'-', b'M', ..] => format!("{year:04}-{:02}", number(&rest[2..], 2, 12).ok_or_else(bad)?),
        [b'-', b'W', ..] => {
            let week = number(&rest[2..], 2, 53).ok_or_else(bad)?;
            // Sakamoto's weekday of 4 January (0 = Sunday): ISO week 1 holds it.
            let y = i64::from(year) - 1;
            let jan4 = (y + y / 4 - y / 100 + y / 400 + 4) % 7;
            let monday = 4 - (jan4 + 6) % 7 + 7 * (i64::from(week) - 1);
            month_of(monday)
        }
        [b'-', b'D', ..] => month_of(i64::from(number(&rest[2..], 3, 366).ok_or_else(bad)?)),
        [b'-', m1, m2] if m1.is_ascii_digit() && m2.is_ascii_digit() => {
            format!("{year:04}-{:02}", number(&rest[1..], 2, 12).ok_or_else(bad)?)
        }
        // A date, or a date-time (whatever follows the day).
        [b'-', _, _, b'-', _, _, ..] => {
            let month = number(&rest[1..3], 2, 12).ok_or_else(bad)?;
            number(&rest[4..6], 2, 31).ok_or_else(bad)?;
            if rest.len() > 6 && !matches!(rest.as_bytes()[6], b'T' | b' ') {
                return Err(bad());
            }
            format!("{year:04}-{month:02}")
        }
        _ => return Err(bad()),
    })
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

    #[test]
    fn periods_in_every_sdmx_form_map_onto_stored_ones() {
        for (given, want) in [
            ("2024", "2024"),
            ("2024-06", "2024-06"),
            ("2024-Q1", "2024-Q1"),
            ("2024-S2", "2024-S2"),
            ("2024-A1", "2024"),
            ("2024-M06", "2024-06"),
            ("2024-01-01", "2024-01"),
            ("2024-12-31T23:59:59Z", "2024-12"),
            ("2024-D001", "2024-01"),
            ("2024-D366", "2024-12"),
            ("2023-D060", "2023-03"),
            ("2024-D060", "2024-02"),
            // ISO week 1 of 2024 starts on Monday 1 January; of 2021 on 4 January; of 2026 on 29 December 2025.
            ("2024-W01", "2024-01"),
            ("2021-W01", "2021-01"),
            ("2026-W01", "2025-12"),
            ("2020-W53", "2020-12"),
        ] {
            assert_eq!(super::period_param(given).unwrap(), want, "{given}");
        }
        for bad in ["24", "2024-Q5", "2024-M13", "2024-W54", "2024-D367", "2024-13-01", "2024-01-01X", "abcd", "2024-X1"] {
            assert!(super::period_param(bad).is_err(), "{bad}");
        }
    }
}
