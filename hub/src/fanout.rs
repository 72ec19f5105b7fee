//! Asking the members: concurrently, each under its own deadline, each
//! answer checked before it is used.

use std::time::{Duration, Instant};

use futures::future::join_all;
use tabadul_audit::ReceiptRef;
use tabadul_audit::receipt::{KNOWN_SIZE_METADATA, Seen};
use tabadul_certs::Identity;
use tabadul_proto::pb::{self, DecisionKind, MemberState, query_response::Item};
use tabadul_proto::{Dataflow, TIME_PERIOD};
use tonic::Code;

pub use crate::member::Member;
use crate::member::poison;

/// How many of a member's most recent leaf indices the hub remembers to
/// refuse a receipt used twice (older ones lie below its pin anyway).
pub const MAX_REMEMBERED_LEAVES: usize = 100_000;

/// Most cells the hub accepts from one member for one query.
pub const MAX_CELLS_PER_MEMBER: usize = 1_000_000;

/// What one member said (or failed to say).
#[derive(Debug, Clone)]
pub struct MemberAnswer {
    pub status: pb::MemberStatus,
    pub cells: Vec<pb::Cell>,
    /// The checked receipt, as the hub logs it.
    pub receipt: Option<ReceiptRef>,
    /// The node's generation when it decided (empty if it did not say).
    pub generation: String,
}

impl MemberAnswer {
    pub fn released(&self) -> bool {
        self.status.state == MemberState::Answered as i32
    }
}

/// Asks every member in `members` at once; returns in the same order.
pub async fn ask_all(members: &[&Member], flow: &Dataflow, query: &pb::Query, deadline: Duration, hub: &Identity) -> Vec<MemberAnswer> {
    join_all(members.iter().map(|m| ask(m, flow, query.clone(), deadline, hub))).await
}

/// Asks one member. Never fails: every outcome is a status.
pub async fn ask(member: &Member, flow: &Dataflow, query: pb::Query, deadline: Duration, hub: &Identity) -> MemberAnswer {
    let started = Instant::now();
    let digest = tabadul_proto::query_digest(&query);
    let mut request = tonic::Request::new(query);
    // Tells the node our deadline (grpc-timeout) so it can give up too.
    request.set_timeout(deadline);
    // And what we last verified of its log, so its receipt proves the log
    // extends it.
    let seen = *member.seen.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = seen
        && let Ok(v) = s.size.to_string().parse()
    {
        request.metadata_mut().insert(KNOWN_SIZE_METADATA, v);
    }
    let mut client = member.client.clone();
    let work = async move {
        let mut stream = client.query(request).await?.into_inner();
        let mut decision = None;
        let mut cells = Vec::new();
        let mut receipt = None;
        while let Some(msg) = stream.message().await? {
            match msg.item {
                Some(Item::Decision(d)) if decision.is_none() => decision = Some(d),
                Some(Item::Cell(c)) if decision.is_some() && receipt.is_none() && cells.len() < MAX_CELLS_PER_MEMBER => cells.push(c),
                Some(Item::Cell(_)) if decision.is_some() && receipt.is_none() => {
                    return Err(tonic::Status::resource_exhausted(format!("more than {MAX_CELLS_PER_MEMBER} cells")));
                }
                Some(Item::Receipt(r)) if decision.is_some() && receipt.is_none() => receipt = Some(r),
                _ => return Err(tonic::Status::data_loss("answer out of order (decision first, then cells, then one receipt)")),
            }
        }
        Ok::<_, tonic::Status>((decision, cells, receipt))
    };
    // At most `max_in_flight_per_member` queries per node at once: the rest
    // wait here, inside their deadline, rather than hit the node's
    // per-requester limit (the hub is one requester for every operator).
    let limited = async {
        let _permit = member.in_flight.acquire().await;
        work.await
    };
    let outcome = tokio::time::timeout(deadline, limited).await;
    let elapsed_ms = started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
    let mut status = pb::MemberStatus { member: member.code.clone(), elapsed_ms, ..Default::default() };
    let mut cells = Vec::new();
    let mut logged = None;
    let mut generation = String::new();
    match outcome {
        Err(_) => {
            status.state = MemberState::TimedOut as i32;
            status.detail = format!("no complete answer within {} ms", deadline.as_millis());
        }
        Ok(Err(s)) => {
            let (state, detail) = match s.code() {
                // No connection, a dropped connection, or a failed handshake.
                Code::Unavailable | Code::Cancelled => (MemberState::Unreachable, describe_transport_error(&s)),
                Code::Unknown if is_transport_error(&s) => (MemberState::Unreachable, describe_transport_error(&s)),
                Code::DeadlineExceeded => (MemberState::TimedOut, s.message().to_owned()),
                Code::PermissionDenied => (MemberState::RefusedByPolicy, s.message().to_owned()),
                _ => (MemberState::Failed, format!("{:?}: {}", s.code(), s.message())),
            };
            status.state = state as i32;
            status.detail = detail;
        }
        Ok(Ok((None, _, _))) => {
            status.state = MemberState::Failed as i32;
            status.detail = "the node sent no decision".into();
        }
        Ok(Ok((Some(d), received, receipt))) => {
            status.rule_id = d.rule_id.clone();
            status.policy_version = d.policy_version.clone();
            generation = d.generation.clone();
            status.detail = d.reason.clone();
            let forked = member.forked.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let checked = match (forked, check_receipt(member, hub, &digest, &d, &received, receipt.as_ref(), seen)) {
                (Some(reason), _) => Err(reason),
                (None, Ok((r, got))) => crate::pins::settle_pin(member, seen, got, receipt.as_ref().map_or("", |r| r.checkpoint.as_str())).map(|()| r),
                (None, Err(problem)) => Err(problem),
            };
            match checked {
                Ok(r) => logged = Some(r),
                Err(problem) => {
                    status.state = MemberState::Failed as i32;
                    status.detail = format!("answer rejected by the hub: {problem}");
                    tracing::warn!(member = %member.code, %problem, "receipt rejected");
                    return MemberAnswer { status, cells, receipt: None, generation: String::new() };
                }
            }
            status.receipt = receipt;
            if d.kind == DecisionKind::Refused as i32 {
                status.state = MemberState::RefusedByPolicy as i32;
            } else if let Err(problem) = check(member, flow, &d, &received) {
                status.state = MemberState::Failed as i32;
                status.detail = format!("answer rejected by the hub: {problem}");
            } else {
                status.state = MemberState::Answered as i32;
                status.partial = d.kind == DecisionKind::PartlyAllowed as i32;
                status.cells = received.len() as u32;
                cells = received;
            }
        }
    }
    tracing::debug!(member = %member.code, state = status.state, elapsed_ms, "member answered");
    MemberAnswer { status, cells, receipt: logged, generation }
}

/// The member's current generation (see `Node.Generation`), or `None` if
/// it did not answer within `deadline`.
pub async fn generation(member: &Member, deadline: Duration) -> Option<String> {
    let mut request = tonic::Request::new(pb::GenerationRequest {});
    request.set_timeout(deadline);
    let mut client = member.client.clone();
    match tokio::time::timeout(deadline, client.generation(request)).await {
        Ok(Ok(r)) => Some(r.into_inner().generation),
        Ok(Err(e)) => {
            tracing::debug!(member = %member.code, error = %e, "no generation");
            None
        }
        Err(_) => None,
    }
}

/// A node's answer counts only with a receipt that proves the node logged
/// exactly this decision, for this hub and query, and these cells.
fn check_receipt(
    member: &Member,
    hub: &Identity,
    digest: &str,
    d: &pb::Decision,
    cells: &[pb::Cell],
    receipt: Option<&pb::Receipt>,
    seen: Option<Seen>,
) -> Result<(ReceiptRef, Seen), String> {
    let receipt = receipt.ok_or("the node sent no receipt")?;
    let v = tabadul_audit::receipt::verify(receipt, &member.log_key).map_err(|e| e.to_string())?;
    if let Err(e) = tabadul_audit::receipt::check_extends(receipt, &v, seen) {
        return Err(poison(member, e.to_string()));
    }
    // The node appends after our request reached it, so its leaf lies past
    // everything we had seen: an older leaf is a replayed receipt.
    if let Some(s) = seen
        && receipt.index < s.size
    {
        return Err(format!("the receipt names leaf {}, logged before this request (the log had {} entries)", receipt.index, s.size));
    }
    tabadul_audit::receipt::check_answer(receipt, &v, &hub.to_string(), digest, d, cells)?;
    // One leaf, one answer: two answers (say to two identical concurrent
    // queries) on the strength of one logged release would hide a release.
    {
        let mut used = member.used_leaves.lock().unwrap_or_else(|p| p.into_inner());
        if !used.insert(receipt.index) {
            return Err(format!("the receipt names leaf {}, which another answer already used", receipt.index));
        }
        while used.len() > MAX_REMEMBERED_LEAVES {
            used.pop_first();
        }
    }
    Ok((v.to_ref(&member.code, receipt.index), Seen { size: v.checkpoint.size, root: v.checkpoint.root }))
}

/// A node may only speak for its own member state, in the dataflow's shape.
fn check(member: &Member, flow: &Dataflow, d: &pb::Decision, cells: &[pb::Cell]) -> Result<(), String> {
    let expected: Vec<&str> = flow.dimensions.iter().map(String::as_str).chain([TIME_PERIOD]).collect();
    if d.dimensions.iter().map(String::as_str).ne(expected.iter().copied()) {
        return Err(format!("dimensions {:?}, expected {:?}", d.dimensions, expected));
    }
    for c in cells {
        if c.key.len() != expected.len() {
            return Err(format!("a cell has {} codes, expected {}", c.key.len(), expected.len()));
        }
        if c.key[0] != member.code {
            return Err(format!("cell for {} from the node of {}", c.key[0], member.code));
        }
        // Withheld (CONF_STATUS C/D) and missing (OBS_STATUS M) cells carry
        // no value; every other cell must carry a real number.
        let valueless = matches!(c.conf_status.as_str(), "C" | "D") || c.obs_status == "M";
        if !c.value.is_finite() && !valueless {
            return Err("a cell value is not a finite number".into());
        }
        if !matches!(c.conf_status.as_str(), "" | "F" | "C" | "D") {
            return Err(format!("a cell has CONF_STATUS {:?} (expected F, C or D)", c.conf_status));
        }
    }
    Ok(())
}

/// Whether a status came from the connection rather than from the node.
fn is_transport_error(s: &tonic::Status) -> bool {
    std::error::Error::source(s).is_some() || s.message().contains("transport error")
}

fn describe_transport_error(s: &tonic::Status) -> String {
    // tonic nests the cause (refused, TLS failure, wrong identity) in the source chain.
    let mut detail = s.message().to_owned();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let text = e.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = e.source();
    }
    detail
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::member::tests::member;

    #[tokio::test]
    async fn a_receipt_serves_one_answer_only() {
        let dir = tempfile::tempdir().unwrap();
        let signer = tabadul_audit::Signer::generate("alo/node/MAR").unwrap();
        let mut m = member(None);
        m.log_key = signer.verifier();
        let log = tabadul_audit::Log::open(dir.path(), signer).unwrap();
        let hub: Identity = "spiffe://alo/hub/alo".parse().unwrap();
        let query = pb::Query { dataflow: "UNE_PERS".into(), ..Default::default() };
        let digest = tabadul_proto::query_digest(&query);
        let d = pb::Decision {
            kind: DecisionKind::Allowed as i32,
            rule_id: "r".into(),
            policy_version: "v".into(),
            query_digest: digest.clone(),
            ..Default::default()
        };
        let salt = [9u8; 16];
        let mut entry = tabadul_audit::Entry::now("query", &hub.to_string());
        entry.query_digest = digest.clone();
        entry.decision = "allowed".into();
        entry.rule_id = "r".into();
        entry.policy_version = "v".into();
        entry.released = tabadul_audit::released_digest(&salt, &tabadul_proto::released_canonical(&d, &[]));
        let receipt = tabadul_audit::receipt::append_with_receipt(&log, &entry, Some(salt), None).unwrap();
        check_receipt(&m, &hub, &digest, &d, &[], Some(&receipt), None).unwrap();
        let e = check_receipt(&m, &hub, &digest, &d, &[], Some(&receipt), None).unwrap_err();
        assert!(e.contains("already used"), "{e}");
        // A receipt for another hub, or for other cells, is refused outright.
        let other: Identity = "spiffe://alo/hub/other".parse().unwrap();
        let fresh = tabadul_audit::receipt::append_with_receipt(&log, &entry, Some(salt), None).unwrap();
        assert!(check_receipt(&m, &other, &digest, &d, &[], Some(&fresh), None).unwrap_err().contains("requester"));
        let cell = pb::Cell { key: vec!["MAR".into()], value: 1.0, ..Default::default() };
        assert!(check_receipt(&m, &hub, &digest, &d, &[cell], Some(&fresh), None).unwrap_err().contains("not the ones"));
    }
}
