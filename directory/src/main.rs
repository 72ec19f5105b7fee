//! `tabadul-directory`: the network authority's tool. Make the directory
//! key, build and sign each version of the network directory, and verify
//! a directory or its whole history against the anchor.
//!
//! Exit codes: 0 done (or verified), 1 refused, 2 could not check.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use tabadul_directory::document::FORMAT;
use tabadul_directory::{DictionaryRef, Directory, HubEntry, MemberEntry, SignedDirectory, anchor_name, digest, history};

#[derive(Parser)]
#[command(name = "tabadul-directory", version, about = "Build, sign and verify Tabadul's signed network directory")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the network authority's directory key (mode 0600, kept offline
    /// like the CA key) and print its verifier key: the directory anchor
    /// every node, hub and auditor is configured with.
    Keygen {
        #[arg(long)]
        network: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Build and sign the next version from a TOML description of the
    /// network (`network`, `crl_url`, `witness_quorum`, `[[hub]]`,
    /// `[[member]]`) and the dictionary file.
    Build {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        dictionary: PathBuf,
        /// The directory key (`keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The current signed version; the new one is its successor.
        /// Without it, version 1.
        #[arg(long)]
        previous: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify signed directory files against the anchor. Several files are
    /// a history: versions 1, 2, ... in order, each naming the one before.
    Verify {
        /// The anchor (verifier key) or @file.
        #[arg(long)]
        anchor: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the latest document (JSON).
        #[arg(long)]
        show: bool,
    },
}

/// `build --input`: the document without what the tool fills in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    network: String,
    crl_url: Option<String>,
    witness_quorum: usize,
    #[serde(default, rename = "hub")]
    hubs: Vec<HubEntry>,
    #[serde(default, rename = "member")]
    members: Vec<MemberEntry>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let refused = e.chain().any(|c| c.downcast_ref::<tabadul_directory::Error>().is_some_and(|e| !matches!(e, tabadul_directory::Error::Io { .. })));
            ExitCode::from(if refused { 1 } else { 2 })
        }
    }
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Keygen { network, out } => {
            let vkey = tabadul_audit::generate_signer(&anchor_name(&network), &out).with_context(|| format!("writing {}", out.display()))?;
            println!("{vkey}");
        }
        Command::Build { input, dictionary, key, previous, out } => {
            let signer = tabadul_audit::load_signer(&key)?;
            let spec: Input = toml::from_str(&read(&input)?).with_context(|| format!("parsing {}", input.display()))?;
            let dict_bytes = std::fs::read(&dictionary).with_context(|| format!("reading {}", dictionary.display()))?;
            let dict_version = toml::from_str::<toml::Value>(&String::from_utf8_lossy(&dict_bytes))
                .with_context(|| format!("parsing {}", dictionary.display()))?
                .get("version")
                .and_then(|v| v.as_str().map(str::to_owned))
                .with_context(|| format!("{} has no version", dictionary.display()))?;
            let (version, previous) = match previous {
                None => (1, None),
                Some(p) => {
                    let prev = SignedDirectory::open(&read(&p)?, &signer.verifier()).with_context(|| format!("opening {}", p.display()))?;
                    (prev.doc.version + 1, Some(prev.digest()))
                }
            };
            let doc = Directory {
                format: FORMAT.into(),
                network: spec.network,
                version,
                previous,
                issued: time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
                crl_url: spec.crl_url,
                dictionary: DictionaryRef { version: dict_version, sha256: digest(&dict_bytes) },
                witness_quorum: spec.witness_quorum,
                hubs: spec.hubs,
                members: spec.members,
            };
            let signed = SignedDirectory::sign(&doc, &signer)?;
            let tmp = out.with_extension("tmp");
            std::fs::write(&tmp, &signed.note).and_then(|()| std::fs::rename(&tmp, &out)).with_context(|| format!("writing {}", out.display()))?;
            println!("signed version {version} of {}'s directory ({} members, {} hubs) into {}", doc.network, doc.members.len(), doc.hubs.len(), out.display());
        }
        Command::Verify { anchor, files, show } => {
            let anchor = tabadul_audit::offline::read_vkey(&anchor).context("reading --anchor")?;
            let notes = files.iter().map(read).collect::<anyhow::Result<Vec<_>>>()?;
            let latest = if notes.len() == 1 {
                SignedDirectory::open(&notes[0], &anchor)?
            } else {
                history::verify_chain(&notes, &anchor)?.pop().context("no files")?
            };
            if show {
                println!("{}", serde_json::to_string_pretty(&latest.doc)?);
            } else {
                println!(
                    "verified: {}'s directory version {} ({} members), signed by {}",
                    latest.doc.network,
                    latest.doc.version,
                    latest.doc.members.len(),
                    anchor.name()
                );
            }
        }
    }
    Ok(0)
}
