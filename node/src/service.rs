//! The gRPC services: `Node` (over mTLS) and `NodeAdmin` (Unix socket).

use std::pin::Pin;
use std::sync::{Arc, RwLock};

use futures::Stream;
use tabadul_audit::{Entry, Log};
use tabadul_certs::tls::peer_of;
use tabadul_certs::{Identity, Role};
use tabadul_proto::pb::{self, DecisionKind};
use tabadul_proto::{Dictionary, decision_word};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::import::{self, Format};
use crate::policy::Policy;
use crate::query;
use crate::store::{Store, Withdrawal};

/// Everything a request needs, shared by both services.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub identity: Identity,
    pub dict: Arc<Dictionary>,
    pub policy: RwLock<Arc<Policy>>,
    pub policy_path: std::path::PathBuf,
    pub store: Arc<Store>,
    /// The signed exchange log.
    pub log: Arc<Log>,
    /// This node as a client of other members' nodes (`peer`), reloaded
    /// with the server's certificate, key and CRL.
    pub client_tls: Arc<tabadul_certs::tls::ClientTls>,
    /// Origins of the logs this node witnesses.
    pub witnessed: Vec<String>,
    pub metrics: Arc<tabadul_telemetry::Registry>,
    pub limits: Arc<crate::limits::Limits>,
    /// The store's withdrawals, kept in memory: only this process changes
    /// them (through the admin API), so it refreshes the copy on each change.
    pub withdrawals: RwLock<Arc<Vec<Withdrawal>>>,
    /// Held from computing a microdata answer until its release is in the
    /// ledger: two concurrent answers must each see the other's release,
    /// or together they could reveal what neither would alone.
    pub release_lock: std::sync::Mutex<()>,
    /// The disclosure audit's spans, kept between answers.
    pub kept_spans: crate::micro_query::protection::KeptSpans,
    /// Random per process start, so a restart (which may follow a restore
    /// or an offline import) is a new generation too.
    pub boot: String,
    /// Bumped after every change that may alter an answer given before.
    pub changes: std::sync::atomic::AtomicU64,
}

/// Answers a query on an indicator dataflow or a microdata table. With
/// `record`, a microdata release is written to the ledger (synced) before
/// this returns; without it (preview) nothing is written.
pub(crate) fn answer_any(
    state: &NodeState,
    policy: &Policy,
    who: &Identity,
    q: &pb::Query,
    record: bool,
) -> Result<Result<query::Answer, tabadul_proto::InvalidQuery>, crate::Error> {
    // Read before anything the answer depends on: a change racing with
    // this answer then shows as a newer generation, never an older one.
    let generation = state.generation();
    let public_only;
    let policy = match q.audience.as_str() {
        "" => policy,
        "public" => {
            public_only = policy.public_only();
            &public_only
        }
        other => {
            return Ok(Err(tabadul_proto::InvalidQuery(format!(
                "invalid query: audience {other:?} is unknown (empty, or \"public\" for the hub's anonymous tier)"
            ))));
        }
    };
    let withdrawals = state.withdrawals();
    let today = time::OffsetDateTime::now_utc().date();
    let stamp = |mut a: query::Answer| {
        a.decision.generation = generation.clone();
        a
    };
    if state.dict.microdata(&q.dataflow).is_none() {
        return Ok(query::answer(Some(&state.store), &state.dict, policy, &withdrawals, who, q, today)?.map(stamp));
    }
    let _serial = state.release_lock.lock().unwrap_or_else(|p| p.into_inner());
    // A requester sees withheld cells alike; the team's preview sees why.
    let detail = if record { crate::micro_query::Detail::Requester } else { crate::micro_query::Detail::Owner };
    // The preview records nothing, so it must not leave a span holding
    // rows the ledger will never have.
    let kept = record.then_some(&state.kept_spans);
    let answer = crate::micro_query::answer(&state.store, &state.dict, state.member(), policy, &withdrawals, who, q, today, detail, kept)?;
    Ok(
        match answer.map(|mut a| {
            a.answer = stamp(a.answer);
            a
        }) {
            Ok(a) => {
                if record && let Some(release) = &a.release {
                    // Crash point: the ledger holds the release before the log
                    // does and before anything is sent.
                    crate::ledger::record(&state.store, release)?;
                }
                Ok(a.answer)
            }
            Err(e) => Err(e),
        },
    )
}

impl NodeState {
    pub fn member(&self) -> &str {
        self.identity.id()
    }

    /// See `Node.Generation`.
    pub fn generation(&self) -> String {
        format!("{}-{}", self.boot, self.changes.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Called once a change is in force and before it is acknowledged, so
    /// whoever learns that it happened also sees a new generation.
    pub fn changed(&self) {
        self.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn withdrawals(&self) -> Arc<Vec<Withdrawal>> {
        self.withdrawals.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the withdrawals after a change; the store stays the source of truth.
    pub fn refresh_withdrawals(&self) -> Result<(), crate::Error> {
        let fresh = Arc::new(self.store.withdrawals()?);
        *self.withdrawals.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Re-reads the policy file; a broken file leaves the current policy in force.
    pub fn reload_policy(&self) -> Result<Arc<Policy>, crate::Error> {
        let result = Policy::load(&self.policy_path, &self.dict);
        let mut entry = Entry::now("policy-load", "local");
        match result {
            Ok(policy) => {
                let policy = Arc::new(policy);
                entry.decision = "ok".into();
                entry.policy_version = policy.version.clone();
                *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy.clone();
                self.changed();
                self.log.append(&entry, None)?;
                tracing::info!(version = %policy.version, "policy loaded");
                Ok(policy)
            }
            Err(e) => {
                entry.decision = "failed".into();
                entry.policy_version = self.policy().version.clone();
                entry.detail = e.to_string();
                self.log.append(&entry, None)?;
                tracing::error!(error = %e, kept = %self.policy().version, "policy rejected; previous policy stays in force");
                Err(e.into())
            }
        }
    }
}

/// A log that cannot be written means nothing may leave: the caller is
/// told the node is unavailable and why, in words that name no local path.
fn log_or_internal(e: crate::Error) -> Status {
    match &e {
        crate::Error::Log(tabadul_audit::Error::Stopped { .. } | tabadul_audit::Error::Db { .. }) => {
            tracing::error!(error = %e, "the exchange log cannot be written: answering nothing until an operator fixes it");
            Status::unavailable("the node cannot write its exchange log (disk full or failing?), so it releases nothing; its operators must act")
        }
        _ => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal("internal error on the node; see its log")
}

/// Only network peers that exchange data (hubs and nodes of our network)
/// may call `Node`; operators and auditors go through the hub.
fn authorize(state: &NodeState, who: &Identity) -> Result<(), Status> {
    if who.network() != state.identity.network() {
        return Err(Status::permission_denied(format!("{who} belongs to network {:?}, this node to {:?}", who.network(), state.identity.network())));
    }
    match who.role() {
        Role::Hub | Role::Node => Ok(()),
        Role::Operator => Err(Status::permission_denied(format!("{who} is an operator: operators query through the hub, never a node directly"))),
        Role::Auditor => Err(Status::permission_denied(format!("{who} is an auditor: auditors read logs, not data"))),
    }
}

/// Appends to the log off the async workers: an append waits for a synced
/// write, and a peer must not be able to stall the server's threads.
async fn append(log: &Arc<Log>, entry: Entry) -> Result<(), Status> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.append(&entry, None)).await.map_err(internal)?.map_err(|e| log_or_internal(e.into()))?;
    Ok(())
}

/// [`authorize`], recording a refusal in the log: a peer knocking at the
/// wrong door is itself worth an auditor's attention.
async fn authorize_and_record(state: &NodeState, who: &Identity, kind: &str, digest: &str) -> Result<(), Status> {
    let Err(refusal) = authorize(state, who) else { return Ok(()) };
    state.metrics.inc("tabadul_node_queries_total", &[("decision", "refused-role")]);
    let mut entry = Entry::now(kind, &who.to_string());
    entry.query_digest = digest.to_owned();
    entry.decision = "refused".into();
    entry.policy_version = state.policy().version.clone();
    entry.detail = refusal.message().to_owned();
    append(&state.log, entry).await?;
    tracing::warn!(reason = %refusal.message(), "refused by role");
    Err(refusal)
}

#[derive(Debug, Clone)]
pub(crate) struct NodeService {
    pub state: Arc<NodeState>,
}

type CellStream = Pin<Box<dyn Stream<Item = Result<pb::QueryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    type QueryStream = CellStream;

    async fn query(&self, request: Request<pb::Query>) -> Result<Response<CellStream>, Status> {
        let started = std::time::Instant::now();
        let peer = peer_of(&request).ok_or_else(|| Status::unauthenticated("no verified client certificate"))?.clone();
        let known_size = request.metadata().get(tabadul_audit::receipt::KNOWN_SIZE_METADATA).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let q = request.into_inner();
        let digest = tabadul_proto::query_digest(&q);
        let span = tracing::info_span!("query", peer = %peer.identity, addr = %peer.addr, dataflow = %q.dataflow, digest = %&digest[..16]);
        async move {
            let permit = self.state.limits.admit(&peer.identity.to_string()).map_err(|why| {
                self.state.metrics.inc("tabadul_node_queries_total", &[("decision", "limited")]);
                tracing::warn!(%why, "over the limit");
                Status::resource_exhausted(why)
            })?;
            authorize_and_record(&self.state, &peer.identity, "query", &digest).await?;
            let state = self.state.clone();
            let who = peer.identity.clone();
            let digest = digest.clone();
            let answered = tokio::task::spawn_blocking(move || {
                let policy = state.policy();
                let answer = answer_any(&state, &policy, &who, &q, true)?;
                let mut entry = Entry::now("query", &who.to_string());
                entry.query_digest = digest;
                entry.policy_version = policy.version.clone();
                let mut salt = None;
                match &answer {
                    Ok(a) => {
                        entry.decision = decision_word(a.decision.kind).into();
                        entry.rule_id = a.decision.rule_id.clone();
                        entry.detail = format!("{} cells; {}", a.cells.len(), a.decision.reason);
                        if q.audience == "public" {
                            entry.detail.push_str("; on behalf of the public");
                        }
                        if !a.decision.rules_fired.is_empty() {
                            entry.detail.push_str(&format!("; disclosure control: {}", a.decision.rules_fired.join(", ")));
                        }
                        if a.decision.kind != DecisionKind::Refused as i32 {
                            let s = tabadul_audit::new_salt();
                            entry.released = tabadul_audit::released_digest(&s, &tabadul_proto::released_canonical(&a.decision, &a.cells));
                            salt = Some(s);
                        }
                    }
                    Err(e) => {
                        entry.decision = "invalid".into();
                        entry.detail = e.to_string();
                    }
                }
                // Crash point: the decision is durably logged (with a signed
                // checkpoint covering it) before anything is sent.
                let receipt = match &answer {
                    Ok(_) => Some(tabadul_audit::receipt::append_with_receipt(&state.log, &entry, salt, known_size)?),
                    Err(_) => {
                        state.log.append(&entry, None)?;
                        None
                    }
                };
                Ok::<_, crate::Error>((answer, receipt))
            })
            .await
            .map_err(internal)?
            .map_err(log_or_internal)?;
            let (answer, receipt) = answered;
            let word = match &answer {
                Ok(a) => decision_word(a.decision.kind),
                Err(_) => "invalid",
            };
            self.state.metrics.inc("tabadul_node_queries_total", &[("decision", word)]);
            self.state.metrics.observe("tabadul_node_query_seconds", &[], started.elapsed());
            let answer = answer.map_err(|e| Status::invalid_argument(e.to_string()))?;
            // The log records every decision; this line is for debugging.
            tracing::debug!(decision = decision_word(answer.decision.kind), rule = %answer.decision.rule_id, cells = answer.cells.len(), "answered");
            let items = std::iter::once(pb::QueryResponse { item: Some(pb::query_response::Item::Decision(answer.decision)) })
                .chain(answer.cells.into_iter().map(|c| pb::QueryResponse { item: Some(pb::query_response::Item::Cell(c)) }))
                .chain(receipt.map(|r| pb::QueryResponse { item: Some(pb::query_response::Item::Receipt(r)) }))
                .map(Ok);
            // The slot is held until the answer is streamed (or dropped): a
            // peer that never reads cannot pile up answers in memory.
            let stream = tokio_stream::StreamExt::map(tokio_stream::iter(items), move |item| {
                let _held = &permit;
                item
            });
            Ok(Response::new(Box::pin(stream) as CellStream))
        }
        .instrument(span)
        .await
    }

    async fn generation(&self, request: Request<pb::GenerationRequest>) -> Result<Response<pb::GenerationResponse>, Status> {
        let peer = peer_of(&request).ok_or_else(|| Status::unauthenticated("no verified client certificate"))?;
        // Not logged: it reveals no data, and the hub asks it on every
        // cached answer it serves.
        authorize(&self.state, &peer.identity)?;
        Ok(Response::new(pb::GenerationResponse { generation: self.state.generation() }))
    }

    async fn describe(&self, request: Request<pb::DescribeRequest>) -> Result<Response<pb::DescribeResponse>, Status> {
        let peer = peer_of(&request).ok_or_else(|| Status::unauthenticated("no verified client certificate"))?.clone();
        let span = tracing::info_span!("describe", peer = %peer.identity);
        async move {
            let _permit = self.state.limits.admit(&peer.identity.to_string()).map_err(|why| {
                self.state.metrics.inc("tabadul_node_queries_total", &[("decision", "limited")]);
                Status::resource_exhausted(why)
            })?;
            authorize_and_record(&self.state, &peer.identity, "describe", "").await?;
            let policy = self.state.policy();
            let withdrawals = self.state.withdrawals();
            let grants = query::grants(&self.state.dict, &policy, &withdrawals, &peer.identity);
            let mut entry = Entry::now("describe", &peer.identity.to_string());
            entry.decision = "ok".into();
            entry.policy_version = policy.version.clone();
            append(&self.state.log, entry).await?;
            Ok(Response::new(pb::DescribeResponse {
                member: self.state.member().to_owned(),
                policy_version: policy.version.clone(),
                dictionary_version: self.state.dict.version.clone(),
                grants,
            }))
        }
        .instrument(span)
        .await
    }
}

/// The national team's admin API. Reachable only through the Unix socket,
/// whose file mode (0600) is the access control.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    pub state: Arc<NodeState>,
}

async fn admin_event(state: &NodeState, kind: &str, decision: &str, detail: String) -> Result<(), Status> {
    let mut entry = Entry::now(kind, "local-admin");
    entry.decision = decision.into();
    entry.policy_version = state.policy().version.clone();
    entry.detail = detail;
    append(&state.log, entry).await
}

#[tonic::async_trait]
impl pb::node_admin_server::NodeAdmin for AdminService {
    async fn withdraw(&self, request: Request<pb::WithdrawRequest>) -> Result<Response<pb::WithdrawResponse>, Status> {
        let r = request.into_inner();
        let w = new_withdrawal(&self.state.dict, &r.dataflow, &r.series_key, &r.reason).map_err(Status::invalid_argument)?;
        // Synced store writes: off the runtime's threads.
        let (state, stored) = (self.state.clone(), w.clone());
        tokio::task::spawn_blocking(move || state.store.withdraw(&stored).and_then(|()| state.refresh_withdrawals()))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        self.state.changed();
        admin_event(&self.state, "withdraw", "ok", format!("{}: {}", w.id(), w.reason)).await?;
        tracing::warn!(withdrawal = %w.id(), reason = %w.reason, "withdrawn");
        Ok(Response::new(pb::WithdrawResponse { id: w.id() }))
    }

    async fn reinstate(&self, request: Request<pb::ReinstateRequest>) -> Result<Response<pb::ReinstateResponse>, Status> {
        let r = request.into_inner();
        let (state, dataflow, series) = (self.state.clone(), r.dataflow.clone(), r.series_key.clone());
        let removed = tokio::task::spawn_blocking(move || {
            let removed = state.store.reinstate(&dataflow, &series)?;
            state.refresh_withdrawals()?;
            Ok::<_, crate::Error>(removed)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        self.state.changed();
        admin_event(&self.state, "reinstate", if removed { "ok" } else { "none" }, format!("{} {}", r.dataflow, r.series_key)).await?;
        Ok(Response::new(pb::ReinstateResponse { removed }))
    }

    async fn import(&self, request: Request<pb::ImportRequest>) -> Result<Response<pb::ImportResponse>, Status> {
        let r = request.into_inner();
        let format = match r.format.as_str() {
            "" => None,
            f => Some(f.parse::<Format>().map_err(Status::invalid_argument)?),
        };
        if !r.table.is_empty() {
            let state = self.state.clone();
            let (path, table) = (std::path::PathBuf::from(&r.path), r.table.clone());
            let result = tokio::task::spawn_blocking(move || {
                crate::microdata::import_records(&state.store, &state.dict, &table, &path, &indicatif::ProgressBar::hidden())
            })
            .await
            .map_err(internal)?;
            self.state.changed();
            return match result {
                Ok(report) => {
                    // No record count in the log: auditors read it, and the size of
                    // an import is a figure of the microdata like any other.
                    admin_event(&self.state, "import", "ok", format!("{}: unit records into {}", r.path, report.table)).await?;
                    Ok(Response::new(pb::ImportResponse { observations: report.records, dataflows: vec![report.table] }))
                }
                Err(crate::Error::Import(e)) => {
                    admin_event(&self.state, "import", "failed", format!("{}: {} problems", r.path, e.problems.len())).await?;
                    Err(Status::invalid_argument(e.to_string()))
                }
                Err(e @ (crate::Error::Invalid(_) | crate::Error::Io { .. })) => Err(Status::invalid_argument(e.to_string())),
                Err(e) => Err(internal(e)),
            };
        }
        let state = self.state.clone();
        let path = std::path::PathBuf::from(&r.path);
        let result = tokio::task::spawn_blocking(move || {
            import::import(&state.store, &state.dict, state.member(), &[(path, format)], &indicatif::ProgressBar::hidden())
        })
        .await
        .map_err(internal)?;
        self.state.changed();
        match result {
            Ok(report) => {
                admin_event(&self.state, "import", "ok", format!("{}: {} observations", r.path, report.observations)).await?;
                Ok(Response::new(pb::ImportResponse { observations: report.observations, dataflows: report.dataflows.into_iter().collect() }))
            }
            Err(crate::Error::Import(e)) => {
                admin_event(&self.state, "import", "failed", format!("{}: {} problems", r.path, e.problems.len())).await?;
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => Err(internal(e)),
        }
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let state = self.state.clone();
        let (observations, withdrawals, microdata) = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::Error>((state.store.count()?, state.store.withdrawals()?, crate::microdata::record_counts(&state.store, &state.dict)?))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(Response::new(pb::StatusResponse {
            member: self.state.member().to_owned(),
            policy_version: self.state.policy().version.clone(),
            dictionary_version: self.state.dict.version.clone(),
            observations,
            withdrawals: withdrawals.iter().map(|w| format!("{}: {} (since {})", w.id(), w.reason, w.at)).collect(),
            events: self.state.log.len(),
            log_checkpoint: self.state.log.latest().note.clone(),
            log_vkey: self.state.log.signer().verifier().to_string(),
            witnessed: self.state.witnessed.iter().find_map(|origin| self.state.log.witnessed(origin).ok().flatten()).unwrap_or_default(),
            microdata: microdata.into_iter().filter(|(_, n)| *n > 0).map(|(t, n)| format!("{t}: {n} records")).collect(),
        }))
    }

    async fn backup(&self, request: Request<pb::BackupRequest>) -> Result<Response<pb::BackupResponse>, Status> {
        let path = std::path::PathBuf::from(request.into_inner().path);
        if !path.is_absolute() {
            return Err(Status::invalid_argument(format!("backup path {} must be absolute (the node's working directory is not yours)", path.display())));
        }
        let state = self.state.clone();
        let result = tokio::task::spawn_blocking(move || crate::backup::backup(state.member(), &state.store, &state.log, &path)).await.map_err(internal)?;
        match result {
            Ok(m) => {
                admin_event(&self.state, "backup", "ok", format!("{} observations, {} log entries", m.observations, m.log_entries)).await?;
                Ok(Response::new(pb::BackupResponse { observations: m.observations, log_entries: m.log_entries, checkpoint: m.checkpoint }))
            }
            Err(crate::Error::Invalid(why)) => Err(Status::invalid_argument(why)),
            Err(e) => Err(internal(e)),
        }
    }

    async fn preview(&self, request: Request<pb::PreviewRequest>) -> Result<Response<pb::PreviewResponse>, Status> {
        let r = request.into_inner();
        let who: Identity = r.requester.parse().map_err(|e| Status::invalid_argument(format!("requester {:?}: {e}", r.requester)))?;
        let q = r.query.ok_or_else(|| Status::invalid_argument("a preview needs a query"))?;
        let policy = if r.policy.is_empty() {
            self.state.policy()
        } else {
            Arc::new(Policy::parse(&r.policy, std::path::Path::new("candidate policy"), &self.state.dict).map_err(|e| Status::invalid_argument(e.to_string()))?)
        };
        let state = self.state.clone();
        let answer = tokio::task::spawn_blocking(move || answer_any(&state, &policy, &who, &q, false))
            .await
            .map_err(internal)?
            .map_err(internal)?
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::PreviewResponse { decision: Some(answer.decision), cells: answer.cells }))
    }

    async fn own(&self, request: Request<pb::Query>) -> Result<Response<pb::PreviewResponse>, Status> {
        let q = request.into_inner();
        let state = self.state.clone();
        let cells = tokio::task::spawn_blocking(move || crate::query::own(&state.store, &state.dict, &q))
            .await
            .map_err(internal)?
            .map_err(internal)?
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::PreviewResponse { decision: None, cells }))
    }

    async fn ask(&self, request: Request<pb::AskRequest>) -> Result<Response<pb::AskResponse>, Status> {
        let st = &self.state;
        let asker = crate::peer::Asker { identity: &st.identity, log: &st.log, client_tls: &st.client_tls };
        crate::peer::ask(asker, request.into_inner()).await.map(Response::new)
    }

    async fn reload(&self, _: Request<pb::ReloadRequest>) -> Result<Response<pb::ReloadResponse>, Status> {
        let state = self.state.clone();
        match tokio::task::spawn_blocking(move || state.reload_policy()).await.map_err(internal)? {
            Ok(p) => Ok(Response::new(pb::ReloadResponse { policy_version: p.version.clone() })),
            Err(e) => Err(Status::invalid_argument(format!("{e}; the previous policy stays in force"))),
        }
    }
}

/// Checks a withdrawal request against the dictionary.
pub fn new_withdrawal(dict: &Dictionary, dataflow: &str, series_key: &str, reason: &str) -> Result<Withdrawal, String> {
    if reason.trim().is_empty() {
        return Err("a withdrawal needs a reason".into());
    }
    if dict.microdata(dataflow).is_some() {
        if !series_key.is_empty() {
            return Err(format!("{dataflow} is a microdata table: it is withdrawn whole (no series key)"));
        }
        return Ok(Withdrawal {
            dataflow: dataflow.to_owned(),
            series_key: String::new(),
            reason: reason.trim().to_owned(),
            at: time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        });
    }
    let flow = dict.dataflow(dataflow).ok_or_else(|| format!("unknown dataflow {dataflow:?}"))?;
    if !series_key.is_empty() {
        let parts: Vec<&str> = series_key.split('.').collect();
        if parts.len() != flow.dimensions.len() {
            return Err(format!(
                "series key {series_key:?} has {} parts; {} has {} dimensions ({}), e.g. {}",
                parts.len(),
                flow.id,
                flow.dimensions.len(),
                flow.dimensions.join("."),
                vec![""; flow.dimensions.len()].join(".")
            ));
        }
        for (part, dim) in parts.iter().zip(&flow.dimensions) {
            for code in part.split('+').filter(|c| !c.is_empty()) {
                if !dict.has_code(dim, code) {
                    return Err(format!("unknown code {code:?} for {dim} in series key {series_key:?}"));
                }
            }
        }
    }
    Ok(Withdrawal {
        dataflow: dataflow.to_owned(),
        series_key: series_key.to_owned(),
        reason: reason.trim().to_owned(),
        at: time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    })
}
