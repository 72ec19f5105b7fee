//! The node and the signed network directory: fetch it from the hub,
//! accept only a version signed by the anchor that follows the ones held,
//! and refuse to serve with a dictionary the directory does not name.

use std::path::PathBuf;

use tabadul_directory::history::Accepted;
use tabadul_directory::{History, SignedDirectory};

use crate::config::DirectoryConfig;
use crate::{Error, NodeConfig};

/// What a fetch did.
#[derive(Debug)]
pub struct Fetched {
    pub version: u64,
    pub new: bool,
    pub members: usize,
    /// The dictionary the directory names, as fetched and checked.
    pub dictionary: PathBuf,
    /// Whether the node's configured dictionary is that one.
    pub dictionary_in_use: bool,
}

fn settings(config: &NodeConfig) -> Result<&DirectoryConfig, Error> {
    config.directory.as_ref().ok_or_else(|| Error::Config { path: "node.toml".into(), reason: "no [directory] section (anchor, hub)".into() })
}

fn anchor(d: &DirectoryConfig) -> Result<tabadul_audit::Verifier, Error> {
    tabadul_audit::offline::read_vkey(&d.anchor).map_err(|e| Error::Config { path: "[directory] anchor".into(), reason: e.to_string() })
}

/// Fetches the latest directory and its dictionary from the hub; keeps
/// both if the directory verifies, follows the versions held, and the
/// dictionary has the digest it names. Nothing is kept otherwise.
pub fn fetch(config: &NodeConfig) -> Result<Fetched, Error> {
    let d = settings(config)?;
    let anchor = anchor(d)?;
    let note = tabadul_directory::fetch::get(&d.hub, "/directory", &config.tls.ca)?;
    let note = String::from_utf8(note).map_err(|_| tabadul_directory::Error::Refused("the directory is not UTF-8".into()))?;
    let signed = SignedDirectory::open(&note, &anchor)?;
    let dict = tabadul_directory::fetch::get(&d.hub, "/directory/dictionary", &config.tls.ca)?;
    if tabadul_directory::digest(&dict) != signed.doc.dictionary.sha256 {
        return Err(tabadul_directory::Error::Refused(format!(
            "the dictionary the hub serves is not the one directory version {} names (digest {}): refused",
            signed.doc.version, signed.doc.dictionary.sha256
        ))
        .into());
    }
    let history = History::open(&config.directory_dir())?;
    let accepted = history.accept(&signed, &anchor)?;
    let path = config.directory_dir().join("dictionary.toml");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &dict).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|e| Error::io(&path, e))?;
    let in_use = tabadul_directory::check_dictionary(&signed.doc, &config.dictionary).is_ok();
    Ok(Fetched { version: signed.doc.version, new: accepted == Accepted::New, members: signed.doc.members.len(), dictionary: path, dictionary_in_use: in_use })
}

/// At start: with `[directory]` and a version held, the held version must
/// still verify and the node's dictionary must be the one it names.
pub fn check_at_start(config: &NodeConfig) -> Result<(), Error> {
    let Some(d) = &config.directory else { return Ok(()) };
    let anchor = anchor(d)?;
    match History::open(&config.directory_dir())?.latest(&anchor)? {
        None => {
            tracing::warn!("[directory] is set but no directory is held yet: run `tabadul-node directory fetch`");
            Ok(())
        }
        Some(held) => {
            tabadul_directory::check_dictionary(&held.doc, &config.dictionary)?;
            tracing::info!(version = held.doc.version, "network directory checked: the dictionary is the one it names");
            Ok(())
        }
    }
}
