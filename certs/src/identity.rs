use std::fmt;
use std::str::FromStr;

use crate::Error;

/// What a certificate holder is in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A member state's node; its id is the ISO 3166-1 alpha-3 code.
    Node,
    /// The ALO hub that federates queries.
    Hub,
    /// A person or system at the ALO that queries through the hub.
    Operator,
    /// An auditor who reads logs.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Node, Role::Hub, Role::Operator, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Hub => "hub",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::Invalid { what: "role", reason: format!("{s:?} is not one of node, hub, operator, auditor") })
    }
}

/// A verified peer identity: `spiffe://<network>/<role>/<id>`.
///
/// Only constructed from a string that passes [`Identity::from_str`], so a
/// value of this type is always well formed; it is *trusted* only when it
/// came out of a verified handshake ([`crate::tls::PeerInfo`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    network: String,
    role: Role,
    id: String,
}

impl Identity {
    pub fn new(network: &str, role: Role, id: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadIdentity { input: format!("spiffe://{network}/{role}/{id}"), reason };
        if network.is_empty() || network.len() > 63 || !network.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.') {
            return Err(bad("network must be 1-63 characters of a-z, 0-9, '-' and '.'".into()));
        }
        match role {
            Role::Node => {
                if id.len() != 3 || !id.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(bad("a node's id is an ISO 3166-1 alpha-3 code such as MAR".into()));
                }
            }
            _ => {
                if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
                    return Err(bad("id must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' and '.'".into()));
                }
            }
        }
        Ok(Identity { network: network.to_owned(), role, id: id.to_owned() })
    }

    pub fn network(&self) -> &str {
        &self.network
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/{}/{}", self.network, self.role, self.id)
    }
}

impl FromStr for Identity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadIdentity { input: s.to_owned(), reason: reason.to_owned() };
        let rest = s.strip_prefix("spiffe://").ok_or_else(|| bad("must start with spiffe://"))?;
        let mut parts = rest.split('/');
        let (Some(network), Some(role), Some(id), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected spiffe://<network>/<role>/<id>"));
        };
        let role = role.parse::<Role>().map_err(|_| bad("role must be node, hub, operator or auditor"))?;
        Identity::new(network, role, id)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: Identity = "spiffe://alo/node/MAR".parse().unwrap();
        assert_eq!(id.role(), Role::Node);
        assert_eq!(id.id(), "MAR");
        assert_eq!(id.network(), "alo");
        assert_eq!(id.to_string(), "spiffe://alo/node/MAR");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "spiffe://alo/node/mar",
            "spiffe://alo/node/MARO",
            "spiffe://alo/king/x",
            "https://alo/node/MAR",
            "spiffe://alo/node/MAR/extra",
            "spiffe://ALO/hub/alo",
            "spiffe:///hub/alo",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad} accepted");
        }
    }
}
