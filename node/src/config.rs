//! The node's configuration file (`node.toml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tabadul_certs::tls::TlsFiles;

use crate::Error;

/// Where a node keeps its things. Relative paths are resolved against the
/// directory of the config file, so a node directory can be moved whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// RocksDB directories (`store/`, `events/`) and the admin socket live here.
    pub data_dir: PathBuf,
    pub dictionary: PathBuf,
    pub policy: PathBuf,
    pub tls: TlsFiles,
    /// Largest accepted gRPC request, in bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// How often the policy and CRL files are checked for changes.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
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
        let mut config: NodeConfig = toml::from_str(&text)
            .map_err(|e| Error::Config { path: path.to_owned(), reason: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut config.data_dir);
        fix(&mut config.dictionary);
        fix(&mut config.policy);
        config.tls = config.tls.relative_to(base);
        Ok(config)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
    pub fn events_dir(&self) -> PathBuf {
        self.data_dir.join("events")
    }
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }
}
