//! The hub and the signed network directory: the members it federates
//! come from the directory (verified against the anchor), the versions it
//! applied are kept so none can be rolled back, and its front door serves
//! them to nodes and auditors (`GET /directory`).

use std::path::{Path, PathBuf};

use tabadul_audit::Verifier;
use tabadul_directory::{History, SignedDirectory};

use crate::Error;

/// `[directory]`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The directory anchor: the network authority's directory verifier
    /// key (`tabadul-directory keygen`), or `@file`.
    pub anchor: String,
    /// The signed directory to apply (`tabadul-directory build`). The hub
    /// keeps every version it applied in `data_dir/directory/` and refuses
    /// an older one, or another document for a version it holds.
    pub file: PathBuf,
}

/// The directory as the hub holds it, for the front door.
#[derive(Debug)]
pub(crate) struct Held {
    pub anchor: Verifier,
    pub history: History,
    pub dictionary: std::path::PathBuf,
}

/// Reads and verifies the configured directory, and checks that the
/// dictionary in use is the one it names.
pub fn open(config: &DirectoryConfig, dictionary: &Path) -> Result<SignedDirectory, Error> {
    let anchor = tabadul_audit::offline::read_vkey(&config.anchor).map_err(|e| Error::Config { path: "[directory] anchor".into(), reason: e.to_string() })?;
    let note = std::fs::read_to_string(&config.file).map_err(|source| Error::Io { path: config.file.clone(), source })?;
    let signed = SignedDirectory::open(&note, &anchor).map_err(|e| Error::Config { path: config.file.clone(), reason: e.to_string() })?;
    tabadul_directory::check_dictionary(&signed.doc, dictionary)?;
    Ok(signed)
}

/// At start: the directory must list this hub with the key it signs its
/// log with, and follow every version applied before (kept in
/// `data_dir/directory/`).
pub(crate) fn apply(
    config: &DirectoryConfig,
    signed: &SignedDirectory,
    data_dir: &Path,
    hub_id: &str,
    log_key: &Verifier,
    dictionary: &Path,
) -> Result<Held, Error> {
    let anchor = tabadul_audit::offline::read_vkey(&config.anchor).map_err(|e| Error::Config { path: "[directory] anchor".into(), reason: e.to_string() })?;
    let listed = signed
        .doc
        .hub(hub_id)
        .ok_or_else(|| Error::Config { path: config.file.clone(), reason: format!("directory version {} does not list hub {hub_id:?}", signed.doc.version) })?;
    if Verifier::parse(&listed.log_vkey).ok().as_ref() != Some(log_key) {
        return Err(Error::Config {
            path: config.file.clone(),
            reason: format!(
                "directory version {} lists another log key for hub {hub_id:?} than the one this hub signs with: a key rotation goes through a new directory version",
                signed.doc.version
            ),
        });
    }
    let history = History::open(&data_dir.join("directory"))?;
    let accepted = history.accept(signed, &anchor)?;
    tracing::info!(
        version = signed.doc.version,
        members = signed.doc.members.len(),
        new = matches!(accepted, tabadul_directory::history::Accepted::New),
        "network directory applied"
    );
    Ok(Held { anchor, history, dictionary: dictionary.to_owned() })
}
