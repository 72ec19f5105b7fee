//! The operator API: `Hub.FederatedQuery`.

use std::sync::Arc;

use tabadul_audit::Entry;
use tabadul_certs::Role;
use tabadul_certs::tls::peer_of;
use tabadul_proto::pb;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::federate::{Caller, Failure, federate};
use crate::state::HubState;

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
    async fn federated_query(&self, request: Request<pb::FederatedQueryRequest>) -> Result<Response<pb::FederatedQueryResponse>, Status> {
        let peer = peer_of(&request).ok_or_else(|| Status::unauthenticated("no verified client certificate"))?.clone();
        let req = request.into_inner();
        let query = req.query.clone().unwrap_or_default();
        let digest = tabadul_proto::query_digest(&query);
        let span = tracing::info_span!("federated_query", peer = %peer.identity, dataflow = %query.dataflow, digest = %&digest[..16]);
        async move {
            let state = &self.state;
            if peer.identity.role() != Role::Operator || peer.identity.network() != state.identity.network() {
                let refusal = Status::permission_denied(format!(
                    "{} may not use the operator API: it is open to operators of network {:?} only",
                    peer.identity,
                    state.identity.network()
                ));
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
            let caller = Caller { name: peer.identity.to_string(), audience: "" };
            match federate(state, &caller, req).await {
                Ok(f) => Ok(Response::new(f.response)),
                Err(Failure::Invalid(m)) => Err(Status::invalid_argument(m)),
                Err(Failure::Internal(m)) => Err(Status::internal(m)),
                Err(Failure::Busy(m)) => Err(Status::resource_exhausted(m)),
            }
        }
        .instrument(span)
        .await
    }
}
