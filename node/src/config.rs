//! The node's configuration file (`node.toml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tabadul_certs::connection::ConnectionLimits;
use tabadul_certs::tls::TlsFiles;

use crate::Error;

/// Where a node keeps its things. Relative paths are resolved against the
/// directory of the config file, so a node directory can be moved whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// RocksDB directories (`store/`, `log/`) and the admin socket live here.
    pub data_dir: PathBuf,
    pub dictionary: PathBuf,
    pub policy: PathBuf,
    pub tls: TlsFiles,
    /// The log signing key (`tabadul-audit keygen`), mode 0600. Its name
    /// must be `<network>/node/<member>`.
    #[serde(default = "default_log_key")]
    pub log_key: PathBuf,
    /// The key this node cosigns other logs' checkpoints with, named
    /// `<network>/witness/<member>` (`tabadul-audit keygen`), mode 0600.
    /// Required when `witness_logs` is set: one key, one purpose.
    #[serde(default)]
    pub witness_key: Option<PathBuf>,
    /// Cosign with the log key when there is no `witness_key` (one key for
    /// two purposes: a leaked log key would then forge cosignatures too).
    #[serde(default)]
    pub dangerous_witness_with_log_key: bool,
    /// Verifier keys of the logs this node witnesses (the hub's): it
    /// cosigns their checkpoints after checking consistency.
    #[serde(default)]
    pub witness_logs: Vec<String>,
    /// Largest accepted gRPC request, in bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// On shutdown, how long in-flight requests get before the connections
    /// still open are closed.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Most queries one requester may have in progress at once.
    #[serde(default = "default_max_concurrent_per_peer")]
    pub max_concurrent_per_peer: usize,
    /// Queries per second one requester may make (bursts up to that many);
    /// 0 means no rate limit.
    #[serde(default)]
    pub max_queries_per_second_per_peer: u32,
    /// How often the policy and CRL files are checked for changes.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// `[connections]`: caps and timeouts of the gRPC listener.
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// `[directory]`: follow the network's signed directory.
    #[serde(default)]
    pub directory: Option<DirectoryConfig>,
}

/// `[directory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The directory anchor: the network authority's directory verifier
    /// key, or `@file`.
    pub anchor: String,
    /// The hub's front door, `https://host:port`, where
    /// `tabadul-node directory fetch` gets the directory.
    pub hub: String,
}

fn default_max_concurrent_per_peer() -> usize {
    64
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
}
fn default_log_key() -> PathBuf {
    PathBuf::from("log.key")
}
fn default_max_request_bytes() -> usize {
    64 * 1024
}
fn default_reload_interval_ms() -> u64 {
    1000
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|e| Error::Config { path: path.to_owned(), reason: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut config.data_dir);
        fix(&mut config.dictionary);
        fix(&mut config.policy);
        fix(&mut config.log_key);
        if let Some(k) = config.witness_key.as_mut() {
            fix(k);
        }
        config.tls = config.tls.relative_to(base);
        Ok(config)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }
    /// The directory versions this node accepted, and the dictionary the
    /// latest one names.
    pub fn directory_dir(&self) -> PathBuf {
        self.data_dir.join("directory")
    }
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }
}
