//! Tabadul's signed exchange logs: what left each country, to whom, under
//! which rule, in a form auditors verify offline without trusting anyone.
//!
//! - [`merkle`]: RFC 6962 / 9162 tree and proof maths as pure functions.
//! - [`note`], [`checkpoint`]: C2SP signed notes, Ed25519 keys, checkpoints
//!   and `cosignature/v1` witness cosignatures, byte-compatible with
//!   `golang.org/x/mod/sumdb/note` and the C2SP specs.
//! - [`entry`]: the canonical, versioned leaf encoding (no data values).
//! - [`log`]: the append-only log on RocksDB: group-committed, synced,
//!   checkpointed appends, proofs from stored subtree hashes.
//! - [`receipt`]: checking a node's receipt (the hub does, before it uses
//!   an answer).
//! - [`service`]: the gRPC `Audit` and `Witness` services node and hub serve.
//! - [`offline`]: what `tabadul-audit` does with a fetched log directory:
//!   verify, cross-check, fraud proofs.
//!
//! This crate does not decide what may be released (the node's policy
//! does) and holds no figures: only digests of them.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod entry;
#[cfg(feature = "store")]
pub mod log;
pub mod merkle;
pub mod note;
pub mod offline;
#[cfg(feature = "store")]
pub mod receipt;
#[cfg(feature = "store")]
pub mod service;

use std::path::PathBuf;

pub use checkpoint::Checkpoint;
pub use entry::{Entry, ReceiptRef, new_salt, released_digest};
#[cfg(feature = "store")]
pub use log::{Appended, Log, LogOptions, SignedCheckpoint};
pub use note::{Note, Signer, Verifier};

/// Why a log operation or a check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[cfg(feature = "store")]
    #[error("log at {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    /// An earlier write failed; the log accepts no more appends until reopened.
    #[error("log at {path} stopped after a failed write: {reason}")]
    Stopped { path: PathBuf, reason: String },
    #[error("log at {path}: entry {index} is corrupt: {reason}")]
    Corrupt { path: PathBuf, index: u64, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed note or key, or a signature that does not verify.
    #[error("signed note: {0}")]
    Note(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("log entry: {0}")]
    Entry(String),
    #[error("receipt: {0}")]
    Receipt(String),
    #[error(transparent)]
    Proof(#[from] merkle::ProofError),
    /// A request the log cannot serve (a size beyond its end, ...).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_owned(), source }
    }
}

/// Reads a `PRIVATE+KEY+...` file, refusing one that others may read.
pub fn load_signer(path: &std::path::Path) -> Result<Signer, Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "{}: a log signing key must be readable by its owner only (chmod 600), not mode {:o}",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Signer::from_skey(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Makes a new signing key for log `origin` at `path` (mode 0600; an
/// existing file is never overwritten) and writes the verifier key beside
/// it as `<path>.vkey`. Returns the verifier key.
pub fn generate_signer(origin: &str, path: &std::path::Path) -> Result<Verifier, Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let signer = Signer::generate(origin)?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| Error::io(path, e))?;
    file.write_all(format!("{}\n", signer.to_skey()).as_bytes()).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    let vkey = signer.verifier();
    let vpath = vkey_path(path);
    std::fs::write(&vpath, format!("{vkey}\n")).map_err(|e| Error::io(&vpath, e))?;
    Ok(vkey)
}

/// Where [`generate_signer`] puts the verifier key for a key file.
pub fn vkey_path(key: &std::path::Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".vkey");
    PathBuf::from(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        let vkey = generate_signer("alo/node/MAR", &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_signer(&path).unwrap().verifier(), vkey);
        assert_eq!(std::fs::read_to_string(vkey_path(&path)).unwrap().trim(), vkey.to_string());
        assert!(generate_signer("alo/node/MAR", &path).is_err(), "an existing key was overwritten");
        assert_eq!(load_signer(&path).unwrap().verifier(), vkey);
        // A key others can read is refused, with the fix in the message.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_signer(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
