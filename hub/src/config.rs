//! The hub's configuration file (`hub.toml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tabadul_certs::Identity;
use tabadul_certs::connection::ConnectionLimits;
use tabadul_certs::tls::TlsFiles;

use crate::Error;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The event store lives here.
    pub data_dir: PathBuf,
    pub dictionary: PathBuf,
    pub tls: TlsFiles,
    /// The hub's log signing key (`tabadul-audit keygen --origin
    /// <network>/hub/<id>`), mode 0600.
    #[serde(default = "default_log_key")]
    pub log_key: PathBuf,
    /// How often the hub asks its witnesses (the nodes) to cosign its
    /// latest checkpoint; 0 turns witnessing off.
    #[serde(default = "default_witness_interval_ms")]
    pub witness_interval_ms: u64,
    /// On shutdown, how long in-flight queries get before the connections
    /// still open are closed.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Default per-member deadline for a federated query.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Most queries the hub has in progress at one node; more wait (within
    /// their deadline). Keep it below the nodes' `max_concurrent_per_peer`.
    #[serde(default = "default_max_in_flight_per_member")]
    pub max_in_flight_per_member: usize,
    /// Most federated queries worked on at once; the rest wait, and a
    /// member's deadline starts only when its query is admitted.
    #[serde(default = "default_max_concurrent_queries")]
    pub max_concurrent_queries: usize,
    /// Most federated queries waiting to be admitted; beyond, "busy" at once.
    #[serde(default = "default_max_queued_queries")]
    pub max_queued_queries: usize,
    /// Longest a query waits to be admitted before it is told "busy".
    #[serde(default = "default_max_queue_wait_ms")]
    pub max_queue_wait_ms: u64,
    /// Largest deadline an operator may ask for.
    #[serde(default = "default_max_deadline_ms")]
    pub max_deadline_ms: u64,
    /// How often the certificate, key and CRL files are checked; new ones
    /// apply to the next handshake on the gRPC and HTTPS listeners.
    #[serde(default = "default_crl_reload_interval_ms")]
    pub crl_reload_interval_ms: u64,
    /// The members, by hand. With `[directory]` they come from the signed
    /// network directory instead, and listing any here is an error.
    #[serde(default, rename = "member")]
    pub members: Vec<MemberConfig>,
    /// `[directory]`: take the members, their endpoints and keys from the
    /// network directory, signed by the network authority.
    #[serde(default)]
    pub directory: Option<crate::directory::DirectoryConfig>,
    /// The directory as verified at load time (not in the file).
    #[serde(skip)]
    pub signed_directory: Option<tabadul_directory::SignedDirectory>,
    /// `[connections]`: caps and timeouts of the gRPC listener (the front
    /// door has its own, `[http.connections]`).
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// The HTTP front door (SDMX REST, JSON API, dashboard).
    #[serde(default)]
    pub http: HttpConfig,
    /// Federated answers kept for reuse (revalidated with every member
    /// before each use; see `cache.rs`).
    #[serde(default)]
    pub cache: CacheConfig,
}

/// `[http]`: the front door for analysts, SDMX tools and the dashboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve plain HTTP instead of HTTPS. Operator tokens then cross the
    /// network in clear text: only behind a TLS-terminating proxy on the
    /// same host, or on loopback.
    pub dangerous_plain_http: bool,
    /// Answer anonymous requests with what the nodes publish to the public
    /// (their `requester = "public"` rules).
    pub public_tier: bool,
    /// Operator tokens (hashed), managed with `tabadul-hub token`;
    /// relative to `data_dir`.
    pub tokens: PathBuf,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most observations in one answer; larger answers get 413.
    pub max_cells: usize,
    /// Requests per minute for each operator (and for each address of the
    /// public tier), with bursts up to `burst`.
    pub rate_per_minute: u32,
    pub burst: u32,
    /// How long a client may take to send a request's headers (HTTP/1.1;
    /// the whole of each request's header block, and idle keep-alive time).
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a request's body, from the
    /// start of the request; past it, 408 and the connection is closed.
    pub body_read_timeout_ms: u64,
    /// `[http.connections]`: caps and timeouts of the front door.
    pub connections: ConnectionLimits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            dangerous_plain_http: false,
            public_tier: true,
            tokens: PathBuf::from("tokens.json"),
            max_body_bytes: 64 * 1024,
            max_cells: 200_000,
            rate_per_minute: 600,
            burst: 60,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            connections: ConnectionLimits::default(),
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most answers kept; 0 turns the cache off.
    pub max_entries: usize,
    /// Longest an answer is kept, whatever the members say: bounds how long
    /// an embargo lifted meanwhile goes unseen.
    pub max_age_s: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { max_entries: 1024, max_age_s: 300 }
    }
}

/// One member state's node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// ISO 3166-1 alpha-3.
    pub code: String,
    /// `host:port`; the host must be in the node certificate's DNS/IP names.
    pub endpoint: String,
    /// The identity the node's certificate must carry; by default
    /// `spiffe://<our network>/node/<code>`.
    pub identity: Option<Identity>,
    /// The verifier key of the node's log (`tabadul-audit keygen` prints
    /// it); every receipt from this node must be signed by it.
    pub log_vkey: String,
    /// Verifier keys the node's log was signed with before its current
    /// one (after a log key rotation): the hub's stored pin of that log,
    /// signed with an old key, is still checked and kept, so the rotation
    /// opens no window for a fork. Receipts must verify with `log_vkey`.
    #[serde(default)]
    pub previous_log_vkeys: Vec<String>,
    /// Whether this node witnesses the hub's log.
    #[serde(default = "yes")]
    pub witness: bool,
    /// The verifier key of the node's witness key (`<network>/witness/<code>`),
    /// which its cosignatures must verify with; without it, its log key.
    pub witness_vkey: Option<String>,
}

/// The members as the hub configures them, from the network directory.
pub(crate) fn members_of(doc: &tabadul_directory::Directory) -> Vec<MemberConfig> {
    doc.members
        .iter()
        .map(|m| MemberConfig {
            code: m.code.clone(),
            endpoint: m.endpoint.clone(),
            identity: None,
            log_vkey: m.log_vkey.clone(),
            previous_log_vkeys: m.previous_log_vkeys.clone(),
            witness: m.witness_vkey.is_some(),
            witness_vkey: m.witness_vkey.clone(),
        })
        .collect()
}

fn yes() -> bool {
    true
}
fn default_max_in_flight_per_member() -> usize {
    32
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
}
fn default_log_key() -> PathBuf {
    PathBuf::from("log.key")
}
fn default_witness_interval_ms() -> u64 {
    2000
}

fn default_deadline_ms() -> u64 {
    3000
}
fn default_max_concurrent_queries() -> usize {
    64
}
fn default_max_queued_queries() -> usize {
    4096
}
fn default_max_queue_wait_ms() -> u64 {
    30_000
}
fn default_crl_reload_interval_ms() -> u64 {
    2000
}
fn default_max_deadline_ms() -> u64 {
    30_000
}

impl HubConfig {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        let mut config: HubConfig = toml::from_str(&text).map_err(|e| Error::Config { path: path.to_owned(), reason: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut config.data_dir, &mut config.dictionary, &mut config.log_key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config.tls = config.tls.relative_to(base);
        if config.http.tokens.is_relative() {
            config.http.tokens = config.data_dir.join(&config.http.tokens);
        }
        if let Some(d) = &mut config.directory {
            if d.file.is_relative() {
                d.file = base.join(&d.file);
            }
            if !config.members.is_empty() {
                return Err(Error::Config {
                    path: path.to_owned(),
                    reason: "with [directory], the members come from the signed network directory: remove the [[member]] tables".into(),
                });
            }
            let signed = crate::directory::open(d, &config.dictionary)?;
            config.members = members_of(&signed.doc);
            config.signed_directory = Some(signed);
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &config.members {
            if !seen.insert(m.code.clone()) {
                return Err(Error::Config { path: path.to_owned(), reason: format!("member {} is listed twice", m.code) });
            }
        }
        Ok(config)
    }
}
