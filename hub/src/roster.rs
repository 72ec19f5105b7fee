//! The members the hub federates: each connected from its configuration
//! (a `[[member]]` table, or an entry of the network directory), and the
//! whole set swapped when a newer signed directory is installed, without a
//! restart. A member whose entry did not change keeps its channel, its pin
//! and what the hub learnt about it; a removed member is not asked again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tabadul_audit::{Log, Verifier};
use tabadul_certs::tls::{self, ClientTls};
use tabadul_certs::{Identity, Role};
use tabadul_proto::pb::node_client::NodeClient;
use tabadul_proto::pb::witness_client::WitnessClient;

use crate::Error;
use crate::config::MemberConfig;
use crate::member::Member;
use crate::state::HubState;
use crate::witnessing::Witness;

/// How long the hub waits for a TCP+TLS connection to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The members by code, and the witnesses among them.
pub(crate) type Roster = (BTreeMap<String, Member>, Vec<Witness>);

/// The roster in force, and the entries it was made from.
pub(crate) struct Current<'a> {
    pub entries: &'a [MemberConfig],
    pub members: &'a BTreeMap<String, Member>,
    pub witnesses: &'a [Witness],
}

/// What connecting a member needs besides its entry.
#[derive(Clone)]
pub(crate) struct Connector {
    pub network: String,
    pub client_tls: Arc<ClientTls>,
    pub log: Arc<Log>,
    pub max_in_flight: usize,
}

fn bad(code: &str, what: String) -> Error {
    Error::Config { path: "hub.toml".into(), reason: format!("member {code}: {what}") }
}

impl Connector {
    /// The member (and its witness, if it witnesses) for one entry. The
    /// channel connects lazily: an unreachable node is a status, not an error.
    pub(crate) fn connect(&self, m: &MemberConfig) -> Result<(Member, Option<Witness>), Error> {
        let network = &self.network;
        let expected = match &m.identity {
            Some(id) => id.clone(),
            None => Identity::new(network, Role::Node, &m.code)?,
        };
        let channel = tls::channel(&m.endpoint, tls::Expect::Identity(expected.clone()), self.client_tls.clone(), CONNECT_TIMEOUT)?;
        let log_key = Verifier::parse(&m.log_vkey).map_err(|e| bad(&m.code, format!("log_vkey: {e}")))?;
        let node_origin = format!("{network}/node/{}", m.code);
        if log_key.name() != node_origin {
            return Err(bad(&m.code, format!("log_vkey is for {:?}, expected {node_origin:?}", log_key.name())));
        }
        let witness = if m.witness {
            let key = match &m.witness_vkey {
                Some(v) => {
                    let v = Verifier::parse(v).map_err(|e| bad(&m.code, format!("witness_vkey: {e}")))?;
                    let name = format!("{network}/witness/{}", m.code);
                    if v.name() != name {
                        return Err(bad(&m.code, format!("witness_vkey is for {:?}, expected {name:?}", v.name())));
                    }
                    v.cosigner()
                }
                None => log_key.cosigner(),
            };
            Some(Witness { member: m.code.clone(), client: WitnessClient::new(channel.clone()), key, cosigned_size: 0 })
        } else {
            None
        };
        let client = NodeClient::new(channel.clone()).max_decoding_message_size(16 << 20);
        let previous = m
            .previous_log_vkeys
            .iter()
            .map(|v| {
                let key = Verifier::parse(v).map_err(|e| bad(&m.code, format!("previous_log_vkeys: {e}")))?;
                if key.name() != node_origin {
                    return Err(bad(&m.code, format!("a previous log key is for {:?}, expected {node_origin:?}", key.name())));
                }
                Ok(key)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The pin survives restarts: a node cannot swap its log while the
        // hub is down. After a log key rotation it was signed with a
        // previous key, which still vouches for it.
        let seen = match self.log.pinned(&node_origin)? {
            Some(note) => match std::iter::once(&log_key).chain(&previous).find_map(|key| tabadul_audit::Checkpoint::open(&note, key).ok()) {
                Some((cp, _)) => Some(tabadul_audit::receipt::Seen { size: cp.size, root: cp.root }),
                None => {
                    tracing::warn!(member = %m.code, "stored pin verifies with neither the configured log key nor a previous one; starting afresh (list the old key in previous_log_vkeys after a rotation)");
                    None
                }
            },
            None => None,
        };
        let member = Member {
            code: m.code.clone(),
            identity: expected,
            client,
            log_key,
            seen: Arc::new(std::sync::Mutex::new(seen)),
            audit: tabadul_proto::pb::audit_client::AuditClient::new(channel.clone()),
            forked: Arc::new(std::sync::Mutex::new(self.log.forked(&node_origin)?)),
            used_leaves: Default::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(self.max_in_flight.max(1))),
            pins: Some(self.log.clone()),
            unsettled: Default::default(),
        };
        Ok((member, witness))
    }

    /// Every member of `entries`; a member whose entry is unchanged from
    /// `before` is kept as it is (channel, pin, receipts used).
    pub(crate) fn roster(&self, entries: &[MemberConfig], before: Option<Current<'_>>) -> Result<Roster, Error> {
        let mut members = BTreeMap::new();
        let mut witnesses = Vec::new();
        for m in entries {
            let kept = before.as_ref().and_then(|b| {
                let same = b.entries.iter().find(|o| o.code == m.code).is_some_and(|o| same_entry(o, m));
                let member = b.members.get(&m.code).filter(|_| same)?;
                Some((member.clone(), b.witnesses.iter().find(|w| w.member == m.code).cloned()))
            });
            let (member, witness) = match kept {
                Some(k) => k,
                None => self.connect(m)?,
            };
            members.insert(m.code.clone(), member);
            witnesses.extend(witness);
        }
        Ok((members, witnesses))
    }
}

fn same_entry(a: &MemberConfig, b: &MemberConfig) -> bool {
    a.code == b.code
        && a.endpoint == b.endpoint
        && a.identity == b.identity
        && a.log_vkey == b.log_vkey
        && a.previous_log_vkeys == b.previous_log_vkeys
        && a.witness == b.witness
        && a.witness_vkey == b.witness_vkey
}

/// Watches the configured directory file; a newer version, verified and
/// following the ones applied, replaces the members and the witnesses. A
/// file that does not verify, goes back, or names another dictionary is
/// refused (logged), and the members stay as they were.
pub(crate) struct Following {
    pub state: Arc<HubState>,
    pub connector: Connector,
    pub config: crate::directory::DirectoryConfig,
    pub dictionary: PathBuf,
    /// The entries the members in force were made from.
    pub entries: Vec<MemberConfig>,
    pub witnesses: tokio::sync::watch::Sender<Vec<Witness>>,
    pub every: Duration,
}

impl Following {
    pub(crate) async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let Following { state, connector, config, dictionary, mut entries, witnesses: witnesses_tx, every } = self;
        let Some(held) = state.directory.as_ref() else { return };
        let mut seen = std::fs::read(&config.file).ok();
        let mut tick = tokio::time::interval(every);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            let now = std::fs::read(&config.file).ok();
            if now == seen || now.is_none() {
                continue;
            }
            seen = now;
            let own_key = state.log.signer().verifier().to_string();
            let applied = crate::directory::open(&config, &dictionary).and_then(|signed| {
                // As at start: this hub must be listed with the key it signs with.
                if signed.doc.hub(state.identity.id()).map(|h| h.log_vkey.as_str()) != Some(own_key.as_str()) {
                    return Err(Error::Config {
                        path: config.file.clone(),
                        reason: format!("directory version {} does not list this hub with the log key it signs with", signed.doc.version),
                    });
                }
                let accepted = held.history.accept(&signed, &held.anchor)?;
                Ok((signed, accepted))
            });
            let (signed, accepted) = match applied {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, file = %config.file.display(), "new network directory refused; the members stay as they were");
                    continue;
                }
            };
            if accepted == tabadul_directory::history::Accepted::Unchanged {
                continue;
            }
            let next = crate::config::members_of(&signed.doc);
            let current = state.members();
            let old_witnesses = witnesses_tx.borrow().clone();
            match connector.roster(&next, Some(Current { entries: &entries, members: &current, witnesses: &old_witnesses })) {
                Ok((members, witnesses)) => {
                    let (before, after): (Vec<&String>, Vec<&String>) = (current.keys().collect(), members.keys().collect());
                    tracing::info!(version = signed.doc.version, before = ?before, after = ?after, "network directory applied: members replaced");
                    state.set_members(members);
                    witnesses_tx.send_replace(witnesses);
                    entries = next;
                }
                Err(e) => {
                    tracing::error!(error = %e, version = signed.doc.version, "new network directory could not be applied; the members stay as they were")
                }
            }
        }
    }
}
