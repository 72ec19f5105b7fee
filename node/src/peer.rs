//! Asking another member's node, as this node: the corridor queries of
//! labour migration (an origin asks a destination for the figures about its
//! own nationals). The destination answers under its own policy, as to any
//! requester; this side accepts the answer only with a receipt proving the
//! destination logged exactly it, and logs what it received (a `peer-query`
//! leaf carrying that receipt), so the two logs cross-check offline like
//! the hub's and its members' (`tabadul-audit cross-check`).
//!
//! The node never relays: what it receives goes to its own operator (the
//! admin socket), not to its own requesters.

use std::sync::Arc;
use std::time::Duration;

use tabadul_audit::note::Verifier;
use tabadul_audit::{Entry, receipt};
use tabadul_certs::tls::{self, ClientTls, Expect};
use tabadul_certs::{Identity, Role};
use tabadul_proto::pb::{self, query_response::Item};
use tonic::Status;

/// How long a connection to the other node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the whole answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Who asks and where it logs: this node's identity, its log, and its
/// client TLS (the one the server's files reload).
pub(crate) struct Asker<'a> {
    pub identity: &'a Identity,
    pub log: &'a Arc<tabadul_audit::Log>,
    pub client_tls: &'a Arc<ClientTls>,
}

/// Asks `r.member`'s node `r.query` and logs what came back.
pub(crate) async fn ask(state: Asker<'_>, r: pb::AskRequest) -> Result<pb::AskResponse, Status> {
    let member = r.member.trim();
    if member.len() != 3 || !member.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Status::invalid_argument(format!("member {member:?} must be an ISO 3166-1 alpha-3 code, e.g. SAU")));
    }
    if member == state.identity.id() {
        return Err(Status::invalid_argument(format!("{member} is this node; ask another member")));
    }
    if r.endpoint.trim().is_empty() {
        return Err(Status::invalid_argument(format!("no endpoint for {member}'s node (host:port)")));
    }
    let vkey = Verifier::parse(r.log_vkey.trim()).map_err(|e| Status::invalid_argument(format!("log vkey of {member}: {e}")))?;
    let q = r.query.ok_or_else(|| Status::invalid_argument("ask needs a query"))?;
    let them = Identity::new(state.identity.network(), Role::Node, member).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let digest = tabadul_proto::query_digest(&q);

    let received = tokio::time::timeout(ANSWER_TIMEOUT, fetch(&r.endpoint, &them, state.client_tls, q)).await;
    let (decision, cells, their_receipt) = match received {
        Ok(Ok(answer)) => answer,
        Ok(Err(status)) => return Err(failed(&state, &them, &digest, tls::explain_failure(&status, None)).await),
        Err(_) => return Err(failed(&state, &them, &digest, format!("no answer from {member} within {} s", ANSWER_TIMEOUT.as_secs())).await),
    };
    let Some(their_receipt) = their_receipt else {
        return Err(failed(&state, &them, &digest, format!("{member} sent no receipt: its answer cannot be proven and is not accepted")).await);
    };
    let verified = match receipt::verify(&their_receipt, &vkey)
        .map_err(|e| e.to_string())
        .and_then(|v| receipt::check_answer(&their_receipt, &v, &state.identity.to_string(), &digest, &decision, &cells).map(|()| v))
    {
        Ok(v) => v,
        Err(why) => return Err(failed(&state, &them, &digest, format!("{member}'s receipt does not prove its answer: {why}")).await),
    };

    let salt = tabadul_audit::new_salt();
    let mut entry = Entry::now("peer-query", &them.to_string());
    entry.query_digest = digest;
    entry.decision = tabadul_proto::decision_word(decision.kind).to_owned();
    entry.rule_id = decision.rule_id.clone();
    entry.policy_version = decision.policy_version.clone();
    if decision.kind != pb::DecisionKind::Refused as i32 {
        entry.released = tabadul_audit::released_digest(&salt, &tabadul_proto::released_canonical(&decision, &cells));
    }
    entry.detail = format!("{} cells received from {member}", cells.len());
    entry.receipts = vec![verified.to_ref(member, their_receipt.index)];
    let log = state.log.clone();
    // Durable before the operator sees the figures, as every answer here.
    let ours = tokio::task::spawn_blocking(move || receipt::append_with_receipt(&log, &entry, Some(salt), None))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::unavailable(format!("the answer could not be logged, so it is not shown: {e}")))?;
    tracing::info!(member = %member, their_leaf = their_receipt.index, our_leaf = ours.index, decision = %tabadul_proto::decision_word(decision.kind), "asked another member");
    Ok(pb::AskResponse { decision: Some(decision), cells, their_leaf: their_receipt.index, our_leaf: ours.index })
}

/// The other node's decision, cells and receipt.
async fn fetch(
    endpoint: &str,
    them: &Identity,
    client_tls: &Arc<ClientTls>,
    q: pb::Query,
) -> Result<(pb::Decision, Vec<pb::Cell>, Option<pb::Receipt>), Status> {
    let channel = tls::channel(endpoint.trim(), Expect::Identity(them.clone()), client_tls.clone(), CONNECT_TIMEOUT)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut stream = pb::node_client::NodeClient::new(channel).query(q).await?.into_inner();
    let (mut decision, mut cells, mut receipt) = (None, Vec::new(), None);
    while let Some(m) = stream.message().await? {
        match m.item {
            Some(Item::Decision(d)) => decision = Some(d),
            Some(Item::Cell(c)) => cells.push(c),
            Some(Item::Receipt(r)) => receipt = Some(r),
            None => {}
        }
    }
    let decision = decision.ok_or_else(|| Status::data_loss(format!("{} sent no decision", them.id())))?;
    Ok((decision, cells, receipt))
}

/// Logs a failed ask (the other node may have logged an answer this node
/// did not accept: an auditor should see both sides), and builds the error.
async fn failed(state: &Asker<'_>, them: &Identity, digest: &str, why: String) -> Status {
    let mut entry = Entry::now("peer-query", &them.to_string());
    entry.query_digest = digest.to_owned();
    entry.decision = "failed".into();
    entry.detail = why.clone();
    let log = state.log.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || log.append(&entry, None)).await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        tracing::error!(error = %e, "a failed ask could not be logged");
    }
    tracing::warn!(member = %them.id(), reason = %why, "ask failed");
    Status::unavailable(why)
}
