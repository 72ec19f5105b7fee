//! The network directory: one document, signed by the network authority's
//! own key, that says who is in the network and how to trust them (the
//! members' node endpoints and log and witness keys, the hubs', where the
//! CRL is, the data dictionary's version and digest, and the witness
//! quorum auditors should require). Its public key is the *directory
//! anchor*, the one thing every node, hub and auditor is configured with.
//!
//! The document is a C2SP signed note (the same format and code as the
//! logs' checkpoints, so Go's `sumdb/note` verifies it too) whose text is
//! a JSON object. Versions form a hash chain: each names the SHA-256 of
//! the signed note before it, so once a holder has seen version *n* no one,
//! not even the authority, can show it another history up to *n* without
//! being caught; [`history`] keeps what a holder has seen and refuses a
//! rollback, a gap, or a second document for a version it holds.
//!
//! This crate does not decide anything about queries, and it does not
//! distribute the directory: the hub serves it (`GET /directory`), and
//! [`fetch`] is the small HTTPS client nodes and auditors use to get it.

#![forbid(unsafe_code)]

pub mod document;
pub mod fetch;
pub mod history;
pub mod signed;

pub use document::{DictionaryRef, Directory, HubEntry, MemberEntry};
pub use history::History;
pub use signed::{SignedDirectory, anchor_name, digest};

/// Everything that can go wrong with a directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The document's signature, anchor or form is wrong: nothing in it
    /// may be used.
    #[error("directory refused: {0}")]
    Refused(String),
    /// A version older than one already held.
    #[error("directory version {got} is older than version {held} already held: refused (a rollback)")]
    Rollback { got: u64, held: u64 },
    /// Two different signed documents for one version: the authority (or
    /// its key) signed two histories.
    #[error("directory version {version} differs from the version {version} already held: two histories were signed")]
    Equivocation { version: u64 },
    /// The document does not follow from the one before it.
    #[error("directory version {version} does not follow version {previous}: {why}")]
    Chain { version: u64, previous: u64, why: String },
    /// The dictionary in use is not the one the directory names.
    #[error("the data dictionary {path} has digest {got}; the network directory (version {version}) requires {want} (dictionary version {dictionary_version})")]
    Dictionary { path: String, got: String, want: String, version: u64, dictionary_version: String },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    /// Fetching over HTTPS failed.
    #[error("fetching {url}: {why}")]
    Fetch { url: String, why: String },
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_owned(), source }
    }
}

/// Checks that the dictionary file at `path` is the one `dir` names.
pub fn check_dictionary(dir: &Directory, path: &std::path::Path) -> Result<(), Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let got = digest(&bytes);
    if got != dir.dictionary.sha256 {
        return Err(Error::Dictionary {
            path: path.display().to_string(),
            got,
            want: dir.dictionary.sha256.clone(),
            version: dir.version,
            dictionary_version: dir.dictionary.version.clone(),
        });
    }
    Ok(())
}
