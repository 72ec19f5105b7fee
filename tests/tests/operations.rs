//! Operating a node: online backup while it serves, restore, and the log
//! verifying after the restore.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::process::Command;

use tabadul_audit::Verifier;
use tabadul_audit::offline::{self, LogDir};
use tabadul_proto::pb;
use tabadul_tests::{NodeDir, Pki, bin, collect, node_client, run_ok, synthetic};

const POLICY: &str = "[[rule]]\nid = \"hub-all\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\", \"UNE_PERS\", \"LF_PERS\"]\nbreakdowns = []\n";

/// Imports synthetic data for `member` and `years` into a stopped node.
fn import_synthetic(node: &NodeDir, member: &str, years: std::ops::RangeInclusive<i32>) {
    let data = node.dir.join("data.csv");
    std::fs::write(&data, synthetic::to_sdmx_csv(&synthetic::generate(member, years))).unwrap();
    run_ok(node.command(&["import"]).arg(&data)).unwrap();
}

/// Edits the node's configuration: replaces the first `from` with `to`.
fn configure(node: &NodeDir, from: &str, to: &str) {
    let config = std::fs::read_to_string(&node.config).unwrap();
    assert!(config.contains(from), "{from:?} not in {config}");
    std::fs::write(&node.config, config.replacen(from, to, 1)).unwrap();
}

/// Fetches MAR's log from the node at `addr` into `out`, as an auditor.
fn fetch_node_log(pki: &Pki, addr: std::net::SocketAddr, out: &std::path::Path) -> std::path::PathBuf {
    pki.fetch_log(addr, "spiffe://alo/node/MAR", out).unwrap()
}

fn entries_of(status: &str) -> u64 {
    status.lines().find(|l| l.starts_with("log entries")).unwrap().split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_online_backup_restores_to_a_node_whose_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    configure(&node, "reload_interval_ms", "shutdown_grace_ms = 1000\nreload_interval_ms");
    import_synthetic(&node, "MAR", 2023..=2024);
    let proc = node.start().unwrap();
    let hub = pki.issue("hub", "alo").unwrap();
    let mut client = node_client(proc.addr, &pki.tls_files(&hub), "MAR").unwrap();
    let q = || pb::Query { dataflow: "UNE_PERS".into(), start_period: "2024".into(), end_period: "2024".into(), ..Default::default() };
    for _ in 0..5 {
        collect(&mut client, q()).await.unwrap();
    }

    // Online: the node keeps answering while the backup is taken.
    let backup = dir.path().join("backup-1");
    let taking = tokio::task::spawn_blocking({
        let cmd = node.command(&["backup", "--out", backup.to_str().unwrap()]);
        move || run_ok(cmd)
    });
    for _ in 0..5 {
        collect(&mut client, q()).await.unwrap();
    }
    let out = taking.await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("observations") && text.contains("log entries"), "{text}");
    let manifest: tabadul_node::backup::Manifest = serde_json::from_str(&std::fs::read_to_string(backup.join("backup.json")).unwrap()).unwrap();
    assert!(manifest.log_entries >= 5, "{manifest:?}");
    // The count is the backup's own, read from the copy.
    let imported = synthetic::generate("MAR", 2023..=2024).len() as u64;
    assert_eq!(manifest.observations, imported, "{manifest:?}");
    // A second backup into the same directory is refused; nothing is overwritten.
    let again = node.command(&["backup", "--out", backup.to_str().unwrap()]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{}", String::from_utf8_lossy(&again.stderr));

    // More traffic after the backup, then a restore (which needs the node stopped).
    for _ in 0..3 {
        collect(&mut client, q()).await.unwrap();
    }
    let busy = node.command(&["restore", "--from", backup.to_str().unwrap()]).output().unwrap();
    assert!(!busy.status.success() && String::from_utf8_lossy(&busy.stderr).contains("stop it"), "{}", String::from_utf8_lossy(&busy.stderr));
    let status_before = String::from_utf8_lossy(&run_ok(node.command(&["status"])).unwrap().stdout).to_string();
    // A graceful stop: the client's idle connection is still open, which
    // the node's grace period (here 1 s) must not wait on for ever.
    let mut proc = proc;
    proc.signal("-TERM").unwrap();
    let stopping = std::time::Instant::now();
    let exited = tokio::task::spawn_blocking(move || proc.child.wait()).await.unwrap().unwrap();
    assert!(exited.success(), "{exited:?}");
    assert!(stopping.elapsed() < std::time::Duration::from_secs(8), "took {:?}", stopping.elapsed());
    drop(client);
    let restored = run_ok(node.command(&["restore", "--from", backup.to_str().unwrap()])).unwrap();
    let text = String::from_utf8_lossy(&restored.stdout).to_string();
    assert!(text.contains("restored the backup of MAR") && text.contains("before-restore-"), "{text}");
    // The replaced data was kept.
    let aside: Vec<_> = std::fs::read_dir(node.dir.join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("before-restore-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(aside[0].path().join("log").is_dir() && aside[0].path().join("store").is_dir());

    // The restored node serves; its log ends at the backup and verifies.
    let proc = node.start().unwrap();
    let status = String::from_utf8_lossy(&run_ok(node.command(&["status"])).unwrap().stdout).to_string();
    assert_eq!(entries_of(&status), manifest.log_entries, "{status}");
    assert!(entries_of(&status_before) > manifest.log_entries);
    let mut client = node_client(proc.addr, &pki.tls_files(&hub), "MAR").unwrap();
    let (d, cells) = collect(&mut client, q()).await.unwrap();
    assert_eq!(d.kind, pb::DecisionKind::Allowed as i32);
    assert!(!cells.is_empty());
    let fetched = fetch_node_log(&pki, proc.addr, &dir.path().join("fetched"));
    let key = Verifier::parse(&node.log_vkey).unwrap();
    let report = offline::verify(&LogDir::load(&fetched).unwrap(), &key, None);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.entries, manifest.log_entries + 1, "the backup's entries and the one query since");
}

#[test]
fn a_damaged_backup_is_refused_and_the_data_stays() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    import_synthetic(&node, "MAR", 2024..=2024);
    drop(node.start().unwrap());
    // Offline backup (no node running), then damage it.
    let backup = dir.path().join("b");
    run_ok(node.command(&["backup", "--out", backup.to_str().unwrap()])).unwrap();
    std::fs::write(backup.join("backup.json"), "{ not json").unwrap();
    let out = node.command(&["restore", "--from", backup.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged backup"), "{}", String::from_utf8_lossy(&out.stderr));
    // A backup of another member is refused too.
    let other = NodeDir::create(&dir.path().join("other"), &pki, "EGY", POLICY).unwrap();
    let b2 = dir.path().join("b2");
    run_ok(other.command(&["backup", "--out", b2.to_str().unwrap()])).unwrap();
    let out = node.command(&["restore", "--from", b2.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a backup of EGY, not of MAR"), "{}", String::from_utf8_lossy(&out.stderr));
    // Nothing moved: no before-restore directory, and the node still starts.
    assert!(!std::fs::read_dir(node.dir.join("data")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("before-restore-")));
    drop(node.start().unwrap());
}

/// Every file under `dir` with its inode.
fn inodes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
        if e.path().is_dir() {
            out.extend(inodes(&e.path()));
        } else {
            out.push((e.path(), e.metadata().unwrap().ino()));
        }
    }
    out
}

/// The runbook's disaster: the live store is damaged after a backup. The
/// backup must not share a single file with the live store (a RocksDB
/// checkpoint hard-links by default, so damage to one was damage to both),
/// and `restore` must move the damaged data aside without opening it.
#[tokio::test]
async fn a_backup_survives_damage_to_the_live_store_and_restores_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    import_synthetic(&node, "MAR", 2023..=2024);
    let proc = node.start().unwrap();
    let hub = pki.issue("hub", "alo").unwrap();
    let mut client = node_client(proc.addr, &pki.tls_files(&hub), "MAR").unwrap();
    let q = || pb::Query { dataflow: "UNE_PERS".into(), start_period: "2024".into(), end_period: "2024".into(), ..Default::default() };
    let (_, before) = collect(&mut client, q()).await.unwrap();
    let backup = dir.path().join("backup");
    run_ok(node.command(&["backup", "--out", backup.to_str().unwrap()])).unwrap();
    drop(client);
    drop(proc);

    let live: std::collections::BTreeSet<u64> =
        inodes(&node.dir.join("data/store")).into_iter().chain(inodes(&node.dir.join("data/log"))).map(|(_, i)| i).collect();
    let copied = inodes(&backup);
    let shared: Vec<_> = copied.iter().filter(|(_, i)| live.contains(i)).collect();
    assert!(shared.is_empty(), "the backup shares files with the live store: {shared:?}");
    assert!(copied.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "sst")), "no table files in the backup: {copied:?}");
    assert!(
        !std::fs::read_dir(node.dir.join("data")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".backup-links")),
        "the checkpoint's links were left behind"
    );

    // Damage every table and manifest file of the live store in place.
    let mut damaged = 0;
    for (path, _) in inodes(&node.dir.join("data/store")) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".sst") || name.starts_with("MANIFEST") || name == "CURRENT" {
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            std::fs::write(&path, vec![0xA5u8; len.max(16) / 2]).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    assert!(!node.command(&["status"]).output().unwrap().status.success(), "the damage was not damage");

    let out = run_ok(node.command(&["restore", "--from", backup.to_str().unwrap()])).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("restored the backup of MAR") && text.contains("before-restore-"), "{text}");
    let proc = node.start().unwrap();
    let mut client = node_client(proc.addr, &pki.tls_files(&hub), "MAR").unwrap();
    let (_, after) = collect(&mut client, q()).await.unwrap();
    assert_eq!(after.len(), before.len(), "the restored node answers as before the damage");
    assert_eq!(after.iter().map(|c| c.value).sum::<f64>(), before.iter().map(|c| c.value).sum::<f64>());
}

/// `restore` on a running node refuses and moves nothing.
#[test]
fn restore_refuses_while_the_node_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    import_synthetic(&node, "MAR", 2024..=2024);
    let backup = dir.path().join("b");
    run_ok(node.command(&["backup", "--out", backup.to_str().unwrap()])).unwrap();
    let _proc = node.start().unwrap();
    let out = node.command(&["restore", "--from", backup.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("running") && stderr.contains("stop it"), "{stderr}");
    assert!(!std::fs::read_dir(node.dir.join("data")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("before-restore-")));
}

/// The value of a sample line `name{labels} value` in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

#[tokio::test]
async fn node_and_hub_serve_prometheus_metrics_that_follow_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let mut procs = Vec::new();
    let mut members = Vec::new();
    for (member, breakdowns) in [("MAR", "[\"SEX\"]"), ("EGY", "[]")] {
        let policy =
            format!("[[rule]]\nid = \"hub-all\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\", \"UNE_PERS\", \"LF_PERS\"]\nbreakdowns = {breakdowns}\n");
        let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, &policy).unwrap();
        import_synthetic(&node, member, 2024..=2024);
        let proc = node.start().unwrap();
        members.push(tabadul_tests::HubMember::new(&pki, member, proc.addr.to_string()).unwrap());
        procs.push(proc);
    }
    members.push(tabadul_tests::HubMember::new(&pki, "LBY", tabadul_tests::dead_endpoint().unwrap()).unwrap());
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = tabadul_tests::start_hub(&dir.path().join("hub"), &pki, &hub_cert, &members, 2000).unwrap();
    let before = procs[0].scrape().unwrap();
    assert!(before.contains("# TYPE tabadul_node_queries_total counter"), "{before}");
    assert_eq!(sample(&before, "tabadul_node_log_entries"), Some(0.0), "{before}");
    let expiry = sample(&before, "tabadul_node_certificate_expiry_seconds").unwrap();
    assert!(expiry > 0.0 && expiry < 400.0 * 86_400.0, "{expiry}");

    let operator = pki.issue("operator", "analyst").unwrap();
    let mut client = tabadul_tests::hub_client(hub.addr, &pki.tls_files(&operator)).unwrap();
    let by_sex = pb::FederatedQueryRequest {
        query: Some(pb::Query {
            dataflow: "UNE_RATE".into(),
            breakdown: vec!["SEX".into()],
            start_period: "2024".into(),
            end_period: "2024".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    for _ in 0..3 {
        client.federated_query(by_sex.clone()).await.unwrap();
    }
    // A role refusal counts too.
    let mut as_node = tabadul_tests::hub_client(hub.addr, &pki.tls_files(&pki.issue("node", "MAR").unwrap())).unwrap();
    as_node.federated_query(by_sex.clone()).await.unwrap_err();

    let mar = procs[0].scrape().unwrap();
    let egy = procs[1].scrape().unwrap();
    let hub_text = hub.scrape().unwrap();
    assert_eq!(sample(&mar, "tabadul_node_queries_total{decision=\"allowed\"}"), Some(3.0), "{mar}");
    assert_eq!(sample(&egy, "tabadul_node_queries_total{decision=\"refused\"}"), Some(3.0), "{egy}");
    assert_eq!(sample(&mar, "tabadul_node_query_seconds_count"), Some(3.0), "{mar}");
    assert_eq!(sample(&mar, "tabadul_node_log_entries"), Some(3.0), "{mar}");
    assert_eq!(sample(&hub_text, "tabadul_hub_federated_queries_total{outcome=\"answered\"}"), Some(3.0), "{hub_text}");
    assert_eq!(sample(&hub_text, "tabadul_hub_federated_queries_total{outcome=\"refused-role\"}"), Some(1.0), "{hub_text}");
    assert_eq!(sample(&hub_text, "tabadul_hub_member_answers_total{member=\"LBY\",state=\"unreachable\"}"), Some(3.0), "{hub_text}");
    assert_eq!(sample(&hub_text, "tabadul_hub_member_answers_total{member=\"EGY\",state=\"refused\"}"), Some(3.0), "{hub_text}");
    assert_eq!(sample(&hub_text, "tabadul_hub_member_log_forked{member=\"MAR\"}"), Some(0.0), "{hub_text}");
    assert_eq!(sample(&hub_text, "tabadul_hub_log_entries"), Some(4.0), "three answers and one refusal: {hub_text}");
    assert_eq!(sample(&hub_text, "tabadul_hub_log_writable"), Some(1.0), "{hub_text}");
    let age = sample(&hub_text, "tabadul_hub_log_published_checkpoint_age_seconds").expect("the hub's checkpoint age is exposed");
    assert!((0.0..60.0).contains(&age), "{age}");
    // Anything but GET /metrics is turned away.
    let mut s = std::net::TcpStream::connect(hub.metrics.unwrap()).unwrap();
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
}

#[tokio::test]
async fn a_requester_over_its_limits_is_told_so_and_others_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    configure(&node, "reload_interval_ms", "max_concurrent_per_peer = 2\nmax_queries_per_second_per_peer = 5\nreload_interval_ms");
    import_synthetic(&node, "MAR", 2024..=2024);
    let proc = node.start().unwrap();
    let hub = pki.issue("hub", "alo").unwrap();
    let client = node_client(proc.addr, &pki.tls_files(&hub), "MAR").unwrap();
    let q = || pb::Query { dataflow: "UNE_PERS".into(), ..Default::default() };
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { collect(&mut c, q()).await })
        })
        .collect();
    let mut ok = 0;
    let mut limited = Vec::new();
    for t in burst {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                limited.push(s.message().to_owned());
            }
        }
    }
    assert!((1..=5).contains(&ok), "{ok} answered in a burst of 20 at 5/s");
    assert!(limited.iter().any(|m| m.contains("per second") || m.contains("in progress")), "{limited:?}");
    assert!(limited.iter().all(|m| m.contains("spiffe://alo/hub/alo")), "{limited:?}");
    // Another requester is not held back by the hub's flood.
    let other = pki.issue("node", "EGY").unwrap();
    let mut egy = node_client(proc.addr, &pki.tls_files(&other), "MAR").unwrap();
    let (d, _) = collect(&mut egy, q()).await.unwrap();
    assert_eq!(d.kind, pb::DecisionKind::Refused as i32, "a policy decision, not a limit");
    // The limit refills: asked again until it answers (each refusal meanwhile
    // counted), within a deadline rather than after a fixed sleep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut refused_meanwhile = 0;
    loop {
        let mut c = client.clone();
        match collect(&mut c, q()).await {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::ResourceExhausted && std::time::Instant::now() < deadline => {
                refused_meanwhile += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(s) => panic!("the limit never refilled: {s:?}"),
        }
    }
    // Limited requests are counted, not logged.
    let metrics = proc.scrape().unwrap();
    assert_eq!(sample(&metrics, "tabadul_node_queries_total{decision=\"limited\"}"), Some((limited.len() + refused_meanwhile) as f64), "{metrics}");
    let status = String::from_utf8_lossy(&run_ok(node.command(&["status"])).unwrap().stdout).to_string();
    assert_eq!(entries_of(&status), ok + 2, "{status}");
}

#[tokio::test]
async fn hub_doctor_names_each_problem_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let mut procs = Vec::new();
    let mut members = Vec::new();
    for member in ["MAR", "EGY"] {
        let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, POLICY).unwrap();
        let proc = node.start().unwrap();
        members.push(tabadul_tests::HubMember::new(&pki, member, proc.addr.to_string()).unwrap());
        procs.push(proc);
    }
    // EGY's key in the hub's configuration is not the one its log signs with.
    members[1].log_vkey = tabadul_audit::Signer::generate("alo/node/EGY").unwrap().verifier().to_string();
    members.push(tabadul_tests::HubMember::new(&pki, "LBY", tabadul_tests::dead_endpoint().unwrap()).unwrap());
    // MAR's witness key is missing: its cosignatures would be checked
    // against its log key.
    let mar_witness = members[0].witness_vkey.take();
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = tabadul_tests::start_hub(&dir.path().join("hub"), &pki, &hub_cert, &members, 2000).unwrap();
    let doctor = || Command::new(bin("tabadul-hub")).arg("doctor").arg("--config").arg(dir.path().join("hub/hub.toml")).output().unwrap();
    let out = doctor();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = |who: &str, what: &str| text.lines().any(|l| l.contains(who) && l.contains(what));
    assert!(line("ok", "valid for") && line("ok", "fresh for"), "{text}");
    assert!(line("MAR", "TLS and identity verified, serving") && line("MAR", "signed with the configured key"), "{text}");
    assert!(line("MAR", "clock within"), "{text}");
    assert!(line("PROBLEM", "EGY") && line("EGY", "not signed with the log_vkey in hub.toml"), "{text}");
    assert!(line("PROBLEM", "LBY") && line("LBY", "unreachable"), "{text}");
    assert!(line("PROBLEM", "MAR witness key") && line("MAR witness key", "no witness_vkey"), "{text}");
    assert!(line("ok", "operator tokens") && line("operator tokens", "none issued yet"), "{text}");
    assert!(text.contains("3 problem(s)"), "{text}");
    // Fixed configuration: all green.
    drop(hub);
    members[1].log_vkey = tabadul_tests::HubMember::new(&pki, "EGY", "x").unwrap().log_vkey;
    members[0].witness_vkey = mar_witness;
    members.pop();
    let _hub = tabadul_tests::start_hub(&dir.path().join("hub"), &pki, &hub_cert, &members, 2000).unwrap();
    let out = doctor();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("all checks passed"), "{text}");
}

#[test]
fn node_doctor_names_each_problem_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    let doctor = || {
        let out = node.command(&["doctor"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    // Stopped: that alone is the problem.
    let (code, text) = doctor();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not running") && text.contains("1 problem(s)"), "{text}");
    assert!(text.contains("cosigns alo/hub/alo") && text.contains("signs as alo/node/MAR+"), "{text}");
    assert!(text.contains("cosigns as alo/witness/MAR+"), "{text}");
    let proc = node.start().unwrap();
    let (code, text) = doctor();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("running: 0 observations"), "{text}");
    // A broken policy file and a key others can read are named.
    std::fs::write(&node.policy, "[[rule]]\nid = \"x\"\nrequester = \"hub\"\ndataflows = [\"NOPE\"]\n").unwrap();
    let key = node.dir.parent().unwrap().join("log-keys/alo_node_MAR.key");
    let mut perms = std::fs::metadata(&key).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&key, perms).unwrap();
    let (code, text) = doctor();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.lines().any(|l| l.starts_with("PROBLEM") && l.contains("policy") && l.contains("NOPE")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("PROBLEM") && l.contains("log key") && l.contains("chmod 600")), "{text}");
    drop(proc);
}

/// The certificate a server presents to a new TLS connection.
async fn presented_cert(addr: std::net::SocketAddr, files: &tabadul_certs::tls::TlsFiles) -> Vec<u8> {
    let config = tabadul_certs::tls::client_config(files).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_node_certificate_rotates_on_sighup_without_dropping_queries() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    import_synthetic(&node, "MAR", 2024..=2024);
    let proc = node.start().unwrap();
    let hub = pki.issue("hub", "alo").unwrap();
    let files = pki.tls_files(&hub);
    let old = presented_cert(proc.addr, &files).await;
    // Queries keep flowing on an open connection throughout.
    let client = node_client(proc.addr, &files, "MAR").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flowing = {
        let (mut c, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                collect(&mut c, pb::Query { dataflow: "UNE_PERS".into(), ..Default::default() }).await.expect("a query failed during rotation");
                n += 1;
            }
            n
        })
    };
    // The CA issues a new certificate to the same files; SIGHUP applies it.
    pki.issue("node", "MAR").unwrap();
    proc.signal("-HUP").unwrap();
    let rotated = tabadul_tests::eventually(std::time::Duration::from_secs(10), async || presented_cert(proc.addr, &files).await != old).await;
    assert!(rotated, "the node still presents its old certificate");
    let new = presented_cert(proc.addr, &files).await;
    let on_disk = tabadul_certs::tls::load_certs(&node.dir.parent().unwrap().join("certs/node-MAR.pem")).unwrap().remove(0);
    assert_eq!(new, on_disk.to_vec(), "it presents the new file's certificate");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = flowing.await.unwrap();
    assert!(answered > 0);
    // And new connections with the new certificate are answered.
    let mut fresh = node_client(proc.addr, &files, "MAR").unwrap();
    collect(&mut fresh, pb::Query { dataflow: "UNE_PERS".into(), ..Default::default() }).await.unwrap();
}

/// A small filesystem of its own (tmpfs), unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, megabytes: u32) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"]).arg(at).status().ok()?.success();
        ok.then(|| SmallDisk(at.to_owned()))
    }

    /// Writes filler until the filesystem refuses.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
#[ignore = "needs root to mount a tmpfs: .ci/run runs it with --ignored"]
async fn a_full_disk_stops_releases_but_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), 48).expect("a tmpfs to fill (mount needs root)");
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    configure(&node, "data_dir = \"data\"", &format!("data_dir = {:?}", disk.0.join("data")));
    import_synthetic(&node, "MAR", 2024..=2024);
    let mut proc = node.start().unwrap();
    let hub = pki.issue("hub", "alo").unwrap();
    let mut client = node_client(proc.addr, &pki.tls_files(&hub), "MAR").unwrap();
    let q = || pb::Query { dataflow: "UNE_PERS".into(), ..Default::default() };
    let mut receipts = Vec::new();
    let query = async |client: &mut pb::node_client::NodeClient<tonic::transport::Channel>| -> Result<pb::Receipt, tonic::Status> {
        let mut stream = client.query(q()).await?.into_inner();
        let mut receipt = None;
        while let Some(m) = stream.message().await? {
            if let Some(pb::query_response::Item::Receipt(r)) = m.item {
                receipt = Some(r);
            }
        }
        receipt.ok_or_else(|| tonic::Status::data_loss("no receipt"))
    };
    for _ in 0..5 {
        receipts.push(query(&mut client).await.unwrap());
    }
    disk.fill();
    // Sooner or later an append fails; from then on nothing is released.
    let mut refusal = None;
    for _ in 0..40_000 {
        match query(&mut client).await {
            Ok(r) => receipts.push(r),
            Err(s) => {
                refusal = Some(s);
                break;
            }
        }
    }
    let refusal = refusal.expect("the node kept answering on a full disk");
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    assert!(refusal.message().contains("cannot write its exchange log"), "{}", refusal.message());
    for _ in 0..3 {
        let again = query(&mut client).await.unwrap_err();
        assert_eq!(again.code(), tonic::Code::Unavailable, "an answer left without being logged: {again:?}");
    }
    let metrics = proc.scrape().unwrap();
    assert_eq!(sample(&metrics, "tabadul_node_log_writable"), Some(0.0), "{metrics}");
    // Health says so too, for the whole server (what balancers and doctors ask).
    let channel = tabadul_certs::tls::channel(
        &proc.addr.to_string(),
        tabadul_certs::tls::Expect::Identity("spiffe://alo/node/MAR".parse().unwrap()),
        tabadul_certs::tls::client_config(&pki.tls_files(&hub)).unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let not_serving = tabadul_tests::eventually(std::time::Duration::from_secs(5), async || {
        health
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .is_ok_and(|r| r.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32)
    })
    .await;
    assert!(not_serving, "health still says SERVING with a dead log");
    // The operator frees space and restarts the node: every entry whose
    // receipt left is there, and the log verifies.
    disk.free();
    proc.kill();
    let proc = node.start().unwrap();
    let fetched = fetch_node_log(&pki, proc.addr, &dir.path().join("fetched"));
    let log = LogDir::load(&fetched).unwrap();
    let report = offline::verify(&log, &Verifier::parse(&node.log_vkey).unwrap(), None);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    for r in &receipts {
        assert_eq!(log.entries.get(r.index as usize), Some(&r.entry), "acknowledged entry {} lost", r.index);
    }
    let mut client = node_client(proc.addr, &pki.tls_files(&hub), "MAR").unwrap();
    query(&mut client).await.unwrap();
    drop(proc);
}

#[test]
#[ignore = "needs root to mount a tmpfs: .ci/run runs it with --ignored"]
fn an_import_onto_a_full_disk_fails_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), 48).expect("a tmpfs to fill (mount needs root)");
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    configure(&node, "data_dir = \"data\"", &format!("data_dir = {:?}", disk.0.join("data")));
    let first = node.dir.join("first.csv");
    std::fs::write(&first, synthetic::to_sdmx_csv(&synthetic::generate("MAR", 2024..=2024))).unwrap();
    run_ok(node.command(&["import"]).arg(&first)).unwrap();
    let count = |node: &NodeDir| {
        let proc = node.start().unwrap();
        let status = String::from_utf8_lossy(&run_ok(node.command(&["status"])).unwrap().stdout).to_string();
        drop(proc);
        status.lines().find(|l| l.starts_with("observations")).unwrap().split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let before = count(&node);
    // Many more years: the sorted SST file does not fit on the full disk.
    let more = node.dir.join("more.csv");
    std::fs::write(&more, synthetic::to_sdmx_csv(&synthetic::generate("MAR", 1990..=2023))).unwrap();
    disk.fill();
    let out = node.command(&["import"]).arg(&more).output().unwrap();
    assert!(!out.status.success(), "an import onto a full disk succeeded");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    disk.free();
    assert_eq!(count(&node), before, "a failed import left observations behind");
}

/// libfaketime's preload library, where Debian puts it. Only the tests
/// marked ignored (run by .ci/run with --ignored, after prepare.sh
/// installed it) call this: missing, it fails them loudly.
fn faketime() -> &'static str {
    ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime (scripts/prepare.sh installs it)")
}

#[tokio::test]
#[ignore = "needs libfaketime: .ci/run runs it with --ignored after prepare.sh"]
async fn a_member_whose_clock_is_hours_off_is_named_by_the_hub_doctor() {
    let lib = faketime();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let mut members = Vec::new();
    let mut procs = Vec::new();
    for (member, skew) in [("MAR", None), ("EGY", Some("+2h"))] {
        let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, POLICY).unwrap();
        import_synthetic(&node, member, 2024..=2024);
        let proc = match skew {
            None => node.start().unwrap(),
            Some(offset) => node.start_with_env(&[("LD_PRELOAD", lib), ("FAKETIME", offset), ("DONT_FAKE_MONOTONIC", "1")]).unwrap(),
        };
        members.push(tabadul_tests::HubMember::new(&pki, member, proc.addr.to_string()).unwrap());
        procs.push(proc);
    }
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = tabadul_tests::start_hub(&dir.path().join("hub"), &pki, &hub_cert, &members, 2000).unwrap();
    let out = Command::new(bin("tabadul-hub")).arg("doctor").arg("--config").arg(dir.path().join("hub/hub.toml")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let skewed = text.lines().find(|l| l.starts_with("PROBLEM") && l.contains("EGY") && l.contains("clock is")).unwrap_or_else(|| panic!("{text}"));
    assert!(skewed.contains("ahead of ours"), "{skewed}");
    let secs: i64 = skewed.split("clock is ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((7100..=7300).contains(&secs), "{skewed}");
    assert!(text.lines().any(|l| l.starts_with("ok") && l.contains("MAR") && l.contains("clock within")), "{text}");
    // Exchange itself still works within certificate validity: the doctor
    // warns before embargoes and expiry checks misfire.
    let operator = pki.issue("operator", "analyst").unwrap();
    let r = tabadul_tests::hub_client(hub.addr, &pki.tls_files(&operator))
        .unwrap()
        .federated_query(pb::FederatedQueryRequest { query: Some(pb::Query { dataflow: "UNE_PERS".into(), ..Default::default() }), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.members.iter().all(|m| m.state == pb::MemberState::Answered as i32), "{:?}", r.members);
}

#[tokio::test]
#[ignore = "needs libfaketime: .ci/run runs it with --ignored after prepare.sh"]
async fn a_stale_crl_is_seen_but_stops_no_exchange_and_still_refuses_the_revoked() {
    let lib = faketime();
    // The network CA publishes CRLs valid for 7 days; EGY's clock says it
    // is 9 days later, as if the CA had stopped publishing (X-Road stops all
    // exchange when its trust services fail: Tabadul must not).
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let rogue = pki.issue("hub", "rogue").unwrap();
    pki.revoke(&rogue).unwrap();
    let node = NodeDir::create(&dir.path().join("nodes"), &pki, "EGY", POLICY).unwrap();
    import_synthetic(&node, "EGY", 2024..=2024);
    let proc = node.start_with_env(&[("LD_PRELOAD", lib), ("FAKETIME", "+9d"), ("DONT_FAKE_MONOTONIC", "1")]).unwrap();

    // Seen: in the metrics and in the log, in plain words.
    let metrics = proc.scrape().unwrap();
    let left = sample(&metrics, "tabadul_node_crl_next_update_seconds").unwrap();
    assert!((-3.0 * 86_400.0..-86_400.0).contains(&left), "the CRL should read as two days stale: {left}");
    let log = std::fs::read_to_string(&proc.log).unwrap();
    assert!(log.contains("the CRL is past its next update") && log.contains("exchange goes on"), "{log}");

    // Exchange goes on: the hub is answered.
    let hub = pki.issue("hub", "alo").unwrap();
    let mut client = node_client(proc.addr, &pki.tls_files(&hub), "EGY").unwrap();
    let q = pb::Query { dataflow: "UNE_PERS".into(), ..Default::default() };
    let (decision, cells) = collect(&mut client, q.clone()).await.unwrap();
    assert_eq!(decision.kind, pb::DecisionKind::Allowed as i32, "{}", decision.reason);
    assert!(!cells.is_empty());
    // And the stale CRL is still enforced: the revoked hub gets nothing.
    let mut revoked = node_client(proc.addr, &pki.tls_files(&rogue), "EGY").unwrap();
    assert!(collect(&mut revoked, q).await.is_err(), "a revoked certificate was accepted under a stale CRL");
}

/// The runbook's log key rotation: the node signs with a new key from its
/// restart on; the hub is given the new verifier key and keeps the old one
/// in `previous_log_vkeys`, so its pin of the node's log (signed with the
/// old key) is kept and the log goes on without a window for a fork.
/// Control: without the old key the hub has to start the pin afresh, and
/// says so.
#[tokio::test]
async fn a_node_log_key_rotates_and_the_hub_keeps_its_pin() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    import_synthetic(&node, "MAR", 2024..=2024);
    let proc = node.start().unwrap();
    let members = [tabadul_tests::HubMember::new(&pki, "MAR", proc.addr.to_string()).unwrap()];
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub_dir = dir.path().join("hub");
    let hub = tabadul_tests::start_hub(&hub_dir, &pki, &hub_cert, &members, 3000).unwrap();
    let operator = pki.issue("operator", "analyst").unwrap();
    let ask = async |addr| {
        let mut client = tabadul_tests::hub_client(addr, &pki.tls_files(&operator)).unwrap();
        let q = pb::Query { dataflow: "UNE_PERS".into(), start_period: "2024".into(), end_period: "2024".into(), ..Default::default() };
        let r = client.federated_query(pb::FederatedQueryRequest { query: Some(q), ..Default::default() }).await.unwrap().into_inner();
        (r.members[0].state, r.members[0].detail.clone())
    };
    let answered = pb::MemberState::Answered as i32;
    for _ in 0..2 {
        assert_eq!(ask(hub.addr).await.0, answered);
    }
    drop(hub);
    drop(proc);

    // The node's new key (same origin), written where the old one was named.
    let (old_key, old_vkey) = pki.log_key("alo/node/MAR").unwrap();
    let new_key = dir.path().join("mar-log-2.key");
    run_ok(Command::new(bin("tabadul-audit")).args(["keygen", "--origin", "alo/node/MAR", "--out"]).arg(&new_key)).unwrap();
    let new_vkey = std::fs::read_to_string(tabadul_audit::vkey_path(&new_key)).unwrap().trim().to_owned();
    assert_ne!(new_vkey, old_vkey);
    configure(&node, &format!("log_key = {old_key:?}"), &format!("log_key = {new_key:?}"));
    let proc = node.start().unwrap();
    let config = std::fs::read_to_string(hub_dir.join("hub.toml")).unwrap();
    let endpoint_of = |text: &str| text.lines().find(|l| l.starts_with("endpoint")).unwrap().to_owned();
    let config = config.replace(&endpoint_of(&config), &format!("endpoint = {:?}", proc.addr.to_string()));

    // Without the old key: the pin cannot be checked and is dropped.
    std::fs::write(hub_dir.join("hub.toml"), config.replace(&format!("log_vkey = {old_vkey:?}"), &format!("log_vkey = {new_vkey:?}"))).unwrap();
    let hub = tabadul_tests::restart_hub(&hub_dir).unwrap();
    assert!(hub.log_text().contains("starting afresh"), "{}", hub.log_text());
    drop(hub);

    // With it: the pin is kept, and the node's answers (signed with the new
    // key) extend it.
    let rotated = config.replace(&format!("log_vkey = {old_vkey:?}"), &format!("log_vkey = {new_vkey:?}\nprevious_log_vkeys = [{old_vkey:?}]"));
    std::fs::write(hub_dir.join("hub.toml"), rotated).unwrap();
    let hub = tabadul_tests::restart_hub(&hub_dir).unwrap();
    let (state, detail) = ask(hub.addr).await;
    assert_eq!(state, answered, "{detail}\n{}", hub.log_text());
    assert!(!hub.log_text().contains("starting afresh"), "{}", hub.log_text());

    // An auditor verifies the whole log with both keys; the old key alone
    // does not vouch for what was signed after the rotation.
    let fetched = fetch_node_log(&pki, proc.addr, &dir.path().join("fetched"));
    let verify = |keys: &[&str]| {
        let mut cmd = Command::new(bin("tabadul-audit"));
        cmd.arg("verify");
        for k in keys {
            cmd.args(["--vkey", k]);
        }
        cmd.arg(&fetched).output().unwrap()
    };
    let both = verify(&[&new_vkey, &old_vkey]);
    assert!(both.status.success(), "{}{}", String::from_utf8_lossy(&both.stdout), String::from_utf8_lossy(&both.stderr));
    assert!(!verify(&[&old_vkey]).status.success(), "the old key alone verified checkpoints signed after the rotation");
}
