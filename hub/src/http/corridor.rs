//! Mirror statistics for a labour-migration corridor
//! (`GET /api/v1/corridors/{origin}/{destination}`): the origin's placements
//! abroad beside the destination's work permits, work-contract visas and
//! stock of migrant workers of the origin's nationality, period by period,
//! with the asymmetry migration statisticians compare mirror flows by and
//! each side's coverage.
//!
//! Each side is an ordinary federated query, answered by that member under
//! its own rules and logged like any other: a side its member refuses is
//! shown as refused (with the member's reason), never as zero.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use futures::future::join_all;
use serde::Deserialize;
use serde_json::{Value, json};
use tabadul_proto::{REF_AREA, pb};

use super::{ApiError, Front, Principal};
use crate::federate::{Caller, Failure, federate};
use crate::state::state_word;

/// One side of the mirror: what it is called in the answer, whose figure
/// it is, the dataflow, and the dimension naming the other country.
pub(crate) struct Side {
    pub name: &'static str,
    pub of_origin: bool,
    pub dataflow: &'static str,
    pub partner: &'static str,
}

const SIDES: [Side; 4] = [
    Side { name: "placements", of_origin: true, dataflow: "MIG_PLACED_ABROAD", partner: "DESTINATION" },
    Side { name: "permits", of_origin: false, dataflow: "WP_ISSUED", partner: "NATIONALITY" },
    Side { name: "visas", of_origin: false, dataflow: "WP_VISAS", partner: "NATIONALITY" },
    Side { name: "stock", of_origin: false, dataflow: "MIG_STOCK", partner: "NATIONALITY" },
];

/// The destination-side flows the origin's placements are compared with.
const MIRRORED: [&str; 2] = ["permits", "visas"];

/// The codes of MIRROR_MEASURE (the SDMX dataflow MIG_MIRROR) and what each
/// one is in [`Mirror::value`].
pub(crate) const MEASURES: [(&str, &str); 6] =
    [("PLACED", "placements"), ("PERMITS", "permits"), ("VISAS", "visas"), ("STOCK", "stock"), ("ASYM_PERMITS", "asym_permits"), ("ASYM_VISAS", "asym_visas")];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Periods {
    #[serde(default)]
    start_period: String,
    #[serde(default)]
    end_period: String,
}

/// One side's outcome.
pub(crate) struct SideOutcome {
    pub side: &'static Side,
    pub member: String,
    /// The member's state word (`answered`, `refused`, ...), or `failed`.
    pub state: &'static str,
    pub detail: String,
    /// Period → value (unit multiplier applied).
    pub values: BTreeMap<String, f64>,
}

/// Both sides of one corridor.
pub(crate) struct Mirror {
    pub origin: String,
    pub destination: String,
    pub sides: Vec<SideOutcome>,
    pub hub_leaves: Vec<u64>,
}

impl Mirror {
    fn values(&self, name: &str) -> &BTreeMap<String, f64> {
        &self.sides.iter().find(|s| s.side.name == name).expect("every side is asked").values
    }

    /// Every period any side has a figure for.
    pub fn periods(&self) -> BTreeSet<&String> {
        self.sides.iter().flat_map(|s| s.values.keys()).collect()
    }

    /// `name`'s figure for `period`: a side (`placements`, ...) or an
    /// asymmetry (`asym_permits`, `asym_visas`).
    pub fn value(&self, name: &str, period: &str) -> Option<f64> {
        match name.strip_prefix("asym_") {
            Some(other) => {
                let placed = self.values("placements").get(period)?;
                tabadul_proto::mirror_asymmetry(*placed, *self.values(other).get(period)?)
            }
            None => self.values(name).get(period).copied(),
        }
    }
}

/// Checks both ends, then asks each side of the corridor, concurrently.
pub(crate) async fn compute(front: &Front, caller: &Caller, origin: &str, destination: &str, periods: (&str, &str)) -> Result<Mirror, ApiError> {
    let dict = &front.hub.dict;
    for (what, code) in [("origin", origin), ("destination", destination)] {
        if !dict.has_code(REF_AREA, code) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("{what} {code:?} is not a member state (ISO 3166-1 alpha-3 of CL_AREA)")));
        }
    }
    if origin == destination {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("a corridor joins two members; {origin} is both ends")));
    }
    let asks = SIDES.iter().map(|side| {
        let (member, partner) = if side.of_origin { (origin, destination) } else { (destination, origin) };
        let query = pb::Query {
            dataflow: side.dataflow.into(),
            filters: vec![pb::DimensionFilter { dimension: side.partner.into(), codes: vec![partner.to_owned()] }],
            start_period: periods.0.to_owned(),
            end_period: periods.1.to_owned(),
            ..Default::default()
        };
        let request = pb::FederatedQueryRequest { query: Some(query), members: vec![member.to_owned()], ..Default::default() };
        federate(&front.hub, caller, request)
    });
    let answers = join_all(asks).await;
    let mut mirror = Mirror { origin: origin.to_owned(), destination: destination.to_owned(), sides: Vec::new(), hub_leaves: Vec::new() };
    for (side, answer) in SIDES.iter().zip(answers) {
        let member = if side.of_origin { origin } else { destination };
        let (state, detail, values) = match answer {
            Ok(a) => {
                mirror.hub_leaves.push(a.hub_leaf);
                let r = &a.response;
                let status = r.members.iter().find(|m| m.member == member);
                // No breakdown: one cell per period, every other dimension at its total.
                let values: BTreeMap<String, f64> = r
                    .cells
                    .iter()
                    .filter(|c| c.key.first().map(String::as_str) == Some(member) && c.value.is_finite())
                    .filter_map(|c| Some((c.key.last()?.clone(), c.value * 10f64.powi(c.unit_mult))))
                    .collect();
                (status.map_or("absent", |m| state_word(m.state)), status.map(|m| m.detail.clone()).unwrap_or_default(), values)
            }
            Err(Failure::Invalid(m)) => return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("{}: {m}", side.dataflow))),
            Err(Failure::Busy(m)) => return Err(ApiError::busy(m)),
            Err(Failure::Internal(m)) => ("failed", m, BTreeMap::new()),
        };
        mirror.sides.push(SideOutcome { side, member: member.to_owned(), state, detail, values });
    }
    Ok(mirror)
}

pub(crate) async fn mirror(
    State(front): State<Arc<Front>>,
    who: Principal,
    Path((origin, destination)): Path<(String, String)>,
    Query(periods): Query<Periods>,
) -> Result<Json<Value>, ApiError> {
    let m = compute(&front, &who.caller(), &origin, &destination, (&periods.start_period, &periods.end_period)).await?;
    let mut sides = serde_json::Map::new();
    for s in &m.sides {
        let partner = if s.side.of_origin { &m.destination } else { &m.origin };
        sides.insert(
            s.side.name.into(),
            json!({
                "member": s.member, "dataflow": s.side.dataflow, "filter": { s.side.partner: [partner] },
                "state": s.state, "detail": s.detail, "coverage": s.values.keys().collect::<Vec<_>>(),
            }),
        );
    }
    let rows: Vec<Value> = m
        .periods()
        .into_iter()
        .map(|p| {
            let mut row = serde_json::Map::new();
            row.insert("period".into(), json!(p));
            for side in &SIDES {
                row.insert(side.name.into(), m.value(side.name, p).map_or(Value::Null, |v| json!(v)));
            }
            let asym: serde_json::Map<String, Value> =
                MIRRORED.iter().map(|name| ((*name).to_owned(), m.value(&format!("asym_{name}"), p).map_or(Value::Null, |v| json!(v)))).collect();
            row.insert("asymmetry".into(), Value::Object(asym));
            Value::Object(row)
        })
        .collect();
    Ok(Json(json!({
        "origin": m.origin,
        "destination": m.destination,
        "sides": sides,
        "rows": rows,
        "asymmetry": "(destination − origin) / max(destination, origin), for the origin's placements against the destination's permits and visas: positive when the destination counts more",
        "hub_leaves": m.hub_leaves,
    })))
}

#[cfg(test)]
mod tests {
    use tabadul_proto::mirror_asymmetry as asymmetry;

    #[test]
    fn asymmetry_is_signed_and_bounded() {
        assert_eq!(asymmetry(100.0, 80.0), Some(-0.2));
        assert_eq!(asymmetry(80.0, 100.0), Some(0.2));
        assert_eq!(asymmetry(0.0, 50.0), Some(1.0));
        assert_eq!(asymmetry(0.0, 0.0), None);
    }
}
