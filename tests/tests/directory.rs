//! The signed network directory end to end, with real processes: the hub
//! takes its members from it, nodes and auditors fetch it over HTTPS and
//! trust only the anchor; a forged, rolled-back or mismatched directory is
//! refused everywhere, and a member removed from it is no longer asked.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::Command;

use tabadul_proto::pb::{self, MemberState};
use tabadul_tests::{Cert, NodeDir, Pki, Proc, bin, dead_endpoint, hub_client, restart_hub_at, run_ok, synthetic, write_hub_config};

const POLICY: &str = "[[rule]]\nid = \"hub-all\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\", \"UNE_PERS\", \"LF_PERS\"]\nbreakdowns = []\n";

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

struct Net {
    dir: tempfile::TempDir,
    pki: Pki,
    authority_key: PathBuf,
    anchor: String,
    nodes: Vec<(NodeDir, Proc)>,
    hub_cert: Cert,
    auditor: Cert,
    grpc: String,
    http: String,
}

impl Net {
    /// `tabadul-directory build` of the given members (all witnesses),
    /// after `previous` if given, with `dictionary`.
    fn build(&self, name: &str, members: &[&str], previous: Option<&Path>, dictionary: &Path) -> PathBuf {
        let (_, hub_vkey) = self.pki.hub_log_key().unwrap();
        let mut input = format!(
            "network = \"alo\"\ncrl_url = \"https://pki.alo.example/crl.pem\"\nwitness_quorum = {}\n\n[[hub]]\nid = \"alo\"\nendpoint = {:?}\nhttps = {:?}\nlog_vkey = {hub_vkey:?}\n",
            members.len(),
            self.grpc,
            self.http
        );
        for m in members {
            let (node, proc) = self.nodes.iter().find(|(n, _)| n.member == *m).unwrap();
            input.push_str(&format!(
                "\n[[member]]\ncode = {m:?}\nendpoint = {:?}\nlog_vkey = {:?}\nwitness_vkey = {:?}\n",
                proc.addr.to_string(),
                node.log_vkey,
                node.witness_vkey
            ));
        }
        let input_path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&input_path, input).unwrap();
        let out = self.dir.path().join(format!("{name}.note"));
        let mut cmd = Command::new(bin("tabadul-directory"));
        cmd.arg("build").arg("--input").arg(&input_path).arg("--dictionary").arg(dictionary).arg("--key").arg(&self.authority_key).arg("--out").arg(&out);
        if let Some(p) = previous {
            cmd.arg("--previous").arg(p);
        }
        let (code, text) = run(&mut cmd);
        assert_eq!(code, 0, "{text}");
        out
    }

    fn hub_dir(&self) -> PathBuf {
        self.dir.path().join("hub")
    }

    /// Installs `note` as the hub's directory and (re)starts the hub at the
    /// addresses the directory lists.
    fn start_hub(&self, note: &Path) -> anyhow::Result<Proc> {
        std::fs::copy(note, self.hub_dir().join("directory.note")).unwrap();
        restart_hub_at(&self.hub_dir(), &self.grpc, &self.http)
    }

    fn audit(&self, args: &[&str]) -> (i32, String) {
        run(Command::new(bin("tabadul-audit")).args(args))
    }

    fn creds(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (flag, path) in
            [("--ca", self.pki.ca_cert()), ("--cert", self.auditor.cert.clone()), ("--key", self.auditor.key.clone()), ("--crl", self.pki.crl())]
        {
            out.push(flag.to_owned());
            out.push(path.display().to_string());
        }
        out
    }

    /// The size of `member`'s log, as an auditor fetches it.
    fn log_size(&self, member: &str, name: &str) -> u64 {
        let (_, proc) = self.nodes.iter().find(|(n, _)| n.member == member).unwrap();
        let out = self.pki.fetch_log(proc.addr, &format!("spiffe://alo/node/{member}"), &self.dir.path().join("sizes").join(name)).unwrap();
        tabadul_audit::offline::LogDir::load(&out).unwrap().info.size
    }
}

fn network() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let mut nodes = Vec::new();
    for member in ["MAR", "EGY"] {
        let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, POLICY).unwrap();
        let data = node.dir.join("data.csv");
        std::fs::write(&data, synthetic::to_sdmx_csv(&synthetic::generate(member, 2023..=2024))).unwrap();
        run_ok(node.command(&["import"]).arg(&data)).unwrap();
        let proc = node.start().unwrap();
        nodes.push((node, proc));
    }
    let authority_key = dir.path().join("authority.key");
    let (code, anchor) = run(Command::new(bin("tabadul-directory")).args(["keygen", "--network", "alo", "--out"]).arg(&authority_key));
    assert_eq!(code, 0, "{anchor}");
    let anchor = anchor.trim().to_owned();
    assert!(anchor.starts_with("alo/directory+"), "{anchor}");
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let auditor = pki.issue("auditor", "court").unwrap();
    let (grpc, http) = (dead_endpoint().unwrap(), dead_endpoint().unwrap());
    let net = Net { dir, pki, authority_key, anchor, nodes, hub_cert, auditor, grpc, http };
    let extra = format!("crl_reload_interval_ms = 100\n[directory]\nanchor = {:?}\nfile = \"directory.note\"\n", net.anchor);
    write_hub_config(&net.hub_dir(), &net.pki, &net.hub_cert, &[], 3000, &extra).unwrap();
    net
}

fn query() -> pb::FederatedQueryRequest {
    pb::FederatedQueryRequest {
        query: Some(pb::Query { dataflow: "UNE_PERS".into(), start_period: "2023".into(), end_period: "2023".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// Replaces the first `from` in a signed note's text, keeping its
/// signature: what an attacker who can only change the file can do.
fn tamper(note: &Path, from: &str, to: &str, out: &Path) {
    let text = std::fs::read_to_string(note).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(out, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test]
async fn the_network_directory_decides_who_is_asked_and_an_auditor_needs_only_the_anchor() {
    let net = network();
    let dict = tabadul_tests::dictionary_path();
    let v1 = net.build("v1", &["MAR", "EGY"], None, &dict);
    let (code, text) = run(Command::new(bin("tabadul-directory")).args(["verify", "--anchor", &net.anchor]).arg(&v1));
    assert_eq!(code, 0, "{text}");

    // The hub takes its members from the directory.
    let hub = net.start_hub(&v1).unwrap();
    let operator = net.pki.issue("operator", "analyst").unwrap();
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    let r = client.federated_query(query()).await.unwrap().into_inner();
    let mut answered: Vec<&str> = r.members.iter().filter(|m| m.state == MemberState::Answered as i32).map(|m| m.member.as_str()).collect();
    answered.sort();
    assert_eq!(answered, ["EGY", "MAR"], "{r:?}");
    let (_, text) = run(Command::new(bin("tabadul-hub")).arg("doctor").arg("--config").arg(net.hub_dir().join("hub.toml")));
    assert!(text.contains("network directory") && text.contains("version 1 verified against the anchor: 2 members"), "{text}");

    // A node fetches it over HTTPS and keeps it; the dictionary matches.
    let hub_url = format!("https://{}", net.http);
    let (mar_node, _) = &net.nodes[0];
    let node_toml = std::fs::read_to_string(&mar_node.config).unwrap();
    std::fs::write(&mar_node.config, format!("{node_toml}\n[directory]\nanchor = {:?}\nhub = {hub_url:?}\n", net.anchor)).unwrap();
    let (code, text) = run(&mut mar_node.command(&["directory", "fetch"]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("directory version 1 (new; 2 members)"), "{text}");

    // An auditor with only the anchor (and an auditor certificate): the
    // directory, every log it names, verified and cross-checked.
    let _ = client.federated_query(query()).await.unwrap();
    let cosigned = tabadul_tests::eventually(std::time::Duration::from_secs(20), async || {
        let mut audit = pb::audit_client::AuditClient::new(
            tabadul_certs::tls::channel(
                &hub.addr.to_string(),
                tabadul_certs::tls::Expect::Identity("spiffe://alo/hub/alo".parse().unwrap()),
                tabadul_certs::tls::client_config(&net.pki.tls_files(&net.auditor)).unwrap(),
                std::time::Duration::from_secs(5),
            )
            .unwrap(),
        );
        let c = audit.checkpoint(pb::CheckpointRequest { size: 0 }).await.unwrap().into_inner();
        let note = tabadul_audit::Note::parse(&c.cosigned).ok();
        note.is_some_and(|n| n.signatures.len() >= 3)
    })
    .await;
    assert!(cosigned, "the hub's checkpoint was never cosigned by both witnesses");
    let seen = net.dir.path().join("auditor-directory");
    let ca = net.pki.ca_cert().display().to_string();
    let (code, text) = net.audit(&["directory", "fetch", "--hub", &hub_url, "--ca", &ca, "--anchor", &net.anchor, "--out", seen.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let logs = net.dir.path().join("all-logs");
    let nd = ["--network-directory", seen.to_str().unwrap(), "--anchor", &net.anchor];
    let mut args: Vec<String> = ["fetch", "--all"].iter().map(|s| s.to_string()).collect();
    args.extend(nd.iter().map(|s| s.to_string()));
    args.extend(net.creds());
    args.extend(["--out".into(), logs.display().to_string()]);
    let (code, text) = net.audit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{text}");
    for sub in ["hub-alo", "MAR", "EGY"] {
        assert!(logs.join(sub).join("log.json").exists(), "{sub} not fetched: {text}");
    }
    let mut verify = vec!["verify", logs.to_str().unwrap()];
    verify.extend(nd);
    let (code, text) = net.audit(&verify);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("alo/witness/MAR") && text.contains("alo/witness/EGY"), "the directory's witness policy was applied: {text}");
    let mut cross = vec!["cross-check"];
    cross.extend(nd);
    cross.push(logs.to_str().unwrap());
    let (code, text) = net.audit(&cross);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cross-checked the hub log alo/hub/alo") && text.contains("with 2 node logs"), "{text}");
    // A held version changed on the auditor's disk is refused on use.
    let held = seen.join("versions").join("1.note");
    let original = std::fs::read_to_string(&held).unwrap();
    tamper(&held, "\"code\": \"EGY\"", "\"code\": \"EGX\"", &held);
    let (code, text) = net.audit(&verify);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("directory refused"), "{text}");
    std::fs::write(&held, original).unwrap();

    // A directory whose endpoint was changed without the anchor's
    // signature: the hub refuses to start with it.
    drop(hub);
    let forged = net.dir.path().join("forged.note");
    let egy_endpoint = net.nodes[1].1.addr.to_string();
    tamper(&v1, &egy_endpoint, &dead_endpoint().unwrap(), &forged);
    let e = net.start_hub(&forged).unwrap_err().to_string();
    assert!(e.contains("directory.note") && e.contains("does not verify"), "{e}");
    // Signed, but by another key named like the authority's: refused too.
    let impostor = net.dir.path().join("impostor.key");
    run_ok(Command::new(bin("tabadul-directory")).args(["keygen", "--network", "alo", "--out"]).arg(&impostor)).unwrap();
    let signed_by_impostor = net.dir.path().join("impostor.note");
    run_ok(
        Command::new(bin("tabadul-directory"))
            .arg("build")
            .arg("--input")
            .arg(net.dir.path().join("v1.toml"))
            .arg("--dictionary")
            .arg(&dict)
            .arg("--key")
            .arg(&impostor)
            .arg("--out")
            .arg(&signed_by_impostor),
    )
    .unwrap();
    let (code, text) = run(Command::new(bin("tabadul-directory")).args(["verify", "--anchor", &net.anchor]).arg(&signed_by_impostor));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not signed by the directory anchor"), "{text}");
    let e = net.start_hub(&signed_by_impostor).unwrap_err().to_string();
    assert!(e.contains("not signed by the directory anchor"), "{e}");
    let (code, text) = run(Command::new(bin("tabadul-directory")).args(["verify", "--anchor", &net.anchor]).arg(&forged));
    assert_eq!(code, 1, "{text}");

    // Installed while the hub runs: a forged directory is refused and the
    // members stay; version 2, which removes EGY, applies at once and EGY
    // is not asked again.
    let hub = net.start_hub(&v1).unwrap();
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    std::fs::copy(&forged, net.hub_dir().join("directory.note")).unwrap();
    let refused = tabadul_tests::eventually(std::time::Duration::from_secs(10), async || hub.log_text().contains("new network directory refused")).await;
    assert!(refused, "{}", hub.log_text());
    let r = client.federated_query(query()).await.unwrap().into_inner();
    assert_eq!(r.members.len(), 2, "{r:?}");
    let v2 = net.build("v2", &["MAR"], Some(&v1), &dict);
    std::fs::copy(&v2, net.hub_dir().join("directory.note")).unwrap();
    let front = tabadul_tests::http::Client::tls(hub.http.unwrap(), &net.pki.ca_cert(), None).unwrap();
    let applied =
        tabadul_tests::eventually(std::time::Duration::from_secs(10), async || front.get("/directory", &[]).is_ok_and(|a| a.text().contains("\"version\": 2")))
            .await;
    assert!(applied, "{}", hub.log_text());
    let before = net.log_size("EGY", "before");
    let r = client.federated_query(query()).await.unwrap().into_inner();
    let asked: Vec<&str> = r.members.iter().map(|m| m.member.as_str()).collect();
    assert_eq!(asked, ["MAR"], "{r:?}");
    assert_eq!(net.log_size("EGY", "after"), before, "EGY was asked after its removal");
    let egy = pb::FederatedQueryRequest { members: vec!["EGY".into()], ..query() };
    let err = client.federated_query(egy).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // Version 1 installed again while the hub runs: a rollback, refused.
    std::fs::copy(&v1, net.hub_dir().join("directory.note")).unwrap();
    let refused = tabadul_tests::eventually(std::time::Duration::from_secs(10), async || hub.log_text().contains("older than version 2")).await;
    assert!(refused, "{}", hub.log_text());
    let r = client.federated_query(query()).await.unwrap().into_inner();
    assert_eq!(r.members.iter().map(|m| m.member.as_str()).collect::<Vec<_>>(), ["MAR"], "{r:?}");
    // And after a restart, the same.
    drop(hub);
    let hub = net.start_hub(&v2).unwrap();
    let mut client = hub_client(hub.addr, &net.pki.tls_files(&operator)).unwrap();
    let r = client.federated_query(query()).await.unwrap().into_inner();
    assert_eq!(r.members.iter().map(|m| m.member.as_str()).collect::<Vec<_>>(), ["MAR"], "{r:?}");
    // The node follows: version 2 after version 1.
    let (code, text) = run(&mut mar_node.command(&["directory", "fetch"]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("directory version 2 (new; 1 members)"), "{text}");
    // The auditor's second fetch checks the chain 1..2 against the first.
    let (code, text) = net.audit(&["directory", "fetch", "--hub", &hub_url, "--ca", &ca, "--anchor", &net.anchor, "--out", seen.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("versions 1..2"), "{text}");

    // Rolled back to version 1: the hub that applied version 2 refuses it.
    drop(hub);
    let e = net.start_hub(&v1).unwrap_err().to_string();
    assert!(e.contains("older than version 2"), "{e}");
    // A second hub that serves version 1: the node that holds 2 refuses it.
    let other = net.dir.path().join("other-hub");
    let extra = format!("[directory]\nanchor = {:?}\nfile = \"directory.note\"\n", net.anchor);
    write_hub_config(&other, &net.pki, &net.hub_cert, &[], 3000, &extra).unwrap();
    std::fs::copy(&v1, other.join("directory.note")).unwrap();
    let other_hub = restart_hub_at(&other, "127.0.0.1:0", "127.0.0.1:0").unwrap();
    let toml = std::fs::read_to_string(&mar_node.config).unwrap().replace(&hub_url, &format!("https://{}", other_hub.http.unwrap()));
    std::fs::write(&mar_node.config, toml).unwrap();
    let (code, text) = run(&mut mar_node.command(&["directory", "fetch"]));
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("version 1 is older than version 2"), "{text}");
    // And an auditor who saw version 2 refuses the shorter history.
    let (code, text) = net.audit(&[
        "directory",
        "fetch",
        "--hub",
        &format!("https://{}", other_hub.http.unwrap()),
        "--ca",
        &ca,
        "--anchor",
        &net.anchor,
        "--out",
        seen.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("older than version 2"), "{text}");

    // The node's held version changed on its disk: it will not start.
    let held = mar_node.dir.join("data").join("directory").join("2.note");
    let original = std::fs::read_to_string(&held).unwrap();
    tamper(&held, &net.nodes[0].1.addr.to_string(), &dead_endpoint().unwrap(), &held);
    let e = mar_node.start().unwrap_err().to_string();
    assert!(e.contains("directory refused") && e.contains("does not verify"), "{e}");
    std::fs::write(&held, original).unwrap();

    // A dictionary other than the one the directory names: the node will
    // not start with it, and a hub will not start with a directory naming
    // another dictionary.
    let changed = net.dir.path().join("dictionary-changed.toml");
    std::fs::write(&changed, format!("{}\n# a local edit\n", std::fs::read_to_string(&dict).unwrap())).unwrap();
    let toml = std::fs::read_to_string(&mar_node.config).unwrap().replace(&format!("{:?}", dict), &format!("{:?}", changed));
    std::fs::write(&mar_node.config, toml).unwrap();
    let e = mar_node.start().unwrap_err().to_string();
    assert!(e.contains("requires") && e.contains("dictionary"), "{e}");
    let v3 = net.build("v3", &["MAR"], Some(&v2), &changed);
    let e = net.start_hub(&v3).unwrap_err().to_string();
    assert!(e.contains("network directory (version 3) requires"), "{e}");
}
