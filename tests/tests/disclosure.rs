//! Disclosure control against a determined requester (issue 12), played
//! against a real node by the automated adversary of
//! `tabadul_tests::adversary`: it sees only what it was sent (with the
//! certificates of the hub and of two members, pooling everything), and
//! computes by exact linear algebra and linear programming the tightest
//! bounds on every small group's count and every protected sum. Random
//! query sequences over planted data (property tests), then one test per
//! class of weakness the red team found.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use tabadul_proto::pb::{self, DecisionKind};
use tabadul_tests::adversary::{Adversary, Measure, count_protected, sum_protected};
use tabadul_tests::microdata::{self as md, ATOMS, JobSeeker, OCUS, REGIONS, atom, atoms_of};
use tabadul_tests::{NodeDir, Pki, collect, node_client, run_ok};

const TABLE: &str = "PES_JOBSEEKER_RECORDS";
const THRESHOLD: f64 = 10.0;
const P_PERCENT: f64 = 10.0;

/// The demo federation's job-seeker protection (threshold 10, default
/// dominance, p% and group rules), granted to the hub and two members;
/// the default ledger scope makes them one requester.
fn policy() -> String {
    policy_with("adversary-1", "threshold = 10", &[("hub-js", "hub"), ("members-js", "member:EGY"), ("jor-js", "member:JOR")])
}

/// A policy granting the job-seeker table (count, sum and mean of months
/// registered, by sex, age, region and occupation) to each requester, under
/// `disclosure`.
fn policy_with(version: &str, disclosure: &str, requesters: &[(&str, &str)]) -> String {
    let mut text = format!("version = {version:?}\n\n[disclosure.PES_JOBSEEKER_RECORDS]\n{disclosure}\n");
    for (id, requester) in requesters {
        text.push_str(&format!(
            "\n[[rule]]\nid = {id:?}\nrequester = {requester:?}\ndataflows = [\"PES_JOBSEEKER_RECORDS\"]\nbreakdowns = [\"SEX\", \"AGE\", \"REGION\", \"OCU\"]\nstatistics = [\"count\", \"sum\", \"mean\"]\nvariables = [\"MONTHS_REGISTERED\"]\n"
        ));
    }
    text
}

struct Fixture {
    dir: tempfile::TempDir,
    pki: Pki,
    node: NodeDir,
    proc: tabadul_tests::Proc,
    records: Vec<JobSeeker>,
}

fn start_with(policy: &str, records: Vec<JobSeeker>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", policy).unwrap();
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

fn query(breakdown: &[&str], filters: &[(&str, Vec<&str>)], statistic: &str) -> pb::Query {
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

/// Asks `q` and tells the adversary what came back.
async fn ask(client: &mut pb::node_client::NodeClient<tonic::transport::Channel>, q: pb::Query, adv: &mut Adversary) -> (pb::Decision, Vec<pb::Cell>) {
    ask_noisy(client, q, adv, None).await
}

/// The same under the cell-key method with the published `D` and
/// magnitude factor `m`: each count is true within ±D, each sum within
/// m·|sum| (the noise is at most m·|sum|/√n). A mean's noise depends on a
/// count the attacker may not hold, so means are left out here.
async fn ask_noisy(
    client: &mut pb::node_client::NodeClient<tonic::transport::Channel>,
    q: pb::Query,
    adv: &mut Adversary,
    noise: Option<(f64, f64)>,
) -> (pb::Decision, Vec<pb::Cell>) {
    let (d, cells) = collect(client, q.clone()).await.unwrap();
    let statistic = q.aggregation.as_ref().map_or("count", |a| a.statistic.as_str()).to_owned();
    for c in cells.iter().filter(|c| !withheld(c) && c.value.is_finite()) {
        let atoms = atoms_of(&q, &d, c);
        match (statistic.as_str(), noise) {
            ("count", None) => adv.observe(Measure::Count, &atoms, c.value, 0.0),
            ("count", Some((d, _))) => adv.observe(Measure::Count, &atoms, c.value, d),
            ("sum", None) => adv.observe(Measure::Sum, &atoms, c.value, 0.0),
            ("sum", Some((_, m))) => adv.observe(Measure::Sum, &atoms, c.value, m * c.value.abs() / (1.0 - m)),
            (_, None) => adv.observe_mean(&atoms, c.value, 0.0),
            (_, Some(_)) => {}
        }
    }
    (d, cells)
}

/// What must stay protected: groups of 1..9 people (atoms and
/// region × occupation pairs) with their true count, sum and largest value.
struct Truth {
    name: String,
    atoms: Vec<usize>,
    n: f64,
    sum: f64,
    largest: f64,
}

fn protected_groups(records: &[JobSeeker]) -> Vec<Truth> {
    let mut out = Vec::new();
    let mut add = |name: String, f: &dyn Fn(&JobSeeker) -> bool, atoms: Vec<usize>| {
        let members: Vec<&JobSeeker> = records.iter().filter(|r| f(r)).collect();
        let n = members.len() as f64;
        if (1.0..THRESHOLD).contains(&n) {
            let sum = members.iter().map(|r| r.months).sum();
            let largest = members.iter().map(|r| r.months).fold(0.0, f64::max);
            out.push(Truth { name, atoms, n, sum, largest });
        }
    };
    for r in REGIONS {
        for o in OCUS {
            add(format!("{r}/{o}"), &|x| x.region == r && x.ocu == o, vec![atom(r, o, "F"), atom(r, o, "M")]);
            for s in ["F", "M"] {
                add(format!("{r}/{o}/{s}"), &|x| x.region == r && x.ocu == o && x.sex == s, vec![atom(r, o, s)]);
            }
        }
    }
    out
}

/// The narrowest the adversary got: for counts, the interval's width; for
/// sums, the interval's reach around the truth as a share of the largest
/// contribution (the p% rule asks for at least 10 %).
#[derive(Debug, Default)]
struct Findings {
    /// What the node promises never to allow: an exact size or sum, a
    /// count pinned to one value, a sum inside its p% interval.
    breaches: Vec<String>,
    /// Counts the LP bounds inside 1..threshold−1 without pinning them
    /// (the node's audit is exact, not by interval: see docs/disclosure.md).
    narrowed: Vec<String>,
    narrowest_count: f64,
    narrowest_sum_share: f64,
    /// Programmes with no solution: the observations contradict the noise
    /// bound assumed (the audit would then prove nothing).
    infeasible: usize,
}

fn audit(adv: &Adversary, records: &[JobSeeker]) -> Findings {
    let mut f = Findings { narrowest_count: f64::INFINITY, narrowest_sum_share: f64::INFINITY, ..Default::default() };
    for g in protected_groups(records) {
        if adv.determined(Measure::Count, &g.atoms) {
            f.breaches.push(format!("the size of {} ({}) is determined", g.name, g.n));
        }
        if adv.determined(Measure::Sum, &g.atoms) {
            f.breaches.push(format!("the sum of {} ({} months over {} people) is determined", g.name, g.sum, g.n));
        }
        let (counts, sums) = (adv.bounds(Measure::Count, &g.atoms), adv.bounds(Measure::Sum, &g.atoms));
        f.infeasible += usize::from(counts.is_none()) + usize::from(sums.is_none());
        if let Some(b) = counts {
            f.narrowest_count = f.narrowest_count.min(b.1 - b.0);
            let text = format!("{} holds {} people and the adversary bounds it to [{:.2}, {:.2}]", g.name, g.n, b.0, b.1);
            if b.1 - b.0 < 1.0 {
                f.breaches.push(text);
            } else if !count_protected(b, THRESHOLD) {
                f.narrowed.push(text);
            }
        }
        if let Some(b) = sums {
            let reach = (g.sum - b.0).min(b.1 - g.sum) / g.largest;
            f.narrowest_sum_share = f.narrowest_sum_share.min(reach);
            if !sum_protected(b, g.sum, g.largest, P_PERCENT) {
                f.breaches.push(format!("{} ({} months over {} people) is bounded to [{:.2}, {:.2}]", g.name, g.sum, g.n, b.0, b.1));
            }
        }
    }
    f
}

/// A random query: a statistic, a breakdown, and filters on what is not
/// broken down.
fn random_query(rng: &mut md::Rng) -> pb::Query {
    let statistic = ["count", "count", "mean", "sum"][rng.below(4)];
    let dims = ["SEX", "REGION", "OCU"];
    let breakdown: Vec<&str> = dims.iter().copied().filter(|_| rng.unit() < 0.4).collect();
    let mut filters = Vec::new();
    for d in dims.iter().filter(|d| !breakdown.contains(d)) {
        if rng.unit() < 0.5 {
            let codes: &[&str] = match *d {
                "SEX" => &["F", "M"],
                "REGION" => &REGIONS,
                _ => &OCUS,
            };
            let pick: Vec<&str> = codes.iter().copied().filter(|_| rng.unit() < 0.5).collect();
            if !pick.is_empty() {
                filters.push((*d, pick));
            }
        }
    }
    query(&breakdown, &filters, statistic)
}

/// Records for the property test: few enough that many atoms are small.
fn sparse_records(seed: u64) -> Vec<JobSeeker> {
    let mut r = md::jobseekers(1_200, seed);
    r.extend(md::planted());
    r
}

fn sequences() -> usize {
    std::env::var("TABADUL_ADVERSARY_SEQUENCES").ok().and_then(|s| s.parse().ok()).unwrap_or(6)
}

#[tokio::test]
async fn random_query_sequences_from_a_coalition_learn_nothing_protected() {
    let mut total_queries = 0;
    let mut released = 0;
    let (mut narrowest_count, mut narrowest_sum) = (f64::INFINITY, f64::INFINITY);
    let mut narrowed = Vec::new();
    for seq in 0..sequences() as u64 {
        let f = start_with(&policy(), sparse_records(100 + seq));
        let mut clients = [f.client("hub", "alo"), f.client("node", "EGY"), f.client("node", "JOR")];
        let mut adv = Adversary::new(ATOMS, (0.0, 1e4));
        let mut rng = md::Rng::new(7_000 + seq);
        for i in 0..40 {
            let q = random_query(&mut rng);
            let (_, cells) = ask(&mut clients[i % 3], q, &mut adv).await;
            released += cells.iter().filter(|c| !withheld(c)).count();
            total_queries += 1;
        }
        let found = audit(&adv, &f.records);
        assert!(found.breaches.is_empty(), "sequence {seq}: {:#?}", found.breaches);
        assert_eq!(found.infeasible, 0);
        narrowest_count = narrowest_count.min(found.narrowest_count);
        narrowed.extend(found.narrowed);
        narrowest_sum = narrowest_sum.min(found.narrowest_sum_share);
    }
    // The defence must not be "refuse everything".
    assert!(released > 3 * total_queries, "{released} cells released over {total_queries} queries");
    println!(
        "adversary: {} sequences, {total_queries} queries, {released} cells released; narrowest count interval {narrowest_count:.2}, narrowest sum reach {:.1} % of the largest contribution; {} small groups bounded inside 1..9 without being pinned",
        sequences(),
        narrowest_sum * 100.0,
        narrowed.len()
    );
    for n in &narrowed {
        println!("  narrowed: {n}");
    }
}

#[tokio::test]
async fn under_the_cell_key_method_no_small_group_is_even_narrowed() {
    // The demo federation's rule (threshold 10, cell key d 4, V 2, js 2):
    // with noise of ±4 per count, the intervals that exact counts let the
    // adversary squeeze reach 0 or the threshold again.
    let mut narrowed = Vec::new();
    let mut released = 0;
    for seq in 0..sequences() as u64 {
        let f = start_with(&cell_key_policy(), sparse_records(200 + seq));
        let mut hub = f.client("hub", "alo");
        let mut adv = Adversary::new(ATOMS, (0.0, 1e4));
        let mut rng = md::Rng::new(9_000 + seq);
        for _ in 0..40 {
            let (_, cells) = ask_noisy(&mut hub, random_query(&mut rng), &mut adv, Some((4.0, 0.2))).await;
            released += cells.iter().filter(|c| !withheld(c)).count();
        }
        let found = audit(&adv, &f.records);
        assert!(found.breaches.is_empty(), "sequence {seq}: {:#?}", found.breaches);
        assert_eq!(found.infeasible, 0, "the noise bounds assumed are wrong: the audit proved nothing");
        narrowed.extend(found.narrowed);
    }
    assert!(released > 100, "{released}");
    assert!(narrowed.is_empty(), "{narrowed:#?}");
}

#[tokio::test]
async fn the_adversary_has_teeth() {
    // Without protection (threshold 1, no dominance, no p%, no group rule)
    // the same machinery finds the planted groups: its checks can fail.
    let open = policy().replace("threshold = 10", "threshold = 1\ndominance = { n = 4, k = 100 }\np_percent = 0\ngroup = { max_size = 0, share = 1.0 }");
    let f = start_with(&open, sparse_records(1));
    let mut hub = f.client("hub", "alo");
    let mut adv = Adversary::new(ATOMS, (0.0, 1e4));
    ask(&mut hub, query(&["SEX", "REGION", "OCU"], &[], "count"), &mut adv).await;
    ask(&mut hub, query(&["SEX", "REGION", "OCU"], &[], "sum"), &mut adv).await;
    let found = audit(&adv, &f.records);
    assert!(found.breaches.len() >= 5, "{:#?}", found.breaches);
    assert!(found.breaches.iter().any(|b| b.contains("MA-04/0")), "the one person of MA-04/0: {:#?}", found.breaches);
}

// ---- one test per class of weakness in issue 12

/// Class 1: no exact figure in any reason, rule list or log line.
#[tokio::test]
async fn no_record_count_in_any_text() {
    let f = start_with(&policy(), sparse_records(3));
    let n = f.records.len();
    let mut hub = f.client("hub", "alo");
    let (d, _) = collect(&mut hub, query(&["REGION"], &[], "count")).await.unwrap();
    let said = format!("{} {:?}", d.reason, d.rules_fired);
    assert!(!said.contains(&n.to_string()), "{said}");
    // One more record: the text does not count it either (the answer
    // withholds the cells that would, as a difference across the import).
    let one = f.dir.path().join("one.csv");
    std::fs::write(&one, format!("{}\n2025,F,Y15T24,MA-01,X2,3,4\n", md::HEADER)).unwrap();
    run_ok(f.node.command(&["import", "--table", TABLE]).arg(&one)).unwrap();
    let (d2, cells) = collect(&mut hub, query(&["REGION"], &[], "count")).await.unwrap();
    let said = format!("{} {:?}", d2.reason, d2.rules_fired);
    assert!(!said.contains(&(n + 1).to_string()) && !said.contains("records"), "{said}");
    assert_eq!(d.rules_fired, d2.rules_fired);
    let ma01 = cells.iter().find(|c| c.key[1] == "MA-01").unwrap();
    assert!(withheld(ma01), "{ma01:?}");
    // Nor in the signed log.
    let out = f.pki.fetch_log(f.proc.addr, "spiffe://alo/node/MAR", &f.dir.path().join("mar-log")).unwrap();
    let entries = String::from_utf8_lossy(&std::fs::read(out.join("entries.bin")).unwrap()).into_owned();
    assert!(entries.contains("count of PES_JOBSEEKER_RECORDS by REGION"), "{entries}");
    for count in [n, n + 1] {
        assert!(!entries.contains(&format!(" {count} ")), "{count} records named in the log: {entries}");
    }
    // Not even the size of the one-record import.
    assert!(entries.contains("unit records into PES_JOBSEEKER_RECORDS") && !entries.contains("1 records"), "{entries}");
}

fn cell_key_policy() -> String {
    policy_with("cell-key-1", "threshold = 10\ncell_key = { d = 4, v = 2.0, js = 2, magnitude = 0.2 }", &[("hub-js", "hub")])
}

/// Class 2: magnitude noise that cannot be decoded, and that is not the
/// largest contribution in disguise.
#[tokio::test]
async fn magnitude_noise_cannot_be_decoded() {
    let f = start_with(&cell_key_policy(), md::jobseekers(20_000, 7));
    let mut hub = f.client("hub", "alo");
    // Cells that all hold the 900-month person (MA-01, occupation 0, a
    // man), padded by different occupations.
    let mut decoded = 0;
    let mut tried = 0;
    for pad in ["1", "2", "3", "4", "5", "6", "7", "8", "9", "X"] {
        let filters = vec![("REGION", vec!["MA-01"]), ("OCU", vec!["0", pad])];
        let (_, sums) = collect(&mut hub, query(&[], &filters, "sum")).await.unwrap();
        let (_, means) = collect(&mut hub, query(&[], &filters, "mean")).await.unwrap();
        let (_, counts) = collect(&mut hub, query(&[], &filters, "count")).await.unwrap();
        let (s, m, n) = (&sums[0], &means[0], &counts[0]);
        assert!(!withheld(s) && !withheld(m) && !withheld(n), "{s:?} {m:?} {n:?}");
        // Linked: the mean times the released count is the released sum,
        // and nothing more exact.
        assert!((m.value * n.value - s.value).abs() < 1e-6 * s.value.abs().max(1.0));
        let group: Vec<&JobSeeker> = f.records.iter().filter(|r| r.region == "MA-01" && (r.ocu == "0" || r.ocu == pad)).collect();
        let truth: f64 = group.iter().map(|r| r.months).sum();
        let noise = s.value - truth;
        // The red team's decoding: noise = largest × m × k / d for k in −d..d.
        tried += 1;
        if (-4..=4).any(|k| (noise - 900.0 * 0.2 * f64::from(k) / 4.0).abs() < 1e-6) {
            decoded += 1;
        }
        // Integer months: the released sum is never within rounding of the truth.
        assert!((s.value - truth).abs() > 0.5, "{} vs {truth}", s.value);
        let scale = 0.2 * truth / (group.len() as f64).sqrt();
        assert!(noise.abs() >= 0.5 * scale - 1e-6 && noise.abs() <= scale + 1e-6, "noise {noise} for scale {scale}");
    }
    assert_eq!(decoded, 0, "{decoded} of {tried} noises decoded as largest × m × k/d");
}

/// Class 3: a mean and a count of the same records are one release.
#[tokio::test]
async fn a_count_then_a_mean_cannot_size_a_small_group() {
    let f = start_with(&policy(), md::jobseekers(20_000, 7));
    let mut hub = f.client("hub", "alo");
    let mut adv = Adversary::new(ATOMS, (0.0, 1e4));
    let others: Vec<&str> = OCUS.iter().copied().filter(|o| *o != "0").collect();
    // Count of MA-06 (holding the 3 planted people of occupation 0) ...
    ask(&mut hub, query(&[], &[("REGION", vec!["MA-06"])], "count"), &mut adv).await;
    // ... then the mean of MA-06 without them, and its sum.
    let (_, mean) = ask(&mut hub, query(&[], &[("REGION", vec!["MA-06"]), ("OCU", others.clone())], "mean"), &mut adv).await;
    let (_, sum) = ask(&mut hub, query(&[], &[("REGION", vec!["MA-06"]), ("OCU", others)], "sum"), &mut adv).await;
    assert!(withheld(&mean[0]) || withheld(&sum[0]), "mean and sum of A − G give the count of A − G: {mean:?} {sum:?}");
    let g = vec![atom("MA-06", "0", "F"), atom("MA-06", "0", "M")];
    assert!(!adv.determined(Measure::Count, &g));
    assert!(count_protected(adv.bounds(Measure::Count, &g).unwrap(), THRESHOLD));
}

/// Class 4: A − B − C isolating a small group split by earlier releases.
#[tokio::test]
async fn a_combination_of_several_releases_cannot_isolate_a_small_group() {
    let f = start_with(&policy(), md::jobseekers(20_000, 7));
    let mut hub = f.client("hub", "alo");
    let mut adv = Adversary::new(ATOMS, (0.0, 1e4));
    let others: Vec<&str> = OCUS.iter().copied().filter(|o| *o != "0").collect();
    // A: MA-06; B: MA-06 women outside occupation 0; C: the same for men.
    // A − B − C = the 3 people of occupation 0 in MA-06 (one woman, two
    // men): no single cell, and neither B nor C is a small difference of A.
    for statistic in ["count", "sum"] {
        ask(&mut hub, query(&[], &[("REGION", vec!["MA-06"])], statistic), &mut adv).await;
        ask(&mut hub, query(&[], &[("REGION", vec!["MA-06"]), ("OCU", others.clone()), ("SEX", vec!["F"])], statistic), &mut adv).await;
        let (_, c) = ask(&mut hub, query(&[], &[("REGION", vec!["MA-06"]), ("OCU", others.clone()), ("SEX", vec!["M"])], statistic), &mut adv).await;
        assert!(withheld(&c[0]), "{statistic}: A − B − C isolates 3 people: {c:?}");
    }
    let found = audit(&adv, &f.records);
    assert!(found.breaches.is_empty(), "{:#?}", found.breaches);
}

/// Class 5: every withheld cell looks alike, and a zero the group rule
/// hides stays hidden when asked for directly.
#[tokio::test]
async fn withheld_cells_look_alike_and_hidden_zeros_stay_hidden() {
    let f = start_with(&policy(), md::jobseekers(20_000, 7));
    let mut hub = f.client("hub", "alo");
    let (_, cells) = collect(&mut hub, query(&["SEX", "REGION", "OCU"], &[], "count")).await.unwrap();
    let held: Vec<&pb::Cell> = cells.iter().filter(|c| withheld(c)).collect();
    assert!(held.len() >= 4, "{held:?}");
    for c in &held {
        assert_eq!((c.conf_status.as_str(), c.flags.len()), ("C", 0), "{c:?}");
        assert!(c.value.is_nan());
    }
    // The 12 people of occupation 0 in MA-01 are all 25 or older: the young
    // among them (none) are withheld however they are asked for.
    assert_eq!(md::count(&f.records, |r| r.region == "MA-01" && r.ocu == "0" && r.age == "Y15T24"), 0);
    let direct = query(&[], &[("REGION", vec!["MA-01"]), ("OCU", vec!["0"]), ("AGE", vec!["Y15T24"])], "count");
    let (_, cells) = collect(&mut hub, direct).await.unwrap();
    assert!(cells.iter().all(withheld), "a hidden zero asked for directly: {cells:?}");
    let by_age = query(&["AGE"], &[("REGION", vec!["MA-01"]), ("OCU", vec!["0"])], "count");
    let (_, cells) = collect(&mut hub, by_age).await.unwrap();
    let young = cells.iter().find(|c| c.key[1] == "Y15T24").unwrap();
    assert!(withheld(young), "{cells:?}");
}

/// Class 6: members pooling with each other or with the hub are one
/// requester; the public tier spends its own privacy budget.
#[tokio::test]
async fn members_and_the_hub_are_one_requester() {
    let f = start_with(&policy(), md::jobseekers(20_000, 7));
    let others: Vec<&str> = OCUS.iter().copied().filter(|o| *o != "0").collect();
    assert_eq!(md::count(&f.records, |r| r.region == "MA-04" && r.ocu == "0"), 1);
    let mut hub = f.client("hub", "alo");
    let (_, total) = collect(&mut hub, query(&[], &[("REGION", vec!["MA-04"])], "count")).await.unwrap();
    assert!(!withheld(&total[0]));
    for (role, id) in [("node", "EGY"), ("node", "JOR")] {
        let mut member = f.client(role, id);
        let (_, half) = collect(&mut member, query(&[], &[("REGION", vec!["MA-04"]), ("OCU", others.clone())], "count")).await.unwrap();
        assert!(withheld(&half[0]), "{id} got the other half of the hub's difference: {half:?}");
    }
}

const DP_POLICY: &str = r#"version = "dp-tiers-1"

[disclosure.PES_JOBSEEKER_RECORDS]
dp = { epsilon = 1.0, budget = 2.0 }

[[rule]]
id = "operators"
requester = "hub"
dataflows = ["PES_JOBSEEKER_RECORDS"]
breakdowns = ["REGION"]

[[rule]]
id = "public"
requester = "public"
dataflows = ["PES_JOBSEEKER_RECORDS"]
breakdowns = ["REGION"]
"#;

#[tokio::test]
async fn the_public_cannot_spend_the_operators_budget() {
    let f = start_with(DP_POLICY, md::jobseekers(2_000, 7));
    let mut hub = f.client("hub", "alo");
    let public = |mut q: pb::Query| {
        q.audience = "public".into();
        q
    };
    for _ in 0..2 {
        let (d, _) = collect(&mut hub, public(query(&["REGION"], &[], "count"))).await.unwrap();
        assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
    }
    let (d, _) = collect(&mut hub, public(query(&["REGION"], &[], "count"))).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Refused as i32, "{}", d.reason);
    assert!(d.reason.contains("the public of alo"), "{}", d.reason);
    // The operators' own budget is untouched.
    let (d, _) = collect(&mut hub, query(&["REGION"], &[], "count")).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
    // Under DP, whether a year holds any record does not show: 2019 has
    // none, and is answered (with noise) like 2025 when named.
    let mut q = query(&["REGION"], &[], "count");
    q.start_period = "2019".into();
    q.end_period = "2019".into();
    let (d, cells) = collect(&mut hub, q).await.unwrap();
    assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
    assert!(!cells.is_empty() && cells.iter().all(|c| c.key.last().unwrap() == "2019" && c.flags == ["dp-laplace"]), "{cells:?}");
}

/// Class 1 under differential privacy: which periods an answer covers says
/// nothing about which periods hold records. Two nodes, one with records in
/// 2019 and one without, answer an open-ended query over the same periods
/// (the last ten years); a range too long to answer is refused the same way
/// by both, before any data is read.
#[tokio::test]
async fn under_differential_privacy_the_periods_answered_do_not_depend_on_the_data() {
    let policy = DP_POLICY.replace("budget = 2.0", "budget = 10.0");
    let without = md::jobseekers(2_000, 7);
    let mut with = without.clone();
    for r in with.iter_mut().take(40) {
        r.period = "2019";
    }
    let this_year = time::OffsetDateTime::now_utc().year();
    let expected: Vec<String> = (this_year - 9..=this_year).map(|y| y.to_string()).collect();
    let mut seen = Vec::new();
    for records in [without, with] {
        assert_eq!(records.iter().any(|r| r.period == "2019"), !seen.is_empty());
        let f = start_with(&policy, records);
        let mut hub = f.client("hub", "alo");
        let (d, cells) = collect(&mut hub, query(&["REGION"], &[], "count")).await.unwrap();
        assert_eq!(d.kind, DecisionKind::Allowed as i32, "{}", d.reason);
        assert!(cells.iter().all(|c| c.flags == ["dp-laplace"]), "{cells:?}");
        let periods: std::collections::BTreeSet<String> = cells.iter().map(|c| c.key.last().unwrap().clone()).collect();
        assert_eq!(periods.into_iter().collect::<Vec<_>>(), expected, "an open range answers the last ten years, held or not");
        let mut q = query(&["REGION"], &[], "count");
        q.start_period = "1800".into();
        q.end_period = "2025".into();
        let (d, cells) = collect(&mut hub, q).await.unwrap();
        assert_eq!(d.kind, DecisionKind::Refused as i32, "{}", d.reason);
        assert!(cells.is_empty() && d.reason.contains("at most 120"), "{}", d.reason);
        seen.push(d.reason);
    }
    assert_eq!(seen[0], seen[1], "the refusal of a long range reads the same with and without data");
}
