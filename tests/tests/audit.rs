//! The signed logs end to end: receipts checked by the hub, logs fetched
//! and verified offline by an auditor, tampering, dropped leaves, a forked
//! hub, and a node killed while appending.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tabadul_audit::offline::{self, LogDir, WitnessPolicy};
use tabadul_audit::{Checkpoint, Entry, Verifier, merkle};
use tabadul_proto::pb::{self, MemberState};
use tabadul_tests::{Cert, HubMember, NodeDir, Pki, Proc, bin, eventually, hub_client, node_client, run_ok, start_hub, synthetic};

const POLICY: &str = "[[rule]]\nid = \"hub-all\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\", \"UNE_PERS\", \"LF_PERS\"]\nbreakdowns = []\n";

struct Net {
    dir: tempfile::TempDir,
    pki: Pki,
    nodes: BTreeMap<String, (NodeDir, Proc)>,
    auditor: Cert,
}

fn network(members: &[&str]) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let mut nodes = BTreeMap::new();
    for member in members {
        let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, POLICY).unwrap();
        let data = node.dir.join("data.csv");
        std::fs::write(&data, synthetic::to_sdmx_csv(&synthetic::generate(member, 2023..=2024))).unwrap();
        run_ok(node.command(&["import"]).arg(&data)).unwrap();
        let proc = node.start().unwrap();
        nodes.insert((*member).to_owned(), (node, proc));
    }
    let auditor = pki.issue("auditor", "court").unwrap();
    Net { dir, pki, nodes, auditor }
}

impl Net {
    fn members(&self) -> Vec<HubMember> {
        self.nodes.iter().map(|(m, (_, p))| HubMember::new(&self.pki, m, p.addr.to_string()).unwrap()).collect()
    }

    fn hub(&self, name: &str, members: &[HubMember]) -> Proc {
        let cert = self.pki.issue("hub", "alo").unwrap();
        start_hub(&self.dir.path().join(name), &self.pki, &cert, members, 3000).unwrap()
    }

    fn audit(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(bin("tabadul-audit")).args(args).output().unwrap();
        (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    fn remote_args(&self, addr: std::net::SocketAddr, server: &str) -> Vec<String> {
        let mut args = vec!["--endpoint".into(), addr.to_string(), "--server".into(), server.into()];
        for (flag, path) in
            [("--ca", self.pki.ca_cert()), ("--cert", self.auditor.cert.clone()), ("--key", self.auditor.key.clone()), ("--crl", self.pki.crl())]
        {
            args.push(flag.into());
            args.push(path.display().to_string());
        }
        args
    }

    /// `tabadul-audit fetch` into a fresh directory.
    fn fetch(&self, addr: std::net::SocketAddr, server: &str, name: &str) -> PathBuf {
        let out = self.dir.path().join("fetched").join(name);
        let mut args: Vec<String> = vec!["fetch".into()];
        args.extend(self.remote_args(addr, server));
        args.extend(["--out".into(), out.display().to_string()]);
        let (code, text) = self.audit(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "fetch failed: {text}");
        out
    }
}

fn query(flow: &str, period: &str) -> pb::FederatedQueryRequest {
    pb::FederatedQueryRequest {
        query: Some(pb::Query { dataflow: flow.into(), start_period: period.into(), end_period: period.into(), ..Default::default() }),
        ..Default::default()
    }
}

fn dir_file(net: &Net, name: &str, text: &str) -> std::path::PathBuf {
    let path = net.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn vkey_of(pki: &Pki, origin: &str) -> String {
    pki.log_key(origin).unwrap().1
}

#[tokio::test]
async fn receipts_are_checked_logged_and_verifiable_by_an_auditor() {
    let net = network(&["MAR", "EGY"]);
    let hub = net.hub("hub", &net.members());
    let operator = net.pki.issue("operator", "analyst").unwrap();
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();

    // Every member's answer carries a receipt the hub checked; the hub's own
    // receipt lists them and verifies with the hub's published key.
    let r = client.federated_query(query("UNE_PERS", "2024")).await.unwrap().into_inner();
    let hub_key = Verifier::parse(&net.pki.hub_log_key().unwrap().1).unwrap();
    let own = tabadul_audit::receipt::verify(r.receipt.as_ref().unwrap(), &hub_key).unwrap();
    assert_eq!(own.entry.kind, "federated-query");
    assert_eq!(own.entry.receipts.len(), 2, "{:?}", own.entry);
    for m in &r.members {
        assert_eq!(m.state, MemberState::Answered as i32, "{m:?}");
        let key = Verifier::parse(&vkey_of(&net.pki, &format!("alo/node/{}", m.member))).unwrap();
        let v = tabadul_audit::receipt::verify(m.receipt.as_ref().unwrap(), &key).unwrap();
        assert_eq!(v.entry.peer, "spiffe://alo/hub/alo");
        assert_eq!(v.entry.query_digest, r.query_digest);
        // The operator holding the figures and the salt can prove what was released.
        let cells: Vec<pb::Cell> = r.cells.iter().filter(|c| c.key[0] == m.member).cloned().collect();
        let d = pb::Decision { dimensions: r.dimensions.clone(), ..Default::default() };
        let proven = tabadul_audit::released_digest(&m.receipt.as_ref().unwrap().salt, &tabadul_proto::released_canonical(&d, &cells));
        assert_eq!(v.entry.released, proven);
        assert!(own.entry.receipts.iter().any(|x| x.member == m.member && x.leaf_hash == v.leaf_hash));
        // No figure is in the leaf.
        let leaf = String::from_utf8(m.receipt.as_ref().unwrap().entry.clone()).unwrap();
        for c in &cells {
            assert!(!leaf.contains(&format!("{}", c.value)), "a value leaked into the log: {leaf}");
        }
    }
    client.federated_query(query("UNE_RATE", "2023")).await.unwrap();

    // The witnesses (both nodes) cosign the hub's checkpoint.
    let policy_path = net.dir.path().join("witnesses.txt");
    let policy = format!(
        "# both nodes must cosign\nwitness {}\nwitness {}\nquorum 2\n",
        Verifier::parse(&vkey_of(&net.pki, "alo/witness/MAR")).unwrap().cosigner(),
        Verifier::parse(&vkey_of(&net.pki, "alo/witness/EGY")).unwrap().cosigner()
    );
    std::fs::write(&policy_path, &policy).unwrap();
    let witnessed = eventually(Duration::from_secs(15), async || {
        let d = net.fetch(hub.addr, "spiffe://alo/hub/alo", "hub-w");
        let log = LogDir::load(&d).unwrap();
        let r = offline::verify(&log, &hub_key, Some(&WitnessPolicy::parse(&policy).unwrap()));
        r.findings.is_empty() && log.info.size >= 2
    })
    .await;
    assert!(witnessed, "the hub's checkpoint never got both cosignatures");

    // The auditor fetches all three logs and verifies them offline.
    let hub_dir = net.fetch(hub.addr, "spiffe://alo/hub/alo", "hub");
    let hub_vkey = net.pki.hub_log_key().unwrap().1;
    let (code, text) = net.audit(&["verify", hub_dir.to_str().unwrap(), "--vkey", &hub_vkey, "--witness-policy", policy_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("verified: no problems found") && text.contains("cosigned by:"), "{text}");
    assert!(text.contains("alo/witness/MAR") && text.contains("alo/witness/EGY"), "{text}");
    // The witnesses cosign with their own keys, not their log keys: a
    // policy naming the log keys finds no cosignature.
    let log_keys_policy = dir_file(
        &net,
        "log-keys-policy.txt",
        &format!(
            "witness {}\nwitness {}\nquorum 1\n",
            Verifier::parse(&vkey_of(&net.pki, "alo/node/MAR")).unwrap().cosigner(),
            Verifier::parse(&vkey_of(&net.pki, "alo/node/EGY")).unwrap().cosigner()
        ),
    );
    let (code, text) = net.audit(&["verify", hub_dir.to_str().unwrap(), "--vkey", &hub_vkey, "--witness-policy", log_keys_policy.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    let mut node_dirs = Vec::new();
    for (member, (_, proc)) in &net.nodes {
        let d = net.fetch(proc.addr, &format!("spiffe://alo/node/{member}"), member);
        let (code, text) = net.audit(&["verify", d.to_str().unwrap(), "--vkey", &vkey_of(&net.pki, &format!("alo/node/{member}"))]);
        assert_eq!(code, 0, "{member}: {text}");
        node_dirs.push(format!("{member}={}", d.display()));
    }
    let mut args = vec!["cross-check", "--hub", hub_dir.to_str().unwrap(), "--hub-identity", "spiffe://alo/hub/alo"];
    for d in &node_dirs {
        args.extend(["--node", d]);
    }
    let (code, text) = net.audit(&args);
    assert_eq!(code, 0, "{text}");

    // A wrong key, or a witness policy the checkpoint cannot meet, fails.
    let other = vkey_of(&net.pki, "alo/node/MAR");
    let (code, text) = net.audit(&["verify", hub_dir.to_str().unwrap(), "--vkey", &other]);
    assert_eq!(code, 1, "{text}");
    let strict = net.dir.path().join("strict.txt");
    let outsider = tabadul_audit::Signer::generate("alo/node/JOR").unwrap().cosignature_verifier();
    std::fs::write(&strict, format!("{policy}witness {outsider}\nquorum 3\n")).unwrap();
    let (code, text) = net.audit(&["--json", "verify", hub_dir.to_str().unwrap(), "--vkey", &hub_vkey, "--witness-policy", strict.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("2 of the required 3 witnesses"), "{text}");
    // A directory that is not there could not be checked.
    let (code, text) = net.audit(&["verify", "/nonexistent/dir", "--vkey", &hub_vkey]);
    assert_eq!(code, 2, "{text}");

    // Nodes serve their log to auditors; operators and the hub's entries
    // requests are refused.
    let (_, mar) = &net.nodes["MAR"];
    let mut args: Vec<String> = vec!["fetch".into()];
    let mut remote = net.remote_args(mar.addr, "spiffe://alo/node/MAR");
    let pos = remote.iter().position(|a| a == "--cert").unwrap();
    remote[pos + 1] = operator.cert.display().to_string();
    remote[pos + 3] = operator.key.display().to_string();
    args.extend(remote);
    args.extend(["--out".into(), net.dir.path().join("op").display().to_string()]);
    let (code, text) = net.audit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("PermissionDenied"), "{text}");
    // The hub may read a node's checkpoints and proofs (its receipts), not its entries.
    let hub_cert = net.pki.issue("hub", "alo").unwrap();
    let channel = tabadul_certs::tls::channel(
        &mar.addr.to_string(),
        tabadul_certs::tls::Expect::Identity("spiffe://alo/node/MAR".parse().unwrap()),
        tabadul_certs::tls::client_config(&net.pki.tls_files(&hub_cert)).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut audit = pb::audit_client::AuditClient::new(channel);
    let latest = audit.checkpoint(pb::CheckpointRequest { size: 0 }).await.unwrap().into_inner();
    let size = offline::peek(&latest.checkpoint).unwrap().size;
    audit.inclusion_proof(pb::InclusionProofRequest { index: 0, tree_size: size }).await.unwrap();
    let err = audit.entries(pb::EntriesRequest { start: 0, end: 1 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    // Proofs beyond the log's end are refused with the reason.
    let err = audit.inclusion_proof(pb::InclusionProofRequest { index: 0, tree_size: size + 100 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
}

/// Flips one byte at `offset` of `path`.
fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("checkpoints")).unwrap();
    for item in walk(from) {
        let rel = item.strip_prefix(from).unwrap();
        std::fs::copy(&item, to.join(rel)).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out.sort();
    out
}

#[tokio::test]
async fn any_flipped_byte_and_any_dropped_leaf_is_reported() {
    let net = network(&["MAR"]);
    let hub = net.hub("hub", &net.members());
    let operator = net.pki.issue("operator", "analyst").unwrap();
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    for year in ["2023", "2024"] {
        for flow in ["UNE_PERS", "LF_PERS", "UNE_RATE"] {
            client.federated_query(query(flow, year)).await.unwrap();
        }
    }
    let (_, mar) = &net.nodes["MAR"];
    let node_dir = net.fetch(mar.addr, "spiffe://alo/node/MAR", "MAR");
    let hub_dir = net.fetch(hub.addr, "spiffe://alo/hub/alo", "hub");
    let key = Verifier::parse(&vkey_of(&net.pki, "alo/node/MAR")).unwrap();
    assert!(offline::verify(&LogDir::load(&node_dir).unwrap(), &key, None).findings.is_empty());

    // Every byte of every entry and checkpoint, flipped one at a time.
    let scratch = net.dir.path().join("scratch");
    let files: Vec<PathBuf> = walk(&node_dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "bin" || e == "note")).collect();
    let mut flips = 0;
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len() as usize;
        let rel = file.strip_prefix(&node_dir).unwrap();
        for offset in 0..len {
            let _ = std::fs::remove_dir_all(&scratch);
            copy_dir(&node_dir, &scratch);
            flip(&scratch.join(rel), offset);
            let report = offline::verify(&LogDir::load(&scratch).unwrap(), &key, None);
            assert!(!report.findings.is_empty(), "flipping byte {offset} of {} went unnoticed", rel.display());
            flips += 1;
        }
    }
    assert!(flips > 1000, "only {flips} flips tried");
    // And through the binary, with a precise report.
    let _ = std::fs::remove_dir_all(&scratch);
    copy_dir(&node_dir, &scratch);
    let entries = LogDir::load(&node_dir).unwrap().entries;
    let offset = 4 + entries[0].len() + 4 + 30; // inside entry 1
    flip(&scratch.join("entries.bin"), offset);
    let (code, text) = net.audit(&["verify", scratch.to_str().unwrap(), "--vkey", &key.to_string()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("TAMPERED") && text.contains("entry 1"), "{text}");

    // Entries no signed checkpoint covers are not "verified", even with
    // matching hashes beside them.
    let padded = net.dir.path().join("padded");
    let mut more = entries.clone();
    more.push(Entry::now("query", "spiffe://alo/hub/alo").encode());
    let d = LogDir::load(&node_dir).unwrap();
    offline::LogDir::write(&padded, &d.info, &more, &d.checkpoints.clone().into_iter().collect::<Vec<_>>(), &[], None).unwrap();
    let report = offline::verify(&LogDir::load(&padded).unwrap(), &key, None);
    assert!(report.findings.iter().any(|f| f.reason.contains("not covered by any verified signed checkpoint")), "{:?}", report.findings);
    // Nor are entries whose only checkpoint is the empty tree's.
    let bare = net.dir.path().join("bare");
    let empty: Vec<(u64, String)> = d.checkpoints.iter().filter(|(s, _)| **s == 0).map(|(s, n)| (*s, n.clone())).collect();
    let info = offline::LogInfo { size: 0, ..d.info.clone() };
    offline::LogDir::write(&bare, &info, &more, &empty, &[], None).unwrap();
    assert!(!offline::verify(&LogDir::load(&bare).unwrap(), &key, None).findings.is_empty());
    // Drop a leaf the hub holds a receipt for: cross-check names it.
    let hub_log = LogDir::load(&hub_dir).unwrap();
    let receipted: Vec<u64> = hub_log.entries.iter().filter_map(|e| Entry::decode(e).ok()).flat_map(|e| e.receipts).map(|r| r.index).collect();
    let victim = receipted[2] as usize;
    let mut dropped = entries.clone();
    dropped.remove(victim);
    let dropped_dir = net.dir.path().join("dropped");
    let info = LogDir::load(&node_dir).unwrap().info;
    let checkpoints: Vec<(u64, String)> = LogDir::load(&node_dir).unwrap().checkpoints.into_iter().collect();
    offline::LogDir::write(&dropped_dir, &info, &dropped, &checkpoints, &[], None).unwrap();
    let hub_log_again = LogDir::load(&hub_dir).unwrap();
    let found = offline::cross_check(&hub_log_again, &BTreeMap::from([("MAR".to_owned(), LogDir::load(&dropped_dir).unwrap())]), "spiffe://alo/hub/alo");
    assert!(found.iter().any(|f| f.at.contains(&format!("-> MAR {victim}"))), "{found:?}");
    // The binary matches receipts only between logs that verify: an
    // unverified directory is refused, and one whose stamp was copied from
    // a verified one is verified again, and fails.
    let hub_vkey = vkey_of(&net.pki, "alo/hub/alo");
    let (code, text) = net.audit(&["verify", hub_dir.to_str().unwrap(), "--vkey", &hub_vkey]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = net.audit(&["verify", node_dir.to_str().unwrap(), "--vkey", &key.to_string()]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = net.audit(&[
        "cross-check",
        "--hub",
        hub_dir.to_str().unwrap(),
        "--hub-identity",
        "spiffe://alo/hub/alo",
        "--node",
        &format!("MAR={}", dropped_dir.display()),
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("has not passed `tabadul-audit verify`"), "{text}");
    std::fs::copy(node_dir.join("verified.json"), dropped_dir.join("verified.json")).unwrap();
    let (code, text) = net.audit(&[
        "cross-check",
        "--hub",
        hub_dir.to_str().unwrap(),
        "--hub-identity",
        "spiffe://alo/hub/alo",
        "--node",
        &format!("MAR={}", dropped_dir.display()),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("checkpoint alo/node/MAR"), "{text}");
    // And the other way round: a node answer the hub never logged is an orphan.
    let mut hub_entries = hub_log.entries.clone();
    let pos = hub_entries.iter().position(|e| Entry::decode(e).unwrap().receipts.iter().any(|r| r.index == receipted[0])).unwrap();
    hub_entries.remove(pos);
    let hub_dropped = net.dir.path().join("hub-dropped");
    offline::LogDir::write(&hub_dropped, &hub_log.info, &hub_entries, &[], &[], None).unwrap();
    let found = offline::cross_check(
        &LogDir::load(&hub_dropped).unwrap(),
        &BTreeMap::from([("MAR".to_owned(), LogDir::load(&node_dir).unwrap())]),
        "spiffe://alo/hub/alo",
    );
    assert!(found.iter().any(|f| f.what == "orphan" && f.at == format!("MAR {}", receipted[0])), "{found:?}");
    // Through the binary, on the verified logs: nothing to report.
    let (code, text) = net.audit(&[
        "--json",
        "cross-check",
        "--hub",
        hub_dir.to_str().unwrap(),
        "--hub-identity",
        "spiffe://alo/hub/alo",
        "--node",
        &format!("MAR={}", node_dir.display()),
    ]);
    assert_eq!(code, 0, "{text}");
}

#[tokio::test]
async fn a_hub_showing_two_histories_to_two_witnesses_is_caught() {
    let net = network(&["MAR", "EGY"]);
    // One hub key, two data directories: the hub forks its log and shows
    // one branch to MAR, the other to EGY.
    let mut to_mar = net.members();
    to_mar.iter_mut().for_each(|m| m.witness = m.code == "MAR");
    let mut to_egy = net.members();
    to_egy.iter_mut().for_each(|m| m.witness = m.code == "EGY");
    let a = net.hub("hub-a", &to_mar);
    let b = net.hub("hub-b", &to_egy);
    let operator = net.pki.issue("operator", "analyst").unwrap();
    hub_client(a.addr, &net.pki.tls_files(&operator)).unwrap().federated_query(query("UNE_PERS", "2024")).await.unwrap();
    hub_client(b.addr, &net.pki.tls_files(&operator)).unwrap().federated_query(query("LF_PERS", "2023")).await.unwrap();

    // Each witness, seeing one branch only, cosigns it.
    let hub_vkey = net.pki.hub_log_key().unwrap().1;
    let hub_key = Verifier::parse(&hub_vkey).unwrap();
    // MAR's witness key as `keygen` printed it, EGY's as a cosigner key:
    // a policy accepts both spellings, and not one key twice.
    let mar_w = vkey_of(&net.pki, "alo/witness/MAR");
    let egy_w = Verifier::parse(&vkey_of(&net.pki, "alo/witness/EGY")).unwrap().cosigner();
    let twice = WitnessPolicy::parse(&format!("witness {mar_w}\nwitness {}\nquorum 1\n", Verifier::parse(&mar_w).unwrap().cosigner()));
    assert!(twice.unwrap_err().to_string().contains("listed twice"));
    let policy = WitnessPolicy::parse(&format!("witness {mar_w}\nwitness {egy_w}\nquorum 2\n")).unwrap();
    let one_each = eventually(Duration::from_secs(15), async || {
        let da = LogDir::load(&net.fetch(a.addr, "spiffe://alo/hub/alo", "a")).unwrap();
        let db = LogDir::load(&net.fetch(b.addr, "spiffe://alo/hub/alo", "b")).unwrap();
        offline::verify(&da, &hub_key, Some(&policy)).witnessed_by == ["alo/witness/MAR"]
            && offline::verify(&db, &hub_key, Some(&policy)).witnessed_by == ["alo/witness/EGY"]
    })
    .await;
    assert!(one_each, "each branch should carry its own witness's cosignature");
    // Caught 1: under a 2-of-2 policy neither branch verifies.
    for name in ["a", "b"] {
        let r = offline::verify(&LogDir::load(&net.dir.path().join("fetched").join(name)).unwrap(), &hub_key, Some(&policy));
        assert!(r.findings.iter().any(|f| f.what == "witness" && f.reason.contains("1 of the required 2")), "{:?}", r.findings);
    }
    // Caught 2: a witness shown the other branch refuses to cosign it.
    let b_cp = LogDir::load(&net.dir.path().join("fetched/b")).unwrap();
    let b_latest = b_cp.checkpoints.values().last().unwrap().clone();
    let hub_cert = net.pki.issue("hub", "alo").unwrap();
    let channel = tabadul_certs::tls::channel(
        &net.nodes["MAR"].1.addr.to_string(),
        tabadul_certs::tls::Expect::Identity("spiffe://alo/node/MAR".parse().unwrap()),
        tabadul_certs::tls::client_config(&net.pki.tls_files(&hub_cert)).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut witness = pb::witness_client::WitnessClient::new(channel);
    let size = offline::peek(&b_latest).unwrap().size;
    let err = witness.add_checkpoint(pb::AddCheckpointRequest { old_size: size, consistency_proof: vec![], checkpoint: b_latest.clone() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert!(err.message().contains("conflicting root") || err.message().contains("not consistent"), "{}", err.message());
    // Caught 3: an auditor who pinned branch A and then meets branch B
    // writes a fraud proof that anyone can check.
    let state = net.dir.path().join("pin");
    let fraud = net.dir.path().join("fraud.json");
    let watch = |addr: std::net::SocketAddr| {
        let mut args: Vec<String> = vec!["watch".into()];
        args.extend(net.remote_args(addr, "spiffe://alo/hub/alo"));
        args.extend(["--vkey".into(), hub_vkey.clone(), "--state".into(), state.display().to_string(), "--fraud-proof".into(), fraud.display().to_string()]);
        net.audit(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, text) = watch(a.addr);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("first sight"), "{text}");
    let pinned_a1 = std::fs::read_to_string(&state).unwrap();
    let (code, text) = watch(b.addr);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FORK"), "{text}");
    let (code, text) = net.audit(&["check-fraud", fraud.to_str().unwrap(), "--vkey", &hub_vkey]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("fraud proven") && text.contains("two different roots for tree size 1"), "{text}");
    let proven = std::fs::read_to_string(&fraud).unwrap();
    // Honest growth of branch A is accepted and re-pinned.
    hub_client(a.addr, &net.pki.tls_files(&operator)).unwrap().federated_query(query("UNE_RATE", "2024")).await.unwrap();
    std::fs::write(&state, &pinned_a1).unwrap();
    let (code, text) = watch(a.addr);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("grew consistently from size 1 to"), "{text}");
    // Branch B, now behind A's pin, is suspicious but proves nothing alone.
    let (code, text) = watch(b.addr);
    assert_eq!(code, 1, "{text}");
    let (code, text) = net.audit(&["check-fraud", fraud.to_str().unwrap(), "--vkey", &hub_vkey]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("inconclusive"), "{text}");
    std::fs::write(&fraud, proven).unwrap();
    // A "fraud proof" made with a look-alike key proves nothing about the real log.
    let mut fake: offline::FraudProof = serde_json::from_str(&std::fs::read_to_string(&fraud).unwrap()).unwrap();
    let impostor = tabadul_audit::Signer::generate("alo/hub/alo").unwrap();
    fake.vkey = impostor.verifier().to_string();
    fake.pinned = impostor.sign(&tabadul_audit::Note::parse(&fake.pinned).unwrap().text).unwrap();
    fake.conflicting = impostor.sign(&tabadul_audit::Note::parse(&fake.conflicting).unwrap().text).unwrap();
    let fake_path = net.dir.path().join("fake.json");
    std::fs::write(&fake_path, serde_json::to_string(&fake).unwrap()).unwrap();
    let (code, text) = net.audit(&["check-fraud", fake_path.to_str().unwrap(), "--vkey", &hub_vkey]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not the log key given"), "{text}");
    // A doctored fraud proof (both sides the same checkpoint) proves nothing.
    let mut doctored: offline::FraudProof = serde_json::from_str(&std::fs::read_to_string(&fraud).unwrap()).unwrap();
    doctored.conflicting = doctored.pinned.clone();
    std::fs::write(&fraud, serde_json::to_string(&doctored).unwrap()).unwrap();
    let (code, text) = net.audit(&["check-fraud", fraud.to_str().unwrap(), "--vkey", &hub_vkey]);
    assert_eq!(code, 0, "{text}");
}

#[tokio::test]
async fn kill_9_while_appending_loses_no_acknowledged_entry() {
    let mut net = network(&["MAR"]);
    let hub_cert = net.pki.issue("hub", "alo").unwrap();
    let files = net.pki.tls_files(&hub_cert);
    let (node, mut proc) = net.nodes.remove("MAR").unwrap();
    let key = Verifier::parse(&vkey_of(&net.pki, "alo/node/MAR")).unwrap();
    // 16 concurrent clients query as fast as they can, keeping every receipt.
    let receipts = std::sync::Arc::new(std::sync::Mutex::new(Vec::<pb::Receipt>::new()));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let receipts = receipts.clone();
        let mut client = node_client(proc.addr, &files, "MAR").unwrap();
        tasks.push(tokio::spawn(async move {
            loop {
                let q = pb::Query { dataflow: "UNE_PERS".into(), start_period: "2024".into(), end_period: "2024".into(), ..Default::default() };
                let Ok(stream) = client.query(q).await else { return };
                let mut stream = stream.into_inner();
                while let Ok(Some(m)) = stream.message().await {
                    if let Some(pb::query_response::Item::Receipt(r)) = m.item {
                        receipts.lock().unwrap().push(r);
                    }
                }
            }
        }));
    }
    let busy = eventually(Duration::from_secs(20), async || receipts.lock().unwrap().len() >= 300).await;
    assert!(busy, "load never got going");
    // Crash mid-append: no chance to flush anything.
    proc.signal("-KILL").unwrap();
    let _ = proc.child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acknowledged = receipts.lock().unwrap().clone();
    assert!(acknowledged.len() >= 300);
    // Restart on the same data: the log verifies and holds every entry
    // whose receipt left the node, under checkpoints consistent with the
    // ones those receipts carried.
    let restarted = node.start().unwrap();
    let out = net.fetch(restarted.addr, "spiffe://alo/node/MAR", "after-crash");
    let log = LogDir::load(&out).unwrap();
    let report = offline::verify(&log, &key, None);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let leaves: Vec<merkle::Hash> = log.entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    for r in &acknowledged {
        assert_eq!(leaves.get(r.index as usize), Some(&merkle::leaf_hash(&r.entry)), "acknowledged entry {} lost", r.index);
        let (cp, _) = Checkpoint::open(&r.checkpoint, &key).unwrap();
        assert!(cp.size as usize <= leaves.len());
        assert_eq!(merkle::root(&leaves[..cp.size as usize]), cp.root, "checkpoint {} was rewritten", cp.size);
    }
    // And the restarted log keeps appending where it stopped.
    let mut client = node_client(restarted.addr, &files, "MAR").unwrap();
    tabadul_tests::collect(&mut client, pb::Query { dataflow: "UNE_PERS".into(), ..Default::default() }).await.unwrap();
}

#[tokio::test]
async fn an_answer_whose_receipt_the_member_key_did_not_sign_is_not_used() {
    // The hub expects MAR's log key; MAR's node signs with another one (a
    // stolen node certificate with a fresh log key, or a misconfiguration).
    let net = network(&["MAR", "EGY"]);
    let mut members = net.members();
    let impostor = tabadul_audit::Signer::generate("alo/node/MAR").unwrap();
    members.iter_mut().find(|m| m.code == "MAR").unwrap().log_vkey = impostor.verifier().to_string();
    let hub = net.hub("hub", &members);
    let operator = net.pki.issue("operator", "analyst").unwrap();
    let r = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap().federated_query(query("UNE_PERS", "2024")).await.unwrap().into_inner();
    let mar = r.members.iter().find(|m| m.member == "MAR").unwrap();
    assert_eq!(mar.state, MemberState::Failed as i32, "{mar:?}");
    assert!(mar.detail.contains("receipt") && mar.detail.contains("alo/node/MAR"), "{}", mar.detail);
    assert!(r.cells.iter().all(|c| c.key[0] != "MAR"), "MAR's unproven figures were used");
    assert!(r.cells.iter().any(|c| c.key[0] == "EGY"));
    // The hub's leaf holds EGY's receipt only.
    let hub_key = Verifier::parse(&net.pki.hub_log_key().unwrap().1).unwrap();
    let own = tabadul_audit::receipt::verify(r.receipt.as_ref().unwrap(), &hub_key).unwrap();
    assert_eq!(own.entry.receipts.iter().map(|x| x.member.as_str()).collect::<Vec<_>>(), ["EGY"]);
}

#[tokio::test]
async fn a_node_that_replaces_its_log_is_caught_at_its_next_answer_even_by_a_restarted_hub() {
    let mut net = network(&["MAR", "EGY"]);
    let hub = net.hub("hub", &net.members());
    let operator = net.pki.issue("operator", "analyst").unwrap();
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    for year in ["2023", "2024"] {
        let r = client.federated_query(query("UNE_PERS", year)).await.unwrap().into_inner();
        assert!(r.members.iter().all(|m| m.state == MemberState::Answered as i32), "{:?}", r.members);
    }
    // The hub restarts in between: its pins are kept with its log.
    drop(client);
    drop(hub);
    let members = net.members();
    let hub = net.hub("hub", &members);
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    // MAR's operator wipes its log (same key, same address) and restarts:
    // a new history that does not extend the one the hub verified.
    let (node, mut proc) = net.nodes.remove("MAR").unwrap();
    let addr = proc.addr;
    proc.kill();
    std::fs::remove_dir_all(node.dir.join("data/log")).unwrap();
    let _restarted = node.start_at(&addr.to_string()).unwrap();
    let r = client.federated_query(query("UNE_PERS", "2024")).await.unwrap().into_inner();
    let mar = r.members.iter().find(|m| m.member == "MAR").unwrap();
    assert_eq!(mar.state, MemberState::Failed as i32, "{mar:?}");
    assert!(mar.detail.contains("went back") || mar.detail.contains("forked"), "{}", mar.detail);
    assert!(r.cells.iter().all(|c| c.key[0] != "MAR"));
    let egy = r.members.iter().find(|m| m.member == "EGY").unwrap();
    assert_eq!(egy.state, MemberState::Answered as i32, "an honest member is unaffected: {egy:?}");
    assert!(egy.receipt.as_ref().unwrap().consistency_from > 0, "EGY's receipt proves consistency with what the hub saw");

    // The ALO accepts the rollback (MAR restored a backup, say): with the
    // hub stopped, it drops the pin, and the decision is logged.
    let hub_toml = net.dir.path().join("hub/hub.toml");
    let unpin = |reason: &str| {
        Command::new(bin("tabadul-hub")).arg("unpin").arg("--config").arg(&hub_toml).args(["--member", "MAR", "--reason", reason]).output().unwrap()
    };
    // The detection reaches the hub's log (written off the answer's path).
    let recorded = eventually(Duration::from_secs(10), async || {
        let d = LogDir::load(&net.fetch(hub.addr, "spiffe://alo/hub/alo", "hub-fork")).unwrap();
        d.entries.iter().filter_map(|e| Entry::decode(e).ok()).any(|e| e.kind == "fork-detected")
    })
    .await;
    assert!(recorded, "the fork never reached the hub's log");
    let running = unpin("ticket 42");
    assert!(!running.status.success() && String::from_utf8_lossy(&running.stderr).contains("stop it first"), "{}", String::from_utf8_lossy(&running.stderr));
    drop(client);
    drop(hub);
    let out = unpin("ticket 42: MAR restored its backup of 2026-11-20");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped the pin of MAR's log at size"), "{}", String::from_utf8_lossy(&out.stdout));
    let hub = net.hub("hub", &members);
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    let r = client.federated_query(query("UNE_PERS", "2024")).await.unwrap().into_inner();
    assert!(r.members.iter().all(|m| m.state == MemberState::Answered as i32), "{:?}", r.members);
    // The reset is on the hub's record for auditors.
    let hub_dir = net.fetch(hub.addr, "spiffe://alo/hub/alo", "hub-after-unpin");
    let log = LogDir::load(&hub_dir).unwrap();
    let entries: Vec<Entry> = log.entries.iter().filter_map(|e| Entry::decode(e).ok()).collect();
    assert!(entries.iter().any(|e| e.kind == "pin-reset" && e.detail.contains("ticket 42")));
    // As is the detection itself, with its reason.
    assert!(entries.iter().any(|e| e.kind == "fork-detected" && e.peer == "alo/node/MAR" && e.detail.contains("forked")), "{entries:#?}");
}

#[tokio::test]
async fn a_hub_killed_mid_fan_out_restarts_with_a_log_that_verifies_and_stays_witnessed() {
    let net = network(&["MAR", "EGY"]);
    let members = net.members();
    let mut hub = net.hub("hub", &members);
    let operator = net.pki.issue("operator", "analyst").unwrap();
    let hub_vkey = net.pki.hub_log_key().unwrap().1;
    let hub_key = Verifier::parse(&hub_vkey).unwrap();
    let policy = WitnessPolicy::parse(&format!(
        "witness {}\nwitness {}\nquorum 2\n",
        Verifier::parse(&vkey_of(&net.pki, "alo/witness/MAR")).unwrap().cosigner(),
        Verifier::parse(&vkey_of(&net.pki, "alo/witness/EGY")).unwrap().cosigner()
    ))
    .unwrap();
    // Witnessed once before the crash.
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    client.federated_query(query("UNE_PERS", "2024")).await.unwrap();
    let witnessed = eventually(Duration::from_secs(15), async || {
        let d = LogDir::load(&net.fetch(hub.addr, "spiffe://alo/hub/alo", "before")).unwrap();
        offline::verify(&d, &hub_key, Some(&policy)).findings.is_empty()
    })
    .await;
    assert!(witnessed);
    // Federated queries in flight from 8 callers, then kill -9.
    let load: Vec<_> = (0..8)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                while c.federated_query(query("UNE_RATE", "2024")).await.is_ok() {
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    hub.signal("-KILL").unwrap();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = hub.child.wait();
    })
    .await;
    let mut answered = 0;
    for t in load {
        answered += t.await.unwrap();
    }
    assert!(answered > 0, "no query completed before the kill");
    // Same data, same key: it recovers, answers, its log verifies, and the
    // nodes, which remember what they cosigned, cosign its new checkpoints.
    let hub = net.hub("hub", &members);
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    let r = client.federated_query(query("LF_PERS", "2024")).await.unwrap().into_inner();
    assert!(r.members.iter().all(|m| m.state == MemberState::Answered as i32), "{:?}", r.members);
    let size_after = tabadul_audit::receipt::verify(r.receipt.as_ref().unwrap(), &hub_key).unwrap().checkpoint.size;
    let rewitnessed = eventually(Duration::from_secs(15), async || {
        let d = LogDir::load(&net.fetch(hub.addr, "spiffe://alo/hub/alo", "after")).unwrap();
        let report = offline::verify(&d, &hub_key, Some(&policy));
        let cosigned = d.cosigned.as_deref().and_then(|c| offline::peek(c).ok()).map_or(0, |c| c.size);
        report.findings.is_empty() && cosigned >= size_after
    })
    .await;
    assert!(rewitnessed, "the restarted hub's log does not verify or is not cosigned by both nodes");
}

/// The auditor's checks beyond a fetched log: a hub fetched after its
/// nodes holds receipts the fetched node logs cannot show (could not
/// check, not tampered), a receipt verifies on its own, and a log cut
/// short against a pin `watch` saved is caught.
#[tokio::test]
async fn an_auditor_tells_what_could_not_be_checked_from_what_was_tampered() {
    let net = network(&["MAR"]);
    let hub = net.hub("hub", &net.members());
    let operator = net.pki.issue("operator", "analyst").unwrap();
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    client.federated_query(query("UNE_PERS", "2023")).await.unwrap();
    client.federated_query(query("UNE_RATE", "2023")).await.unwrap();
    let (_, mar) = &net.nodes["MAR"];
    let node_vkey = vkey_of(&net.pki, "alo/node/MAR");
    let hub_vkey = vkey_of(&net.pki, "alo/hub/alo");
    // watch pins the node's log as it is now.
    let state = net.dir.path().join("mar.pin");
    let mut args: Vec<String> = vec!["watch".into()];
    args.extend(net.remote_args(mar.addr, "spiffe://alo/node/MAR"));
    args.extend(["--vkey".into(), node_vkey.clone(), "--state".into(), state.display().to_string()]);
    let (code, text) = net.audit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{text}");
    let early = net.fetch(mar.addr, "spiffe://alo/node/MAR", "MAR-early");
    client.federated_query(query("LF_PERS", "2024")).await.unwrap();
    let hub_dir = net.fetch(hub.addr, "spiffe://alo/hub/alo", "hub");
    let (code, text) = net.audit(&["verify", early.to_str().unwrap(), "--vkey", &node_vkey, "--pin", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = net.audit(&["verify", hub_dir.to_str().unwrap(), "--vkey", &hub_vkey]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = net.audit(&[
        "cross-check",
        "--hub",
        hub_dir.to_str().unwrap(),
        "--hub-identity",
        "spiffe://alo/hub/alo",
        "--node",
        &format!("MAR={}", early.display()),
    ]);
    assert_eq!(code, 2, "the hub fetched after the node is not evidence of tampering: {text}");
    assert!(text.contains("unchecked") && text.contains("fetch it again after the hub") && !text.contains("has no entry"), "{text}");
    // Fetched again after the hub: everything checks.
    let late = net.fetch(mar.addr, "spiffe://alo/node/MAR", "MAR-late");
    let (code, text) = net.audit(&["verify", late.to_str().unwrap(), "--vkey", &node_vkey, "--pin", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let (code, text) =
        net.audit(&["cross-check", "--hub", hub_dir.to_str().unwrap(), "--hub-identity", "spiffe://alo/hub/alo", "--node", &format!("MAR={}", late.display())]);
    assert_eq!(code, 0, "{text}");

    // A node log cut short below the pin fails verify --pin, though every
    // checkpoint it still holds verifies.
    let short = net.dir.path().join("fetched").join("MAR-short");
    let d = LogDir::load(&late).unwrap();
    let pinned = offline::peek(&std::fs::read_to_string(&state).unwrap()).unwrap().size;
    assert!(pinned >= 2, "pinned at {pinned}");
    let keep: Vec<(u64, String)> = d.checkpoints.iter().filter(|(s, _)| **s < pinned).map(|(s, n)| (*s, n.clone())).collect();
    let cut = offline::LogInfo { size: keep.last().unwrap().0, ..d.info.clone() };
    offline::LogDir::write(&short, &cut, &d.entries[..cut.size as usize], &keep, &[], None).unwrap();
    let (code, text) = net.audit(&["verify", short.to_str().unwrap(), "--vkey", &node_vkey]);
    assert_eq!(code, 0, "without the pin the shorter log verifies: {text}");
    let (code, text) = net.audit(&["verify", short.to_str().unwrap(), "--vkey", &node_vkey, "--pin", state.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cut short"), "{text}");

    // One receipt, checked offline from the hub's release proof.
    let http = tabadul_tests::http::Client::tls(hub.http.unwrap(), &net.pki.ca_cert(), Some(&net.pki.tls_files(&operator))).unwrap();
    let releases = http.get("/api/v1/releases?member=MAR", &[]).unwrap().json().unwrap();
    let leaf = releases["releases"][0]["member_leaf"].as_u64().unwrap();
    let proof = http.get(&format!("/api/v1/releases/MAR/{leaf}/proof"), &[]).unwrap();
    assert_eq!(proof.status, 200, "{}", proof.text());
    let receipt = dir_file(&net, "receipt.json", &proof.text());
    let (code, text) =
        net.audit(&["receipt", "verify", receipt.to_str().unwrap(), "--vkey", &node_vkey, "--pin", state.to_str().unwrap(), "--log", late.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    // Without the log, a pin of another size could not be checked.
    let (code, text) = net.audit(&["receipt", "verify", receipt.to_str().unwrap(), "--vkey", &node_vkey, "--pin", state.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    // Another leaf hash, or another key: tampered.
    let mut forged: serde_json::Value = proof.json().unwrap();
    forged["leaf_hash"] = serde_json::json!(hex::encode([7u8; 32]));
    let forged_file = dir_file(&net, "forged.json", &forged.to_string());
    let (code, text) = net.audit(&["receipt", "verify", forged_file.to_str().unwrap(), "--vkey", &node_vkey]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not proven"), "{text}");
    let (code, text) = net.audit(&["receipt", "verify", receipt.to_str().unwrap(), "--vkey", &hub_vkey]);
    assert_eq!(code, 1, "{text}");
}
