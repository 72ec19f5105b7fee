//! One real node process: decisions, refusals, withdrawals and policy reload.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeSet;
use std::time::Duration;

use tabadul_proto::pb::{self, DecisionKind};
use tabadul_tests::{NodeDir, Pki, collect, eventually, node_client, run_ok, synthetic};

const POLICY: &str = r#"version = "test-1"

[[rule]]
id = "hub-une"
requester = "hub"
dataflows = ["UNE_RATE", "UNE_PERS", "LF_PERS"]
breakdowns = ["SEX", "AGE"]
start_period = "2016"
embargo = [{ period = "2025", until = "2999-01-01" }]

[[rule]]
id = "egy-totals"
requester = "member:EGY"
dataflows = ["UNE_RATE"]
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    pki: Pki,
    node: NodeDir,
    proc: tabadul_tests::Proc,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    let data = dir.path().join("mar.csv");
    std::fs::write(&data, synthetic::to_sdmx_csv(&synthetic::generate("MAR", 2015..=2025))).unwrap();
    run_ok(node.command(&["import"]).arg(&data)).unwrap();
    let proc = node.start().unwrap();
    Fixture { _dir: dir, pki, node, proc }
}

fn query(flow: &str, breakdown: &[&str], period: (&str, &str)) -> pb::Query {
    pb::Query {
        dataflow: flow.into(),
        breakdown: breakdown.iter().map(|s| s.to_string()).collect(),
        start_period: period.0.into(),
        end_period: period.1.into(),
        ..Default::default()
    }
}

type CellSet = BTreeSet<(Vec<String>, String)>;

fn cell_set(cells: &[pb::Cell]) -> CellSet {
    cells.iter().map(|c| (c.key.clone(), format!("{}", c.value))).collect()
}

/// The synthetic cells of UNE_RATE with SEX varying and AGE/REGION at total.
fn expected_by_sex(years: std::ops::RangeInclusive<i32>, sexes: &[&str]) -> CellSet {
    synthetic::generate("MAR", 2015..=2025)
        .into_iter()
        .filter(|o| o.dataflow == "UNE_RATE" && o.key[2] == "Y_GE15" && o.key[3] == "_T")
        .filter(|o| sexes.contains(&o.key[1].as_str()) && years.contains(&o.time.parse::<i32>().unwrap()))
        .map(|o| {
            let mut key = o.key.clone();
            key.push(o.time.clone());
            (key, format!("{}", o.value))
        })
        .collect()
}

#[tokio::test]
async fn decisions_follow_the_policy_and_name_their_rule() {
    let f = start();
    let hub = f.pki.issue("hub", "alo").unwrap();
    let mut client = node_client(f.proc.addr, &f.pki.tls_files(&hub), "MAR").unwrap();

    // Allowed: exactly the allowed cells.
    let (d, cells) = collect(&mut client, query("UNE_RATE", &["SEX"], ("2020", "2024"))).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Allowed as i32, "{d:?}");
    assert_eq!(d.rule_id, "hub-une");
    assert!(d.policy_version.starts_with("test-1@"));
    assert_eq!(d.dimensions, ["REF_AREA", "SEX", "AGE", "REGION", "TIME_PERIOD"]);
    assert_eq!(cell_set(&cells), expected_by_sex(2020..=2024, &["T", "M", "F"]));

    // Partly allowed: 2015 is before the granted range, 2025 under embargo.
    let (d, cells) = collect(&mut client, query("UNE_RATE", &["SEX"], ("2010", ""))).await.unwrap();
    assert_eq!(d.kind, DecisionKind::PartlyAllowed as i32, "{d:?}");
    assert_eq!(cell_set(&cells), expected_by_sex(2016..=2024, &["T", "M", "F"]));
    let withheld = d.withheld.join("\n");
    assert!(withheld.contains("2015: outside the periods 2016.. granted by rule hub-une"), "{withheld}");
    assert!(withheld.contains("2025: under embargo until 2999-01-01"), "{withheld}");

    // Forbidden breakdown.
    let (d, cells) = collect(&mut client, query("UNE_RATE", &["SEX", "REGION"], ("", ""))).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32);
    assert!(cells.is_empty());
    assert_eq!(d.rule_id, "hub-une");
    assert!(d.reason.contains("breakdown by REGION"), "{}", d.reason);

    // A filter away from the total is a breakdown too.
    let mut q = query("UNE_RATE", &[], ("", ""));
    q.filters.push(pb::DimensionFilter { dimension: "REGION".into(), codes: vec!["MA-06".into()] });
    let (d, _) = collect(&mut client, q).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32, "{d:?}");

    // Embargoed period.
    let (d, cells) = collect(&mut client, query("UNE_RATE", &["SEX"], ("2025", "2025"))).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32);
    assert!(cells.is_empty());
    assert!(d.reason.contains("embargo until 2999-01-01"), "{}", d.reason);

    // A dataflow no rule grants.
    let (d, _) = collect(&mut client, query("EMP_ECO", &[], ("", ""))).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32);
    assert!(d.reason.contains("default deny"), "{}", d.reason);

    // Malformed queries are errors, not decisions.
    let err = collect(&mut client, query("NOPE", &[], ("", ""))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("unknown dataflow"), "{}", err.message());
    let mut q = query("UNE_RATE", &[], ("", ""));
    q.filters.push(pb::DimensionFilter { dimension: "SEX".into(), codes: vec!["X".into()] });
    assert_eq!(collect(&mut client, q).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    // Another member: EGY may have totals only; JOR nothing at all.
    let egy = f.pki.issue("node", "EGY").unwrap();
    let mut as_egy = node_client(f.proc.addr, &f.pki.tls_files(&egy), "MAR").unwrap();
    let (d, cells) = collect(&mut as_egy, query("UNE_RATE", &[], ("2024", "2024"))).await.unwrap();
    assert_eq!((d.kind, d.rule_id.as_str(), cells.len()), (DecisionKind::Allowed as i32, "egy-totals", 1));
    let (d, _) = collect(&mut as_egy, query("UNE_RATE", &["SEX"], ("2024", "2024"))).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32);
    let jor = f.pki.issue("node", "JOR").unwrap();
    let mut as_jor = node_client(f.proc.addr, &f.pki.tls_files(&jor), "MAR").unwrap();
    let (d, _) = collect(&mut as_jor, query("UNE_RATE", &[], ("", ""))).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32);
    assert!(d.reason.contains("default deny: no rule grants spiffe://alo/node/JOR"), "{}", d.reason);

    // An operator's certificate cannot query a node as the hub.
    let op = f.pki.issue("operator", "ana").unwrap();
    let mut as_op = node_client(f.proc.addr, &f.pki.tls_files(&op), "MAR").unwrap();
    let err = collect(&mut as_op, query("UNE_RATE", &[], ("", ""))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("operator"), "{}", err.message());

    // Describe tells the hub what it may see.
    let described = client.describe(pb::DescribeRequest {}).await.unwrap().into_inner();
    assert_eq!(described.member, "MAR");
    let flows: Vec<_> = described.grants.iter().map(|g| g.dataflow.as_str()).collect();
    assert_eq!(flows, ["LF_PERS", "UNE_PERS", "UNE_RATE"]);

    // Every decision was recorded with its rule and policy version.
    let mut proc = f.proc;
    proc.kill();
    let (key, _) = f.pki.log_key("alo/node/MAR").unwrap();
    let events = tabadul_audit::Log::open(&f.node.dir.join("data/log"), tabadul_audit::load_signer(&key).unwrap()).unwrap();
    let all = events.read(0, events.len()).unwrap();
    let queries: Vec<_> = all.iter().filter(|(_, e)| e.kind == "query").collect();
    assert_eq!(queries.len(), 12, "{all:#?}");
    assert!(queries.iter().any(|(_, e)| e.decision == "refused" && e.peer == "spiffe://alo/operator/ana"));
    assert!(queries.iter().any(|(_, e)| e.decision == "refused" && e.rule_id == "hub-une" && e.peer == "spiffe://alo/hub/alo"));
    assert!(queries.iter().any(|(_, e)| e.decision == "partly-allowed"));
    assert!(queries.iter().all(|(_, e)| e.query_digest.len() == 64 && e.policy_version.starts_with("test-1@")));
}

#[tokio::test]
async fn withdrawal_applies_to_the_next_query_and_reinstate_lifts_it() {
    let f = start();
    let hub = f.pki.issue("hub", "alo").unwrap();
    let mut client = node_client(f.proc.addr, &f.pki.tls_files(&hub), "MAR").unwrap();
    let q = query("UNE_RATE", &["SEX"], ("2020", "2024"));
    let (_, before) = collect(&mut client, q.clone()).await.unwrap();
    assert_eq!(cell_set(&before), expected_by_sex(2020..=2024, &["T", "M", "F"]));

    run_ok(f.node.command(&["withdraw", "--dataflow", "UNE_RATE", "--series", "MAR.F..", "--reason", "under revision"])).unwrap();
    let (d, cells) = collect(&mut client, q.clone()).await.unwrap();
    assert_eq!(d.kind, DecisionKind::PartlyAllowed as i32);
    assert_eq!(cell_set(&cells), expected_by_sex(2020..=2024, &["T", "M"]));
    assert!(d.withheld.iter().any(|w| w.contains("UNE_RATE.MAR.F..") && w.contains("under revision")), "{:?}", d.withheld);

    run_ok(f.node.command(&["withdraw", "--dataflow", "UNE_RATE", "--reason", "suspended"])).unwrap();
    let (d, cells) = collect(&mut client, q.clone()).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32);
    assert!(cells.is_empty() && d.reason.contains("withdrawn") && d.reason.contains("suspended"), "{}", d.reason);

    run_ok(f.node.command(&["reinstate", "--dataflow", "UNE_RATE"])).unwrap();
    run_ok(f.node.command(&["reinstate", "--dataflow", "UNE_RATE", "--series", "MAR.F.."])).unwrap();
    let (d, cells) = collect(&mut client, q).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Allowed as i32);
    assert_eq!(cell_set(&cells), cell_set(&before));

    // A withdrawal that names nothing real is refused, not stored.
    let out = f.node.command(&["withdraw", "--dataflow", "UNE_RATE", "--series", "MAR.X..", "--reason", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown code \"X\" for SEX"));
}

#[tokio::test]
async fn policy_reloads_on_change_and_a_broken_file_keeps_the_old_one() {
    let f = start();
    let hub = f.pki.issue("hub", "alo").unwrap();
    let mut client = node_client(f.proc.addr, &f.pki.tls_files(&hub), "MAR").unwrap();
    let by_sex = query("UNE_RATE", &["SEX"], ("2020", "2024"));
    let (d, _) = collect(&mut client, by_sex.clone()).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Allowed as i32);
    let old_version = d.policy_version.clone();

    // Tighten: no more sex breakdown. The running node picks it up by itself.
    std::fs::write(&f.node.policy, POLICY.replace("breakdowns = [\"SEX\", \"AGE\"]", "breakdowns = [\"AGE\"]")).unwrap();
    let refused = eventually(Duration::from_secs(10), async || {
        let (d, _) = collect(&mut client, by_sex.clone()).await.unwrap();
        d.kind == DecisionKind::Refused as i32
    })
    .await;
    assert!(refused, "the new policy never took effect");
    let (d, _) = collect(&mut client, by_sex.clone()).await.unwrap();
    assert_ne!(d.policy_version, old_version);
    let tightened = d.policy_version.clone();

    // A broken file is rejected; the tightened policy stays in force.
    std::fs::write(&f.node.policy, POLICY.replace("dataflows = [\"UNE_RATE\"]", "dataflows = [\"UNE_RATEX\"]")).unwrap();
    let logged = eventually(Duration::from_secs(10), async || f.proc.log_text().contains("policy rejected")).await;
    assert!(logged, "{}", f.proc.log_text());
    assert!(f.proc.log_text().contains("policy.toml:14: unknown dataflow \"UNE_RATEX\""), "{}", f.proc.log_text());
    let (d, _) = collect(&mut client, by_sex.clone()).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32);
    assert_eq!(d.policy_version, tightened);

    // SIGHUP reloads too (the file is fixed back to the original).
    std::fs::write(&f.node.policy, POLICY).unwrap();
    f.proc.signal("-HUP").unwrap();
    let back = eventually(Duration::from_secs(10), async || {
        let (d, _) = collect(&mut client, by_sex.clone()).await.unwrap();
        d.kind == DecisionKind::Allowed as i32
    })
    .await;
    assert!(back);

    // `policy check` and `policy explain` work without the server.
    let out = run_ok(f.node.command(&["policy", "explain", "--as", "spiffe://alo/hub/alo", "--dataflow", "UNE_RATE", "--breakdown", "REGION"])).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("REFUSED") && text.contains("hub-une") && text.contains("REGION"), "{text}");
    let out = run_ok(f.node.command(&["policy", "explain", "--as", "spiffe://alo/hub/alo", "--dataflow", "UNE_RATE", "--breakdown", "SEX"])).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALLOWED") && text.contains("embargo 2025 until 2999-01-01"), "{text}");
}

/// One key, one purpose: a node told to witness the hub's log refuses to
/// start without a witness key of its own, and says how to make one,
/// unless its operator opts into cosigning with the log key by name.
#[test]
fn a_witness_without_its_own_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    let config = std::fs::read_to_string(&node.config).unwrap();
    let without: String = config.lines().filter(|l| !l.starts_with("witness_key")).map(|l| format!("{l}\n")).collect();
    assert_ne!(without, config);
    std::fs::write(&node.config, &without).unwrap();
    let out = node.command(&["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("witness_logs is set but witness_key is not") && err.contains("tabadul-audit keygen --origin alo/witness/MAR"), "{err}");
    let doctor = node.command(&["doctor"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&doctor.stdout).contains("the node will not start while witness_logs is set"),
        "{}",
        String::from_utf8_lossy(&doctor.stdout)
    );
    std::fs::write(&node.config, format!("dangerous_witness_with_log_key = true\n{without}")).unwrap();
    let proc = node.start().unwrap();
    assert!(proc.log_text().contains("dangerous_witness_with_log_key"), "{}", proc.log_text());
}
