//! The hub and real nodes: fan-out, partial answers, merge, aggregates,
//! and who may use the operator API.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tabadul_proto::pb::{self, MemberState};
use tabadul_tests::{HubMember, NodeDir, Pki, Proc, dead_endpoint, hub_client, run_ok, start_hub_with, synthetic};

fn policy(breakdowns: &str) -> String {
    format!("[[rule]]\nid = \"hub-all\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\", \"UNE_PERS\", \"LF_PERS\"]\nbreakdowns = {breakdowns}\n")
}

struct Federation {
    dir: tempfile::TempDir,
    pki: Pki,
    nodes: BTreeMap<String, Proc>,
    node_dirs: BTreeMap<String, NodeDir>,
    hub: Proc,
    _stall: std::net::TcpListener,
}

/// MAR and JOR grant the sex breakdown, EGY does not; LBY is down; SAU's
/// endpoint accepts connections and never answers.
fn federation(deadline_ms: u64) -> Federation {
    federation_with(deadline_ms, "")
}

/// [`federation`] with more hub configuration (see `start_hub_with`).
fn federation_with(deadline_ms: u64, hub_extra: &str) -> Federation {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let mut nodes = BTreeMap::new();
    let mut node_dirs = BTreeMap::new();
    let mut members = Vec::new();
    for (member, breakdowns) in [("MAR", "[\"SEX\"]"), ("EGY", "[]"), ("JOR", "[\"SEX\"]")] {
        let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, &policy(breakdowns)).unwrap();
        let data = node.dir.join("data.csv");
        std::fs::write(&data, synthetic::to_sdmx_csv(&synthetic::generate(member, 2022..=2024))).unwrap();
        run_ok(node.command(&["import"]).arg(&data)).unwrap();
        let proc = node.start().unwrap();
        members.push(HubMember::new(&pki, member, proc.addr.to_string()).unwrap());
        nodes.insert(member.to_owned(), proc);
        node_dirs.insert(member.to_owned(), node);
    }
    members.push(HubMember::new(&pki, "LBY", dead_endpoint().unwrap()).unwrap());
    // Never accepted: the kernel completes TCP, nobody speaks TLS.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    members.push(HubMember::new(&pki, "SAU", stall.local_addr().unwrap().to_string()).unwrap());
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &members, deadline_ms, hub_extra).unwrap();
    Federation { dir, pki, nodes, node_dirs, hub, _stall: stall }
}

fn request(flow: &str, breakdown: &[&str], period: &str, aggregate: bool) -> pb::FederatedQueryRequest {
    pb::FederatedQueryRequest {
        query: Some(pb::Query {
            dataflow: flow.into(),
            breakdown: breakdown.iter().map(|s| s.to_string()).collect(),
            start_period: period.into(),
            end_period: period.into(),
            ..Default::default()
        }),
        regional_aggregate: aggregate,
        ..Default::default()
    }
}

fn states(r: &pb::FederatedQueryResponse) -> BTreeMap<String, i32> {
    r.members.iter().map(|m| (m.member.clone(), m.state)).collect()
}

/// The synthetic value of a total (SEX=T, AGE=Y_GE15, REGION=_T) cell.
fn total(member: &str, flow: &str, year: &str) -> f64 {
    synthetic::generate(member, 2022..=2024).into_iter().find(|o| o.dataflow == flow && o.time == year && o.key[1..] == ["T", "Y_GE15", "_T"]).unwrap().value
}

#[tokio::test]
async fn partial_federation_answers_for_everyone_it_can() {
    let f = federation(1500);
    let operator = f.pki.issue("operator", "analyst").unwrap();
    let mut hub = hub_client(f.hub.addr, &f.pki.tls_files(&operator)).unwrap();

    // Counts: the regional figure is the sum of what was released.
    let started = Instant::now();
    let r = hub.federated_query(request("UNE_PERS", &[], "2024", true)).await.unwrap().into_inner();
    let elapsed = started.elapsed();
    let s = states(&r);
    assert_eq!(s["MAR"], MemberState::Answered as i32);
    assert_eq!(s["EGY"], MemberState::Answered as i32);
    assert_eq!(s["JOR"], MemberState::Answered as i32);
    assert_eq!(s["LBY"], MemberState::Unreachable as i32, "{:?}", r.members);
    assert_eq!(s["SAU"], MemberState::TimedOut as i32, "{:?}", r.members);
    // The stalled member cost one deadline, not more.
    assert!(elapsed < Duration::from_millis(1500 * 3), "took {elapsed:?}");
    assert_eq!(r.cells.len(), 3);
    assert_eq!(r.cells.iter().map(|c| c.key[0].as_str()).collect::<Vec<_>>(), ["EGY", "JOR", "MAR"]);
    assert_eq!(r.aggregate.len(), 1);
    let expected: f64 = ["MAR", "EGY", "JOR"].iter().map(|m| total(m, "UNE_PERS", "2024")).sum();
    assert!((r.aggregate[0].value - expected).abs() < 1e-6, "{} vs {expected}", r.aggregate[0].value);
    assert_eq!(r.aggregate[0].covers, ["EGY", "JOR", "MAR"]);
    assert_eq!(r.aggregate[0].unit_mult, 3);

    // Rates: recomputed from unemployed / labour force, not averaged.
    let r = hub.federated_query(request("UNE_RATE", &[], "2024", true)).await.unwrap().into_inner();
    let une: f64 = ["MAR", "EGY", "JOR"].iter().map(|m| total(m, "UNE_PERS", "2024")).sum();
    let lf: f64 = ["MAR", "EGY", "JOR"].iter().map(|m| total(m, "LF_PERS", "2024")).sum();
    assert_eq!(r.aggregate.len(), 1);
    assert!((r.aggregate[0].value - une / lf * 100.0).abs() < 1e-9, "{}", r.aggregate[0].value);
    let mean_of_rates: f64 = r.cells.iter().map(|c| c.value).sum::<f64>() / 3.0;
    assert!((r.aggregate[0].value - mean_of_rates).abs() > 0.05, "indistinguishable from an average of rates");
    assert!(r.aggregate_method.contains("UNE_PERS") && r.aggregate_method.contains("LF_PERS"));

    // EGY refuses the sex breakdown, with its reason; the others answer.
    let r = hub.federated_query(request("UNE_RATE", &["SEX"], "2024", false)).await.unwrap().into_inner();
    let egy = r.members.iter().find(|m| m.member == "EGY").unwrap();
    assert_eq!(egy.state, MemberState::RefusedByPolicy as i32);
    assert!(egy.detail.contains("breakdown by SEX"), "{}", egy.detail);
    assert_eq!(r.cells.iter().filter(|c| c.key[0] == "MAR").count(), 3);
    assert_eq!(r.cells.iter().filter(|c| c.key[0] == "EGY").count(), 0);
}

/// The value of a sample line `name{labels} value` in Prometheus text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok())).unwrap_or(0.0)
}

#[tokio::test]
async fn a_busy_hub_queues_queries_then_turns_the_excess_away_without_asking_or_logging() {
    // One query worked on at a time and two waiting: SAU's stall holds
    // every query for its full deadline, so the hub stays busy.
    let f = federation_with(1000, "max_concurrent_queries = 1\nmax_queued_queries = 2\nmax_queue_wait_ms = 10000\n[cache]\nmax_entries = 0\n");
    let operator = f.pki.issue("operator", "analyst").unwrap();
    let hub = hub_client(f.hub.addr, &f.pki.tls_files(&operator)).unwrap();
    let logged_before = sample(&f.hub.scrape().unwrap(), "tabadul_hub_log_entries");

    let ask = |period: &'static str| {
        let mut hub = hub.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = hub.federated_query(request("UNE_PERS", &[], period, false)).await;
            (r, started.elapsed())
        })
    };
    let mut queued = Vec::new();
    for period in ["2024", "2023", "2022"] {
        queued.push(ask(period));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let metrics = f.hub.scrape().unwrap();
    assert_eq!(sample(&metrics, "tabadul_hub_queries_working"), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "tabadul_hub_queries_waiting"), 2.0, "{metrics}");

    // A fourth finds the queue full: told at once, in plain words.
    let (fourth, took) = ask("2021").await.unwrap();
    let refused = fourth.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("busy") && refused.message().contains("waiting"), "{}", refused.message());
    assert!(took < Duration::from_millis(500), "a full queue answers at once, took {took:?}");

    // Every queued query is answered in full in its turn. The last waited
    // longer than the members' deadline, yet nobody timed out for it: the
    // deadline starts when a query is admitted, not when it arrives.
    let mut answers = Vec::new();
    for q in queued {
        let (r, took) = q.await.unwrap();
        answers.push((r.unwrap().into_inner(), took));
    }
    for (r, _) in &answers {
        assert_eq!(states(r)["MAR"], MemberState::Answered as i32, "{:?}", r.members);
        assert_eq!(r.cells.iter().filter(|c| c.key[0] == "MAR").count(), 1);
        // A stalled node is either timed out or, once its connection
        // attempt gives up, unreachable; never answered.
        assert_ne!(states(r)["SAU"], MemberState::Answered as i32, "{:?}", r.members);
        assert!(r.members.iter().all(|m| m.elapsed_ms <= 1300), "{:?}", r.members.iter().map(|m| m.elapsed_ms).collect::<Vec<_>>());
    }
    let (_, last_took) = &answers[2];
    assert!(*last_took > Duration::from_millis(1500), "the last query should have queued behind two others; took {last_took:?}");

    // Three answers logged; the one turned away left no trace but a counter.
    let metrics = f.hub.scrape().unwrap();
    assert_eq!(sample(&metrics, "tabadul_hub_log_entries") - logged_before, 3.0, "{metrics}");
    assert_eq!(sample(&metrics, "tabadul_hub_federated_queries_total{outcome=\"busy\"}"), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "tabadul_hub_queries_waiting"), 0.0, "{metrics}");
}

#[tokio::test]
async fn a_node_killed_mid_query_does_not_hold_up_the_others_and_rejoins_when_restarted() {
    let mut f = federation(2000);
    let operator = f.pki.issue("operator", "analyst").unwrap();
    let mut hub = hub_client(f.hub.addr, &f.pki.tls_files(&operator)).unwrap();
    // Warm the connections so that JOR is mid-exchange, not mid-connect.
    hub.federated_query(request("UNE_PERS", &[], "2024", false)).await.unwrap();
    let jor = f.nodes.get_mut("JOR").unwrap();
    jor.signal("-STOP").unwrap();
    let pending = tokio::spawn({
        let mut hub = hub.clone();
        async move { hub.federated_query(request("UNE_PERS", &[], "2024", true)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    jor.kill();
    let r = pending.await.unwrap().unwrap().into_inner();
    let s = states(&r);
    assert_eq!(s["MAR"], MemberState::Answered as i32);
    assert_eq!(s["EGY"], MemberState::Answered as i32);
    assert!(s["JOR"] == MemberState::TimedOut as i32 || s["JOR"] == MemberState::Unreachable as i32, "{:?}", r.members);
    assert_eq!(r.aggregate[0].covers, ["EGY", "MAR"]);
    // And the next query finds JOR unreachable straight away.
    let r = hub.federated_query(request("UNE_PERS", &[], "2024", false)).await.unwrap().into_inner();
    assert_eq!(states(&r)["JOR"], MemberState::Unreachable as i32, "{:?}", r.members);

    // JOR's operator restarts it on its address: its log recovers, its
    // receipts still extend what the hub pinned before the kill, and the
    // hub uses its answers again without being told anything.
    let addr = f.nodes["JOR"].addr.to_string();
    let restarted = f.node_dirs["JOR"].start_at(&addr).unwrap();
    f.nodes.insert("JOR".into(), restarted);
    let mut back = None;
    for _ in 0..50 {
        let r = hub.federated_query(request("UNE_PERS", &[], "2024", true)).await.unwrap().into_inner();
        if states(&r)["JOR"] == MemberState::Answered as i32 {
            back = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = back.expect("JOR never answered again after its restart");
    assert_eq!(r.aggregate[0].covers, ["EGY", "JOR", "MAR"]);
    let jor = r.cells.iter().find(|c| c.key[0] == "JOR").unwrap();
    assert!((jor.value - total("JOR", "UNE_PERS", "2024")).abs() < 1e-9, "{jor:?}");
}

#[tokio::test]
async fn only_operators_may_use_the_operator_api() {
    let f = federation(1000);
    for (role, id) in [("node", "MAR"), ("hub", "other"), ("auditor", "eve")] {
        let cert = f.pki.issue(role, id).unwrap();
        let mut hub = hub_client(f.hub.addr, &f.pki.tls_files(&cert)).unwrap();
        let err = hub.federated_query(request("UNE_PERS", &[], "2024", false)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{role}");
        assert!(err.message().contains("open to operators"), "{}", err.message());
    }
    // Bad requests are refused precisely.
    let mut f = f;
    let operator = f.pki.issue("operator", "analyst").unwrap();
    let mut hub = hub_client(f.hub.addr, &f.pki.tls_files(&operator)).unwrap();
    let err = hub.federated_query(request("NOPE", &[], "2024", false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = hub.federated_query(request("UNE_PERS", &["ECO"], "2024", false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("UNE_PERS has no dimension \"ECO\""), "{}", err.message());
    let mut req = request("UNE_PERS", &[], "2024", false);
    req.members = vec!["XYZ".into()];
    let err = hub.federated_query(req).await.unwrap_err();
    assert!(err.message().contains("XYZ is not a member"), "{}", err.message());
    // Each refused caller is on the hub's record.
    f.hub.kill();
    let (key, _) = f.pki.hub_log_key().unwrap();
    let events = tabadul_audit::Log::open(&f.dir.path().join("hub/data/log"), tabadul_audit::load_signer(&key).unwrap()).unwrap();
    let refused: Vec<String> = events.read(0, events.len()).unwrap().into_iter().filter(|(_, e)| e.decision == "refused").map(|(_, e)| e.peer).collect();
    assert_eq!(refused, ["spiffe://alo/node/MAR", "spiffe://alo/hub/other", "spiffe://alo/auditor/eve"]);
}

#[tokio::test]
async fn the_operator_cli_prints_the_table_and_a_line_per_member() {
    let f = federation(1000);
    let operator = f.pki.issue("operator", "analyst").unwrap();
    let out = run_ok(
        std::process::Command::new(tabadul_tests::bin("tabadul-hub"))
            .arg("query")
            .arg("--hub")
            .arg(f.hub.addr.to_string())
            .arg("--ca")
            .arg(f.pki.ca_cert())
            .arg("--cert")
            .arg(&operator.cert)
            .arg("--key")
            .arg(&operator.key)
            .args(["--dataflow", "UNE_RATE", "--period", "2024", "--aggregate"]),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Regional aggregate"), "{text}");
    assert!(text.contains("3 members: EGY JOR MAR"), "{text}");
    for (member, word) in [("MAR", "answered"), ("EGY", "answered"), ("LBY", "unreachable"), ("SAU", "timed-out")] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(member) && l.contains(word)), "{member} {word}:\n{text}");
    }
}

#[tokio::test]
async fn a_hub_asked_to_stop_finishes_the_query_in_flight_and_logs_it_first() {
    let mut f = federation_with(1500, "shutdown_grace_ms = 8000\n");
    let operator = f.pki.issue("operator", "analyst").unwrap();
    let hub = hub_client(f.hub.addr, &f.pki.tls_files(&operator)).unwrap();
    // SAU's stall keeps this query in flight for its whole deadline.
    let pending = tokio::spawn({
        let mut hub = hub.clone();
        async move { hub.federated_query(request("UNE_PERS", &[], "2024", true)).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    f.hub.signal("-TERM").unwrap();
    let r = pending.await.unwrap().expect("the query in flight was dropped by the shutdown").into_inner();
    assert_eq!(states(&r)["MAR"], MemberState::Answered as i32, "{:?}", r.members);
    assert_eq!(r.aggregate[0].covers, ["EGY", "JOR", "MAR"]);
    // Answered with the hub's own receipt: its log leaf was durable first.
    let receipt = r.receipt.expect("no hub receipt");
    assert!(!receipt.checkpoint.is_empty());
    let exited = tokio::task::spawn_blocking(move || f.hub.child.wait()).await.unwrap().unwrap();
    assert!(exited.success(), "{exited:?}");
}
