//! Unit-record microdata on a real node: import, aggregate queries, and the
//! attacks disclosure control must defeat. Each attack is played with only
//! the hub's rights (its certificate, against the node's gRPC service) and
//! checked by an attacker's own linear algebra, independent of the node's.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;

use tabadul_proto::pb::{self, DecisionKind};
use tabadul_tests::adversary::rank;
use tabadul_tests::microdata::{self as md, ATOMS, JobSeeker, OCUS, REGIONS, atom, atoms_of};
use tabadul_tests::{NodeDir, Pki, collect, node_client, run_ok};

const TABLE: &str = "PES_JOBSEEKER_RECORDS";

const POLICY: &str = r#"version = "micro-1"

[disclosure.PES_JOBSEEKER_RECORDS]
threshold = 10

[[rule]]
id = "hub-js"
requester = "hub"
dataflows = ["PES_JOBSEEKER_RECORDS"]
breakdowns = ["SEX", "AGE", "REGION", "OCU"]
statistics = ["count", "sum", "mean"]
variables = ["MONTHS_REGISTERED"]

[[rule]]
id = "hub-lfs"
requester = "hub"
dataflows = ["LFS_PERSONS"]
breakdowns = ["SEX", "LF_STATUS"]
statistics = ["count", "weighted-count", "ratio"]
variables = ["MONTHLY_EARNINGS", "HOURS_WORKED"]

[[rule]]
id = "egy-cellkey"
requester = "member:EGY"
dataflows = ["PES_JOBSEEKER_RECORDS"]
breakdowns = ["SEX", "REGION", "OCU"]
statistics = ["count", "mean"]
variables = ["MONTHS_REGISTERED"]
disclosure = { cell_key = { d = 4, v = 2.0, js = 2, magnitude = 0.2 } }

[[rule]]
id = "jor-dp"
requester = "member:JOR"
dataflows = ["PES_JOBSEEKER_RECORDS"]
breakdowns = ["REGION", "OCU"]
disclosure = { dp = { epsilon = 1.0, budget = 2.5 } }
"#;

struct Fixture {
    dir: tempfile::TempDir,
    pki: Pki,
    node: NodeDir,
    proc: tabadul_tests::Proc,
    records: Vec<JobSeeker>,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    let records = md::jobseekers(20_000, 7);
    let csv = dir.path().join("jobseekers.csv");
    std::fs::write(&csv, md::to_csv(&records)).unwrap();
    run_ok(node.command(&["import", "--table", TABLE]).arg(&csv)).unwrap();
    let proc = node.start().unwrap();
    Fixture { dir, pki, node, proc, records }
}

impl Fixture {
    fn client(&self, role: &str, id: &str) -> pb::node_client::NodeClient<tonic::transport::Channel> {
        let cert = self.pki.issue(role, id).unwrap();
        node_client(self.proc.addr, &self.pki.tls_files(&cert), "MAR").unwrap()
    }
}

fn query(breakdown: &[&str], filters: &[(&str, &[&str])], statistic: &str) -> pb::Query {
    pb::Query {
        dataflow: TABLE.into(),
        breakdown: breakdown.iter().map(|s| s.to_string()).collect(),
        filters: filters
            .iter()
            .map(|(d, codes)| pb::DimensionFilter { dimension: d.to_string(), codes: codes.iter().map(|c| c.to_string()).collect() })
            .collect(),
        aggregation: Some(pb::Aggregation {
            statistic: statistic.into(),
            variable: if statistic == "count" { String::new() } else { "MONTHS_REGISTERED".into() },
            denominator: String::new(),
        }),
        ..Default::default()
    }
}

fn withheld(c: &pb::Cell) -> bool {
    c.conf_status == "C" || c.conf_status == "D"
}

/// The attacker's view of a released cell: which (region, occupation, sex)
/// atoms it covers, and its value.
#[derive(Debug, Clone)]
struct Known {
    atoms: Vec<usize>,
    value: f64,
}

/// The attacker's linear algebra (f64, independent of the node's): can
/// the sum over `target` be computed from the released rows? Atoms known to
/// be empty are known (the strongest attacker).
fn determined(known: &[Known], empty: &[bool], target: &[usize]) -> bool {
    let dense = |atoms: &[usize]| -> Vec<f64> {
        let mut v = vec![0.0; ATOMS];
        for a in atoms {
            if !empty[*a] {
                v[*a] = 1.0;
            }
        }
        v
    };
    let mut rows: Vec<Vec<f64>> = known.iter().map(|k| dense(&k.atoms)).collect();
    let r0 = rank(rows.clone());
    rows.push(dense(target));
    rank(rows) == r0
}

fn empties(records: &[JobSeeker]) -> Vec<bool> {
    let mut n = vec![0u64; ATOMS];
    for r in records {
        n[atom(r.region, r.ocu, r.sex)] += 1;
    }
    n.iter().map(|n| *n == 0).collect()
}

/// Groups of 1..=9 people the attacker must not be able to count.
fn small_groups(records: &[JobSeeker]) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for r in REGIONS {
        for o in OCUS {
            let n = md::count(records, |x| x.region == r && x.ocu == o);
            if (1..10).contains(&n) {
                out.push((format!("{r}/{o} ({n} people)"), vec![atom(r, o, "F"), atom(r, o, "M")]));
            }
            for s in ["F", "M"] {
                let n = md::count(records, |x| x.region == r && x.ocu == o && x.sex == s);
                if (1..10).contains(&n) {
                    out.push((format!("{r}/{o}/{s} ({n} people)"), vec![atom(r, o, s)]));
                }
            }
        }
    }
    out
}

/// Runs a query as the attacker and adds what it released to `known`.
async fn ask(client: &mut pb::node_client::NodeClient<tonic::transport::Channel>, q: pb::Query, known: &mut Vec<Known>) -> (pb::Decision, Vec<pb::Cell>) {
    let (d, cells) = collect(client, q.clone()).await.unwrap();
    for c in &cells {
        if !withheld(c) && c.value.is_finite() {
            known.push(Known { atoms: atoms_of(&q, &d, c), value: c.value });
        }
    }
    (d, cells)
}

#[tokio::test]
async fn counts_means_and_flags_on_a_real_node() {
    let f = start();
    let mut hub = f.client("hub", "alo");
    let (d, cells) = collect(&mut hub, query(&["REGION", "SEX"], &[], "count")).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
    assert_eq!(d.dimensions, ["REF_AREA", "SEX", "REGION", "TIME_PERIOD"]);
    assert_eq!(cells.len(), 3 * 5, "(M, F, total) × (4 regions + total)");
    // No perturbation for the hub: released counts are exact.
    for c in cells.iter().filter(|c| !withheld(c)) {
        let (sex, region) = (c.key[1].as_str(), c.key[2].as_str());
        let truth = md::count(&f.records, |r| (sex == "T" || r.sex == sex) && (region == "_T" || r.region == region));
        assert_eq!(c.value, truth as f64, "{:?}", c.key);
        assert_eq!(c.conf_status, "F");
        assert_eq!(c.key[0], "MAR");
    }
    // Mean months by region: exact for regions without a dominant person.
    let (_, cells) = collect(&mut hub, query(&["REGION"], &[("OCU", &["1", "2"])], "mean")).await.unwrap();
    let ma06 = cells.iter().find(|c| c.key[1] == "MA-06").unwrap();
    let group: Vec<&JobSeeker> = f.records.iter().filter(|r| r.region == "MA-06" && (r.ocu == "1" || r.ocu == "2")).collect();
    let truth = group.iter().map(|r| r.months).sum::<f64>() / group.len() as f64;
    assert!((ma06.value - truth).abs() < 1e-9, "{} vs {truth}", ma06.value);

    // Dominance: in MA-01, occupation 0 has 12 people, one registered 900 months.
    let (d, cells) = collect(&mut hub, query(&["REGION", "OCU"], &[("OCU", &["0"])], "sum")).await.unwrap();
    let dominated = cells.iter().find(|c| c.key[1] == "MA-01" && c.key[2] == "0").unwrap();
    // Withheld like any other cell: which rule fired would say why.
    assert_eq!((dominated.conf_status.as_str(), dominated.flags.len()), ("C", 0), "{dominated:?}");
    assert!(dominated.value.is_nan());
    // The requester is told the protections in force, not where they fired.
    assert!(d.rules_fired.iter().any(|r| r == "dominance (2,85)"), "{:?}", d.rules_fired);
    // Counting those 12 people reveals no magnitude: released.
    // (Asked alone: beside the total of occupation 0 it would be withheld,
    // as 16 − 12 would count the 4 people of MA-04 and MA-06.)
    let (_, cells) = collect(&mut hub, query(&[], &[("OCU", &["0"]), ("REGION", &["MA-01"])], "count")).await.unwrap();
    assert_eq!((cells[0].value, cells[0].conf_status.as_str()), (12.0, "F"));

    // The group rule: those 12 are all 25 or older; a breakdown by age would say so.
    let (d, cells) = collect(&mut hub, query(&["OCU", "AGE"], &[("OCU", &["0"]), ("REGION", &["MA-01"])], "count")).await.unwrap();
    assert_eq!(d.dimensions, ["REF_AREA", "AGE", "OCU", "TIME_PERIOD"]);
    let by_age: Vec<&pb::Cell> = cells.iter().filter(|c| c.key[1] != "Y_GE15" && c.key[2] != "_T").collect();
    assert!(!by_age.is_empty());
    for c in by_age {
        assert!(withheld(c), "{c:?}");
    }
    assert!(d.rules_fired.iter().any(|r| r == "group"), "{:?}", d.rules_fired);

    // What the policy does not grant is refused, with the reason.
    let (d, _) = collect(&mut hub, query(&["EDUCATION"], &[], "count")).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32);
    assert!(d.reason.contains("EDUCATION"), "{}", d.reason);
    let mut jor = f.client("node", "JOR");
    let (d, _) = collect(&mut jor, query(&["REGION"], &[], "mean")).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32);
    assert!(d.reason.contains("grants count") || d.reason.contains("differential"), "{}", d.reason);
    let err = collect(&mut hub, query(&["REGION"], &[("OCU", &["99"])], "count")).await.unwrap_err();
    assert!(err.message().contains("unknown code \"99\" for OCU"), "{}", err.message());

    // The node's signed log says which protections applied, and holds no figure.
    let out = f.pki.fetch_log(f.proc.addr, "spiffe://alo/node/MAR", &f.dir.path().join("mar-log")).unwrap();
    run_ok(std::process::Command::new(tabadul_tests::bin("tabadul-audit")).arg("verify").arg(&out).args(["--vkey", &f.node.log_vkey])).unwrap();
    let entries = String::from_utf8_lossy(&std::fs::read(out.join("entries.bin")).unwrap()).into_owned();
    assert!(entries.contains("sum of PES_JOBSEEKER_RECORDS by REGION × OCU"), "{entries}");
    assert!(entries.contains("disclosure control: threshold 10, dominance (2,85), p-percent 10, group, secondary"), "{entries}");
    assert!(!entries.contains("over 20016 records"), "no record count in the log: {entries}");
    // Only salted digests of what was released: no cell key, no value.
    assert!(!entries.contains("MA-0"), "a cell in the log: {entries}");
}

#[tokio::test]
async fn suppressed_cells_cannot_be_recomputed_from_margins_now_or_before() {
    let f = start();
    let mut hub = f.client("hub", "alo");
    let empty = empties(&f.records);
    let mut known = Vec::new();
    // Margins first (in earlier answers), then the full table with its margins.
    ask(&mut hub, query(&["REGION"], &[], "count"), &mut known).await;
    ask(&mut hub, query(&["OCU"], &[], "count"), &mut known).await;
    ask(&mut hub, query(&["SEX", "REGION"], &[], "count"), &mut known).await;
    let q = query(&["SEX", "REGION", "OCU"], &[], "count");
    let (d, cells) = ask(&mut hub, q.clone(), &mut known).await;
    let suppressed: Vec<&pb::Cell> = cells.iter().filter(|c| withheld(c)).collect();
    // Every cell with 1..9 people is withheld, with complements (all marked
    // alike), and none can be recomputed.
    let mut small = 0;
    for c in &cells {
        let n = md::count(&f.records, |r| {
            (c.key[1] == "T" || r.sex == c.key[1]) && (c.key[2] == "_T" || r.region == c.key[2]) && (c.key[3] == "_T" || r.ocu == c.key[3])
        });
        if (1..10).contains(&n) {
            small += 1;
            assert_eq!(c.conf_status, "C", "{:?} holds {n}", c.key);
        }
    }
    assert!(small > 0 && suppressed.len() > small, "the planted small groups need complements: {:?}", d.rules_fired);
    assert!(suppressed.iter().all(|c| c.conf_status == "C" && c.flags.is_empty()));
    for c in &suppressed {
        let atoms = atoms_of(&q, &d, c);
        // An empty cell withheld by the group rule (its group is all in
        // another category) is known to be empty: zeros are not protected.
        if atoms.iter().all(|a| empty[*a]) {
            continue;
        }
        assert!(!determined(&known, &empty, &atoms), "withheld {:?} can be recomputed", c.key);
    }
    for (name, atoms) in small_groups(&f.records) {
        assert!(!determined(&known, &empty, &atoms), "{name} can be counted");
    }
    // The attacker's own check is not vacuous: the interior cells it got
    // are determined.
    let free = cells.iter().find(|c| !withheld(c) && c.key[1] != "T" && c.key[2] != "_T" && c.key[3] != "_T").unwrap();
    assert!(determined(&known, &empty, &atoms_of(&q, &d, free)));
}

#[tokio::test]
async fn differencing_and_trackers_are_defeated_even_across_a_restart() {
    let mut f = start();
    let empty = empties(&f.records);
    let mut known = Vec::new();
    let target = vec![atom("MA-04", "0", "F"), atom("MA-04", "0", "M")];
    assert_eq!(md::count(&f.records, |r| r.region == "MA-04" && r.ocu == "0"), 1);
    {
        let mut hub = f.client("hub", "alo");
        // Total of MA-04 ...
        ask(&mut hub, query(&["REGION"], &[("REGION", &["MA-04"])], "count"), &mut known).await;
    }
    // (the node restarts between the two halves of the attack)
    f.proc.kill();
    f.proc = f.node.start().unwrap();
    let mut hub = f.client("hub", "alo");
    // ... minus MA-04 without occupation 0 (a filter).
    let others: Vec<&str> = OCUS.iter().copied().filter(|o| *o != "0").collect();
    let (_, cells) = ask(&mut hub, query(&["REGION"], &[("REGION", &["MA-04"]), ("OCU", &others)], "count"), &mut known).await;
    let cell = cells.iter().find(|c| c.key[1] == "MA-04").unwrap();
    assert!(withheld(cell), "the second half of a difference is withheld: {cell:?}");
    // The same by a breakdown: MA-04 by occupation (its total is known).
    ask(&mut hub, query(&["REGION", "OCU"], &[("REGION", &["MA-04"])], "count"), &mut known).await;
    // And the sum of months, which would reveal the person's 97.
    let (_, sums) = collect(&mut hub, query(&["REGION"], &[("REGION", &["MA-04"]), ("OCU", &others)], "sum")).await.unwrap();
    assert!(withheld(&sums[0]) || sums.iter().all(withheld), "{sums:?}");
    // A tracker: pad the one person with a large group (occupation 1), then
    // ask for the padding alone.
    ask(&mut hub, query(&[], &[("REGION", &["MA-06", "MA-04"]), ("OCU", &["0", "1"])], "count"), &mut known).await;
    ask(&mut hub, query(&[], &[("REGION", &["MA-06", "MA-04"]), ("OCU", &["1"])], "count"), &mut known).await;
    ask(&mut hub, query(&[], &[("REGION", &["MA-06"]), ("OCU", &["0", "1"])], "count"), &mut known).await;
    assert!(!determined(&known, &empty, &target), "MA-04/0 can be counted from {} released cells", known.len());
    for (name, atoms) in small_groups(&f.records) {
        assert!(!determined(&known, &empty, &atoms), "{name} can be counted");
    }
    // What the network already holds is no new release to a member.
    let mut egy = f.client("node", "EGY");
    let (_, a) = collect(&mut egy, query(&["REGION"], &[("REGION", &["MA-04"])], "count")).await.unwrap();
    assert!(a.iter().all(|c| !withheld(c)));
}

#[tokio::test]
async fn a_difference_split_across_two_hub_replicas_is_defeated() {
    // Two replicas of the ALO hub (their own identities and logs) answer
    // the same operators: one ledger covers both, so asking each for one
    // half of a difference gets the second half withheld.
    let f = start();
    let others: Vec<&str> = OCUS.iter().copied().filter(|o| *o != "0").collect();
    assert_eq!(md::count(&f.records, |r| r.region == "MA-04" && r.ocu == "0"), 1);
    let mut replica0 = f.client("hub", "alo-0");
    let (_, total) = collect(&mut replica0, query(&["REGION"], &[("REGION", &["MA-04"])], "count")).await.unwrap();
    assert!(total.iter().all(|c| !withheld(c)), "{total:?}");
    let mut replica1 = f.client("hub", "alo-1");
    let (_, cells) = collect(&mut replica1, query(&["REGION"], &[("REGION", &["MA-04"]), ("OCU", &others)], "count")).await.unwrap();
    let cell = cells.iter().find(|c| c.key[1] == "MA-04").unwrap();
    assert!(withheld(cell), "the other replica got the second half of the difference: {cell:?}");
    // A member is part of the same network ledger: no way around it either.
    let mut egy = f.client("node", "EGY");
    let (_, a) = collect(&mut egy, query(&["REGION"], &[("REGION", &["MA-04"]), ("OCU", &others)], "count")).await.unwrap();
    assert!(a.iter().all(withheld), "{a:?}");
}

#[tokio::test]
async fn linear_reconstruction_from_many_overlapping_queries_fails() {
    let f = start();
    let mut hub = f.client("hub", "alo");
    let empty = empties(&f.records);
    let mut known = Vec::new();
    let mut rng = md::Rng::new(99);
    let mut answered = 0;
    for _ in 0..80 {
        let regions: Vec<&str> = REGIONS.iter().copied().filter(|_| rng.unit() < 0.5).collect();
        let ocus: Vec<&str> = OCUS.iter().copied().filter(|_| rng.unit() < 0.5).collect();
        if regions.is_empty() || ocus.is_empty() {
            continue;
        }
        let (_, cells) = ask(&mut hub, query(&[], &[("REGION", &regions), ("OCU", &ocus)], "count"), &mut known).await;
        answered += cells.iter().filter(|c| !withheld(c)).count();
    }
    assert!(answered >= 20, "the defence must not simply refuse everything ({answered} released)");
    // The attacker's least squares would now pin down any atom in the span;
    // no small group is.
    for (name, atoms) in small_groups(&f.records) {
        assert!(!determined(&known, &empty, &atoms), "{name} can be reconstructed");
    }
    // And what it does determine is exact (no perturbation here), so the
    // check has teeth: the released values fit the truth.
    for k in &known {
        let truth = f.records.iter().filter(|r| k.atoms.contains(&atom(r.region, r.ocu, r.sex))).count() as f64;
        assert_eq!(k.value, truth);
    }
}

#[tokio::test]
async fn cell_key_noise_is_the_same_for_the_same_people_however_asked() {
    let f = start();
    let mut egy = f.client("node", "EGY");
    let q = query(&["REGION", "OCU"], &[], "count");
    let (_, first) = collect(&mut egy, q.clone()).await.unwrap();
    for _ in 0..20 {
        let (_, again) = collect(&mut egy, q.clone()).await.unwrap();
        let a: Vec<u64> = first.iter().map(|c| c.value.to_bits()).collect();
        let b: Vec<u64> = again.iter().map(|c| c.value.to_bits()).collect();
        assert_eq!(a, b, "a repeated query got different noise");
    }
    let value = |cells: &[pb::Cell], region: &str, ocu: &str| {
        cells.iter().find(|c| c.key.contains(&region.to_owned()) && c.key.contains(&ocu.to_owned())).map(|c| c.value.to_bits())
    };
    // Equivalent: all occupations listed explicitly, and a reshaped query
    // (by sex, whose margin holds the same people).
    let all: Vec<&str> = OCUS.to_vec();
    let (_, listed) = collect(&mut egy, query(&["REGION"], &[("OCU", &all)], "count")).await.unwrap();
    let (_, reshaped) = collect(&mut egy, query(&["REGION", "SEX"], &[], "count")).await.unwrap();
    for region in REGIONS {
        let base = value(&first, region, "_T").unwrap();
        assert_eq!(Some(base), listed.iter().find(|c| c.key[1] == region).map(|c| c.value.to_bits()));
        assert_eq!(Some(base), reshaped.iter().find(|c| c.key[1] == "T" && c.key[2] == region).map(|c| c.value.to_bits()));
    }
    // The noise is real, bounded by d and unbiased-looking.
    let mut diffs = Vec::new();
    for c in first.iter().filter(|c| !withheld(c)) {
        let (region, ocu) = (c.key[1].as_str(), c.key[2].as_str());
        let truth = md::count(&f.records, |r| (region == "_T" || r.region == region) && (ocu == "_T" || r.ocu == ocu)) as f64;
        assert!((c.value - truth).abs() <= 4.0, "{:?}: {} vs {truth}", c.key, c.value);
        assert!(c.flags.contains(&"cell-key".to_owned()));
        diffs.push(c.value - truth);
    }
    assert!(diffs.iter().any(|d| *d != 0.0), "no cell was perturbed");
    // Averaging 20 repeats of the mean of a small-ish group gives the same
    // figure 20 times: nothing to average.
    let mq = query(&["REGION"], &[("OCU", &["2"])], "mean");
    let means: std::collections::BTreeSet<u64> = futures::future::join_all((0..5).map(|_| {
        let mut c = egy.clone();
        let q = mq.clone();
        async move { collect(&mut c, q).await.unwrap().1[0].value.to_bits() }
    }))
    .await
    .into_iter()
    .collect();
    assert_eq!(means.len(), 1);
}

#[tokio::test]
async fn differential_privacy_budget_is_enforced_and_survives_a_restart() {
    let mut f = start();
    let q = query(&["REGION"], &[], "count");
    let mut values = Vec::new();
    {
        let mut jor = f.client("node", "JOR");
        for _ in 0..2 {
            let (d, cells) = collect(&mut jor, q.clone()).await.unwrap();
            assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
            assert!(cells.iter().all(|c| c.flags == ["dp-laplace"]), "{cells:?}");
            values.push(cells.iter().map(|c| c.value).collect::<Vec<_>>());
        }
        assert_ne!(values[0], values[1], "fresh noise per query (that is what the budget pays for)");
        let (d, cells) = collect(&mut jor, q.clone()).await.unwrap();
        assert_eq!(d.kind, DecisionKind::Refused as i32);
        assert!(cells.is_empty());
        assert!(d.reason.contains("budget") && d.reason.contains("0.5000 of its 2.5"), "{}", d.reason);
    }
    f.proc.kill();
    f.proc = f.node.start().unwrap();
    let mut jor = f.client("node", "JOR");
    let (d, _) = collect(&mut jor, q).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32, "the budget must survive a restart: {}", d.reason);
}

#[tokio::test]
async fn imports_are_all_or_nothing_with_precise_errors() {
    let f = start();
    let mut hub = f.client("hub", "alo");
    let (_, before) = collect(&mut hub, query(&["REGION"], &[], "count")).await.unwrap();
    let bad = f.dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!("{}\n2025,F,Y_GE25,MA-01,X2,1,3\n2025,Q,Y_GE25,MA-01,X2,1,3\n2025,F,Y_GE25,_T,X2,1,3\n2025,F,Y_GE25,MA-01,X2,1,lots\n", md::HEADER),
    )
    .unwrap();
    // A dry run finds the same problems.
    let out = f.node.command(&["import", "--check", "--table", TABLE]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.csv:3: column 2 (SEX): unknown code \"Q\" for SEX"));
    let out = f.node.command(&["import", "--table", TABLE]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:3: column 2 (SEX): unknown code \"Q\" for SEX"), "{err}");
    assert!(err.contains("bad.csv:4: column 4 (REGION): \"_T\" is the total code of REGION"), "{err}");
    assert!(err.contains("bad.csv:5: column 7 (MONTHS_REGISTERED): \"lots\" is not a finite number"), "{err}");
    assert!(err.contains("nothing was stored"), "{err}");
    let missing = f.dir.path().join("missing.csv");
    std::fs::write(&missing, "TIME_PERIOD,SEX,AGE,REGION,EDUCATION,SALARY\n2025,F,Y_GE25,MA-01,X2,1\n").unwrap();
    let out = f.node.command(&["import", "--table", TABLE]).arg(&missing).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no column \"SALARY\"") && err.contains("column OCU of PES_JOBSEEKER_RECORDS is missing"), "{err}");
    let out = f.node.command(&["import", "--table", "NOPE"]).arg(&missing).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown microdata table \"NOPE\""));
    let (_, after) = collect(&mut hub, query(&["REGION"], &[], "count")).await.unwrap();
    assert_eq!(before, after, "a rejected import changed what the node holds");
    // A good import through the running node adds its records.
    let good = f.dir.path().join("good.csv");
    std::fs::write(&good, md::to_csv(&md::jobseekers(500, 8)[..500])).unwrap();
    let checked = run_ok(f.node.command(&["import", "--check", "--table", TABLE]).arg(&good)).unwrap();
    assert!(String::from_utf8_lossy(&checked.stdout).contains("500 records, all valid (checked only"));
    let (_, unchanged) = collect(&mut hub, query(&[], &[], "count")).await.unwrap();
    assert_eq!(unchanged[0].value, f.records.len() as f64, "--check stored something");
    run_ok(f.node.command(&["import", "--table", TABLE]).arg(&good)).unwrap();
    let (_, grown) = collect(&mut hub, query(&[], &[], "count")).await.unwrap();
    assert_eq!(grown[0].value, (f.records.len() + 500) as f64);
}

#[tokio::test]
async fn preview_shows_what_would_leave_and_records_nothing() {
    let f = start();
    let candidate = f.dir.path().join("candidate.toml");
    std::fs::write(&candidate, POLICY.replace("threshold = 10", "threshold = 20")).unwrap();
    let preview = |extra: &[&str]| {
        let mut cmd = f.node.command(&["policy", "preview", "--as", "spiffe://alo/hub/alo", "--dataflow", TABLE, "--breakdown", "REGION,OCU"]);
        cmd.args(extra);
        String::from_utf8(run_ok(cmd).unwrap().stdout).unwrap()
    };
    let explain = String::from_utf8(
        run_ok(f.node.command(&["policy", "explain", "--as", "spiffe://alo/node/JOR", "--dataflow", TABLE, "--breakdown", "REGION"])).unwrap().stdout,
    )
    .unwrap();
    assert!(explain.contains("rule        jor-dp") && explain.contains("differential privacy, ε 1 per query, budget 2.5"), "{explain}");
    let now = preview(&[]);
    assert!(now.contains("ALLOWED for spiffe://alo/hub/alo") && now.contains("C primary") && now.contains("threshold"), "{now}");
    let stricter = preview(&["--policy", candidate.to_str().unwrap()]);
    let withheld_count = |s: &str| s.lines().filter(|l| l.contains("withheld")).count();
    assert!(withheld_count(&stricter) > withheld_count(&now), "a higher threshold withholds more:\n{now}\n{stricter}");
    // Nothing was recorded: the first half of a difference previewed, the
    // second asked for real, is released.
    let mut cmd =
        f.node.command(&["policy", "preview", "--as", "spiffe://alo/hub/alo", "--dataflow", TABLE, "--breakdown", "REGION", "--filter", "REGION=MA-04"]);
    run_ok(&mut cmd).unwrap();
    let mut hub = f.client("hub", "alo");
    let others: Vec<&str> = OCUS.iter().copied().filter(|o| *o != "0").collect();
    let (_, cells) = collect(&mut hub, query(&["REGION"], &[("REGION", &["MA-04"]), ("OCU", &others)], "count")).await.unwrap();
    assert!(cells.iter().all(|c| !withheld(c)), "the preview wrote to the ledger: {cells:?}");
}

#[tokio::test]
async fn the_hub_federates_protected_aggregates_and_skips_withheld_cells() {
    use tabadul_tests::{HubMember, hub_client, start_hub};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let mut procs = Vec::new();
    let mut members = Vec::new();
    for (member, seed) in [("MAR", 7), ("JOR", 8)] {
        let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, POLICY).unwrap();
        let csv = node.dir.join("records.csv");
        // JOR has no planted small groups: only MAR's cells get withheld.
        let records = if member == "MAR" { md::jobseekers(20_000, seed) } else { md::jobseekers(20_000, seed)[..20_000].to_vec() };
        std::fs::write(&csv, md::to_csv(&records)).unwrap();
        run_ok(node.command(&["import", "--table", TABLE]).arg(&csv)).unwrap();
        let proc = node.start().unwrap();
        members.push(HubMember::new(&pki, member, proc.addr.to_string()).unwrap());
        procs.push(proc);
    }
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = start_hub(&dir.path().join("hub"), &pki, &hub_cert, &members, 10_000).unwrap();
    let operator = pki.issue("operator", "ana").unwrap();
    let mut client = hub_client(hub.addr, &pki.tls_files(&operator)).unwrap();
    let r = client
        .federated_query(pb::FederatedQueryRequest { query: Some(query(&["REGION", "OCU"], &[], "count")), regional_aggregate: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    for m in &r.members {
        assert_eq!(m.state, pb::MemberState::Answered as i32, "{}: {}", m.member, m.detail);
        assert!(m.receipt.is_some(), "the hub verified and kept {}'s receipt", m.member);
    }
    assert_eq!(r.dimensions, ["REF_AREA", "REGION", "OCU", "TIME_PERIOD"]);
    let mar_withheld: Vec<&pb::Cell> = r.cells.iter().filter(|c| c.key[0] == "MAR" && withheld(c)).collect();
    assert!(!mar_withheld.is_empty(), "MAR's small cells arrive withheld, flags intact");
    assert!(r.cells.iter().filter(|c| c.key[0] == "JOR").all(|c| !withheld(c)));
    for c in &mar_withheld {
        let agg = r.aggregate.iter().find(|a| a.key == c.key[1..]);
        // A regional figure never includes a withheld cell: it covers JOR only.
        if let Some(a) = agg {
            assert_eq!(a.covers, ["JOR"], "{:?}", a.key);
            let jor = r.cells.iter().find(|x| x.key[0] == "JOR" && x.key[1..] == c.key[1..]).unwrap();
            assert_eq!(a.value, jor.value);
        }
    }
    let both = r.aggregate.iter().find(|a| a.key == ["MA-06", "_T", "2025"]).unwrap();
    assert_eq!(both.covers, ["JOR", "MAR"]);
    // The same question through the JSON API (HTTPS, the operator's
    // certificate): the same protected cells, withheld ones without a value.
    let http = tabadul_tests::http::Client::tls(hub.http.unwrap(), &pki.ca_cert(), Some(&pki.tls_files(&operator))).unwrap();
    let body = serde_json::json!({"dataflow": TABLE, "breakdown": ["REGION", "OCU"], "statistic": "count", "aggregate": true});
    let j = http.post_json("/api/v1/query", &[], &body).unwrap();
    assert_eq!(j.status, 200, "{}", j.text());
    let j = j.json().unwrap();
    let cells = j["cells"].as_array().unwrap();
    assert_eq!(cells.len(), r.cells.len());
    for (c, g) in cells.iter().zip(&r.cells) {
        let key: Vec<&str> = c["key"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(key, g.key, "same order");
        assert_eq!(c["conf_status"], g.conf_status.as_str());
        if withheld(g) {
            assert!(c["value"].is_null(), "a withheld cell has no value: {c}");
        } else {
            assert_eq!(c["value"].as_f64(), Some(g.value));
        }
    }
    assert!(j["aggregate"]["cells"].as_array().unwrap().iter().any(|a| a["covers"] == serde_json::json!(["JOR", "MAR"])));
    // Means are not additive across members: no aggregate, and it says why.
    let r = client
        .federated_query(pb::FederatedQueryRequest { query: Some(query(&["REGION"], &[], "mean")), regional_aggregate: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.aggregate.is_empty() && r.aggregate_method.contains("not additive"), "{}", r.aggregate_method);
    assert!(r.cells.iter().all(|c| c.value.is_finite()));
}

#[tokio::test]
async fn survey_tables_estimate_with_their_weights() {
    let f = start();
    let csv = f.dir.path().join("lfs.csv");
    let mut text = String::from("TIME_PERIOD,SEX,AGE,REGION,EDUCATION,LF_STATUS,HOURS_WORKED,MONTHLY_EARNINGS,WEIGHT\n");
    let mut rng = md::Rng::new(5);
    let mut truth: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    for _ in 0..600 {
        let status = ["EMP", "UNE", "OLF"][rng.below(3)];
        let weight = 50.0 + rng.below(400) as f64;
        let e = truth.entry(status).or_default();
        e.0 += 1;
        e.1 += weight;
        text.push_str(&format!("2025-Q2,{},Y_GE25,MA-06,X3T4,{status},40,{},{weight}\n", ["M", "F"][rng.below(2)], 3000 + rng.below(2000)));
    }
    std::fs::write(&csv, text).unwrap();
    run_ok(f.node.command(&["import", "--table", "LFS_PERSONS"]).arg(&csv)).unwrap();
    let mut hub = f.client("hub", "alo");
    let q = |statistic: &str, variable: &str, denominator: &str| pb::Query {
        dataflow: "LFS_PERSONS".into(),
        breakdown: vec!["LF_STATUS".into()],
        aggregation: Some(pb::Aggregation { statistic: statistic.into(), variable: variable.into(), denominator: denominator.into() }),
        ..Default::default()
    };
    let (d, cells) = collect(&mut hub, q("weighted-count", "", "")).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
    for (status, (n, w)) in &truth {
        let c = cells.iter().find(|c| c.key[1] == *status && c.key[2] == "2025-Q2").unwrap();
        assert!(*n >= 10);
        assert!((c.value - w).abs() < 1e-6, "{status}: {} vs {w}", c.value);
    }
    // Earnings per hour worked: a ratio of two weighted sums.
    let (_, cells) = collect(&mut hub, q("ratio", "MONTHLY_EARNINGS", "HOURS_WORKED")).await.unwrap();
    let emp = cells.iter().find(|c| c.key[1] == "EMP").unwrap();
    assert!(emp.value > 3000.0 / 40.0 && emp.value < 5000.0 / 40.0, "{emp:?}");
    // A table without weights has no weighted count.
    let err = collect(&mut hub, query(&["REGION"], &[], "weighted-count")).await.unwrap_err();
    assert!(err.message().contains("has no survey weight"), "{}", err.message());
}

#[tokio::test]
async fn a_difference_across_an_import_is_defeated() {
    let f = start();
    let mut hub = f.client("hub", "alo");
    let q = query(&["REGION"], &[("REGION", &["MA-04"])], "count");
    let (_, before) = collect(&mut hub, q.clone()).await.unwrap();
    assert!(before.iter().all(|c| !withheld(c)));
    // One new job seeker in MA-04: asking the same again would reveal them.
    let one = f.dir.path().join("one.csv");
    std::fs::write(&one, format!("{}\n2025,F,Y15T24,MA-04,X2,7,3\n", md::HEADER)).unwrap();
    run_ok(f.node.command(&["import", "--table", TABLE]).arg(&one)).unwrap();
    let (_, after) = collect(&mut hub, q.clone()).await.unwrap();
    let cell = after.iter().find(|c| c.key[1] == "MA-04").unwrap();
    assert!(withheld(cell), "before minus after would count the one new record: {cell:?}");
    // By sex, the new person's category would show too.
    let (_, by_sex) = collect(&mut hub, query(&["REGION", "SEX"], &[("REGION", &["MA-04"])], "count")).await.unwrap();
    let f_cell = by_sex.iter().find(|c| c.key[1] == "F" && c.key[2] == "MA-04").unwrap();
    assert!(withheld(f_cell) || by_sex.iter().filter(|c| c.key[2] == "MA-04" && c.key[1] == "T").all(withheld), "{by_sex:?}");
    // A large import changes the same figure by many people: released again.
    let many = f.dir.path().join("many.csv");
    let more: Vec<JobSeeker> = md::jobseekers(2_000, 11)
        .into_iter()
        .take(2_000)
        .map(|mut r| {
            r.region = "MA-04";
            r
        })
        .collect();
    std::fs::write(&many, md::to_csv(&more)).unwrap();
    run_ok(f.node.command(&["import", "--table", TABLE]).arg(&many)).unwrap();
    let (_, grown) = collect(&mut hub, q).await.unwrap();
    let cell = grown.iter().find(|c| c.key[1] == "MA-04").unwrap();
    let truth = md::count(&f.records, |r| r.region == "MA-04") + 1 + 2_000;
    assert_eq!((cell.conf_status.as_str(), cell.value), ("F", truth as f64), "{cell:?}");
}

#[tokio::test]
async fn counts_released_before_do_not_unlock_a_dominated_sum() {
    let f = start();
    // Armed-forces job seekers in MA-03: ten women registered 100 months
    // each; ten men, one of them 1000 months, the others 1.
    let extra = f.dir.path().join("extra.csv");
    let mut text = format!("{}\n", md::HEADER);
    for i in 0..10 {
        text.push_str(&format!("2025,F,Y_GE25,MA-03,X2,0,100\n2025,M,Y_GE25,MA-03,X2,0,{}\n", if i == 0 { 1000 } else { 1 }));
    }
    std::fs::write(&extra, text).unwrap();
    run_ok(f.node.command(&["import", "--table", TABLE]).arg(&extra)).unwrap();
    let mut hub = f.client("hub", "alo");
    let filters: &[(&str, &[&str])] = &[("REGION", &["MA-03"]), ("OCU", &["0"])];
    // Counts by sex are harmless and released ...
    let (_, counts) = collect(&mut hub, query(&["SEX"], filters, "count")).await.unwrap();
    assert!(counts.iter().all(|c| !withheld(c)), "{counts:?}");
    // ... then the sum of months by sex: the men's sum is dominated, the
    // total is not, and total − women must not give the men's back.
    let (_, sums) = collect(&mut hub, query(&["SEX"], filters, "sum")).await.unwrap();
    let men = sums.iter().find(|c| c.key[1] == "M").unwrap();
    assert_eq!(men.conf_status, "C", "{sums:?}");
    let women = sums.iter().find(|c| c.key[1] == "F").unwrap();
    let total = sums.iter().find(|c| c.key[1] == "T").unwrap();
    assert!(withheld(women) || withheld(total), "sum(M) = total − F: {sums:?}");
}

#[tokio::test]
async fn a_small_group_cannot_be_had_as_a_difference_of_nested_filters() {
    let f = start();
    // Occupation 0: 1 person in MA-04, 3 in MA-06, 12 in MA-01, and now 30 in MA-03.
    let extra = f.dir.path().join("extra.csv");
    std::fs::write(&extra, format!("{}\n{}", md::HEADER, "2025,M,Y_GE25,MA-03,X2,0,5\n".repeat(30))).unwrap();
    run_ok(f.node.command(&["import", "--table", TABLE]).arg(&extra)).unwrap();
    let mut hub = f.client("hub", "alo");
    let ask = |regions: &'static [&'static str]| query(&[], &[("OCU", &["0"]), ("REGION", regions)], "count");
    // {MA-04, MA-06, MA-01} = 16, then {MA-04, MA-03} = 31 (which splits
    // MA-04 from MA-06, so no single group of records is small enough to
    // be caught alone), then {MA-01} = 12: 16 − 12 = the 4 people of MA-04
    // and MA-06 together.
    let (_, a) = collect(&mut hub, ask(&["MA-04", "MA-06", "MA-01"])).await.unwrap();
    let (_, b) = collect(&mut hub, ask(&["MA-04", "MA-03"])).await.unwrap();
    assert_eq!((a[0].value, b[0].value), (16.0, 31.0), "{a:?} {b:?}");
    let (_, c) = collect(&mut hub, ask(&["MA-01"])).await.unwrap();
    assert!(withheld(&c[0]), "16 − 12 = the 4 people of MA-04 and MA-06: {c:?}");
}

#[tokio::test]
async fn differential_privacy_does_not_reveal_through_suppression() {
    let f = start();
    let mut jor = f.client("node", "JOR");
    // MA-04 / occupation 0 holds one person: under DP the cell is released
    // with noise like any other, not withheld (which would say "1 to 9").
    let (d, cells) = collect(&mut jor, query(&["REGION"], &[("OCU", &["0"])], "count")).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
    assert!(cells.iter().all(|c| !withheld(c) && c.flags == ["dp-laplace"]), "{cells:?}");
    // Every region of the codelist is listed, held or not.
    assert!(cells.len() > 5, "{cells:?}");
}
