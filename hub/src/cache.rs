//! Federated answers kept for reuse, each valid only while every member
//! that contributed to it is still at the generation it answered under.
//!
//! A node's generation changes the moment a withdrawal, a reinstatement, a
//! policy reload or an import takes effect (and on every restart), and the
//! node reads it *before* computing an answer. So before a cached answer is
//! served, the hub asks each of its members for their current generation
//! (`Node.Generation`, one tiny call each, concurrently): any difference,
//! or any member that does not say, and the answer is dropped and asked
//! afresh. A withdrawn series is therefore never served from the cache once
//! the node has acknowledged the withdrawal. The time limit only bounds how
//! long an embargo that lifted meanwhile stays unseen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tabadul_audit::ReceiptRef;
use tabadul_proto::pb;

/// One reusable answer.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The answer as first given, without the hub's receipt (each serving
    /// gets its own log entry and receipt).
    pub response: pb::FederatedQueryResponse,
    /// The node receipts it was built on, with the dataflow each answered.
    pub receipts: Vec<(ReceiptRef, String)>,
    /// Member code and the generation its answers were computed under.
    pub generations: Vec<(String, String)>,
    filled: Instant,
}

impl Cached {
    pub fn new(response: pb::FederatedQueryResponse, receipts: Vec<(ReceiptRef, String)>, generations: Vec<(String, String)>) -> Self {
        Cached { response, receipts, generations, filled: Instant::now() }
    }
}

/// The hub's answer cache: bounded in entries and age.
#[derive(Debug)]
pub struct AnswerCache {
    entries: Mutex<HashMap<String, Cached>>,
    max_entries: usize,
    max_age: Duration,
}

impl AnswerCache {
    /// `max_entries == 0` turns caching off.
    pub fn new(max_entries: usize, max_age: Duration) -> Self {
        AnswerCache { entries: Mutex::new(HashMap::new()), max_entries, max_age }
    }

    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }

    /// The entry under `key` if it is young enough; its generations still
    /// have to be checked with the members.
    pub fn get(&self, key: &str) -> Option<Cached> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some(c) if c.filled.elapsed() <= self.max_age => Some(c.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, key: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    pub fn put(&self, key: String, value: Cached) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_entries && !entries.contains_key(&key) {
            // Evict the oldest: answers age out anyway, so recency of use
            // matters less than keeping this simple and bounded.
            if let Some(oldest) = entries.iter().min_by_key(|(_, c)| c.filled).map(|(k, _)| k.clone()) {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The cache key of a federated request: the query (its digest, which
/// covers the audience), the members asked and whether an aggregate was.
pub fn key(request: &pb::FederatedQueryRequest) -> String {
    let query = request.query.clone().unwrap_or_default();
    let mut members = request.members.clone();
    members.sort();
    members.dedup();
    format!("{}|{}|{}", tabadul_proto::query_digest(&query), members.join(","), request.regional_aggregate)
}

/// The generations a set of member answers were computed under, when the
/// whole answer may be cached: every member answered or refused (an
/// unreachable member must be asked again next time), each said its
/// generation, and said the same one in every part of the answer.
pub fn generations_of(answers: &[&crate::fanout::MemberAnswer]) -> Option<Vec<(String, String)>> {
    let mut seen: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for a in answers {
        let ok = matches!(pb::MemberState::try_from(a.status.state), Ok(pb::MemberState::Answered | pb::MemberState::RefusedByPolicy));
        if !ok || a.generation.is_empty() {
            return None;
        }
        match seen.get(&a.status.member) {
            Some(g) if *g != a.generation => return None,
            Some(_) => {}
            None => {
                seen.insert(a.status.member.clone(), a.generation.clone());
            }
        }
    }
    Some(seen.into_iter().collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cached(tag: &str) -> Cached {
        Cached::new(pb::FederatedQueryResponse { query_digest: tag.into(), ..Default::default() }, vec![], vec![])
    }

    #[test]
    fn bounded_and_ages_out() {
        let cache = AnswerCache::new(2, Duration::from_millis(50));
        cache.put("a".into(), cached("a"));
        cache.put("b".into(), cached("b"));
        cache.put("c".into(), cached("c"));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a").is_none(), "the oldest was evicted");
        assert_eq!(cache.get("c").unwrap().response.query_digest, "c");
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("c").is_none(), "too old");
    }

    #[test]
    fn off_means_nothing_is_kept() {
        let cache = AnswerCache::new(0, Duration::from_secs(60));
        cache.put("a".into(), cached("a"));
        assert!(cache.get("a").is_none());
    }

    #[test]
    fn key_ignores_member_order_but_not_the_audience() {
        let q = pb::Query { dataflow: "UNE_RATE".into(), ..Default::default() };
        let a = pb::FederatedQueryRequest { query: Some(q.clone()), members: vec!["TUN".into(), "MAR".into()], ..Default::default() };
        let b = pb::FederatedQueryRequest { query: Some(q.clone()), members: vec!["MAR".into(), "TUN".into()], ..Default::default() };
        assert_eq!(key(&a), key(&b));
        let public = pb::FederatedQueryRequest { query: Some(pb::Query { audience: "public".into(), ..q }), ..b.clone() };
        assert_ne!(key(&public), key(&b));
    }
}
