//! One federated query, whoever asks it (a gRPC operator, an HTTP operator,
//! the public tier): check its shape, serve it from the cache when every
//! member is still where it was, otherwise ask the members, merge, log the
//! answer durably and return it with the hub's receipt.

use std::time::{Duration, Instant};

use futures::future::join_all;
use prost::Message;
use tabadul_audit::{Entry, ReceiptRef};
use tabadul_proto::pb;
use tabadul_proto::{Measure, TIME_PERIOD};

use crate::cache::{self, Cached};
use crate::fanout::{self, MemberAnswer};
use crate::merge::{self, Released};
use crate::state::{HubState, state_word};

/// Who a federated query is for, as the hub's log records it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified identity, or `operator-token:<name>`, or
    /// `public:<day>:<pseudonym>` (`http/pseudonym.rs`), never an address.
    pub name: String,
    /// "" for an operator; "public" for the anonymous tier, which nodes
    /// answer under their public rules only.
    pub audience: &'static str,
}

/// Why a federated query got no answer at all.
#[derive(Debug)]
pub enum Failure {
    /// The request is malformed (400 / INVALID_ARGUMENT).
    Invalid(String),
    /// Something broke on the hub (500 / INTERNAL); details are in its log.
    Internal(String),
    /// The hub is at capacity (503 / RESOURCE_EXHAUSTED); nothing was asked
    /// or logged, and trying again later is right.
    Busy(String),
}

/// An answer and whether the cache gave it.
#[derive(Debug)]
pub struct Federated {
    pub response: pb::FederatedQueryResponse,
    pub from_cache: bool,
    /// The hub log leaf that records this answer.
    pub hub_leaf: u64,
}

/// How long the hub waits for a member's generation when revalidating.
const REVALIDATE_DEADLINE: Duration = Duration::from_millis(1500);

pub async fn federate(state: &HubState, caller: &Caller, mut req: pb::FederatedQueryRequest) -> Result<Federated, Failure> {
    let started = Instant::now();
    let mut query = req.query.clone().unwrap_or_default();
    query.audience = caller.audience.to_owned();
    req.query = Some(query.clone());
    let digest = tabadul_proto::query_digest(&query);
    // The nodes would refuse a malformed query too, but as one error here
    // it reads better than as every member failing.
    let statistic_word = query.aggregation.as_ref().map_or("", |a| a.statistic.as_str());
    let micro_flow;
    let micro = state.dict.microdata(&query.dataflow);
    match (micro.is_some(), statistic_word) {
        (_, "") => {}
        (true, s) if tabadul_proto::STATISTICS.contains(&s) => {}
        (true, s) => return Err(Failure::Invalid(format!("statistic {s:?} must be one of {}", tabadul_proto::STATISTICS.join(", ")))),
        (false, s) => {
            return Err(Failure::Invalid(format!(
                "{} is an indicator dataflow, published as its members compute it: a statistic ({s:?}) applies to microdata tables only",
                query.dataflow
            )));
        }
    }
    let flow = match micro {
        Some(table) => {
            micro_flow = microdata_shape(table, &query).map_err(Failure::Invalid)?;
            &micro_flow
        }
        None => tabadul_proto::resolve(&state.dict, &query).map_err(|e| Failure::Invalid(e.to_string()))?.flow,
    };
    if flow.measure == Measure::Mirror {
        return Err(Failure::Invalid(format!(
            "{} is computed by the hub from both sides of a migration corridor, not held by members: ask /sdmx/data/{}/<origin>.<destination>. or GET /api/v1/corridors/<origin>/<destination>",
            flow.id, flow.id
        )));
    }
    // The one place every door's member list passes: each member is asked,
    // summed and logged once, and the cache key below sees the same list
    // as the fan-out, so a cached answer is the answer for that set.
    // One snapshot of the members for the whole query: a directory applied
    // meanwhile changes the next query, not this one.
    let roster = state.members();
    req.members = tabadul_proto::distinct_members(&req.members, roster.len()).map_err(|e| Failure::Invalid(e.to_string()))?;
    let mut members = Vec::new();
    if req.members.is_empty() {
        members.extend(roster.values());
    } else {
        for code in &req.members {
            members.push(roster.get(code).ok_or_else(|| Failure::Invalid(format!("{code} is not a member configured on this hub")))?);
        }
    }
    let deadline = match req.deadline_ms {
        0 => state.default_deadline,
        ms => Duration::from_millis(u64::from(ms)).min(state.max_deadline),
    };

    let waited = Instant::now();
    let _admitted = state.admission.admit().await.map_err(|busy| {
        state.metrics.inc("tabadul_hub_federated_queries_total", &[("outcome", "busy")]);
        tracing::warn!(%busy, "federated query not admitted");
        Failure::Busy(busy.to_string())
    })?;
    state.metrics.observe("tabadul_hub_admission_wait_seconds", &[], waited.elapsed());

    let key = cache::key(&req);
    if let Some(hit) = revalidated(state, &key).await {
        let mut response = hit.response.clone();
        let hub_leaf = log_answer(state, caller, &digest, &flow.id, &mut response, hit.receipts.clone(), true).await?;
        state.metrics.inc("tabadul_hub_federated_queries_total", &[("outcome", "cached")]);
        state.metrics.observe("tabadul_hub_federated_query_seconds", &[], started.elapsed());
        tracing::info!(cells = response.cells.len(), "federated answer from the cache");
        return Ok(Federated { response, from_cache: true, hub_leaf });
    }

    let main = fanout::ask_all(&members, flow, &query, deadline, &state.identity);
    let mut response = pb::FederatedQueryResponse {
        dimensions: flow.dimensions.iter().cloned().chain([TIME_PERIOD.to_owned()]).collect(),
        query_digest: digest.clone(),
        ..Default::default()
    };
    // Every receipt an answer was built on goes into the hub's leaf.
    let mut receipts = Vec::new();
    let mut parts: Vec<MemberAnswer> = Vec::new();
    let statistic = statistic_word;
    let answers = if req.regional_aggregate && micro.is_some() && !matches!(statistic, "" | "count" | "weighted-count" | "sum") {
        response.aggregate_method = format!("no regional aggregate: a {statistic} is not additive across members (ask for its sums)");
        main.await
    } else if req.regional_aggregate {
        response.aggregate_dimensions = response.dimensions[1..].to_vec();
        match &flow.measure {
            // Refused above, before anything was asked.
            Measure::Mirror => main.await,
            Measure::Count => {
                let answers = main.await;
                response.aggregate = merge::sum(&released(&answers), flow.unit_mult);
                response.aggregate_method = format!("sum of {} over the members that released it", flow.id);
                answers
            }
            Measure::Rate { numerator, denominator, scale } => {
                let part = |id: &str| {
                    let mut q = query.clone();
                    q.dataflow = id.to_owned();
                    q
                };
                let (nq, dq) = (part(numerator), part(denominator));
                let missing = || Failure::Internal(format!("{}: its numerator or denominator is not in the dictionary", flow.id));
                let nflow = state.dict.dataflow(numerator).ok_or_else(missing)?;
                let dflow = state.dict.dataflow(denominator).ok_or_else(missing)?;
                let (answers, nums, dens) = tokio::join!(
                    main,
                    fanout::ask_all(&members, nflow, &nq, deadline, &state.identity),
                    fanout::ask_all(&members, dflow, &dq, deadline, &state.identity),
                );
                response.aggregate = merge::rate(&released(&nums), &released(&dens), *scale);
                receipts.extend(nums.iter().filter_map(|a| a.receipt.clone().map(|r| (r, numerator.clone()))));
                receipts.extend(dens.iter().filter_map(|a| a.receipt.clone().map(|r| (r, denominator.clone()))));
                response.aggregate_method = format!("sum of {numerator} / sum of {denominator} x {scale}, over members that released both");
                parts.extend(nums);
                parts.extend(dens);
                answers
            }
        }
    } else {
        main.await
    };
    response.cells = merge::table(&released(&answers));
    receipts.extend(answers.iter().filter_map(|a| a.receipt.clone().map(|r| (r, flow.id.clone()))));
    let generations = cache::generations_of(&answers.iter().chain(&parts).collect::<Vec<_>>());
    response.members = answers.into_iter().map(|a| a.status).collect();
    if let Some(generations) = generations.filter(|_| state.cache.enabled()) {
        state.cache.put(key, Cached::new(response.clone(), receipts.clone(), generations));
    }
    let hub_leaf = log_answer(state, caller, &digest, &flow.id, &mut response, receipts, false).await?;
    state.metrics.inc("tabadul_hub_federated_queries_total", &[("outcome", "answered")]);
    state.metrics.observe("tabadul_hub_federated_query_seconds", &[], started.elapsed());
    for m in &response.members {
        state.metrics.inc("tabadul_hub_member_answers_total", &[("member", &m.member), ("state", state_word(m.state))]);
    }
    tracing::info!(cells = response.cells.len(), "federated answer");
    Ok(Federated { response, from_cache: false, hub_leaf })
}

/// The cached answer under `key`, if every member it covers is still at
/// the generation it answered under.
async fn revalidated(state: &HubState, key: &str) -> Option<Cached> {
    let hit = state.cache.get(key)?;
    // A member no longer federated (removed by a new directory) fails
    // the check: the answer it contributed to is dropped.
    let roster = state.members();
    let checks = hit.generations.iter().map(|(code, generation)| {
        let member = roster.get(code);
        async move {
            match member {
                Some(member) => fanout::generation(member, REVALIDATE_DEADLINE).await.as_deref() == Some(generation.as_str()),
                None => false,
            }
        }
    });
    if join_all(checks).await.into_iter().all(|same| same) {
        Some(hit)
    } else {
        state.cache.remove(key);
        state.metrics.inc("tabadul_hub_cache_invalidations_total", &[]);
        None
    }
}

/// Appends the hub's leaf for an answer (synced, before it is sent) and
/// puts the hub's receipt in it.
///
/// The leaf's detail is a line of `key=value` words that the releases API
/// reads back: `flow=`, `for=` (public), `cache=hit`, one
/// `MEMBER=state:rule` per member, and `MEMBER#LEAF=FLOW` for each receipt
/// of another dataflow (the parts of a regional rate).
async fn log_answer(
    state: &HubState,
    caller: &Caller,
    digest: &str,
    flow: &str,
    response: &mut pb::FederatedQueryResponse,
    receipts: Vec<(ReceiptRef, String)>,
    from_cache: bool,
) -> Result<u64, Failure> {
    let mut entry = Entry::now("federated-query", &caller.name);
    entry.query_digest = digest.to_owned();
    entry.decision = "ok".into();
    let mut words = vec![format!("flow={flow}")];
    if !caller.audience.is_empty() {
        words.push(format!("for={}", caller.audience));
    }
    if from_cache {
        words.push("cache=hit".into());
    }
    for m in &response.members {
        let rule = if m.rule_id.is_empty() { "-".to_owned() } else { m.rule_id.split_whitespace().collect::<Vec<_>>().join("_") };
        words.push(format!("{}={}:{rule}", m.member, state_word(m.state)));
    }
    for (r, part) in &receipts {
        if part != flow {
            words.push(format!("{}#{}={part}", r.member, r.index));
        }
    }
    entry.detail = words.join(" ");
    entry.receipts = receipts.into_iter().map(|(r, _)| r).collect();
    response.receipt = None;
    // What the caller receives, committed to (salted) before it leaves.
    let salt = tabadul_audit::new_salt();
    entry.released = tabadul_audit::released_digest(&salt, &response.encode_to_vec());
    let log = state.log.clone();
    let receipt = tokio::task::spawn_blocking(move || {
        // Crash point: the answer is durably logged before it is sent.
        tabadul_audit::receipt::append_with_receipt(&log, &entry, Some(salt), None)
    })
    .await
    .map_err(|e| internal(&e))?
    .map_err(|e| internal(&e))?;
    let leaf = receipt.index;
    response.receipt = Some(receipt);
    Ok(leaf)
}

fn internal(e: &dyn std::fmt::Display) -> Failure {
    tracing::error!(error = %e, "internal error");
    Failure::Internal("internal error on the hub; see its log".into())
}

fn released(answers: &[MemberAnswer]) -> Vec<Released<'_>> {
    answers.iter().filter(|a| a.released()).map(|a| Released { member: &a.status.member, cells: &a.cells }).collect()
}

/// The shape of a microdata answer as a dataflow (REF_AREA, then the
/// breakdown dimensions in the table's order; TIME_PERIOD implied), so the
/// fan-out checks member answers exactly as it checks indicator answers.
pub(crate) fn microdata_shape(table: &tabadul_proto::MicroTable, query: &pb::Query) -> Result<tabadul_proto::Dataflow, String> {
    for b in &query.breakdown {
        if b != tabadul_proto::REF_AREA && b != TIME_PERIOD && !table.dimensions.contains(b) {
            return Err(format!("invalid query: {} has no dimension {b:?} to break down by", table.id));
        }
    }
    let mut dimensions = vec![tabadul_proto::REF_AREA.to_owned()];
    dimensions.extend(table.dimensions.iter().filter(|d| query.breakdown.contains(d)).cloned());
    Ok(tabadul_proto::Dataflow {
        id: table.id.clone(),
        name: table.name.clone(),
        unit: table.unit.clone(),
        dimensions,
        measure: Measure::Count,
        unit_mult: 0,
        ilostat_indicator: None,
    })
}
