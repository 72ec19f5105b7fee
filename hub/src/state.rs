//! What every door of the hub shares: the members, the log, the cache and
//! admission (`HubState`), and the words for member states. The gRPC
//! service and the HTTP front door both build on it; it depends on
//! neither.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tabadul_audit::Log;
use tabadul_certs::Identity;
use tabadul_proto::Dictionary;
use tabadul_proto::pb::MemberState;

use crate::member::Member;

#[derive(Debug)]
pub(crate) struct HubState {
    pub identity: Identity,
    pub dict: Arc<Dictionary>,
    /// The members federated now; replaced whole when a new network
    /// directory is applied (`roster.rs`). Read with [`HubState::members`].
    pub(crate) members: std::sync::RwLock<Arc<BTreeMap<String, Member>>>,
    /// The signed network directory the members came from, if configured.
    pub directory: Option<crate::directory::Held>,
    /// The hub's signed exchange log.
    pub log: Arc<Log>,
    pub metrics: Arc<tabadul_telemetry::Registry>,
    pub default_deadline: Duration,
    pub max_deadline: Duration,
    pub cache: crate::cache::AnswerCache,
    /// How many federated queries are worked on at once, and how many wait.
    pub admission: crate::admission::Admission,
}

impl HubState {
    /// The members as they are now: a snapshot that a query keeps to its end.
    pub fn members(&self) -> Arc<BTreeMap<String, Member>> {
        self.members.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_members(&self, members: BTreeMap<String, Member>) {
        *self.members.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(members);
    }
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
