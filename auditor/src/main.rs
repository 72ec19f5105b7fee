//! `tabadul-audit`: the auditor's tool. Fetch a log over mutual TLS,
//! verify it offline, cross-check hub receipts against node logs, pin a
//! log's checkpoints and catch forks.
//!
//! Exit codes: 0 verified, 1 tampered (or a fork found), 2 could not check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tabadul_audit::offline::{self, FetchedProof, Finding, FraudProof, FraudVerdict, LogDir, LogInfo, WitnessPolicy};
use tabadul_audit::{Checkpoint, Verifier, merkle};
use tabadul_certs::Identity;
use tabadul_certs::tls::{self, Expect, TlsFiles};
use tabadul_proto::pb;
use tabadul_proto::pb::audit_client::AuditClient;

const VERIFIED: u8 = 0;
const TAMPERED: u8 = 1;
const COULD_NOT_CHECK: u8 = 2;

#[derive(Parser)]
#[command(name = "tabadul-audit", version, about = "Verify Tabadul's signed exchange logs")]
struct Cli {
    /// JSON output instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Remote {
    /// The log's server, host:port (a node or the hub).
    #[arg(long)]
    endpoint: String,
    /// Identity the server must present, e.g. spiffe://alo/node/MAR.
    #[arg(long)]
    server: Identity,
    #[command(flatten)]
    creds: Creds,
}

/// The auditor's certificate and the network's CA.
#[derive(clap::Args, Clone)]
struct Creds {
    #[arg(long, env = "TABADUL_CA")]
    ca: PathBuf,
    /// The auditor's certificate.
    #[arg(long, env = "TABADUL_CERT")]
    cert: PathBuf,
    #[arg(long, env = "TABADUL_KEY")]
    key: PathBuf,
    #[arg(long, env = "TABADUL_CRL")]
    crl: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Make a log signing key (mode 0600) and its verifier key (<out>.vkey).
    Keygen {
        /// The log's origin: <network>/node/<ISO3> or <network>/hub/<id>.
        #[arg(long)]
        origin: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Download a log's entries, checkpoints and proofs into a directory;
    /// with --all, every log the network directory names (the hubs' into
    /// `<out>/hub-<id>`, each member's into `<out>/<code>`).
    Fetch {
        /// The log's server, host:port (a node or the hub).
        #[arg(long, required_unless_present = "all")]
        endpoint: Option<String>,
        /// Identity the server must present, e.g. spiffe://alo/node/MAR.
        #[arg(long, required_unless_present = "all")]
        server: Option<Identity>,
        #[command(flatten)]
        creds: Creds,
        /// Every hub and member in the network directory (--network-directory).
        #[arg(long, requires = "network_directory", conflicts_with_all = ["endpoint", "server"])]
        all: bool,
        #[command(flatten)]
        network: NetworkDirectory,
        #[arg(long)]
        out: PathBuf,
    },
    /// The signed network directory: fetch it from a hub and check its
    /// whole history against the anchor.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
    /// Verify a fetched directory offline. With --network-directory, the
    /// keys and the witness policy come from the network directory, and
    /// `dir` may be a `fetch --all` directory (every log in it is verified).
    Verify {
        dir: PathBuf,
        /// The log's verifier key, or @file. Repeat it after a log key
        /// rotation (the current key and the earlier ones): each
        /// checkpoint must verify with one of them.
        #[arg(long, required_unless_present = "network_directory")]
        vkey: Vec<String>,
        #[command(flatten)]
        network: NetworkDirectory,
        /// k-of-n witness policy file (`witness <vkey>` lines, `quorum <k>`).
        #[arg(long)]
        witness_policy: Option<PathBuf>,
        /// A checkpoint pinned earlier (the `--state` file of `watch`): the
        /// log must still hold that tree, neither cut short nor rewritten.
        #[arg(long)]
        pin: Option<PathBuf>,
    },
    /// Check one receipt offline: its checkpoint's signature, the leaf's
    /// inclusion, and (with --pin) that its tree and a pinned one are one
    /// history.
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
    /// Match the hub's receipts with node logs, both ways. The requester
    /// may also be a node that asked other members directly (its
    /// `peer-query` leaves): pass its log as --hub and its identity as
    /// --hub-identity (alias --requester, --requester-identity).
    ///
    /// With --network-directory and a `fetch --all` directory instead:
    /// every hub's log against every member's, all verified first with the
    /// keys the network directory names.
    CrossCheck {
        /// The hub's (or asking node's) fetched directory.
        #[arg(long, alias = "requester", required_unless_present = "network_directory")]
        hub: Option<PathBuf>,
        /// Its identity as the answering nodes log it (spiffe://alo/hub/alo,
        /// spiffe://alo/node/EGY).
        #[arg(long, alias = "requester-identity", required_unless_present = "network_directory")]
        hub_identity: Option<Identity>,
        /// MEMBER=DIR, repeatable: fetched node directories.
        #[arg(long = "node", value_parser = parse_member_dir)]
        nodes: Vec<(String, PathBuf)>,
        #[command(flatten)]
        network: NetworkDirectory,
        /// A `fetch --all` directory (with --network-directory).
        #[arg(requires = "network_directory", conflicts_with_all = ["hub", "hub_identity", "nodes"])]
        all: Option<PathBuf>,
    },
    /// Check the log's latest checkpoint against the one pinned in
    /// `--state`; pin it if consistent, write a fraud proof if not.
    Watch {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        vkey: String,
        /// Where the pinned checkpoint is kept.
        #[arg(long)]
        state: PathBuf,
        /// Where a fraud proof is written when a fork is found.
        #[arg(long, default_value = "fraud-proof.json")]
        fraud_proof: PathBuf,
    },
    /// Check a fraud proof written by `watch`; needs nothing else. Exit 1:
    /// fraud proven; 0: no fraud; 2: inconclusive.
    CheckFraud {
        file: PathBuf,
        /// The log's verifier key as you know it (or @file): a fraud proof
        /// counts only against the real key, not the one it carries.
        #[arg(long)]
        vkey: String,
    },
}

/// Where the network directory fetched by `directory fetch` is, and the
/// anchor it is verified against each time it is used.
#[derive(clap::Args, Clone)]
struct NetworkDirectory {
    /// A directory written by `tabadul-audit directory fetch`.
    #[arg(long, requires = "anchor")]
    network_directory: Option<PathBuf>,
    /// The directory anchor (the network authority's verifier key), or @file.
    #[arg(long, env = "TABADUL_DIRECTORY_ANCHOR")]
    anchor: Option<String>,
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Fetch every version of the network directory from a hub's front
    /// door, check the chain from version 1 against the anchor (and
    /// against the versions fetched before into the same directory), and
    /// keep it with the dictionary it names.
    Fetch {
        /// The hub's front door, https://host:port.
        #[arg(long)]
        hub: String,
        /// The network's CA (the hub's HTTPS certificate must chain to it).
        #[arg(long, env = "TABADUL_CA")]
        ca: PathBuf,
        /// The directory anchor, or @file.
        #[arg(long, env = "TABADUL_DIRECTORY_ANCHOR")]
        anchor: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Verify a receipt file: the JSON of the hub's release proof
    /// (`/api/v1/releases/{member}/{leaf}/proof`), optionally with the
    /// leaf itself as `entry` (base64).
    Verify {
        file: PathBuf,
        /// The member's log verifier key, or @file.
        #[arg(long)]
        vkey: String,
        /// A checkpoint of the member's log pinned earlier (`watch --state`).
        #[arg(long)]
        pin: Option<PathBuf>,
        /// The member's fetched log, to prove the receipt's tree and the
        /// pinned one consistent when their sizes differ.
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

fn parse_member_dir(s: &str) -> Result<(String, PathBuf), String> {
    let (m, d) = s.split_once('=').ok_or_else(|| format!("{s:?} is not MEMBER=DIR"))?;
    Ok((m.to_owned(), PathBuf::from(d)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let json = cli.json;
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "outcome": "could-not-check", "error": format!("{e:#}") }));
            } else {
                eprintln!("could not check: {e:#}");
            }
            ExitCode::from(COULD_NOT_CHECK)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let json = cli.json;
    match cli.command {
        Command::Keygen { origin, out } => {
            let vkey = tabadul_audit::generate_signer(&origin, &out).with_context(|| format!("writing {}", out.display()))?;
            // The verifier key is public; the signing key never leaves the file.
            println!("{vkey}");
            Ok(VERIFIED)
        }
        Command::Fetch { endpoint, server, creds, all, network, out } => {
            let rt = tokio::runtime::Runtime::new()?;
            if all {
                let doc = network.open()?;
                return rt.block_on(fetch_all(&doc, &creds, &out, json));
            }
            let (Some(endpoint), Some(server)) = (endpoint, server) else { anyhow::bail!("give --endpoint and --server, or --all") };
            let remote = Remote { endpoint, server, creds };
            let info = rt.block_on(fetch(&remote, &out))?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!("fetched {} entries of {} into {}", info.size, info.origin, out.display());
            }
            Ok(VERIFIED)
        }
        Command::Directory { command: DirectoryCommand::Fetch { hub, ca, anchor, out } } => {
            let anchor = offline::read_vkey(&anchor).context("reading --anchor")?;
            let doc = fetch_directory(&hub, &ca, &anchor, &out)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "outcome": "verified", "version": doc.version, "network": doc.network, "members": doc.members.len(), "hubs": doc.hubs.len() })
                );
            } else {
                println!(
                    "verified {}'s directory versions 1..{} against the anchor: {} members, {} hubs, witness quorum {}; kept in {}",
                    doc.network,
                    doc.version,
                    doc.members.len(),
                    doc.hubs.len(),
                    doc.witness_quorum,
                    out.display()
                );
            }
            Ok(VERIFIED)
        }
        Command::Verify { dir, vkey, witness_policy, pin, network } => {
            let pin = pin.map(|p| std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))).transpose()?;
            if network.network_directory.is_some() {
                let doc = network.open()?;
                let dirs = log_dirs(&dir)?;
                let mut worst = VERIFIED;
                for d in dirs {
                    let log = LogDir::load(&d).with_context(|| format!("reading {}", d.display()))?;
                    let (keys, policy) = keys_for(&doc, &log.info.origin)?;
                    worst = worst.max(verify_one(&d, &log, &keys, policy.as_ref(), pin.as_deref(), json)?);
                }
                return Ok(worst);
            }
            let keys = vkey.iter().map(|v| offline::read_vkey(v).context("reading --vkey")).collect::<anyhow::Result<Vec<_>>>()?;
            let policy = witness_policy
                .map(|p| {
                    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                    WitnessPolicy::parse(&text).with_context(|| format!("parsing {}", p.display()))
                })
                .transpose()?;
            let log = LogDir::load(&dir).with_context(|| format!("reading {}", dir.display()))?;
            verify_one(&dir, &log, &keys, policy.as_ref(), pin.as_deref(), json)
        }
        Command::CrossCheck { hub, hub_identity, nodes, network, all } => {
            // Receipts are matched only between logs that verify: each
            // directory is verified again, with the keys `verify` used (or
            // the network directory names).
            let mut findings = Vec::new();
            let mut pairs = Vec::new();
            let mut dirs = BTreeMap::new();
            if let Some(root) = all {
                let doc = network.open()?;
                for h in &doc.hubs {
                    let d = root.join(format!("hub-{}", h.id));
                    let identity: Identity = format!("spiffe://{}/hub/{}", doc.network, h.id).parse()?;
                    pairs.push((load_with_directory(&doc, &d, &mut findings)?, identity));
                }
                for m in &doc.members {
                    dirs.insert(m.code.clone(), load_with_directory(&doc, &root.join(&m.code), &mut findings)?);
                }
            } else {
                let (Some(hub), Some(hub_identity)) = (hub, hub_identity) else {
                    anyhow::bail!("give --hub and --hub-identity, or --network-directory with a fetch --all directory")
                };
                pairs.push((load_verified(&hub, &mut findings)?, hub_identity));
                for (member, dir) in nodes {
                    dirs.insert(member, load_verified(&dir, &mut findings)?);
                }
            }
            if findings.is_empty() {
                for (hub, identity) in &pairs {
                    findings.extend(offline::cross_check(hub, &dirs, &identity.to_string()));
                }
            }
            let code = verdict(&findings);
            if json {
                println!("{}", serde_json::json!({ "outcome": outcome(code), "findings": findings }));
            } else {
                for (hub, _) in &pairs {
                    println!("cross-checked the hub log {} ({} entries) with {} node logs", hub.info.origin, hub.entries.len(), dirs.len());
                }
                print_findings(&findings);
            }
            Ok(code)
        }
        Command::Watch { remote, vkey, state, fraud_proof } => {
            let key = offline::read_vkey(&vkey).context("reading --vkey")?;
            let rt = tokio::runtime::Runtime::new()?;
            let (code, message) = rt.block_on(watch(&remote, &key, &state, &fraud_proof))?;
            if json {
                println!("{}", serde_json::json!({ "outcome": outcome(code), "message": message }));
            } else {
                println!("{message}");
            }
            Ok(code)
        }
        Command::CheckFraud { file, vkey } => {
            let key = offline::read_vkey(&vkey).context("reading --vkey")?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let proof: FraudProof = serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
            anyhow::ensure!(
                offline::read_vkey(&proof.vkey).ok().as_ref() == Some(&key),
                "the fraud proof is about key {}, not the log key given ({key})",
                proof.vkey
            );
            let (code, word, message) = match offline::check_fraud(&proof).context("checking the fraud proof")? {
                FraudVerdict::Proven(why) => (TAMPERED, "fraud-proven", format!("fraud proven: {why}")),
                FraudVerdict::NoFraud(why) => (VERIFIED, "no-fraud", format!("no fraud shown: {why}")),
                FraudVerdict::Inconclusive(why) => (COULD_NOT_CHECK, "inconclusive", format!("inconclusive: {why}")),
            };
            if json {
                println!("{}", serde_json::json!({ "outcome": word, "message": message }));
            } else {
                println!("{message}");
            }
            Ok(code)
        }
        Command::Receipt { command: ReceiptCommand::Verify { file, vkey, pin, log } } => {
            let key = offline::read_vkey(&vkey).context("reading --vkey")?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let receipt: offline::ReceiptFile =
                serde_json::from_str(&text).with_context(|| format!("parsing {} (the JSON of a release proof)", file.display()))?;
            let pin = pin.map(|p| std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))).transpose()?;
            let log = log.map(|d| LogDir::load(&d).with_context(|| format!("reading {}", d.display()))).transpose()?;
            let findings = offline::check_receipt(&receipt, &key, pin.as_deref(), log.as_ref());
            let code = verdict(&findings);
            if json {
                println!("{}", serde_json::json!({ "outcome": outcome(code), "findings": findings }));
            } else {
                println!("receipt for leaf {} of {}", receipt.member_leaf, key.name());
                print_findings(&findings);
            }
            Ok(code)
        }
    }
}

impl NetworkDirectory {
    /// The latest version held by `directory fetch`, verified again
    /// against the anchor.
    fn open(&self) -> anyhow::Result<tabadul_directory::Directory> {
        let (Some(dir), Some(anchor)) = (&self.network_directory, &self.anchor) else { anyhow::bail!("give --network-directory and --anchor") };
        let anchor = offline::read_vkey(anchor).context("reading --anchor")?;
        let held = tabadul_directory::History::open(&dir.join("versions"))?
            .latest(&anchor)?
            .with_context(|| format!("{} holds no directory: run `tabadul-audit directory fetch` first", dir.display()))?;
        Ok(held.doc)
    }
}

/// `directory fetch`: every version from 1, checked as a chain and against
/// what was fetched before into `out`; then the dictionary it names.
fn fetch_directory(hub: &str, ca: &Path, anchor: &tabadul_audit::Verifier, out: &Path) -> anyhow::Result<tabadul_directory::Directory> {
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).context("the directory is not UTF-8");
    let latest = tabadul_directory::SignedDirectory::open(&text(tabadul_directory::fetch::get(hub, "/directory", ca)?)?, anchor)?;
    let mut notes = Vec::new();
    for v in 1..latest.doc.version {
        notes.push(text(tabadul_directory::fetch::get(hub, &format!("/directory/{v}"), ca)?)?);
    }
    notes.push(latest.note.clone());
    let chain = tabadul_directory::history::verify_chain(&notes, anchor)?;
    let history = tabadul_directory::History::open(&out.join("versions"))?;
    for signed in &chain {
        // A version held from an earlier fetch must be the same document.
        if let Some(old) = history.get(signed.doc.version, anchor)? {
            anyhow::ensure!(old.note == signed.note, tabadul_directory::Error::Equivocation { version: signed.doc.version });
            continue;
        }
        history.accept(signed, anchor)?;
    }
    if let Some(held) = history.latest(anchor)? {
        anyhow::ensure!(held.doc.version <= latest.doc.version, tabadul_directory::Error::Rollback { got: latest.doc.version, held: held.doc.version });
    }
    let dict = tabadul_directory::fetch::get(hub, "/directory/dictionary", ca)?;
    anyhow::ensure!(
        tabadul_directory::digest(&dict) == latest.doc.dictionary.sha256,
        tabadul_directory::Error::Refused(format!("the dictionary served is not the one directory version {} names", latest.doc.version))
    );
    std::fs::write(out.join("dictionary.toml"), dict)?;
    std::fs::write(out.join("directory.json"), serde_json::to_string_pretty(&latest.doc)?)?;
    Ok(latest.doc)
}

/// `fetch --all`: each hub into `hub-<id>`, each member into `<code>`. A
/// log that cannot be fetched is reported and the others fetched.
async fn fetch_all(doc: &tabadul_directory::Directory, creds: &Creds, out: &Path, json: bool) -> anyhow::Result<u8> {
    let mut targets = Vec::new();
    for h in &doc.hubs {
        targets.push((format!("hub-{}", h.id), h.endpoint.clone(), format!("spiffe://{}/hub/{}", doc.network, h.id)));
    }
    for m in &doc.members {
        targets.push((m.code.clone(), m.endpoint.clone(), format!("spiffe://{}/node/{}", doc.network, m.code)));
    }
    let mut failed = Vec::new();
    for (name, endpoint, server) in targets {
        let remote = Remote { endpoint, server: server.parse()?, creds: creds.clone() };
        match fetch(&remote, &out.join(&name)).await {
            Ok(info) if !json => println!("fetched {} entries of {} into {}", info.size, info.origin, out.join(&name).display()),
            Ok(_) => {}
            Err(e) => {
                eprintln!("could not fetch {name} ({}): {e:#}", remote.endpoint);
                failed.push(name);
            }
        }
    }
    if json {
        println!("{}", serde_json::json!({ "outcome": if failed.is_empty() { "verified" } else { "could-not-check" }, "failed": failed }));
    }
    Ok(if failed.is_empty() { VERIFIED } else { COULD_NOT_CHECK })
}

/// A log directory, or every log directory inside one (`fetch --all`).
fn log_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.join("log.json").exists() {
        return Ok(vec![dir.to_owned()]);
    }
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = item?.path();
        if p.join("log.json").exists() {
            out.push(p);
        }
    }
    out.sort();
    anyhow::ensure!(!out.is_empty(), "{} holds no fetched log", dir.display());
    Ok(out)
}

/// The keys of the log named `origin`, and for a hub's log the witness
/// policy, as the network directory names them.
fn keys_for(doc: &tabadul_directory::Directory, origin: &str) -> anyhow::Result<(Vec<tabadul_audit::Verifier>, Option<WitnessPolicy>)> {
    let keys = doc.log_keys(origin).with_context(|| format!("the network directory (version {}) names no log {origin:?}", doc.version))?;
    let is_hub = origin.starts_with(&format!("{}/hub/", doc.network));
    let policy = (is_hub && doc.witness_quorum > 0).then(|| WitnessPolicy { witnesses: doc.witness_keys(), quorum: doc.witness_quorum });
    Ok((keys, policy))
}

fn verify_one(dir: &Path, log: &LogDir, keys: &[tabadul_audit::Verifier], policy: Option<&WitnessPolicy>, pin: Option<&str>, json: bool) -> anyhow::Result<u8> {
    let mut report = offline::verify_keys(log, keys, policy);
    if let Some(pin) = pin {
        report.findings.extend(offline::check_pin(log, keys, pin));
    }
    let code = if report.findings.is_empty() { VERIFIED } else { TAMPERED };
    if code == VERIFIED {
        // What cross-check re-verifies with before it trusts the directory.
        let stamp = offline::Stamp { vkeys: keys.iter().map(ToString::to_string).collect(), verified_size: report.verified_size, at: now() };
        offline::Stamp::write(dir, &stamp)?;
    }
    if json {
        println!("{}", serde_json::json!({ "outcome": outcome(code), "report": report }));
    } else {
        println!("{}: {} entries, {} checkpoints, verified up to size {}", report.origin, report.entries, report.checkpoints, report.verified_size);
        if !report.witnessed_by.is_empty() {
            println!("cosigned by: {}", report.witnessed_by.join(", "));
        }
        print_findings(&report.findings);
    }
    Ok(code)
}

/// Loads a fetched log and verifies it with the keys (and, for a hub, the
/// witness policy) the network directory names.
fn load_with_directory(doc: &tabadul_directory::Directory, dir: &Path, findings: &mut Vec<Finding>) -> anyhow::Result<LogDir> {
    let log = LogDir::load(dir).with_context(|| format!("reading {} (fetch --all first)", dir.display()))?;
    let (keys, policy) = keys_for(doc, &log.info.origin)?;
    findings.extend(offline::verify_keys(&log, &keys, policy.as_ref()).findings.into_iter().map(|mut f| {
        f.at = format!("{} {}", log.info.origin, f.at);
        f
    }));
    Ok(log)
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Exit code for findings: tampering beats a check that could not be made.
fn verdict(findings: &[Finding]) -> u8 {
    if offline::tampered(findings) {
        TAMPERED
    } else if findings.is_empty() {
        VERIFIED
    } else {
        COULD_NOT_CHECK
    }
}

/// Loads a fetched directory that `verify` passed, verifying it again with
/// the keys it recorded; its findings, if any, go to `findings`.
fn load_verified(dir: &Path, findings: &mut Vec<Finding>) -> anyhow::Result<LogDir> {
    let log = LogDir::load(dir).with_context(|| format!("reading {}", dir.display()))?;
    let stamp = offline::Stamp::read(dir)?.with_context(|| {
        format!("{} has not passed `tabadul-audit verify`: verify it first (cross-check matches receipts only between logs that verify)", dir.display())
    })?;
    let keys = stamp
        .vkeys
        .iter()
        .map(|v| offline::read_vkey(v))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: {}", dir.display(), offline::Stamp::FILE))?;
    findings.extend(offline::verify_keys(&log, &keys, None).findings.into_iter().map(|mut f| {
        f.at = format!("{} {}", log.info.origin, f.at);
        f
    }));
    Ok(log)
}

fn outcome(code: u8) -> &'static str {
    match code {
        VERIFIED => "verified",
        TAMPERED => "tampered",
        _ => "could-not-check",
    }
}

fn print_findings(findings: &[Finding]) {
    if findings.is_empty() {
        println!("verified: no problems found");
    } else {
        println!("TAMPERED: {} problem(s)", findings.len());
        for f in findings {
            println!("  {f}");
        }
    }
}

fn client(remote: &Remote) -> anyhow::Result<AuditClient<tonic::transport::Channel>> {
    let c = &remote.creds;
    let files = TlsFiles { ca: c.ca.clone(), cert: c.cert.clone(), key: c.key.clone(), crl: c.crl.clone() };
    let channel = tls::channel(&remote.endpoint, Expect::Identity(remote.server.clone()), tls::client_config(&files)?, Duration::from_secs(5))?;
    Ok(AuditClient::new(channel).max_decoding_message_size(64 << 20))
}

fn status(what: &str) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{what}: the server said {:?}: {}", s.code(), s.message())
}

async fn fetch(remote: &Remote, out: &Path) -> anyhow::Result<LogInfo> {
    let mut c = client(remote)?;
    let latest = c.checkpoint(pb::CheckpointRequest { size: 0 }).await.map_err(status("latest checkpoint"))?.into_inner();
    let top = offline::peek(&latest.checkpoint).context("the latest checkpoint is malformed")?;
    // The size is the server's claim until verified: do not trust it for memory.
    let mut entries = Vec::with_capacity(top.size.min(1 << 16) as usize);
    while (entries.len() as u64) < top.size {
        let start = entries.len() as u64;
        let got = c.entries(pb::EntriesRequest { start, end: top.size }).await.map_err(status("entries"))?.into_inner().entries;
        anyhow::ensure!(!got.is_empty(), "the server returned no entries from {start} though its checkpoint has {}", top.size);
        entries.extend(got);
    }
    let mut checkpoints: Vec<(u64, String)> = Vec::new();
    let mut from = 0;
    loop {
        let page = c
            .checkpoints(pb::CheckpointsRequest { from_size: from, to_size: top.size, limit: 0 })
            .await
            .map_err(status("checkpoints"))?
            .into_inner()
            .checkpoints;
        let Some(last) = page.last() else { break };
        let last_size = offline::peek(last).context("a checkpoint is malformed")?.size;
        anyhow::ensure!(last_size >= from, "the server returned checkpoints out of order ({last_size} after asking from {from})");
        for note in page {
            // A malformed one is kept under a name verify will flag.
            let size = offline::peek(&note).map_or(u64::MAX, |c| c.size);
            checkpoints.push((size, note));
        }
        if last_size >= top.size {
            break;
        }
        from = last_size + 1;
    }
    // The latest checkpoint may be signed but not yet published.
    if checkpoints.last().map(|(s, _)| *s) != Some(top.size) {
        checkpoints.push((top.size, latest.checkpoint.clone()));
    }
    let mut proofs = Vec::new();
    for pair in checkpoints.windows(2) {
        let (old, new) = (pair[0].0, pair[1].0);
        if old == 0 || old >= new || new == u64::MAX {
            continue;
        }
        let p = c.consistency_proof(pb::ConsistencyProofRequest { old_size: old, new_size: new }).await.map_err(status("consistency proof"))?.into_inner();
        proofs.push(FetchedProof { old, new, hashes: p.hashes.iter().map(hex::encode).collect() });
    }
    let info = LogInfo {
        origin: top.origin.clone(),
        endpoint: remote.endpoint.clone(),
        fetched_at: time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        size: top.size,
    };
    let cosigned = (!latest.cosigned.is_empty()).then_some(latest.cosigned.as_str());
    LogDir::write(out, &info, &entries, &checkpoints, &proofs, cosigned)?;
    Ok(info)
}

async fn watch(remote: &Remote, key: &Verifier, state: &Path, fraud_path: &Path) -> anyhow::Result<(u8, String)> {
    let mut c = client(remote)?;
    let latest = c.checkpoint(pb::CheckpointRequest { size: 0 }).await.map_err(status("latest checkpoint"))?.into_inner().checkpoint;
    let (new, _) = Checkpoint::open(&latest, key).context("the log's latest checkpoint does not verify")?;
    let pinned = match std::fs::read_to_string(state) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", state.display()))),
    };
    let pin = |note: &str| -> anyhow::Result<()> {
        let tmp = state.with_extension("tmp");
        std::fs::write(&tmp, note).and_then(|()| std::fs::rename(&tmp, state)).with_context(|| format!("writing {}", state.display()))
    };
    let Some(pinned) = pinned else {
        pin(&latest)?;
        return Ok((VERIFIED, format!("pinned {} at size {} (first sight)", new.origin, new.size)));
    };
    let (old, _) = Checkpoint::open(&pinned, key).context("the pinned checkpoint does not verify with this key")?;
    let (proof, verdict) = if old.size > new.size {
        (Vec::new(), Err(format!("the log went back from size {} to {}", old.size, new.size)))
    } else if old.size == new.size || old.size == 0 {
        let same = old.size == 0 || old.root == new.root;
        (Vec::new(), if same { Ok(()) } else { Err(format!("two different roots for size {}", new.size)) })
    } else {
        match c.consistency_proof(pb::ConsistencyProofRequest { old_size: old.size, new_size: new.size }).await {
            Ok(p) => {
                let hashes = p.into_inner().hashes;
                let v = merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &hashes)
                    .map_err(|e| format!("no valid consistency proof from {} to {}: {e}", old.size, new.size));
                (hashes, v)
            }
            Err(s) => (Vec::new(), Err(format!("the log could not prove consistency from {} to {}: {}", old.size, new.size, s.message()))),
        }
    };
    match verdict {
        Ok(()) => {
            pin(&latest)?;
            Ok((VERIFIED, format!("{} grew consistently from size {} to {}; pinned", new.origin, old.size, new.size)))
        }
        Err(reason) => {
            let fraud = FraudProof {
                origin: new.origin.clone(),
                vkey: key.to_string(),
                pinned,
                conflicting: latest,
                consistency_proof: proof.iter().map(hex::encode).collect(),
                reason: reason.clone(),
            };
            std::fs::write(fraud_path, serde_json::to_string_pretty(&fraud)?).with_context(|| format!("writing {}", fraud_path.display()))?;
            Ok((TAMPERED, format!("FORK: {reason}; fraud proof written to {}", fraud_path.display())))
        }
    }
}
