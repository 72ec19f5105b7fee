use std::path::PathBuf;

/// Everything the hub can fail with.
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
    Certs(#[from] tabadul_certs::Error),
    #[error(transparent)]
    Log(#[from] tabadul_audit::Error),
    /// The network directory was refused (signature, rollback, a second
    /// history, a dictionary it does not name, this hub's key).
    #[error(transparent)]
    Directory(#[from] tabadul_directory::Error),
    #[error("this hub's certificate names {0}, which is not a hub identity")]
    NotAHub(String),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}
