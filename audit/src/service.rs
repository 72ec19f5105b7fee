//! The gRPC `Audit` service (reading a log) and `Witness` service
//! (cosigning another log's checkpoints), served by node and hub.

use std::sync::Arc;

use tabadul_certs::tls::peer_of;
use tabadul_certs::{Identity, Role};
use tabadul_proto::pb;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::checkpoint::Checkpoint;
use crate::log::Log;
use crate::merkle;
use crate::note::{Note, Signer, Verifier};

/// Most entries one `Entries` call returns.
pub const MAX_ENTRIES_PER_CALL: u64 = 1000;
/// Most checkpoints one `Checkpoints` call returns.
pub const MAX_CHECKPOINTS_PER_CALL: usize = 1000;
/// gRPC metadata key carrying the witness's latest cosigned size on a
/// conflict (tlog-witness's 409 body).
pub const TLOG_SIZE_METADATA: &str = "tlog-size";

/// Who may read a log besides auditors of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Auditors only (the hub's log).
    Auditors,
    /// Auditors, and the hub for checkpoints and proofs (a node's log),
    /// so it can check receipts; never entries.
    AuditorsAndHubProofs,
}

#[derive(Debug, Clone)]
pub struct AuditService {
    pub log: Arc<Log>,
    /// Our own identity; only peers of its network are served.
    pub identity: Identity,
    pub readers: Readers,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "audit service error");
    Status::internal("internal error reading the log; see the server log")
}

fn invalid(e: crate::Error) -> Status {
    match e {
        crate::Error::Invalid(why) => Status::out_of_range(why),
        other => internal(other),
    }
}

impl AuditService {
    fn allow<T>(&self, request: &Request<T>, entries: bool) -> Result<Identity, Status> {
        let peer = peer_of(request).ok_or_else(|| Status::unauthenticated("no verified client certificate"))?;
        let who = &peer.identity;
        let ok = who.network() == self.identity.network()
            && match who.role() {
                Role::Auditor => true,
                Role::Hub => self.readers == Readers::AuditorsAndHubProofs && !entries,
                _ => false,
            };
        if !ok {
            tracing::warn!(peer = %who, "audit request refused");
            return Err(Status::permission_denied(format!(
                "{who} may not read {}: {}",
                if entries { "entries of this log" } else { "this log" },
                match self.readers {
                    Readers::Auditors => "auditors of the network only",
                    Readers::AuditorsAndHubProofs => "auditors read everything; the hub reads checkpoints and proofs only",
                }
            )));
        }
        Ok(who.clone())
    }
}

fn hashes(proof: Vec<merkle::Hash>) -> pb::ProofResponse {
    pb::ProofResponse { hashes: proof.into_iter().map(|h| h.to_vec()).collect() }
}

#[tonic::async_trait]
impl pb::audit_server::Audit for AuditService {
    async fn checkpoint(&self, request: Request<pb::CheckpointRequest>) -> Result<Response<pb::CheckpointResponse>, Status> {
        let who = self.allow(&request, false)?;
        let size = request.into_inner().size;
        let _span = tracing::info_span!("audit_checkpoint", peer = %who, size).entered();
        let checkpoint = if size == 0 {
            self.log.latest().note.clone()
        } else {
            self.log.checkpoint_at(size).map_err(internal)?.ok_or_else(|| Status::not_found(format!("no checkpoint was made at size {size}")))?
        };
        let cosigned = self.log.cosigned().map_err(internal)?.unwrap_or_default();
        Ok(Response::new(pb::CheckpointResponse { checkpoint, cosigned }))
    }

    async fn checkpoints(&self, request: Request<pb::CheckpointsRequest>) -> Result<Response<pb::CheckpointsResponse>, Status> {
        let who = self.allow(&request, false)?;
        let r = request.into_inner();
        let _span = tracing::info_span!("audit_checkpoints", peer = %who, from = r.from_size, to = r.to_size).entered();
        let limit = match r.limit as usize {
            0 => MAX_CHECKPOINTS_PER_CALL,
            n => n.min(MAX_CHECKPOINTS_PER_CALL),
        };
        let to = if r.to_size == 0 { u64::MAX } else { r.to_size };
        let list = self.log.checkpoints(r.from_size, to, limit).map_err(internal)?;
        Ok(Response::new(pb::CheckpointsResponse { checkpoints: list.into_iter().map(|(_, n)| n).collect() }))
    }

    async fn entries(&self, request: Request<pb::EntriesRequest>) -> Result<Response<pb::EntriesResponse>, Status> {
        let who = self.allow(&request, true)?;
        let r = request.into_inner();
        let _span = tracing::info_span!("audit_entries", peer = %who, start = r.start, end = r.end).entered();
        if r.end < r.start {
            return Err(Status::invalid_argument(format!("end {} is before start {}", r.end, r.start)));
        }
        let end = r.end.min(r.start.saturating_add(MAX_ENTRIES_PER_CALL));
        let entries = self.log.entries(r.start, end).map_err(internal)?;
        Ok(Response::new(pb::EntriesResponse { entries }))
    }

    async fn inclusion_proof(&self, request: Request<pb::InclusionProofRequest>) -> Result<Response<pb::ProofResponse>, Status> {
        let who = self.allow(&request, false)?;
        let r = request.into_inner();
        let _span = tracing::info_span!("audit_inclusion", peer = %who, index = r.index, size = r.tree_size).entered();
        self.log.inclusion_proof(r.index, r.tree_size).map(hashes).map(Response::new).map_err(invalid)
    }

    async fn consistency_proof(&self, request: Request<pb::ConsistencyProofRequest>) -> Result<Response<pb::ProofResponse>, Status> {
        let who = self.allow(&request, false)?;
        let r = request.into_inner();
        let _span = tracing::info_span!("audit_consistency", peer = %who, old = r.old_size, new = r.new_size).entered();
        self.log.consistency_proof(r.old_size, r.new_size).map(hashes).map(Response::new).map_err(invalid)
    }
}

/// A witness (tlog-witness) for the logs whose keys it trusts: it cosigns
/// a checkpoint only if it is consistent with the last one it cosigned
/// for that origin, and records the new one before answering.
#[derive(Debug)]
pub struct WitnessService {
    /// Our own log: its database keeps the witness state.
    pub log: Arc<Log>,
    /// The key that cosigns; by default (None) the log's own key, which a
    /// deployment should avoid: one key, one purpose.
    pub cosigner: Option<Signer>,
    /// Trusted log keys, by origin.
    pub trusted: Vec<Verifier>,
    pub identity: Identity,
    /// Makes check-then-persist atomic (tlog-witness's rollback race).
    pub lock: tokio::sync::Mutex<()>,
}

impl WitnessService {
    pub fn new(log: Arc<Log>, trusted: Vec<Verifier>, identity: Identity) -> Self {
        WitnessService { log, cosigner: None, trusted, identity, lock: tokio::sync::Mutex::new(()) }
    }

    /// Cosigns with `key` instead of the log's key.
    pub fn with_cosigner(mut self, key: Signer) -> Self {
        self.cosigner = Some(key);
        self
    }

    /// Runs the add-checkpoint checks; returns the cosignature line(s).
    pub async fn add_checkpoint(&self, r: &pb::AddCheckpointRequest) -> Result<String, Status> {
        let note = Note::parse(&r.checkpoint).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let body = Checkpoint::parse(&note.text).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let key = self
            .trusted
            .iter()
            .find(|v| v.name() == body.origin)
            .ok_or_else(|| Status::not_found(format!("this witness does not know log {:?}", body.origin)))?;
        note.verify_by(key).map_err(|e| Status::permission_denied(e.to_string()))?;
        if r.old_size > body.size {
            return Err(Status::invalid_argument(format!("old size {} is larger than the checkpoint's {}", r.old_size, body.size)));
        }
        let _guard = self.lock.lock().await;
        let last = match self.log.witnessed(&body.origin).map_err(internal)? {
            Some(text) => Some(Checkpoint::parse(&Note::parse(&text).map_err(internal)?.text).map_err(internal)?),
            None => None,
        };
        let last_size = last.as_ref().map_or(0, |c| c.size);
        if r.old_size != last_size {
            let mut status = Status::failed_precondition(format!("the latest checkpoint cosigned for {} has size {last_size}", body.origin));
            status.metadata_mut().insert(TLOG_SIZE_METADATA, last_size.to_string().parse().map_err(internal)?);
            return Err(status);
        }
        match &last {
            None if !r.consistency_proof.is_empty() => {
                return Err(Status::aborted("a checkpoint first seen needs no consistency proof (old size 0)"));
            }
            None if body.size == 0 && body.root != merkle::empty_root() => {
                return Err(Status::aborted("a size-0 checkpoint must carry the empty tree's root"));
            }
            None => {}
            Some(last) if last.size == body.size && (last.root != body.root || !r.consistency_proof.is_empty()) => {
                tracing::error!(origin = %body.origin, size = body.size, "log signed two roots for one size");
                return Err(Status::aborted(format!("conflicting root for size {}: this witness cosigned another one", body.size)));
            }
            Some(last) if last.size == body.size => {}
            Some(last) => {
                merkle::verify_consistency(last.size, body.size, &last.root, &body.root, &r.consistency_proof).map_err(|e| {
                    tracing::error!(origin = %body.origin, old = last.size, new = body.size, error = %e, "inconsistent checkpoint refused");
                    Status::aborted(format!("checkpoint {} is not consistent with cosigned checkpoint {}: {e}", body.size, last.size))
                })?;
            }
        }
        // Crash point: the new checkpoint is recorded (synced) before the
        // cosignature leaves; a crash here only means a retry is answered
        // with a conflict carrying the new size.
        self.log.set_witnessed(&body.origin, &r.checkpoint).map_err(internal)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp().max(1) as u64;
        self.cosigner.as_ref().unwrap_or(self.log.signer()).cosign(&note.text, now).map_err(internal)
    }
}

#[tonic::async_trait]
impl pb::witness_server::Witness for WitnessService {
    async fn add_checkpoint(&self, request: Request<pb::AddCheckpointRequest>) -> Result<Response<pb::AddCheckpointResponse>, Status> {
        let peer = peer_of(&request).ok_or_else(|| Status::unauthenticated("no verified client certificate"))?.identity.clone();
        if peer.network() != self.identity.network() || peer.role() != Role::Hub {
            return Err(Status::permission_denied(format!("{peer} may not submit checkpoints: only the network's hub does")));
        }
        let r = request.into_inner();
        let span = tracing::info_span!("witness_add_checkpoint", peer = %peer, old = r.old_size);
        let cosignatures = WitnessService::add_checkpoint(self, &r).instrument(span).await?;
        Ok(Response::new(pb::AddCheckpointResponse { cosignatures }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::note::Signer;
    use crate::{Entry, LogOptions};

    /// A hub log with `n` entries, and its checkpoints at each size.
    fn hub_log(dir: &std::path::Path, n: usize) -> (Arc<Log>, Vec<String>) {
        let log = Arc::new(Log::open_with(dir, Signer::generate("alo/hub/alo").unwrap(), LogOptions { publish_interval: std::time::Duration::ZERO }).unwrap());
        let mut notes = vec![log.latest().note.clone()];
        for _ in 0..n {
            log.append(&Entry::now("federated-query", "op"), None).unwrap();
            notes.push(log.latest().note.clone());
        }
        (log, notes)
    }

    fn request(old_size: u64, proof: Vec<merkle::Hash>, checkpoint: &str) -> pb::AddCheckpointRequest {
        pb::AddCheckpointRequest { old_size, consistency_proof: proof.iter().map(|h| h.to_vec()).collect(), checkpoint: checkpoint.to_owned() }
    }

    #[tokio::test]
    async fn the_witness_follows_tlog_witness() {
        let (hub_dir, node_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (hub, notes) = hub_log(hub_dir.path(), 6);
        let node = Arc::new(Log::open(node_dir.path(), Signer::generate("alo/node/MAR").unwrap()).unwrap());
        let me: Identity = "spiffe://alo/node/MAR".parse().unwrap();
        let w = WitnessService::new(node.clone(), vec![hub.signer().verifier()], me);
        let cosigner = node.signer().cosignature_verifier();

        // First sight: old size 0, no proof.
        let line = w.add_checkpoint(&request(0, vec![], &notes[3])).await.unwrap();
        let mut n = Note::parse(&notes[3]).unwrap();
        n.add_lines(&line).unwrap();
        assert!(n.verify_by(&cosigner).unwrap().is_some());
        // 409: the caller's old size is not what we cosigned; we say ours.
        let e = w.add_checkpoint(&request(0, vec![], &notes[5])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(e.metadata().get(TLOG_SIZE_METADATA).unwrap(), "3");
        // 422: a proof that does not lead from 3 to 5.
        let mut bad = hub.consistency_proof(3, 5).unwrap();
        bad[0][0] ^= 1;
        assert_eq!(w.add_checkpoint(&request(3, bad, &notes[5])).await.unwrap_err().code(), tonic::Code::Aborted);
        // 200 with the right proof; the state moves to 5.
        w.add_checkpoint(&request(3, hub.consistency_proof(3, 5).unwrap(), &notes[5])).await.unwrap();
        assert_eq!(crate::offline::peek(&node.witnessed("alo/hub/alo").unwrap().unwrap()).unwrap().size, 5);
        // 400: old size beyond the checkpoint (a rollback attempt).
        assert_eq!(w.add_checkpoint(&request(5, vec![], &notes[4])).await.unwrap_err().code(), tonic::Code::InvalidArgument);
        // 403: signed by someone else under the hub's name.
        let impostor = Signer::generate("alo/hub/alo").unwrap();
        let forged = impostor.sign(&Note::parse(&notes[6]).unwrap().text).unwrap();
        assert_eq!(w.add_checkpoint(&request(5, hub.consistency_proof(5, 6).unwrap(), &forged)).await.unwrap_err().code(), tonic::Code::PermissionDenied);
        // 404: a log this witness does not know.
        let stranger = Signer::generate("other/log").unwrap();
        let body = Checkpoint { origin: "other/log".into(), size: 0, root: merkle::empty_root(), extensions: vec![] }.body();
        assert_eq!(w.add_checkpoint(&request(0, vec![], &stranger.sign(&body).unwrap())).await.unwrap_err().code(), tonic::Code::NotFound);
        // Nothing above moved the state.
        assert_eq!(crate::offline::peek(&node.witnessed("alo/hub/alo").unwrap().unwrap()).unwrap().size, 5);
    }
}
