//! The directory's contents, and the rules a document must follow before
//! anyone uses it (names, keys and origins that agree with each other).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tabadul_audit::Verifier;

use crate::Error;

/// The format's name, the first field of every document.
pub const FORMAT: &str = "tabadul-directory/v1";

/// One version of the network directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Always [`FORMAT`].
    pub format: String,
    /// The network (`spiffe://<network>/...`), e.g. `alo`.
    pub network: String,
    /// 1, 2, ...: each new version is one more than the last.
    pub version: u64,
    /// SHA-256 (hex) of the previous version's signed note; absent on version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// When the authority signed it (RFC 3339).
    pub issued: String,
    /// Where the network's CRL is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_url: Option<String>,
    pub dictionary: DictionaryRef,
    /// How many of the members' witness keys must cosign a hub checkpoint
    /// for an auditor to accept it.
    pub witness_quorum: usize,
    pub hubs: Vec<HubEntry>,
    pub members: Vec<MemberEntry>,
}

/// The data dictionary every participant must use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DictionaryRef {
    /// The dictionary's own `version`.
    pub version: String,
    /// SHA-256 (hex) of the dictionary file's bytes.
    pub sha256: String,
}

/// A hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubEntry {
    /// The `<id>` of `spiffe://<network>/hub/<id>`.
    pub id: String,
    /// gRPC (mutual TLS): federated queries and its `Audit` service.
    pub endpoint: String,
    /// The HTTPS front door, where the directory itself is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<String>,
    /// Its log's verifier key (`<network>/hub/<id>+...`).
    pub log_vkey: String,
}

/// A member state's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    /// ISO 3166-1 alpha-3.
    pub code: String,
    /// `host:port` of its node's gRPC listener.
    pub endpoint: String,
    /// Its log's verifier key (`<network>/node/<code>+...`).
    pub log_vkey: String,
    /// Keys its log was signed with before (after a rotation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_log_vkeys: Vec<String>,
    /// Its witness key (`<network>/witness/<code>+...`), if it witnesses
    /// the hubs' logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_vkey: Option<String>,
}

fn refused(why: String) -> Error {
    Error::Refused(why)
}

/// Parses `vkey` and checks it is for `origin`.
fn key_for(vkey: &str, origin: &str, what: &str) -> Result<Verifier, Error> {
    let v = Verifier::parse(vkey).map_err(|e| refused(format!("{what}: {e}")))?;
    if v.name() != origin {
        return Err(refused(format!("{what} is a key for {:?}, expected {origin:?}", v.name())));
    }
    Ok(v)
}

impl Directory {
    /// Everything a consumer relies on, checked: the format, member codes
    /// and hub ids unique and well-formed, every key parsed and named for
    /// its own origin, the quorum satisfiable.
    pub fn validate(&self) -> Result<(), Error> {
        if self.format != FORMAT {
            return Err(refused(format!("format {:?} is not {FORMAT:?}", self.format)));
        }
        if self.network.is_empty() || !self.network.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(refused(format!("network {:?} is not a network name", self.network)));
        }
        if self.version == 0 {
            return Err(refused("version 0: versions start at 1".into()));
        }
        match (&self.previous, self.version) {
            (Some(_), 1) => return Err(refused("version 1 names a previous version".into())),
            (None, v) if v > 1 => return Err(refused(format!("version {v} does not name its previous version"))),
            (Some(p), _) if p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {
                return Err(refused(format!("previous {p:?} is not a lower-case hex SHA-256")));
            }
            _ => {}
        }
        time::OffsetDateTime::parse(&self.issued, &time::format_description::well_known::Rfc3339)
            .map_err(|e| refused(format!("issued {:?}: {e}", self.issued)))?;
        if self.dictionary.sha256.len() != 64 || hex::decode(&self.dictionary.sha256).is_err() {
            return Err(refused(format!("dictionary sha256 {:?} is not a hex SHA-256", self.dictionary.sha256)));
        }
        let n = &self.network;
        let mut ids = BTreeSet::new();
        for h in &self.hubs {
            if h.id.is_empty() || !ids.insert(&h.id) {
                return Err(refused(format!("hub {:?} is empty or listed twice", h.id)));
            }
            key_for(&h.log_vkey, &format!("{n}/hub/{}", h.id), &format!("hub {} log_vkey", h.id))?;
        }
        let mut codes = BTreeSet::new();
        let mut witnesses = 0;
        for m in &self.members {
            if m.code.len() != 3 || !m.code.bytes().all(|b| b.is_ascii_uppercase()) || !codes.insert(&m.code) {
                return Err(refused(format!("member {:?} is not an ISO 3166 alpha-3 code, or is listed twice", m.code)));
            }
            if m.endpoint.is_empty() {
                return Err(refused(format!("member {} has no endpoint", m.code)));
            }
            let origin = format!("{n}/node/{}", m.code);
            key_for(&m.log_vkey, &origin, &format!("member {} log_vkey", m.code))?;
            for v in &m.previous_log_vkeys {
                key_for(v, &origin, &format!("member {} previous_log_vkeys", m.code))?;
            }
            if let Some(w) = &m.witness_vkey {
                key_for(w, &format!("{n}/witness/{}", m.code), &format!("member {} witness_vkey", m.code))?;
                witnesses += 1;
            }
        }
        if self.witness_quorum > witnesses {
            return Err(refused(format!("witness quorum {} of {witnesses} witness keys cannot be met", self.witness_quorum)));
        }
        Ok(())
    }

    pub fn member(&self, code: &str) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.code == code)
    }

    pub fn hub(&self, id: &str) -> Option<&HubEntry> {
        self.hubs.iter().find(|h| h.id == id)
    }

    /// The log keys (current first, then earlier ones) of the log named
    /// `origin` (`<network>/node/<code>` or `<network>/hub/<id>`).
    pub fn log_keys(&self, origin: &str) -> Option<Vec<Verifier>> {
        let parse = |v: &String| Verifier::parse(v).ok();
        if let Some(m) = self.members.iter().find(|m| format!("{}/node/{}", self.network, m.code) == origin) {
            return std::iter::once(&m.log_vkey).chain(&m.previous_log_vkeys).map(parse).collect();
        }
        let h = self.hubs.iter().find(|h| format!("{}/hub/{}", self.network, h.id) == origin)?;
        parse(&h.log_vkey).map(|v| vec![v])
    }

    /// The witness policy auditors apply to a hub's log: the members'
    /// witness keys (as cosigner keys) and the quorum.
    pub fn witness_keys(&self) -> Vec<Verifier> {
        self.members.iter().filter_map(|m| m.witness_vkey.as_deref()).filter_map(|v| Verifier::parse(v).ok()).map(|v| v.cosigner()).collect()
    }
}
