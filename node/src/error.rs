use std::path::PathBuf;

use crate::import::ImportError;
use crate::policy::PolicyError;

/// Everything a node operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(transparent)]
    Dictionary(#[from] tabadul_proto::DictionaryError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Certs(#[from] tabadul_certs::Error),
    #[error(transparent)]
    Log(#[from] tabadul_audit::Error),
    #[error("store at {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    /// The node's certificate must name a node (`spiffe://<net>/node/<ISO3>`).
    #[error("this node's certificate names {0}, which is not a node identity")]
    NotANode(String),
    #[error("{0}")]
    Invalid(String),
    /// The network directory was refused, or the node's dictionary is not
    /// the one it names.
    #[error(transparent)]
    Directory(#[from] tabadul_directory::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
