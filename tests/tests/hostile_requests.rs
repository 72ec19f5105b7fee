//! Hostile requests against real processes: a member named over and over
//! (through gRPC, the JSON API, SDMX REST and the public tier) must count
//! once in every figure and cost its node one log entry; operator tokens
//! expire and say so, and rotate without downtime; a node keeps its data
//! directory to itself, and `doctor` says when it does not.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use tabadul_proto::pb;
use tabadul_tests::http::{Answer, Client};
use tabadul_tests::{HubMember, NodeDir, Pki, Proc, bin, hub_client, run_ok, start_hub_with, synthetic};

fn policy() -> String {
    let flows = "[\"UNE_RATE\", \"UNE_PERS\", \"LF_PERS\"]";
    format!(
        "[[rule]]\nid = \"hub-detail\"\nrequester = \"hub\"\ndataflows = {flows}\nbreakdowns = [\"SEX\", \"AGE\"]\n\n\
         [[rule]]\nid = \"open-data\"\nrequester = \"public\"\ndataflows = {flows}\nbreakdowns = [\"SEX\"]\n"
    )
}

struct Federation {
    _dir: tempfile::TempDir,
    pki: Pki,
    nodes: BTreeMap<String, (NodeDir, Proc)>,
    hub: Proc,
    hub_config: PathBuf,
}

fn start() -> Federation {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let mut nodes = BTreeMap::new();
    let mut members = Vec::new();
    for member in ["MAR", "EGY", "JOR"] {
        let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, &policy()).unwrap();
        let data = node.dir.join("data.csv");
        std::fs::write(&data, synthetic::to_sdmx_csv(&synthetic::generate(member, 2021..=2024))).unwrap();
        run_ok(node.command(&["import"]).arg(&data)).unwrap();
        let proc = node.start().unwrap();
        members.push(HubMember::new(&pki, member, proc.addr.to_string()).unwrap());
        nodes.insert(member.to_owned(), (node, proc));
    }
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &members, 5000, "[http]\ndangerous_plain_http = true\n").unwrap();
    let hub_config = dir.path().join("hub/hub.toml");
    Federation { _dir: dir, pki, nodes, hub, hub_config }
}

impl Federation {
    /// Entries in each node's log (its metrics gauge, read at scrape time).
    fn node_logs(&self) -> BTreeMap<String, u64> {
        self.nodes
            .iter()
            .map(|(m, (_, p))| {
                let text = p.scrape().unwrap();
                let n = text.lines().find_map(|l| l.strip_prefix("tabadul_node_log_entries ").and_then(|v| v.trim().parse::<f64>().ok())).unwrap();
                (m.clone(), n as u64)
            })
            .collect()
    }

    fn token(&self, name: &str, extra: &[&str]) -> String {
        let out =
            run_ok(Command::new(bin("tabadul-hub")).arg("token").arg("--config").arg(&self.hub_config).args(["issue", "--name", name]).args(extra)).unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn http(&self) -> Client {
        Client::plain(self.hub.http.unwrap())
    }
}

/// MAR's log grew by exactly one entry, the others' not at all.
fn grew_once(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, door: &str) {
    for (m, n) in after {
        let expected = before[m] + u64::from(m == "MAR");
        assert_eq!(*n, expected, "{door}: {m}'s log went from {} to {n}", before[m]);
    }
}

/// Value of a cell in base units.
fn base(value: f64, unit_mult: i64) -> f64 {
    value * 10f64.powi(unit_mult as i32)
}

/// The aggregate of an answer equals MAR's own cells, key by key, and
/// covers MAR once.
fn aggregate_is_mar_alone(cells: &[(Vec<String>, f64)], aggregate: &[(Vec<String>, f64, Vec<String>)], door: &str) {
    assert!(!aggregate.is_empty(), "{door}: no aggregate");
    let mar: BTreeMap<Vec<String>, f64> = cells.iter().map(|(k, v)| (k[1..].to_vec(), *v)).collect();
    assert_eq!(cells.len(), mar.len(), "{door}: the table repeats MAR");
    assert!(cells.iter().all(|(k, _)| k[0] == "MAR"), "{door}");
    for (key, value, covers) in aggregate {
        let own = mar[key];
        assert!((value - own).abs() < 1e-6 * own.abs().max(1.0), "{door}: aggregate {key:?} = {value}, MAR alone = {own}");
        assert_eq!(covers, &["MAR"], "{door}");
    }
}

/// Cells (key, value in base units) and aggregate cells (key, value,
/// covers) of one answer.
type Figures = (Vec<(Vec<String>, f64)>, Vec<(Vec<String>, f64, Vec<String>)>);

fn from_grpc(r: &pb::FederatedQueryResponse) -> Figures {
    (
        r.cells.iter().map(|c| (c.key.clone(), base(c.value, c.unit_mult.into()))).collect(),
        r.aggregate.iter().map(|a| (a.key.clone(), base(a.value, a.unit_mult.into()), a.covers.clone())).collect(),
    )
}

fn from_json(v: &Value) -> Figures {
    let strings = |a: &Value| a.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let cells =
        v["cells"].as_array().unwrap().iter().map(|c| (strings(&c["key"]), base(c["value"].as_f64().unwrap(), c["unit_mult"].as_i64().unwrap()))).collect();
    let aggregate = v["aggregate"]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (strings(&c["key"]), base(c["value"].as_f64().unwrap(), c["unit_mult"].as_i64().unwrap()), strings(&c["covers"])))
        .collect();
    (cells, aggregate)
}

fn repeated(n: usize) -> Vec<String> {
    vec!["MAR".to_owned(); n]
}

#[tokio::test]
async fn a_member_named_many_times_counts_once_at_every_door() {
    let f = start();
    let token = f.token("alice", &[]);
    let auth = format!("Bearer {token}");
    let http = f.http();

    // gRPC, operator certificate.
    let operator = f.pki.issue("operator", "analyst").unwrap();
    let mut hub = hub_client(f.hub.addr, &f.pki.tls_files(&operator)).unwrap();
    let query = |year: &str| pb::Query { dataflow: "UNE_PERS".into(), start_period: year.into(), end_period: year.into(), ..Default::default() };
    let ask = |members: Vec<String>| pb::FederatedQueryRequest { query: Some(query("2024")), members, regional_aggregate: true, deadline_ms: 0 };
    let before = f.node_logs();
    let r = hub.federated_query(ask(repeated(3))).await.unwrap().into_inner();
    grew_once(&before, &f.node_logs(), "gRPC");
    assert_eq!(r.members.len(), 1, "one status for MAR");
    let (cells, aggregate) = from_grpc(&r);
    aggregate_is_mar_alone(&cells, &aggregate, "gRPC");
    // The honest query after it: the same figure, whether cached or not.
    let honest = hub.federated_query(ask(repeated(1))).await.unwrap().into_inner();
    assert_eq!(from_grpc(&honest), (cells, aggregate), "gRPC: [MAR] after [MAR, MAR, MAR]");
    // More names than the hub has members: refused, nothing asked.
    let before = f.node_logs();
    let err = hub.federated_query(ask(repeated(4))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("names 4 members but this hub federates 3"), "{}", err.message());
    assert_eq!(f.node_logs(), before, "a refused request asks no node");

    // JSON API (the dashboard's door), operator token.
    let body = |members: Vec<String>| json!({ "dataflow": "UNE_PERS", "members": members, "aggregate": true, "start_period": "2023", "end_period": "2023" });
    let before = f.node_logs();
    let a = http.post_json("/api/v1/query", &[("authorization", &auth)], &body(repeated(3))).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    grew_once(&before, &f.node_logs(), "JSON API");
    let v = a.json().unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    let (cells, aggregate) = from_json(&v);
    aggregate_is_mar_alone(&cells, &aggregate, "JSON API");
    let honest = http.post_json("/api/v1/query", &[("authorization", &auth)], &body(repeated(1))).unwrap();
    assert_eq!(honest.header("x-tabadul-cache"), Some("hit"), "the repeated list was cached under MAR's key");
    assert_eq!(from_json(&honest.json().unwrap()), (cells, aggregate), "JSON API: the cached answer is MAR's");
    let too_many = http.post_json("/api/v1/query", &[("authorization", &auth)], &body(repeated(50))).unwrap();
    assert_eq!(too_many.status, 400, "{}", too_many.text());
    assert!(too_many.text().contains("names 50 members"), "{}", too_many.text());

    // Public tier: the same door without a token.
    let before = f.node_logs();
    let public = json!({ "dataflow": "UNE_PERS", "members": repeated(3), "aggregate": true, "start_period": "2022", "end_period": "2022" });
    let a = http.post_json("/api/v1/query", &[], &public).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    grew_once(&before, &f.node_logs(), "public tier");
    let (cells, aggregate) = from_json(&a.json().unwrap());
    aggregate_is_mar_alone(&cells, &aggregate, "public tier");

    // SDMX REST: MAR+MAR+MAR in the key.
    let before = f.node_logs();
    let csv = [("accept", "application/vnd.sdmx.data+csv;version=1.0.0"), ("authorization", auth.as_str())];
    let a = http.get("/sdmx/data/UNE_PERS/MAR+MAR+MAR.F+M.Y_GE15._T?startPeriod=2021&endPeriod=2021", &csv).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    grew_once(&before, &f.node_logs(), "SDMX REST");
    assert_eq!(a.header("x-tabadul-members"), Some("MAR=answered"));
    let honest = http.get("/sdmx/data/UNE_PERS/MAR.F+M.Y_GE15._T?startPeriod=2021&endPeriod=2021", &csv).unwrap();
    assert_eq!(honest.header("x-tabadul-cache"), Some("hit"));
    assert_eq!(rows(&a), rows(&honest), "SDMX: MAR+MAR+MAR is MAR");
}

fn rows(a: &Answer) -> Vec<String> {
    let mut lines: Vec<String> = a.text().lines().map(str::to_owned).collect();
    lines.sort();
    let distinct = {
        let mut d = lines.clone();
        d.dedup();
        d.len()
    };
    assert_eq!(distinct, lines.len(), "a series appears twice:\n{}", a.text());
    lines
}

#[test]
fn operator_tokens_expire_rotate_and_say_why() {
    let f = start();
    let http = f.http();
    let whoami = |token: &str| http.get("/api/v1/whoami", &[("authorization", &format!("Bearer {token}"))]).unwrap();

    let old = f.token("alice", &["--expires-in", "12h"]);
    assert_eq!(whoami(&old).status, 200);
    // Rotation: a second token while the first still works.
    let new = f.token("alice", &["--expires-in", "90d"]);
    assert_eq!(whoami(&old).status, 200, "the old token works during the rotation");
    assert_eq!(whoami(&new).status, 200);
    let third = Command::new(bin("tabadul-hub")).arg("token").arg("--config").arg(&f.hub_config).args(["issue", "--name", "alice"]).output().unwrap();
    assert!(!third.status.success(), "two live tokens at most");
    assert!(String::from_utf8_lossy(&third.stderr).contains("revoke the old one first"));
    let list = String::from_utf8(run_ok(Command::new(bin("tabadul-hub")).arg("token").arg("--config").arg(&f.hub_config).arg("list")).unwrap().stdout).unwrap();
    assert_eq!(list.lines().filter(|l| l.contains("live  expires 20")).count(), 2, "{list}");
    let old_id = old.split('-').nth(1).unwrap().to_owned();
    run_ok(Command::new(bin("tabadul-hub")).arg("token").arg("--config").arg(&f.hub_config).args(["revoke", "--name", &old_id])).unwrap();
    let revoked = whoami(&old);
    assert_eq!(revoked.status, 401);
    assert!(revoked.text().contains("revoked"), "{}", revoked.text());
    assert_eq!(whoami(&new).status, 200, "the new token survives the old one's revocation");

    // Expiry: as time would, move the new token's expiry into the past.
    let tokens_path = f.hub_config.parent().unwrap().join("data/tokens.json");
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&tokens_path).unwrap()).unwrap();
    let new_id = new.split('-').nth(1).unwrap();
    for t in file["tokens"].as_array_mut().unwrap() {
        if t["id"] == new_id {
            t["expires"] = json!("2020-01-01T00:00:00Z");
        }
    }
    std::fs::write(&tokens_path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    let expired = whoami(&new);
    assert_eq!(expired.status, 401);
    assert!(expired.text().contains("the bearer token expired at 2020-01-01T00:00:00Z"), "{}", expired.text());
    let unknown = whoami("tabadul-00000000-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(unknown.status, 401);
    assert!(unknown.text().contains("not one this hub issued"), "unknown is not expired: {}", unknown.text());
    let list = String::from_utf8(run_ok(Command::new(bin("tabadul-hub")).arg("token").arg("--config").arg(&f.hub_config).arg("list")).unwrap().stdout).unwrap();
    assert!(list.lines().any(|l| l.starts_with(new_id) && l.contains("expired")), "{list}");

    // A record from before lifetimes: it still loads and works, and doctor flags it.
    let legacy = f.token("bob", &[]);
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&tokens_path).unwrap()).unwrap();
    for t in file["tokens"].as_array_mut().unwrap() {
        if t["name"] == "bob" {
            t.as_object_mut().unwrap().remove("expires");
        }
    }
    std::fs::write(&tokens_path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    assert_eq!(whoami(&legacy).status, 200, "legacy tokens keep working");
    let doctor = Command::new(bin("tabadul-hub")).arg("doctor").arg("--config").arg(&f.hub_config).output().unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.lines().any(|l| l.starts_with("PROBLEM") && l.contains("never expire") && l.contains("(bob)")), "{report}");
    // The hub made its data directory for itself; loosened, doctor says so.
    assert!(report.lines().any(|l| l.starts_with("ok") && l.contains("data directory")), "{report}");
    let data = f.hub_config.parent().unwrap().join("data");
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
    let doctor = Command::new(bin("tabadul-hub")).arg("doctor").arg("--config").arg(&f.hub_config).output().unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.lines().any(|l| l.starts_with("PROBLEM") && l.contains("data directory") && l.contains("mode 750")), "{report}");
}

#[test]
fn a_node_keeps_its_data_directory_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", &policy()).unwrap();
    let data = node.dir.join("data.csv");
    std::fs::write(&data, synthetic::to_sdmx_csv(&synthetic::generate("MAR", 2024..=2024))).unwrap();
    // The import CLI is the first to create the store.
    run_ok(node.command(&["import"]).arg(&data)).unwrap();
    let proc = node.start().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for sub in ["data", "data/store", "data/log"] {
        assert_eq!(mode(&node.dir.join(sub)), 0o700, "{sub}");
    }
    let doctor = |expect_ok: bool| {
        let out = node.command(&["doctor"]).output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = report.lines().find(|l| l.contains("data directory")).unwrap_or_else(|| panic!("{report}")).to_owned();
        assert_eq!(line.starts_with("ok"), expect_ok, "{report}");
        line
    };
    doctor(true);
    // Loosened by hand: doctor says so and how to fix it.
    std::fs::set_permissions(node.dir.join("data"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let line = doctor(false);
    assert!(line.contains("mode 755") && line.contains("chmod 700"), "{line}");
    drop(proc);
}
