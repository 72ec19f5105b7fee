use std::path::PathBuf;

/// Everything that can go wrong while making, loading or using certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held nothing usable, or something of the wrong kind.
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    /// An identity string or a certificate's URI SAN is not a Tabadul identity.
    #[error("invalid identity {input:?}: {reason}")]
    BadIdentity { input: String, reason: String },
    /// A value given on the command line or in a config is out of range.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// Certificate or CRL generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration (bad key, bad CRL, ...).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A peer's certificate passed webpki but breaks the network's own
    /// rules (an intermediate CA, a missing key usage or extended key
    /// usage, not exactly one identity): see `verifier`.
    #[error("certificate refused: {0}")]
    PeerRefused(String),
    /// The client verifier could not be built from the CA and CRLs.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
