//! The operator API: `Hub.FederatedQuery`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tabadul_audit::{Entry, Log};
use tabadul_certs::tls::peer_of;
use tabadul_certs::{Identity, Role};
use tabadul_proto::pb::{self, MemberState};
use tabadul_proto::{Dictionary, Measure, TIME_PERIOD};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::fanout::{self, Member};
use crate::merge::{self, Released};

#[derive(Debug)]
pub(crate) struct HubState {
    pub identity: Identity,
    pub dict: Arc<Dictionary>,
    pub members: BTreeMap<String, Member>,
    /// The hub's signed exchange log.
    pub log: Arc<Log>,
    pub metrics: Arc<tabadul_telemetry::Registry>,
    pub default_deadline: Duration,
    pub max_deadline: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct HubService {
    pub state: Arc<HubState>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal("internal error on the hub; see its log")
}

#[tonic::async_trait]
impl pb::hub_server::Hub for HubService {
    async fn federated_query(
        &self,
        request: Request<pb::FederatedQueryRequest>,
    ) -> Result<Response<pb::FederatedQueryResponse>, Status> {
        let peer = peer_of(&request).ok_or_else(|| Status::unauthenticated("no verified client certificate"))?.clone();
        let req = request.into_inner();
        let query = req.query.clone().unwrap_or_default();
        let digest = tabadul_proto::query_digest(&query);
        let span = tracing::info_span!("federated_query", peer = %peer.identity, dataflow = %query.dataflow, digest = %&digest[..16]);
        let started = std::time::Instant::now();
        async move {
            let state = &self.state;
            if peer.identity.role() != Role::Operator || peer.identity.network() != state.identity.network() {
                let refusal = Status::permission_denied(format!(
                    "{} may not use the operator API: it is open to operators of network {:?} only",
                    peer.identity, state.identity.network()));
                let mut entry = Entry::now("federated-query", &peer.identity.to_string());
                entry.query_digest = digest.clone();
                entry.decision = "refused".into();
                entry.detail = refusal.message().to_owned();
                let log = state.log.clone();
                tokio::task::spawn_blocking(move || log.append(&entry, None)).await.map_err(internal)?.map_err(internal)?;
                tracing::warn!(reason = %refusal.message(), "refused by role");
                state.metrics.inc("tabadul_hub_federated_queries_total", &[("outcome", "refused-role")]);
                return Err(refusal);
            }
            // The nodes would refuse a malformed query too, but as one
            // error here it reads better than as every member failing.
            let micro_flow;
            let micro = state.dict.microdata(&query.dataflow);
            let flow = match micro {
                Some(table) => {
                    micro_flow = microdata_shape(table, &query).map_err(Status::invalid_argument)?;
                    &micro_flow
                }
                None => tabadul_proto::resolve(&state.dict, &query).map_err(|e| Status::invalid_argument(e.to_string()))?.flow,
            };
            let mut members = Vec::new();
            if req.members.is_empty() {
                members.extend(state.members.values());
            } else {
                for code in &req.members {
                    members.push(state.members.get(code).ok_or_else(|| {
                        Status::invalid_argument(format!("{code} is not a member configured on this hub"))
                    })?);
                }
            }
            let deadline = match req.deadline_ms {
                0 => state.default_deadline,
                ms => Duration::from_millis(u64::from(ms)).min(state.max_deadline),
            };

            let main = fanout::ask_all(&members, flow, &query, deadline, &state.identity);
            let mut response = pb::FederatedQueryResponse {
                dimensions: flow.dimensions.iter().cloned().chain([TIME_PERIOD.to_owned()]).collect(),
                query_digest: digest.clone(),
                ..Default::default()
            };
            // Every receipt an answer was built on goes into the hub's leaf.
            let mut receipts = Vec::new();
            let statistic = query.aggregation.as_ref().map_or("", |a| a.statistic.as_str());
            let answers = if req.regional_aggregate && micro.is_some() && !matches!(statistic, "" | "count" | "weighted-count" | "sum") {
                response.aggregate_method = format!("no regional aggregate: a {statistic} is not additive across members (ask for its sums)");
                main.await
            } else if req.regional_aggregate {
                response.aggregate_dimensions = response.dimensions[1..].to_vec();
                match &flow.measure {
                    Measure::Count => {
                        let answers = main.await;
                        let released: Vec<Released<'_>> = released(&answers);
                        response.aggregate = merge::sum(&released, flow.unit_mult);
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
                        let nflow = state.dict.dataflow(numerator).ok_or_else(|| internal("numerator missing"))?;
                        let dflow = state.dict.dataflow(denominator).ok_or_else(|| internal("denominator missing"))?;
                        let (answers, nums, dens) = tokio::join!(
                            main,
                            fanout::ask_all(&members, nflow, &nq, deadline, &state.identity),
                            fanout::ask_all(&members, dflow, &dq, deadline, &state.identity),
                        );
                        response.aggregate = merge::rate(&released(&nums), &released(&dens), *scale);
                        receipts.extend(nums.iter().chain(&dens).filter_map(|a| a.receipt.clone()));
                        response.aggregate_method = format!(
                            "sum of {numerator} / sum of {denominator} x {scale}, over members that released both");
                        answers
                    }
                }
            } else {
                main.await
            };
            response.cells = merge::table(&released(&answers));
            receipts.extend(answers.iter().filter_map(|a| a.receipt.clone()));
            response.members = answers.into_iter().map(|a| a.status).collect();

            let mut entry = Entry::now("federated-query", &peer.identity.to_string());
            entry.query_digest = digest;
            entry.decision = "ok".into();
            entry.detail = response
                .members
                .iter()
                .map(|m| format!("{}={}", m.member, state_word(m.state)))
                .collect::<Vec<_>>()
                .join(" ");
            entry.receipts = receipts;
            // What the operator receives, committed to (salted) before it leaves.
            let salt = tabadul_audit::new_salt();
            entry.released = tabadul_audit::released_digest(&salt, &response.encode_to_vec());
            let log = state.log.clone();
            let logged = entry.clone();
            let receipt = tokio::task::spawn_blocking(move || {
                // Crash point: the answer is durably logged before it is sent.
                tabadul_audit::receipt::append_with_receipt(&log, &logged, Some(salt), None)
            })
            .await
            .map_err(internal)?
            .map_err(internal)?;
            response.receipt = Some(receipt);
            state.metrics.inc("tabadul_hub_federated_queries_total", &[("outcome", "answered")]);
            state.metrics.observe("tabadul_hub_federated_query_seconds", &[], started.elapsed());
            for m in &response.members {
                state.metrics.inc("tabadul_hub_member_answers_total", &[("member", &m.member), ("state", state_word(m.state))]);
            }
            tracing::info!(cells = response.cells.len(), members = %entry.detail, "federated answer");
            Ok(Response::new(response))
        }
        .instrument(span)
        .await
    }
}

fn released(answers: &[fanout::MemberAnswer]) -> Vec<Released<'_>> {
    answers
        .iter()
        .filter(|a| a.released())
        .map(|a| Released { member: &a.status.member, cells: &a.cells })
        .collect()
}

/// The word used for a member state in logs and CLI output.
pub fn state_word(state: i32) -> &'static str {
    match MemberState::try_from(state) {
        Ok(MemberState::Answered) => "answered",
        Ok(MemberState::RefusedByPolicy) => "refused",
        Ok(MemberState::Unreachable) => "unreachable",
        Ok(MemberState::TimedOut) => "timed-out",
        Ok(MemberState::Failed) => "failed",
        _ => "unspecified",
    }
}

/// The shape of a microdata answer as a dataflow (REF_AREA, then the
/// breakdown dimensions in the table's order; TIME_PERIOD implied), so the
/// fan-out checks member answers exactly as it checks indicator answers.
fn microdata_shape(table: &tabadul_proto::MicroTable, query: &pb::Query) -> Result<tabadul_proto::Dataflow, String> {
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
