//! `/data/{flowRef}/{key}[/{providerRef}]`: an SDMX data query turned into
//! a federated query, and its answer written in the negotiated format.
//!
//! Key parts map to the query like this: REF_AREA codes choose the members
//! to ask; a wildcard in any other dimension breaks the answer down by it
//! (every series, its total included); listed codes filter it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tabadul_proto::pb;
use tabadul_proto::{Dataflow, sdmx_key};

use super::negotiate;
use super::write::{self, Detail, MemberNote, Obs};
use crate::federate::{Failure, federate};
use crate::http::{ApiError, Front, Principal};
use crate::state::state_word;

#[derive(Debug, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Params {
    start_period: Option<String>,
    end_period: Option<String>,
    dimension_at_observation: Option<String>,
    last_n_observations: Option<usize>,
    first_n_observations: Option<usize>,
    detail: Option<String>,
    updated_after: Option<String>,
    include_history: Option<bool>,
    format: Option<String>,
}

fn bad(m: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, m).sdmx()
}
fn not_found(m: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, m).sdmx()
}

/// `UNE_RATE`, `ALO,UNE_RATE` or `ALO,UNE_RATE,<version>|latest`.
fn flow<'d>(front: &'d Front, flow_ref: &str) -> Result<&'d Dataflow, ApiError> {
    let dict = &front.hub.dict;
    let r = sdmx_key::parse_flow_ref(flow_ref).map_err(|e| bad(e.to_string()))?;
    if let Some(a) = r.agency.filter(|a| !matches!(*a, "all" | "*") && *a != dict.agency) {
        return Err(not_found(format!("no dataflow of agency {a}: this hub's are maintained by {}", dict.agency)));
    }
    if let Some(v) = r.version.filter(|v| !matches!(*v, "latest" | "*" | "all") && *v != dict.version) {
        return Err(not_found(format!("no dataflow {} in version {v}: the dictionary in force is version {}", r.id, dict.version)));
    }
    dict.dataflow(r.id).ok_or_else(|| {
        let what = if dict.microdata(r.id).is_some() { " (a microdata table: ask it through POST /api/v1/query)" } else { "" };
        not_found(format!("no dataflow {:?} in dictionary {}{what}", r.id, dict.version))
    })
}

/// A member code, or `AGENCY,CODE` as SDMX writes data providers.
fn provider_codes(provider: &str) -> Vec<String> {
    provider.split('+').map(|p| p.rsplit(',').next().unwrap_or(p).to_owned()).collect()
}

pub(crate) async fn handle(
    State(front): State<Arc<Front>>,
    who: Principal,
    Path(parts): Path<BTreeMap<String, String>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = negotiate::data_format(&headers, params.format.as_deref())?;
    // Dates, date-times and reporting periods, in the forms members store.
    let mut params = params;
    for p in [&mut params.start_period, &mut params.end_period] {
        if let Some(given) = p.as_deref().filter(|g| !g.is_empty()) {
            *p = Some(sdmx_key::period_param(given).map_err(|e| bad(e.to_string()))?);
        }
    }
    let flow = flow(&front, parts.get("flow").map(String::as_str).unwrap_or_default())?;
    let dict = &front.hub.dict;
    if params.updated_after.is_some() {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "updatedAfter is not offered: nodes keep no revision history to answer it from").sdmx());
    }
    if params.include_history == Some(true) {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "includeHistory=true is not offered: nodes keep no revision history").sdmx());
    }
    let detail = match params.detail.as_deref() {
        None | Some("full") => Detail::Full,
        Some("dataonly") => Detail::DataOnly,
        Some("serieskeysonly") => Detail::SeriesKeysOnly,
        Some("nodata") => Detail::NoData,
        Some(d) => return Err(bad(format!("detail={d} must be full, dataonly, serieskeysonly or nodata"))),
    };
    let all_dimensions = match params.dimension_at_observation.as_deref() {
        None | Some("TIME_PERIOD") => false,
        Some("AllDimensions") => true,
        Some(d) if flow.position(d).is_some() => {
            return Err(
                ApiError::new(StatusCode::NOT_IMPLEMENTED, format!("dimensionAtObservation={d} is not offered; use TIME_PERIOD or AllDimensions")).sdmx()
            );
        }
        Some(d) => return Err(bad(format!("dimensionAtObservation={d}: {} has no such dimension", flow.id))),
    };

    if flow.measure == tabadul_proto::Measure::Mirror {
        let key = parts.get("key").map(String::as_str).unwrap_or("all");
        let (series, notes, leaves) = mirror_series(&front, &who, key, &params).await?;
        let mut extra = HeaderMap::new();
        extra.insert("x-tabadul-cache", HeaderValue::from_static("miss"));
        if let Ok(v) = HeaderValue::from_str(&leaves.iter().map(u64::to_string).collect::<Vec<_>>().join(",")) {
            extra.insert("x-tabadul-hub-leaf", v);
        }
        let shape = Shape { detail, all_dimensions, format, download: params.format.is_some() };
        return respond(&front, flow, series, notes, extra, shape, &params);
    }
    let key = sdmx_key::parse_key(dict, flow, parts.get("key").map(String::as_str).unwrap_or("all")).map_err(|e| match e {
        sdmx_key::KeyError::Syntax(m) => bad(m),
        sdmx_key::KeyError::UnknownCode(m) => not_found(m),
    })?;
    let query = pb::Query {
        dataflow: flow.id.clone(),
        start_period: params.start_period.clone().unwrap_or_default(),
        end_period: params.end_period.clone().unwrap_or_default(),
        breakdown: key.breakdown,
        filters: key.filters,
        ..Default::default()
    };
    let mut members = key.members;
    if let Some(provider) = parts.get("provider").filter(|p| !matches!(p.as_str(), "all" | "*")) {
        let providers = provider_codes(provider);
        members = if members.is_empty() { providers } else { members.into_iter().filter(|m| providers.contains(m)).collect() };
        if members.is_empty() {
            return Err(not_found(format!("no data: the key's REF_AREA and the provider {provider} have no member in common")));
        }
    }
    for m in &members {
        if !front.hub.members().contains_key(m) {
            return Err(not_found(format!("no data for {m}: it is not a member this hub federates")));
        }
    }
    let request = pb::FederatedQueryRequest { query: Some(query), members, regional_aggregate: false, deadline_ms: 0 };
    let answer = federate(&front.hub, &who.caller(), request).await.map_err(|f| match f {
        Failure::Invalid(m) => bad(m),
        Failure::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m).sdmx(),
        Failure::Busy(m) => ApiError::busy(m).sdmx(),
    })?;
    let response = &answer.response;
    if response.cells.len() > front.config.max_cells {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the answer has {} observations; the limit is {}: ask fewer members, periods or codes", response.cells.len(), front.config.max_cells),
        )
        .sdmx());
    }
    let notes: Vec<MemberNote> =
        response.members.iter().map(|m| MemberNote { member: m.member.clone(), state: state_word(m.state), detail: m.detail.clone() }).collect();
    // Series: every dimension but the last (TIME_PERIOD).
    let n = flow.dimensions.len();
    let mut series: BTreeMap<Vec<String>, Vec<Obs>> = BTreeMap::new();
    for c in &response.cells {
        if c.key.len() != n + 1 {
            continue;
        }
        series.entry(c.key[..n].to_vec()).or_default().push(Obs {
            period: c.key[n].clone(),
            value: c.value,
            obs_status: c.obs_status.clone(),
            conf_status: c.conf_status.clone(),
            unit_mult: c.unit_mult,
            flags: c.flags.clone(),
        });
    }
    let mut extra = HeaderMap::new();
    extra.insert("x-tabadul-cache", HeaderValue::from_static(if answer.from_cache { "hit" } else { "miss" }));
    if let Ok(v) = HeaderValue::from_str(&answer.hub_leaf.to_string()) {
        extra.insert("x-tabadul-hub-leaf", v);
    }
    let shape = Shape { detail, all_dimensions, format, download: params.format.is_some() };
    respond(&front, flow, series, notes, extra, shape, &params)
}

/// How the answer is to be written.
struct Shape {
    detail: Detail,
    all_dimensions: bool,
    format: negotiate::DataFormat,
    /// `format=` was given: offer the body as a file.
    download: bool,
}

/// Trims the series as asked and writes the message, with the members'
/// states in a header (and the footer, where the format has one).
fn respond(
    front: &Front,
    flow: &Dataflow,
    mut series: BTreeMap<Vec<String>, Vec<Obs>>,
    notes: Vec<MemberNote>,
    mut extra: HeaderMap,
    shape: Shape,
    params: &Params,
) -> Result<Response, ApiError> {
    let dict = &front.hub.dict;
    let status_header = notes.iter().map(|n| format!("{}={}", n.member, n.state)).collect::<Vec<_>>().join(", ");
    for obs in series.values_mut() {
        obs.sort_by(|a, b| a.period.cmp(&b.period));
        if let Some(first) = params.first_n_observations {
            obs.truncate(first);
        }
        if let Some(last) = params.last_n_observations {
            let drop = obs.len().saturating_sub(last);
            obs.drain(..drop);
        }
    }
    series.retain(|_, obs| !obs.is_empty());
    if let Ok(v) = HeaderValue::from_str(&status_header) {
        extra.insert("x-tabadul-members", v);
    }
    // The log that holds that leaf (each hub replica has its own).
    if let Ok(v) = HeaderValue::from_str(front.hub.log.origin()) {
        extra.insert("x-tabadul-hub-log", v);
    }
    if series.is_empty() {
        let why = notes.iter().map(|n| format!("{} {}: {}", n.member, n.state, n.detail)).collect::<Vec<_>>().join("; ");
        let mut r = not_found(format!("no observations match; members: {why}")).into_response();
        r.headers_mut().extend(extra);
        return Ok(r);
    }
    let mut code_names: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for d in &flow.dimensions {
        if let Some(cl) = dict.dimension(d).and_then(|x| dict.codelist(&x.codelist)) {
            code_names.insert(d.clone(), cl.codes.clone());
        }
    }
    let ds = write::DataSet {
        agency: &dict.agency,
        version: &dict.version,
        flow: &flow.id,
        flow_name: &flow.name,
        dimensions: &flow.dimensions,
        series,
        members: notes,
        detail: shape.detail,
        all_dimensions: shape.all_dimensions,
        code_names,
    };
    let format = shape.format;
    let body = write::render(&ds, format);
    let mut r = ([(header::CONTENT_TYPE, format.media_type())], body).into_response();
    r.headers_mut().extend(extra);
    if shape.download
        && let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.{}\"", flow.id, format.extension()))
    {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    // The same URL answers in several formats and differently for operators
    // and the public; and no cache outside the hub may keep country data,
    // which it could not take back after a withdrawal.
    r.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept, Authorization"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(r)
}

/// The most corridors one MIG_MIRROR request may ask (each is four
/// federated queries).
const MAX_CORRIDORS: usize = 30;

/// MIG_MIRROR's series for a key `ORIGINS.DESTINATIONS.MEASURES` (each
/// part `+`-separated codes; origins and destinations required, measures
/// empty for all): one corridor computation per origin × destination.
async fn mirror_series(
    front: &Front,
    who: &Principal,
    key: &str,
    params: &Params,
) -> Result<(BTreeMap<Vec<String>, Vec<Obs>>, Vec<MemberNote>, Vec<u64>), ApiError> {
    use crate::http::corridor::{MEASURES, compute};
    let parts: Vec<&str> = key.split('.').collect();
    let [origins, destinations, measures] = parts[..] else {
        return Err(bad(format!("key {key:?}: MIG_MIRROR's key is ORIGIN.DESTINATION.MEASURE, e.g. EGY.SAU. (every measure)")));
    };
    let codes = |part: &str| -> Vec<String> { part.split('+').filter(|c| !c.is_empty()).map(str::to_owned).collect() };
    let (origins, destinations) = (codes(origins), codes(destinations));
    if origins.is_empty() || destinations.is_empty() {
        return Err(bad(format!("key {key:?}: name the origin(s) and destination(s) of the corridors, e.g. EGY.SAU+ARE.")));
    }
    let pairs: Vec<(&String, &String)> = origins.iter().flat_map(|o| destinations.iter().filter(move |d| *d != o).map(move |d| (o, d))).collect();
    if pairs.len() > MAX_CORRIDORS {
        return Err(bad(format!("{} corridors asked; at most {MAX_CORRIDORS} per request", pairs.len())));
    }
    let wanted: Vec<(&str, &str)> = match codes(measures) {
        m if m.is_empty() => MEASURES.to_vec(),
        m => {
            let mut out = Vec::new();
            for code in &m {
                let found = MEASURES.iter().find(|(c, _)| c == code).ok_or_else(|| not_found(format!("unknown code {code:?} for MIRROR_MEASURE")))?;
                out.push(*found);
            }
            out
        }
    };
    let periods = (params.start_period.as_deref().unwrap_or_default(), params.end_period.as_deref().unwrap_or_default());
    let caller = who.caller();
    let mut series: BTreeMap<Vec<String>, Vec<Obs>> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut leaves = Vec::new();
    for (origin, destination) in pairs {
        let m = compute(front, &caller, origin, destination, periods).await?;
        leaves.extend(&m.hub_leaves);
        for s in &m.sides {
            let partner = if s.side.of_origin { &m.destination } else { &m.origin };
            notes.push(MemberNote {
                member: s.member.clone(),
                state: s.state,
                detail: format!("{} for {}={partner}: {}", s.side.dataflow, s.side.partner, s.detail),
            });
        }
        for (code, name) in &wanted {
            let obs: Vec<Obs> = m
                .periods()
                .into_iter()
                .filter_map(|p| {
                    let value = m.value(name, p)?;
                    Some(Obs { period: p.clone(), value, obs_status: String::new(), conf_status: String::new(), unit_mult: 0, flags: Vec::new() })
                })
                .collect();
            series.insert(vec![origin.clone(), destination.clone(), (*code).to_owned()], obs);
        }
    }
    Ok((series, notes, leaves))
}
