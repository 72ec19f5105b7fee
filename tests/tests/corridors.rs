//! Labour-migration corridors: a destination grants each member the rows
//! about its own nationals (`rows = { NATIONALITY = "requester" }`), and
//! the hub the totals only. Real node, real mutual TLS, SYNTHETIC data.
//!
//! The adversary here is the requester itself: random breakdowns and
//! filters, from two members, must never return a row about anyone else's
//! nationals, in aggregates or in microdata counts.

#![allow(clippy::unwrap_used)]

use tabadul_proto::pb::{self, DecisionKind};
use tabadul_tests::microdata::Rng;
use tabadul_tests::{NodeDir, Pki, Proc, collect, node_client, run_ok, synthetic};

const POLICY: &str = r#"version = "sau-corridors"

[[rule]]
id = "own-nationals"
requester = "member"
dataflows = ["WP_ISSUED", "WP_RECORDS"]
breakdowns = ["SEX", "ECO", "OCU"]
rows = { NATIONALITY = "requester" }

[[rule]]
id = "hub-totals"
requester = "hub"
dataflows = ["WP_ISSUED"]
breakdowns = ["SEX"]
"#;

const NATIONALITIES: [&str; 6] = ["IND", "PAK", "EGY", "JOR", "PHL", "_T"];
/// Key positions of WP_ISSUED: REF_AREA, SEX, NATIONALITY, ECO, TIME_PERIOD.
const NAT: usize = 2;

struct Fixture {
    dir: tempfile::TempDir,
    pki: Pki,
    node: NodeDir,
    _proc: Proc,
    addr: std::net::SocketAddr,
    /// Work-permit records per nationality (2024).
    records: Vec<(&'static str, &'static str)>,
}

impl Fixture {
    fn client(&self, role: &str, id: &str) -> pb::node_client::NodeClient<tonic::transport::Channel> {
        let cert = self.pki.issue(role, id).unwrap();
        node_client(self.addr, &self.pki.tls_files(&cert), "SAU").unwrap()
    }
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "SAU", POLICY).unwrap();
    let obs = dir.path().join("sau.csv");
    std::fs::write(&obs, synthetic::to_sdmx_csv(&synthetic::generate("SAU", 2022..=2024))).unwrap();
    node.import(&[&obs]).unwrap();
    // Work-permit records: nationality and occupation, 2024.
    let mut rng = Rng::new(11);
    let mut records = Vec::new();
    let mut csv = String::from("TIME_PERIOD,NATIONALITY,ECO,OCU,SEX,MONTHLY_WAGE,DURATION_MONTHS\n");
    for _ in 0..600 {
        let nat = NATIONALITIES[(rng.unit() * 5.0) as usize];
        let ocu = ["7", "8", "9"][(rng.unit() * 3.0) as usize];
        let sex = if rng.unit() < 0.8 { "M" } else { "F" };
        csv.push_str(&format!("2024,{nat},F,{ocu},{sex},{},24\n", 1500 + (rng.unit() * 2000.0) as u32));
        records.push((nat, ocu));
    }
    // A small corridor: three Yemeni workers, all in one occupation.
    for _ in 0..3 {
        csv.push_str("2024,YEM,F,2,M,2100,24\n");
        records.push(("YEM", "2"));
    }
    let micro = dir.path().join("wp.csv");
    std::fs::write(&micro, csv).unwrap();
    run_ok(node.command(&["import", "--table", "WP_RECORDS"]).arg(&micro)).unwrap();
    let proc = node.start().unwrap();
    let addr = proc.addr;
    Fixture { dir, pki, node, _proc: proc, addr, records }
}

fn query(dataflow: &str, breakdown: &[&str], nationality: Option<Vec<&str>>) -> pb::Query {
    pb::Query {
        dataflow: dataflow.into(),
        breakdown: breakdown.iter().map(|s| s.to_string()).collect(),
        filters: nationality
            .map(|codes| pb::DimensionFilter { dimension: "NATIONALITY".into(), codes: codes.into_iter().map(String::from).collect() })
            .into_iter()
            .collect(),
        aggregation: (dataflow == "WP_RECORDS").then(|| pb::Aggregation { statistic: "count".into(), ..Default::default() }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_member_receives_rows_about_its_own_nationals_only() {
    let f = start();
    for member in ["EGY", "JOR"] {
        let mut client = f.client("node", member);
        // Broken down by nationality: the member's own row, and a note of
        // what the rule does not grant.
        let (d, cells) = collect(&mut client, query("WP_ISSUED", &["NATIONALITY"], None)).await.unwrap();
        assert_eq!(d.kind, DecisionKind::PartlyAllowed as i32, "{}", d.reason);
        assert!(!cells.is_empty() && cells.iter().all(|c| c.key[NAT] == member), "{member}: {cells:?}");
        assert!(d.withheld.iter().any(|w| w.contains("other codes of NATIONALITY") && w.contains(&format!("NATIONALITY = {member}"))), "{:?}", d.withheld);
        // Filtered to its own: allowed in full.
        let (d, cells) = collect(&mut client, query("WP_ISSUED", &["SEX"], Some(vec![member]))).await.unwrap();
        assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
        assert!(!cells.is_empty() && cells.iter().all(|c| c.key[NAT] == member), "{cells:?}");
        // The total over every nationality, or another's row: refused, and told why.
        for q in [query("WP_ISSUED", &[], None), query("WP_ISSUED", &[], Some(vec!["IND"]))] {
            let (d, cells) = collect(&mut client, q).await.unwrap();
            assert_eq!(d.kind, DecisionKind::Refused as i32, "{}", d.reason);
            assert!(cells.is_empty());
            assert!(d.reason.contains(&format!("grants only the rows where NATIONALITY = {member}")), "{}", d.reason);
        }
    }
}

/// Random breakdowns and filters, from two members in turn: no cell about
/// another nationality, ever, and the adversary is not starved (it gets its
/// own rows often).
#[tokio::test]
async fn random_queries_never_reach_another_nationality() {
    let f = start();
    let mut rng = Rng::new(7);
    let mut own_rows = 0;
    for i in 0..60 {
        let member = ["EGY", "JOR"][i % 2];
        let mut client = f.client("node", member);
        let breakdown: Vec<&str> = ["SEX", "NATIONALITY", "ECO"].into_iter().filter(|_| rng.unit() < 0.5).collect();
        let filter = (rng.unit() < 0.6).then(|| {
            let v: Vec<&str> = NATIONALITIES.into_iter().filter(|_| rng.unit() < 0.4).collect();
            if v.is_empty() { vec!["_T"] } else { v }
        });
        let (d, cells) = collect(&mut client, query("WP_ISSUED", &breakdown, filter.clone())).await.unwrap();
        for c in &cells {
            assert_eq!(c.key[NAT], member, "{member} asked {breakdown:?} {filter:?} and got {c:?} ({})", d.reason);
        }
        own_rows += cells.len();
    }
    assert!(own_rows > 20, "the random queries almost never got an answer: {own_rows} cells");
}

#[tokio::test]
async fn the_hub_gets_totals_and_microdata_stays_within_the_rows() {
    let f = start();
    let mut hub = f.client("hub", "alo");
    let (d, cells) = collect(&mut hub, query("WP_ISSUED", &["NATIONALITY"], None)).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32, "{}", d.reason);
    assert!(cells.is_empty() && d.rule_id == "hub-totals", "{}: {}", d.rule_id, d.reason);
    let (d, cells) = collect(&mut hub, query("WP_ISSUED", &["SEX"], None)).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
    assert!(!cells.is_empty() && cells.iter().all(|c| c.key[NAT] == "_T"), "{cells:?}");

    // Microdata: EGY's counts by occupation are counts of Egyptians only
    // (this rule sets no noise, so they are exact where released).
    let mut egy = f.client("node", "EGY");
    let (d, cells) = collect(&mut egy, query("WP_RECORDS", &["OCU"], None)).await.unwrap();
    assert!(matches!(DecisionKind::try_from(d.kind), Ok(DecisionKind::PartlyAllowed)), "{}", d.reason);
    let total = cells.iter().find(|c| c.key[1] == "_T").unwrap_or_else(|| panic!("no total: {cells:?}"));
    let egyptians = f.records.iter().filter(|r| r.0 == "EGY").count() as f64;
    assert!(egyptians >= 10.0 && egyptians < f.records.len() as f64 / 2.0);
    assert_eq!(total.value, egyptians, "the total EGY receives is over its own nationals: {total:?}");
    for c in &cells {
        if c.conf_status.is_empty() {
            let ocu = &c.key[1];
            let exact = f.records.iter().filter(|r| r.0 == "EGY" && (ocu == "_T" || r.1 == ocu)).count() as f64;
            assert_eq!(c.value, exact, "{c:?}");
        }
    }
    // The hub is granted no microdata here at all.
    let (d, _) = collect(&mut hub, query("WP_RECORDS", &[], None)).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32, "{}", d.reason);
    assert!(d.reason.contains("default deny"), "{}", d.reason);
}

#[test]
fn policy_explain_shows_the_rows_a_member_would_get() {
    let f = start();
    let out = run_ok(f.node.command(&["policy", "explain", "--as", "spiffe://alo/node/EGY", "--dataflow", "WP_ISSUED", "--breakdown", "NATIONALITY"])).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("rule    own-nationals") && text.contains("rows    NATIONALITY = EGY (the requester's own) only"), "{text}");
    let out = run_ok(f.node.command(&["policy", "explain", "--as", "spiffe://alo/hub/alo", "--dataflow", "WP_ISSUED", "--breakdown", "NATIONALITY"])).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("REFUSED") && text.contains("hub-totals"), "{text}");
}

/// An origin asks a destination directly, node to node: it gets its own
/// nationals' rows under the destination's rules, accepts them only with
/// the destination's receipt, and logs what it received, so the two logs
/// cross-check offline. An answer whose receipt does not check is refused
/// here, and the cross-check then shows the destination's unmatched leaf.
#[tokio::test]
async fn an_origin_asks_a_destination_and_both_logs_cross_check() {
    let f = start();
    let egy = NodeDir::create(f.dir.path(), &f.pki, "EGY", "version = \"egy-closed\"\n").unwrap();
    let egy_proc = egy.start().unwrap();
    let endpoint = f.addr.to_string();
    let ask = |vkey: &str, extra: &[&str]| {
        let mut args = vec!["ask", "--member", "SAU", "--endpoint", &endpoint, "--log-vkey", vkey, "--dataflow", "WP_ISSUED"];
        args.extend(extra);
        let out = egy.command(&args).output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let (ok, text) = ask(&f.node.log_vkey, &["--breakdown", "NATIONALITY"]);
    assert!(ok, "{text}");
    assert!(text.starts_with("PARTLY-ALLOWED for this node, answered by SAU") && text.contains("own-nationals"), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("SAU ")).collect();
    assert!(!rows.is_empty() && rows.iter().all(|l| l.contains(" EGY ")), "{text}");
    assert!(text.contains("logged  SAU's leaf"), "{text}");
    let (ok, text) = ask(&f.node.log_vkey, &["--filter", "NATIONALITY=IND"]);
    assert!(ok, "a refusal is an answer too: {text}");
    assert!(text.starts_with("REFUSED") && text.contains("grants only the rows where NATIONALITY = EGY"), "{text}");

    let fetched = f.dir.path().join("fetched");
    let both = |name: &str| {
        let sau = f.pki.fetch_log(f.addr, "spiffe://alo/node/SAU", &fetched.join(format!("sau-{name}"))).unwrap();
        let ours = f.pki.fetch_log(egy_proc.addr, "spiffe://alo/node/EGY", &fetched.join(format!("egy-{name}"))).unwrap();
        // cross-check matches receipts only between logs `verify` passed.
        for (dir, vkey) in [(&sau, &f.node.log_vkey), (&ours, &egy.log_vkey)] {
            let out = std::process::Command::new(tabadul_tests::bin("tabadul-audit")).arg("verify").arg(dir).args(["--vkey", vkey]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        }
        let out = std::process::Command::new(tabadul_tests::bin("tabadul-audit"))
            .arg("cross-check")
            .arg("--hub")
            .arg(&ours)
            .args(["--hub-identity", "spiffe://alo/node/EGY", "--node"])
            .arg(format!("SAU={}", sau.display()))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = both("first");
    assert_eq!(code, Some(0), "{text}");

    // Asked with the wrong key for SAU's log: SAU answered and logged it,
    // EGY cannot prove it and refuses it, and the auditor sees the gap.
    let (ok, text) = ask(&egy.log_vkey, &["--breakdown", "SEX", "--filter", "NATIONALITY=EGY"]);
    assert!(!ok && text.contains("receipt does not prove"), "{text}");
    let (code, text) = both("second");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("orphan") && text.contains("no hub entry holds its receipt"), "{text}");
}

/// Mirror statistics through the hub: EGY's placements in SAU beside SAU's
/// permits, visas and stock of Egyptians. SAU grants the hub visas and
/// stock by nationality but permits in total only, so the permits side is
/// refused (and says so), never zero; the public gets nothing here.
#[tokio::test]
async fn the_hub_puts_both_sides_of_a_corridor_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let policies = [
        (
            "SAU",
            "[[rule]]\nid = \"hub-totals\"\nrequester = \"hub\"\ndataflows = [\"WP_ISSUED\"]\nbreakdowns = [\"SEX\"]\n\n\
                 [[rule]]\nid = \"hub-mirror\"\nrequester = \"hub\"\ndataflows = [\"WP_VISAS\", \"MIG_STOCK\"]\nbreakdowns = [\"NATIONALITY\", \"SEX\"]\n",
        ),
        (
            "EGY",
            "[[rule]]\nid = \"hub-placements\"\nrequester = \"hub\"\ndataflows = [\"MIG_PLACED_ABROAD\", \"MIG_RETURN_PLACED\"]\nbreakdowns = [\"DESTINATION\", \"SEX\"]\n",
        ),
    ];
    let mut members = Vec::new();
    let mut procs = Vec::new();
    let mut figures = Vec::new();
    for (member, policy) in policies {
        let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, policy).unwrap();
        let data = node.dir.join("data.csv");
        let mut obs = synthetic::generate(member, 2022..=2024);
        obs.extend(synthetic::corridors(member, 2022..=2024));
        std::fs::write(&data, synthetic::to_sdmx_csv(&obs)).unwrap();
        run_ok(node.command(&["import"]).arg(&data)).unwrap();
        let proc = node.start().unwrap();
        members.push(tabadul_tests::HubMember::new(&pki, member, proc.addr.to_string()).unwrap());
        procs.push(proc);
        figures.extend(obs);
    }
    let hub_cert = pki.issue("hub", "alo").unwrap();
    // Plain HTTP on loopback, so headless Chromium opens the dashboard
    // without a certificate (as in the dashboard tests).
    let hub = tabadul_tests::start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &members, 3000, "[http]\ndangerous_plain_http = true\n").unwrap();
    let token = String::from_utf8(
        run_ok(
            std::process::Command::new(tabadul_tests::bin("tabadul-hub"))
                .arg("token")
                .arg("--config")
                .arg(dir.path().join("hub/hub.toml"))
                .args(["issue", "--name", "analyst"]),
        )
        .unwrap()
        .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let http = tabadul_tests::http::Client::plain(hub.http.unwrap());
    let auth = format!("Bearer {token}");
    let a = http
        .get("/api/v1/corridors/EGY/SAU?start_period=2022&end_period=2024", &[("authorization", &auth)])
        .unwrap_or_else(|e| panic!("{e}; the hub says: {}", hub.log_text()));
    assert_eq!(a.status, 200, "{}", a.text());
    let m = a.json().unwrap();
    let side = |name: &str| &m["sides"][name];
    assert_eq!(side("placements")["state"], "answered", "{m:#}");
    assert_eq!(side("visas")["state"], "answered", "{m:#}");
    assert_eq!(side("stock")["state"], "answered", "{m:#}");
    assert_eq!(side("permits")["state"], "refused", "{m:#}");
    assert!(side("permits")["detail"].as_str().unwrap().contains("NATIONALITY"), "the member's reason travels: {m:#}");
    assert_eq!(side("placements")["coverage"], serde_json::json!(["2022", "2023", "2024"]));
    let want = |flow: &str, key: &[&str], year: &str| {
        figures.iter().find(|o| o.dataflow == flow && o.key == key && o.time == year).map(|o| o.value).unwrap_or_else(|| panic!("{flow} {key:?} {year}"))
    };
    let rows = m["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{m:#}");
    for row in rows {
        let year = row["period"].as_str().unwrap();
        let placed = want("MIG_PLACED_ABROAD", &["EGY", "SAU", "T", "_T", "_T"], year);
        let visas = want("WP_VISAS", &["SAU", "EGY", "T", "_T"], year);
        assert_eq!(row["placements"].as_f64(), Some(placed), "{row}");
        assert_eq!(row["visas"].as_f64(), Some(visas), "{row}");
        assert!(row["stock"].as_f64().is_some_and(|v| v > 0.0), "{row}");
        assert!(row["permits"].is_null(), "a refused side is not zero: {row}");
        assert!(row["asymmetry"]["permits"].is_null(), "{row}");
        let expected = ((visas - placed) / visas.max(placed) * 1000.0).round() / 1000.0;
        assert_eq!(row["asymmetry"]["visas"].as_f64(), Some(expected), "{row}");
    }
    // The public tier: every side refused, every figure absent.
    let public = http.get("/api/v1/corridors/EGY/SAU", &[]).unwrap().json().unwrap();
    for name in ["placements", "permits", "visas", "stock"] {
        assert_eq!(public["sides"][name]["state"], "refused", "{public:#}");
    }
    assert!(public["rows"].as_array().unwrap().is_empty(), "{public:#}");
    // The same as SDMX, a dataflow of its own (MIG_MIRROR): a refused side
    // has no observation, and the header and footer say why.
    let csv = http
        .get(
            "/sdmx/data/MIG_MIRROR/EGY.SAU.?startPeriod=2022&endPeriod=2024",
            &[("authorization", &auth), ("accept", "application/vnd.sdmx.data+csv;version=1.0.0")],
        )
        .unwrap();
    assert_eq!(csv.status, 200, "{}", csv.text());
    assert!(csv.header("x-tabadul-members").unwrap().contains("SAU=refused"), "{:?}", csv.header("x-tabadul-members"));
    let text = csv.text();
    let value = |measure: &str, year: &str| -> Option<f64> {
        text.lines().find(|l| l.contains(&format!(",EGY,SAU,{measure},{year},"))).map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
    };
    for row in rows {
        let year = row["period"].as_str().unwrap();
        assert_eq!(value("PLACED", year), row["placements"].as_f64(), "{text}");
        assert_eq!(value("VISAS", year), row["visas"].as_f64(), "{text}");
        assert_eq!(value("ASYM_VISAS", year), row["asymmetry"]["visas"].as_f64(), "{text}");
        assert_eq!(value("PERMITS", year), None, "a refused side is absent, not zero: {text}");
    }
    let dsd = http.get("/sdmx/datastructure/ALO/DSD_MIG_MIRROR/latest", &[]).unwrap();
    assert_eq!(dsd.status, 200, "{}", dsd.text());
    assert!(dsd.text().contains("<str:Codelist id=\"CL_MIRROR_MEASURE\""), "{}", dsd.text());
    let xml = http.get("/sdmx/data/MIG_MIRROR/EGY.SAU.PLACED+PERMITS", &[("authorization", &auth)]).unwrap().text();
    assert!(xml.contains("<footer:Message code=\"403\"") && xml.contains("WP_ISSUED for NATIONALITY=EGY"), "{xml}");
    let bad_key = http.get("/sdmx/data/MIG_MIRROR/EGY", &[("authorization", &auth)]).unwrap();
    assert_eq!(bad_key.status, 400, "{}", bad_key.text());
    // Asked as an ordinary query, it says where to get it instead.
    let q = http.post_json("/api/v1/query", &[("authorization", &auth)], &serde_json::json!({"dataflow": "MIG_MIRROR"})).unwrap();
    assert_eq!(q.status, 400, "{}", q.text());
    assert!(q.text().contains("computed by the hub"), "{}", q.text());

    // The dashboard's corridor view, from a shared link, in both languages:
    // each side's state, and the refused side written as refused.
    for (lang, refused) in [("en", "refused"), ("ar", "مرفوض")] {
        let url = format!("http://{}/ui/?lang={lang}&corridor=EGY,SAU#corridors&token={token}", hub.http.unwrap());
        let dom = String::from_utf8(tabadul_tests::chromium(&["--dump-dom"], &url).stdout).unwrap();
        assert!(dom.contains("data-ready=\"1\""), "{lang}: the page never finished:\n{dom}");
        for (side, state) in [("placements", "answered"), ("permits", "refused"), ("visas", "answered"), ("stock", "answered")] {
            assert!(dom.contains(&format!("data-side=\"{side}\" data-state=\"{state}\"")), "{lang}: {side} {state}:\n{dom}");
        }
        assert!(dom.contains("data-period=\"2024\"") && dom.contains("data-missing=\"refused\""), "{lang}:\n{dom}");
        assert!(dom.contains(&format!(">{refused}</td>")), "{lang}: a refused side reads as refused:\n{dom}");
    }
    // Bad ends: a clear error.
    let bad = http.get("/api/v1/corridors/EGY/XXX", &[("authorization", &auth)]).unwrap();
    assert_eq!(bad.status, 400);
    let message = bad.json().unwrap()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("destination \"XXX\" is not a member state"), "{message}");
}

/// A small corridor stays protected: the three Yemeni workers, all in one
/// occupation, are neither counted nor located for YEM, however it asks,
/// and nothing released to YEM is about anyone else.
#[tokio::test]
async fn a_small_corridor_is_withheld_from_its_own_origin() {
    let f = start();
    assert_eq!(f.records.iter().filter(|r| r.0 == "YEM").count(), 3);
    let mut yem = f.client("node", "YEM");
    let mut seen = 0;
    for (breakdown, ocu) in [(vec!["OCU"], None), (vec![], None), (vec!["SEX"], None), (vec![], Some("2")), (vec!["OCU", "SEX"], None)] {
        let mut q = query("WP_RECORDS", &breakdown, None);
        if let Some(ocu) = ocu {
            q.filters.push(pb::DimensionFilter { dimension: "OCU".into(), codes: vec![ocu.into()] });
        }
        let (d, cells) = collect(&mut yem, q).await.unwrap();
        for c in &cells {
            let released = c.conf_status.is_empty() && c.value.is_finite();
            assert!(!(released && c.value > 0.0), "YEM learnt a count of its three nationals: {c:?} ({})", d.reason);
            seen += 1;
        }
    }
    assert!(seen > 0, "the queries were answered at all");
}

/// The origin's own mirror: EGY's team puts its placements in SAU (its own
/// figures, read locally) beside what SAU grants it about Egyptians,
/// asked of SAU's node with receipts; what SAU refuses reads "refused".
#[test]
fn the_origin_puts_its_placements_beside_the_destinations_figures() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let sau_policy = "[[rule]]\nid = \"own-nationals\"\nrequester = \"member\"\ndataflows = [\"WP_ISSUED\", \"WP_VISAS\"]\nbreakdowns = [\"SEX\"]\nrows = { NATIONALITY = \"requester\" }\n";
    let mut figures = Vec::new();
    let mut nodes = Vec::new();
    for (member, policy) in [("SAU", sau_policy), ("EGY", "version = \"egy\"\n")] {
        let node = NodeDir::create(dir.path(), &pki, member, policy).unwrap();
        let mut obs = synthetic::generate(member, 2022..=2024);
        obs.extend(synthetic::corridors(member, 2022..=2024));
        let data = node.dir.join("data.csv");
        std::fs::write(&data, synthetic::to_sdmx_csv(&obs)).unwrap();
        run_ok(node.command(&["import"]).arg(&data)).unwrap();
        let proc = node.start().unwrap();
        figures.extend(obs);
        nodes.push((node, proc));
    }
    let (sau, sau_proc) = &nodes[0];
    let (egy, _) = &nodes[1];
    let vkey_file = dir.path().join("sau-log.vkey");
    std::fs::write(&vkey_file, format!("{}\n", sau.log_vkey)).unwrap();
    let out = run_ok(egy.command(&[
        "corridor",
        "--member",
        "SAU",
        "--endpoint",
        &sau_proc.addr.to_string(),
        "--log-vkey",
        &format!("@{}", vkey_file.display()),
        "--period",
        "2022:2024",
    ]))
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Corridor EGY → SAU"), "{text}");
    assert!(text.lines().any(|l| l.contains("stock (SAU, MIG_STOCK)") && l.contains("refused")), "{text}");
    let want = |flow: &str, key: &[&str], year: &str| figures.iter().find(|o| o.dataflow == flow && o.key == key && o.time == year).unwrap().value;
    for year in ["2022", "2023", "2024"] {
        let row: Vec<&str> = text.lines().find(|l| l.trim_start().starts_with(year)).unwrap_or_else(|| panic!("{year}: {text}")).split_whitespace().collect();
        let placed = want("MIG_PLACED_ABROAD", &["EGY", "SAU", "T", "_T", "_T"], year);
        let permits = want("WP_ISSUED", &["SAU", "T", "EGY", "_T"], year);
        let visas = want("WP_VISAS", &["SAU", "EGY", "T", "_T"], year);
        assert_eq!(row[1..4], [format!("{placed:.0}"), format!("{permits:.0}"), format!("{visas:.0}")], "{text}");
        assert_eq!(row[4], "refused", "a refused side is not zero: {text}");
        assert_eq!(row[5], format!("{:.3}", tabadul_proto::mirror_asymmetry(placed, permits).unwrap()), "{text}");
    }
}
