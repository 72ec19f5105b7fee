//! The JSON API (`/api/v1`): federated query, member status, dataset
//! catalogue, the releases recorded in the hub's log, who am I, and the
//! OpenAPI document that describes them (`/api/v1/openapi.json`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::join_all;
use serde::Deserialize;
use serde_json::{Value, json};
use tabadul_proto::pb;

use super::auth::Via;
use super::{ApiError, Front, Principal};
use crate::federate::{Failure, federate};
use crate::state::state_word;

pub(crate) fn routes() -> Router<Arc<Front>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/catalogue", get(catalogue))
        .route("/api/v1/members", get(members))
        .route("/api/v1/query", post(query))
        .route("/api/v1/releases", get(releases))
        .route("/api/v1/releases/{member}/{leaf}/proof", get(release_proof))
        .route("/api/v1/corridors/{origin}/{destination}", get(super::corridor::mirror))
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

const OPENAPI: &str = include_str!("../../assets/openapi.json");

async fn whoami(who: Principal) -> Json<Value> {
    Json(match &who {
        Principal::Operator { name, via } => json!({
            "operator": name, "tier": "operator",
            "via": match via { Via::Token => "token", Via::Certificate => "certificate" },
        }),
        Principal::Public { .. } => json!({ "operator": null, "tier": "public", "via": null }),
    })
}

/// Both names of an item: `{"en": ..., "ar": ...}` (no `ar` when the
/// dictionary gives none).
fn names(en: &str, ar: Option<&str>) -> Value {
    match ar {
        Some(ar) => json!({ "en": en, "ar": ar }),
        None => json!({ "en": en }),
    }
}

async fn catalogue(State(front): State<Arc<Front>>, _who: Principal) -> Json<Value> {
    let dict = &front.hub.dict;
    let dimension = |d: &str| {
        let dim = dict.dimension(d);
        let codelist = dim.and_then(|x| dict.codelist(&x.codelist));
        json!({
            "id": d,
            "name": names(dim.map_or(d, |x| x.name.as_str()), dict.name_ar("dimension", d)),
            "total": dim.and_then(|x| x.total.clone()),
            "codes": codelist.map(|cl| cl.codes.iter().map(|(c, n)| json!({
                "id": c, "name": names(n, dict.name_ar("code", &format!("{}:{c}", cl.id))),
            })).collect::<Vec<_>>()).unwrap_or_default(),
        })
    };
    let area = dict.dimension(tabadul_proto::REF_AREA).map(|d| d.codelist.clone()).unwrap_or_default();
    let member_name = |code: &str| {
        let en = dict.codelist(&area).and_then(|cl| cl.codes.get(code)).map_or(code, String::as_str);
        names(en, dict.name_ar("code", &format!("{area}:{code}")))
    };
    let mut flows: Vec<Value> = dict
        .dataflows()
        .map(|f| {
            let (measure, parts) = match &f.measure {
                tabadul_proto::Measure::Count => ("count", Value::Null),
                tabadul_proto::Measure::Mirror => ("mirror", Value::Null),
                tabadul_proto::Measure::Rate { numerator, denominator, scale } => {
                    ("rate", json!({ "numerator": numerator, "denominator": denominator, "scale": scale }))
                }
            };
            json!({
                "id": f.id, "kind": if f.measure == tabadul_proto::Measure::Mirror { "mirror" } else { "indicator" }, "name": names(&f.name, dict.name_ar("dataflow", &f.id)),
                "unit": f.unit, "measure": measure, "rate": parts, "unit_mult": f.unit_mult,
                "ilostat_indicator": f.ilostat_indicator,
                "dimensions": f.dimensions.iter().map(|d| dimension(d)).collect::<Vec<_>>(),
            })
        })
        .collect();
    flows.extend(dict.microdata_tables().map(|t| {
        json!({
            "id": t.id, "kind": "microdata", "name": names(&t.name, dict.name_ar("dataflow", &t.id)),
            "unit": t.unit, "measure": "count", "unit_mult": 0, "weight": t.weight,
            "statistics": ["count", "weighted-count", "sum", "mean", "ratio"],
            "variables": t.variables.iter().map(|(id, n)| json!({"id": id, "name": n})).collect::<Vec<_>>(),
            "dimensions": std::iter::once(tabadul_proto::REF_AREA).chain(t.dimensions.iter().map(String::as_str)).map(&dimension).collect::<Vec<_>>(),
        })
    }));
    Json(json!({
        "agency": dict.agency,
        "dictionary_version": dict.version,
        "dictionary_digest": dict.digest,
        "members": front.hub.members().keys().map(|c| json!({ "code": c, "name": member_name(c) })).collect::<Vec<_>>(),
        "dataflows": flows,
    }))
}

/// Each member's reachability now (its generation, asked with a short
/// deadline) and what the hub knows of its log.
async fn members(State(front): State<Arc<Front>>, who: Principal) -> Result<Json<Value>, ApiError> {
    if !who.is_operator() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "member status is for operators (present an operator token or certificate)"));
    }
    let roster = front.hub.members();
    let checks = roster.values().map(|m| async move {
        let started = std::time::Instant::now();
        let generation = crate::fanout::generation(m, Duration::from_millis(1500)).await;
        let seen = *m.seen.lock().unwrap_or_else(|p| p.into_inner());
        let forked = m.forked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        json!({
            "code": m.code,
            "identity": m.identity.to_string(),
            "reachable": generation.is_some(),
            "elapsed_ms": started.elapsed().as_millis() as u64,
            "log_size_verified": seen.map(|s| s.size),
            "forked": forked,
        })
    });
    Ok(Json(json!({ "members": join_all(checks).await })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    dataflow: String,
    #[serde(default)]
    breakdown: Vec<String>,
    #[serde(default)]
    filters: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    start_period: String,
    #[serde(default)]
    end_period: String,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    aggregate: bool,
    #[serde(default)]
    deadline_ms: u32,
    /// Microdata tables: count, weighted-count, sum, mean, ratio.
    #[serde(default)]
    statistic: String,
    #[serde(default)]
    variable: String,
    #[serde(default)]
    denominator: String,
}

fn number(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

async fn query(State(front): State<Arc<Front>>, who: Principal, body: Result<Json<QueryBody>, JsonRejection>) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
        ApiError::new(status, format!("request body: {}", e.body_text()))
    })?;
    let aggregation = (!body.statistic.is_empty()).then(|| pb::Aggregation {
        statistic: body.statistic.clone(),
        variable: body.variable.clone(),
        denominator: body.denominator.clone(),
    });
    let query = pb::Query {
        dataflow: body.dataflow.clone(),
        breakdown: body.breakdown.clone(),
        filters: body.filters.iter().map(|(d, codes)| pb::DimensionFilter { dimension: d.clone(), codes: codes.clone() }).collect(),
        start_period: body.start_period.clone(),
        end_period: body.end_period.clone(),
        aggregation,
        audience: String::new(),
    };
    let request =
        pb::FederatedQueryRequest { query: Some(query), members: body.members.clone(), regional_aggregate: body.aggregate, deadline_ms: body.deadline_ms };
    let answer = federate(&front.hub, &who.caller(), request).await.map_err(|f| match f {
        Failure::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
        Failure::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
        Failure::Busy(m) => ApiError::busy(m),
    })?;
    let r = &answer.response;
    if r.cells.len() > front.config.max_cells {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the answer has {} cells; the limit is {}: ask fewer members, periods or codes", r.cells.len(), front.config.max_cells),
        ));
    }
    let aggregate = (!r.aggregate_method.is_empty()).then(|| {
        json!({
            "dimensions": r.aggregate_dimensions,
            "method": r.aggregate_method,
            "cells": r.aggregate.iter().map(|a| json!({
                "key": a.key, "value": number(a.value), "unit_mult": a.unit_mult, "covers": a.covers,
            })).collect::<Vec<_>>(),
        })
    });
    let out = json!({
        "query_digest": r.query_digest,
        "dimensions": r.dimensions,
        "cells": r.cells.iter().map(|c| json!({
            "key": c.key, "value": number(c.value), "unit_mult": c.unit_mult,
            "obs_status": c.obs_status, "conf_status": c.conf_status, "flags": c.flags,
        })).collect::<Vec<_>>(),
        "members": r.members.iter().map(|m| json!({
            "member": m.member, "state": state_word(m.state), "detail": m.detail, "rule_id": m.rule_id,
            "policy_version": m.policy_version, "cells": m.cells, "elapsed_ms": m.elapsed_ms, "partial": m.partial,
        })).collect::<Vec<_>>(),
        "aggregate": aggregate,
        "cache": if answer.from_cache { "hit" } else { "miss" },
        "hub_leaf": answer.hub_leaf,
        // Which log holds that leaf: with several hub replicas, each has
        // its own (`<network>/hub/<id>`).
        "hub_log": front.hub.log.origin(),
    });
    let mut response = Json(out).into_response();
    response.headers_mut().insert("x-tabadul-cache", HeaderValue::from_static(if answer.from_cache { "hit" } else { "miss" }));
    // No cache outside the hub may keep country data (it could not take it
    // back after a withdrawal).
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleasesParams {
    member: Option<String>,
    limit: Option<usize>,
}

/// Most hub log entries one releases request reads back.
const MAX_RELEASES_SCAN: u64 = 20_000;

/// What left each member, from the hub's signed log: every federated
/// answer's leaf lists the node receipts it was built on.
async fn releases(State(front): State<Arc<Front>>, who: Principal, Query(p): Query<ReleasesParams>) -> Result<Json<Value>, ApiError> {
    if !who.is_operator() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "the release log is for operators (present an operator token or certificate)"));
    }
    let limit = p.limit.unwrap_or(200);
    if !(1..=5_000).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("limit={limit}: it must be 1 to 5000")));
    }
    if let Some(m) = p.member.as_deref().filter(|m| !front.hub.members().contains_key(*m)) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("member={m:?} is not a member this hub federates")));
    }
    let log = front.hub.log.clone();
    let member = p.member.clone();
    let (entries, checkpoint, size) = tokio::task::spawn_blocking(move || {
        let size = log.len();
        let start = size.saturating_sub(MAX_RELEASES_SCAN);
        let entries = log.read(start, size)?;
        Ok::<_, tabadul_audit::Error>((entries, log.latest().note.clone(), size))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut out = Vec::new();
    for (index, entry) in entries.iter().rev() {
        if entry.kind != "federated-query" || entry.decision != "ok" {
            continue;
        }
        let words: Vec<(&str, &str)> = entry.detail.split(' ').filter_map(|w| w.split_once('=')).collect();
        let word = |k: &str| words.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let dataflow = word("flow").unwrap_or_default();
        for r in &entry.receipts {
            if member.as_deref().is_some_and(|m| m != r.member) {
                continue;
            }
            let (state, rule) = word(&r.member).and_then(|v| v.split_once(':')).unwrap_or(("", ""));
            // A part of a regional rate (its numerator or denominator).
            let part = word(&format!("{}#{}", r.member, r.index));
            out.push(json!({
                "time": time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(entry.time_ms) * 1_000_000).ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
                "operator": entry.peer,
                "audience": word("for").unwrap_or("operator"),
                "from_cache": word("cache") == Some("hit"),
                "dataflow": part.unwrap_or(dataflow),
                "part_of": part.map(|_| dataflow),
                "member": r.member,
                "decision": state,
                "rule_id": if rule == "-" { "" } else { rule },
                "member_leaf": r.index,
                "member_tree_size": r.tree_size,
                "leaf_hash": hex::encode(r.leaf_hash),
                "hub_leaf": index,
                "query_digest": entry.query_digest,
            }));
            if out.len() >= limit {
                break;
            }
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(Json(json!({
        "hub_log": { "origin": front.hub.log.origin(), "size": size, "checkpoint": checkpoint },
        "releases": out,
    })))
}

/// The member's own proof that a release the hub logged is in its log: its
/// latest signed checkpoint and the inclusion proof of the leaf in that
/// tree, both fetched from the member's `Audit` service and verified here
/// against its log key and the leaf hash in the hub's log. (The checkpoint
/// that came with the receipt was signed for that answer only and is not
/// kept by the node; the latest one proves the same leaf is still there.)
async fn release_proof(State(front): State<Arc<Front>>, who: Principal, Path((member, leaf)): Path<(String, u64)>) -> Result<Json<Value>, ApiError> {
    if !who.is_operator() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "release proofs are for operators (present an operator token or certificate)"));
    }
    let roster = front.hub.members();
    let m = roster.get(&member).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{member} is not a member configured on this hub")))?;
    // The receipt as the hub logged it: the leaf hash and tree size to check.
    let log = front.hub.log.clone();
    let wanted = member.clone();
    let logged = tokio::task::spawn_blocking(move || {
        let size = log.len();
        let entries = log.read(size.saturating_sub(MAX_RELEASES_SCAN), size)?;
        Ok::<_, tabadul_audit::Error>(
            entries.into_iter().rev().find_map(|(i, e)| e.receipts.into_iter().find(|r| r.member == wanted && r.index == leaf).map(|r| (i, r))),
        )
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (hub_leaf, receipt) =
        logged.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("the hub's recent log holds no receipt of {member} for leaf {leaf}")))?;
    let unavailable = |e: tonic::Status| ApiError::new(StatusCode::BAD_GATEWAY, format!("{member}'s log did not answer: {}", e.message()));
    let mut audit = m.audit.clone();
    let note = audit.checkpoint(pb::CheckpointRequest { size: 0 }).await.map_err(unavailable)?.into_inner().checkpoint;
    let bad = |why: String| ApiError::new(StatusCode::BAD_GATEWAY, format!("{member}'s proof does not verify: {why}"));
    let (checkpoint, _) = tabadul_audit::Checkpoint::open(&note, &m.log_key).map_err(|e| bad(e.to_string()))?;
    if checkpoint.size < receipt.tree_size {
        return Err(bad(format!("its latest checkpoint has {} entries, fewer than the {} its receipt named", checkpoint.size, receipt.tree_size)));
    }
    let proof =
        audit.inclusion_proof(pb::InclusionProofRequest { index: receipt.index, tree_size: checkpoint.size }).await.map_err(unavailable)?.into_inner().hashes;
    tabadul_audit::merkle::verify_inclusion(receipt.index, checkpoint.size, &receipt.leaf_hash, &proof, &checkpoint.root).map_err(|e| bad(format!("{e:?}")))?;
    Ok(Json(json!({
        "member": member,
        "member_leaf": receipt.index,
        "member_tree_size": checkpoint.size,
        "leaf_hash": hex::encode(receipt.leaf_hash),
        "member_checkpoint": note,
        "inclusion_proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
        "verified": true,
        "log_vkey_origin": m.log_key.name(),
        "hub_leaf": hub_leaf,
    })))
}
