//! The hub's HTTP front door against real nodes: SDMX REST in every
//! format, the stock Python SDMX clients, the JSON API, operator tokens and
//! certificates, the public tier, limits, the cache under withdrawals and
//! policy changes, and the dashboard in headless Chromium.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use tabadul_tests::http::{Answer, Client};
use tabadul_tests::{HubMember, NodeDir, Pki, Proc, bin, chromium, dead_endpoint, run_ok, start_hub_with, synthetic};

/// Hubs grant SEX and AGE breakdowns; the public gets SEX only, and EGY
/// publishes nothing to the public and no breakdown to the hub.
fn policy(member: &str) -> String {
    let flows = "[\"UNE_RATE\", \"UNE_PERS\", \"LF_PERS\"]";
    if member == "EGY" {
        return format!("[[rule]]\nid = \"hub-totals\"\nrequester = \"hub\"\ndataflows = {flows}\nbreakdowns = []\n");
    }
    format!(
        "[[rule]]\nid = \"hub-detail\"\nrequester = \"hub\"\ndataflows = {flows}\nbreakdowns = [\"SEX\", \"AGE\"]\n\n\
         [[rule]]\nid = \"open-data\"\nrequester = \"public\"\ndataflows = {flows}\nbreakdowns = [\"SEX\"]\n"
    )
}

struct Federation {
    dir: tempfile::TempDir,
    pki: Pki,
    nodes: BTreeMap<String, (NodeDir, Proc)>,
    hub: Proc,
    hub_config: PathBuf,
}

impl Federation {
    /// MAR, EGY and JOR with synthetic data for 2022–2024, plus LBY
    /// configured but down when `with_dead` is set.
    fn start(with_dead: bool, extra: &str) -> Federation {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::init(dir.path()).unwrap();
        let mut nodes = BTreeMap::new();
        let mut members = Vec::new();
        for member in ["MAR", "EGY", "JOR"] {
            let node = NodeDir::create(&dir.path().join("nodes"), &pki, member, &policy(member)).unwrap();
            let data = node.dir.join("data.csv");
            std::fs::write(&data, synthetic::to_sdmx_csv(&synthetic::generate(member, 2022..=2024))).unwrap();
            run_ok(node.command(&["import"]).arg(&data)).unwrap();
            let proc = node.start().unwrap();
            members.push(HubMember::new(&pki, member, proc.addr.to_string()).unwrap());
            nodes.insert(member.to_owned(), (node, proc));
        }
        if with_dead {
            members.push(HubMember::new(&pki, "LBY", dead_endpoint().unwrap()).unwrap());
        }
        let hub_cert = pki.issue("hub", "alo").unwrap();
        let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &members, 2000, extra).unwrap();
        let hub_config = dir.path().join("hub/hub.toml");
        Federation { dir, pki, nodes, hub, hub_config }
    }

    fn client(&self) -> Client {
        Client::plain(self.hub.http.unwrap())
    }

    /// `tabadul-hub token issue`: the token it prints.
    fn issue_token(&self, name: &str) -> String {
        let out = run_ok(Command::new(bin("tabadul-hub")).arg("token").arg("--config").arg(&self.hub_config).args(["issue", "--name", name])).unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The hub's log entries (the hub must be stopped).
    fn hub_log(&mut self) -> Vec<tabadul_audit::Entry> {
        self.hub.kill();
        let (key, _) = self.pki.hub_log_key().unwrap();
        let log = tabadul_audit::Log::open(&self.dir.path().join("hub/data/log"), tabadul_audit::load_signer(&key).unwrap()).unwrap();
        log.read(0, log.len()).unwrap().into_iter().map(|(_, e)| e).collect()
    }
}

const PLAIN: &str = "[http]\ndangerous_plain_http = true\n";
const KEY: &str = "MAR+EGY+JOR+LBY.F+M.Y_GE15._T";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// OBS_VALUE by series key and period, from SDMX-CSV 1.0.
fn csv_values(a: &Answer) -> BTreeMap<String, f64> {
    let text = a.text();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let (time, value) = (col("TIME_PERIOD"), col("OBS_VALUE"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (format!("{}.{}", f[1..time].join("."), f[time]), f[value].parse().unwrap())
        })
        .collect()
}

/// The same from the JSON API answer.
fn api_values(v: &Value) -> BTreeMap<String, f64> {
    v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let key: Vec<&str> = c["key"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
            (key.join("."), c["value"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn sdmx_rest_answers_in_every_format_and_reports_every_member() {
    let f = Federation::start(true, PLAIN);
    let token = f.issue_token("alice");
    let auth = bearer(&token);
    let http = f.client();

    // Structures: anyone may read them.
    let flows = http.get("/sdmx/dataflow", &[]).unwrap();
    assert_eq!(flows.status, 200, "{}", flows.text());
    assert_eq!(flows.header("content-type"), Some("application/vnd.sdmx.structure+xml; version=2.1"));
    let text = flows.text();
    assert!(text.contains("<str:Dataflow id=\"UNE_RATE\" agencyID=\"ALO\" version=\"2026.4\""), "{text}");
    assert!(text.contains("<com:Name xml:lang=\"ar\">معدل البطالة</com:Name>"), "Arabic names travel in the structures");
    let dsd = http.get("/sdmx/datastructure/ALO/DSD_UNE_RATE/latest", &[]).unwrap().text();
    for needle in [
        "<str:Codelist id=\"CL_SEX\"",
        "<str:Codelist id=\"CL_CONF_STATUS\"",
        "<str:ConceptScheme id=\"CS_TABADUL\"",
        "<str:TimeDimension id=\"TIME_PERIOD\" position=\"5\"",
    ] {
        assert!(dsd.contains(needle), "{needle} missing: every referenced artefact is included");
    }
    // References to artefacts (not the local one to OBS_VALUE) name their
    // class and package.
    let refs: Vec<&str> = dsd.split("<Ref ").skip(1).map(|r| r.split("/>").next().unwrap()).filter(|r| r.contains("agencyID=")).collect();
    assert!(refs.len() > 10);
    assert!(refs.iter().all(|r| r.contains("class=\"") && r.contains("package=\"")), "{refs:?}");
    assert!(http.get("/sdmx/dataflow/ALO/UNE_RATE?references=all", &[]).unwrap().text().contains("<str:DataStructure id=\"DSD_UNE_RATE\""));
    assert_eq!(http.get("/sdmx/codelist/ALO/CL_NOPE", &[]).unwrap().status, 404);
    assert_eq!(http.get("/sdmx/dataflow/IMF", &[]).unwrap().status, 404);
    assert_eq!(http.get("/sdmx/datastructure", &[("accept", "application/vnd.sdmx.structure+json;version=1.0.0")]).unwrap().status, 406);

    // The JSON API's answer is the reference for every SDMX format.
    let q =
        json!({"dataflow": "UNE_RATE", "breakdown": ["SEX"], "filters": {"SEX": ["F", "M"]}, "start_period": "2022", "end_period": "2024", "aggregate": true});
    let api = http.post_json("/api/v1/query", &[("authorization", &auth)], &q).unwrap();
    assert_eq!(api.status, 200, "{}", api.text());
    let api = api.json().unwrap();
    let states: BTreeMap<&str, &str> =
        api["members"].as_array().unwrap().iter().map(|m| (m["member"].as_str().unwrap(), m["state"].as_str().unwrap())).collect();
    assert_eq!(states, BTreeMap::from([("EGY", "refused"), ("JOR", "answered"), ("LBY", "unreachable"), ("MAR", "answered")]));
    let expected = api_values(&api);
    assert_eq!(expected.len(), 12, "MAR and JOR x F, M x 3 years");
    assert_eq!(api["aggregate"]["cells"][0]["covers"], json!(["JOR", "MAR"]));

    let path = format!("/sdmx/data/ALO,UNE_RATE,latest/{KEY}?startPeriod=2022&endPeriod=2024");
    let get = |accept: &str| {
        let a = http.get(&path, &[("authorization", &auth), ("accept", accept)]).unwrap();
        assert_eq!(a.status, 200, "{accept}: {}", a.text());
        let members = a.header("x-tabadul-members").unwrap();
        assert!(members.contains("EGY=refused") && members.contains("LBY=unreachable") && members.contains("MAR=answered"), "{members}");
        assert_eq!(a.header("x-tabadul-hub-log"), Some("alo/hub/alo"), "the answer names the log its leaf is in");
        a
    };
    let csv1 = get("application/vnd.sdmx.data+csv;version=1.0.0");
    assert_eq!(csv1.header("cache-control"), Some("private, no-store"), "no cache outside the hub keeps country data");
    assert_eq!(csv1.header("content-type"), Some("application/vnd.sdmx.data+csv; version=1.0.0"));
    let got = csv_values(&csv1);
    assert_eq!(got.len(), expected.len());
    for (k, v) in &expected {
        // CSV keys carry AGE and REGION too: match on area, sex and period.
        let parts: Vec<&str> = k.split('.').collect();
        let csv_key = format!("{}.{}.Y_GE15._T.{}", parts[0], parts[1], parts[parts.len() - 1]);
        assert_eq!(got.get(&csv_key), Some(v), "{csv_key}");
    }
    let csv2 = get("application/vnd.sdmx.data+csv;version=2.0.0").text();
    assert!(csv2.starts_with("STRUCTURE,STRUCTURE_ID,ACTION,REF_AREA,SEX,AGE,REGION,TIME_PERIOD,OBS_VALUE"), "{csv2}");
    assert_eq!(csv2.lines().count(), 13);
    let generic = get("application/vnd.sdmx.genericdata+xml;version=2.1").text();
    assert_eq!(generic.matches("<gen:Series>").count(), 4);
    assert_eq!(generic.matches("<gen:Obs>").count(), 12);
    assert!(generic.contains("<footer:Message code=\"403\" severity=\"Warning\"><com:Text xml:lang=\"en\">EGY refused:"), "the refusal is in the message");
    assert!(generic.contains("LBY unreachable"));
    let specific = get("application/vnd.sdmx.structurespecificdata+xml;version=2.1").text();
    assert_eq!(specific.matches("<Obs TIME_PERIOD=").count(), 12);
    assert!(specific.contains("xsi:type=\"ns1:DataSetType\""));
    let sdmx_json = get("application/vnd.sdmx.data+json;version=1.0.0").json().unwrap();
    let series = sdmx_json["dataSets"][0]["series"].as_object().unwrap();
    assert_eq!(series.len(), 4);
    let observations: usize = series.values().map(|s| s["observations"].as_object().unwrap().len()).sum();
    assert_eq!(observations, 12);
    let annotations = sdmx_json["structure"]["annotations"].to_string();
    assert!(annotations.contains("EGY") && annotations.contains("refused"), "{annotations}");

    // Query parameters.
    let last = http.get(&format!("/sdmx/data/UNE_RATE/{KEY}?lastNObservations=1&format=csv"), &[("authorization", &auth)]).unwrap();
    assert_eq!(csv_values(&last).len(), 4, "one observation per series");
    assert!(last.header("content-disposition").unwrap().contains("UNE_RATE.csv"));
    let flat = http.get(&format!("{path}&dimensionAtObservation=AllDimensions"), &[("authorization", &auth)]).unwrap().text();
    assert_eq!(flat.matches("<gen:ObsKey>").count(), 12);
    let keys = http.get(&format!("{path}&detail=serieskeysonly"), &[("authorization", &auth)]).unwrap().text();
    assert_eq!((keys.matches("<gen:Series>").count(), keys.matches("<gen:Obs>").count()), (4, 0));
    let wildcard = http.get("/sdmx/data/UNE_RATE/MAR.....?startPeriod=2024&endPeriod=2024&format=csv", &[("authorization", &auth)]).unwrap();
    assert_eq!(wildcard.status, 400, "five dots make six parts");
    let wildcard = http.get("/sdmx/data/UNE_RATE/MAR..Y_GE15._T?startPeriod=2024&endPeriod=2024&format=csv", &[("authorization", &auth)]).unwrap();
    assert_eq!(csv_values(&wildcard).len(), 3, "a wildcard SEX gives every series: T, M and F");

    // Errors, each with its status and a precise SDMX error message.
    let status = |p: &str, accept: &str| {
        let a = http.get(p, &[("authorization", &auth), ("accept", accept)]).unwrap();
        (a.status, a.text())
    };
    let (s, t) = status("/sdmx/data/NOPE/all", "*/*");
    assert_eq!(s, 404);
    assert!(t.contains("<mes:ErrorMessage code=\"100\">") && t.contains("no dataflow &quot;NOPE&quot;"), "{t}");
    let (s, t) = status("/sdmx/data/UNE_RATE/MAR.F", "*/*");
    assert_eq!(s, 400);
    assert!(t.contains("UNE_RATE has 4 dimensions: REF_AREA.SEX.AGE.REGION"), "{t}");
    assert_eq!(status("/sdmx/data/UNE_RATE/MAR.X.Y_GE15._T", "*/*").0, 404);
    assert_eq!(status(&path, "application/vnd.sdmx.data+json;version=2.0.0").0, 406);
    assert_eq!(status(&format!("{path}&dimensionAtObservation=SEX"), "*/*").0, 501);
    assert_eq!(status(&format!("{path}&updatedAfter=2024-01-01"), "*/*").0, 501);
    assert_eq!(status("/sdmx/categoryscheme", "*/*").0, 501);
    let (s, t) = status("/sdmx/data/UNE_RATE/EGY.F+M.Y_GE15._T", "*/*");
    assert_eq!(s, 404, "EGY refuses the breakdown: no data, and the reason says so");
    assert!(t.contains("EGY refused") && t.contains("does not grant a breakdown by SEX"), "{t}");

    // The OpenAPI document describes the API.
    let openapi = http.get("/api/v1/openapi.json", &[]).unwrap().json().unwrap();
    for p in ["/api/v1/query", "/api/v1/catalogue", "/api/v1/members", "/api/v1/releases"] {
        assert!(openapi["paths"][p].is_object(), "{p}");
    }
    let catalogue = http.get("/api/v1/catalogue", &[]).unwrap().json().unwrap();
    let une = catalogue["dataflows"].as_array().unwrap().iter().find(|d| d["id"] == "UNE_RATE").unwrap();
    assert_eq!(une["name"]["ar"], "معدل البطالة");
}

#[test]
fn stock_python_sdmx_clients_read_the_hub() {
    let f = Federation::start(false, PLAIN);
    let token = f.issue_token("analyst");
    let python = std::env::var("TABADUL_PYTHON").unwrap_or_else(|_| format!("{}/.cache/tabadul/pyenv-sdmx/bin/python", std::env::var("HOME").unwrap()));
    let script = tabadul_tests::repo_root().join("tests/python/sdmx_clients.py");
    let base = format!("http://{}/sdmx", f.hub.http.unwrap());
    let out = Command::new(&python).arg(&script).arg(&base).arg(&token).output().unwrap_or_else(|e| panic!("{python}: {e} (scripts/prepare.sh installs it)"));
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert!(got["sdmx1_dataflows"].as_array().unwrap().contains(&json!("UNE_RATE")));
    assert_eq!(got["sdmx1_dimensions"], json!(["REF_AREA", "SEX", "AGE", "REGION", "TIME_PERIOD"]));
    assert_eq!(got["sdmx1_sex_codes"], json!(["F", "M", "T"]));
    assert_eq!(got["sdmx1_rows"], 12, "{got}");
    assert_eq!(got["sdmx1_ss_rows"], 12);
    assert!(got["pysdmx_dataflows"].as_array().unwrap().contains(&json!("UNE_RATE")));
    assert_eq!(got["pysdmx_dsds"], json!(["DSD_UNE_RATE"]));
    // pysdmx read anonymously: the public rule grants SEX, so the same 12.
    assert_eq!(got["pysdmx_rows"], 12, "{got}");
    // Both clients read the figures the hub serves.
    let api = f
        .client()
        .post_json(
            "/api/v1/query",
            &[],
            &json!({"dataflow": "UNE_RATE", "filters": {"SEX": ["F", "M"]}, "members": ["MAR", "JOR"], "start_period": "2022", "end_period": "2024"}),
        )
        .unwrap()
        .json()
        .unwrap();
    let expected = api_values(&api);
    let py: BTreeMap<String, f64> = serde_json::from_value(got["pysdmx_values"].clone()).unwrap();
    assert_eq!(py, expected);
    let sdmx1: Vec<f64> = got["sdmx1_values"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).collect();
    let mut a: Vec<f64> = expected.values().copied().collect();
    let mut b = sdmx1;
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    assert_eq!(a, b);
}

#[test]
fn the_cache_never_serves_a_withdrawn_series_or_an_old_policy() {
    // Every member up, so answers may be cached.
    let f = Federation::start(false, PLAIN);
    let auth = bearer(&f.issue_token("alice"));
    let http = f.client();
    let q = json!({"dataflow": "UNE_PERS", "filters": {"SEX": ["F", "M"]}, "start_period": "2022", "end_period": "2024"});
    let ask = || {
        let a = http.post_json("/api/v1/query", &[("authorization", &auth)], &q).unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
        let cache = a.header("x-tabadul-cache").unwrap().to_owned();
        (cache, a.json().unwrap())
    };
    let (first, a) = ask();
    assert_eq!(first, "miss");
    // The answer names its leaf and the log that holds it.
    assert_eq!(a["hub_log"], "alo/hub/alo", "{a}");
    assert!(a["hub_leaf"].as_u64().is_some(), "{a}");
    let (second, b) = ask();
    assert_eq!(second, "hit", "an unchanged federation is served from the cache");
    assert_eq!(api_values(&a), api_values(&b));
    assert!(api_values(&b).keys().any(|k| k.starts_with("MAR.F.")));

    // MAR withdraws its women's series: the very next answer lacks it.
    let (mar, _) = &f.nodes["MAR"];
    run_ok(mar.command(&["withdraw", "--dataflow", "UNE_PERS", "--series", "MAR.F..", "--reason", "under revision"])).unwrap();
    let (third, c) = ask();
    assert_eq!(third, "miss", "the withdrawal changed MAR's generation");
    let values = api_values(&c);
    assert!(!values.keys().any(|k| k.starts_with("MAR.F.")), "a withdrawn series was served: {values:?}");
    assert!(values.keys().any(|k| k.starts_with("MAR.M.")));
    // The SDMX door shares the cache and obeys the same rule.
    let sdmx = http.get("/sdmx/data/UNE_PERS/MAR+JOR.F.Y_GE15._T?startPeriod=2022&endPeriod=2024&format=csv", &[("authorization", &auth)]).unwrap();
    assert!(!sdmx.text().contains(",MAR,F,"), "{}", sdmx.text());

    // JOR's policy stops granting the sex breakdown: refused at once.
    let jor_state = |v: &Value| v["members"].as_array().unwrap().iter().find(|m| m["member"] == "JOR").unwrap()["state"].as_str().unwrap().to_owned();
    let (hit, again) = ask();
    assert_eq!((hit.as_str(), jor_state(&again).as_str()), ("hit", "answered"));
    let (jor, _) = &f.nodes["JOR"];
    std::fs::write(&jor.policy, "[[rule]]\nid = \"hub-totals\"\nrequester = \"hub\"\ndataflows = [\"UNE_PERS\"]\nbreakdowns = []\n").unwrap();
    // The node picks the file up within its reload interval (200 ms here);
    // from then on no cached answer may carry JOR's figures.
    let started = std::time::Instant::now();
    let d = loop {
        let (cache, d) = ask();
        if jor_state(&d) == "refused" {
            assert_eq!(cache, "miss");
            break d;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "JOR never reloaded its policy");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!api_values(&d).keys().any(|k| k.starts_with("JOR.")));
    let (cache, e) = ask();
    assert_eq!((cache.as_str(), jor_state(&e).as_str()), ("hit", "refused"), "the new answer is cached in turn");
}

#[test]
fn operators_prove_who_they_are_and_the_public_gets_public_rules_only() {
    let mut f = Federation::start(false, "[http]\nrate_per_minute = 600\nburst = 200\n");
    let analyst = f.pki.issue("operator", "analyst").unwrap();
    let former = f.pki.issue("operator", "former").unwrap();
    let node_cert = f.pki.issue("node", "MAR").unwrap();
    let addr = f.hub.http.unwrap();
    let ca = f.pki.ca_cert();
    let anonymous = Client::tls(addr, &ca, None).unwrap();
    let by_cert = Client::tls(addr, &ca, Some(&f.pki.tls_files(&analyst))).unwrap();
    let whoami = |c: &Client, h: &[(&str, &str)]| c.get("/api/v1/whoami", h).unwrap();

    assert_eq!(whoami(&anonymous, &[]).json().unwrap()["tier"], "public");
    let me = whoami(&by_cert, &[]).json().unwrap();
    assert_eq!((me["operator"].as_str(), me["via"].as_str()), (Some("spiffe://alo/operator/analyst"), Some("certificate")));
    let a = whoami(&Client::tls(addr, &ca, Some(&f.pki.tls_files(&node_cert))).unwrap(), &[]);
    assert_eq!(a.status, 403, "a node's certificate is not an operator's");
    // Revoked while the hub runs: the next handshakes fail once the hub
    // has read the new CRL (it checks the file every 2 s by default).
    let former_client = Client::tls(addr, &ca, Some(&f.pki.tls_files(&former))).unwrap();
    assert_eq!(whoami(&former_client, &[]).status, 200);
    f.pki.revoke(&former).unwrap();
    let started = std::time::Instant::now();
    while former_client.get("/api/v1/whoami", &[]).is_ok() {
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "a revoked certificate is still accepted");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(whoami(&by_cert, &[]).status, 200, "the others still get in");
    // A certificate from another CA is refused too.
    let other = Pki::init(&f.dir.path().join("other-ca")).unwrap();
    let stranger = other.issue("operator", "analyst").unwrap();
    assert!(Client::tls(addr, &ca, Some(&other.tls_files(&stranger))).unwrap().get("/api/v1/whoami", &[]).is_err());

    // Tokens: issued, checked, revoked; a wrong one is an error, not the public tier.
    let token = f.issue_token("alice");
    let auth = bearer(&token);
    assert_eq!(whoami(&anonymous, &[("authorization", &auth)]).json().unwrap()["operator"], "alice");
    let mut forged = token.clone();
    forged.replace_range(token.len() - 4.., "AAAA");
    let a = whoami(&anonymous, &[("authorization", &bearer(&forged))]);
    assert_eq!(a.status, 401);
    assert!(a.json().unwrap()["error"]["message"].as_str().unwrap().contains("not one this hub issued"));

    // The public tier: nodes answer under their public rules only.
    let by_age = json!({"dataflow": "UNE_PERS", "breakdown": ["AGE"], "start_period": "2024", "end_period": "2024"});
    let public = anonymous.post_json("/api/v1/query", &[], &by_age).unwrap().json().unwrap();
    let operator = anonymous.post_json("/api/v1/query", &[("authorization", &auth)], &by_age).unwrap().json().unwrap();
    let state = |v: &Value, m: &str| v["members"].as_array().unwrap().iter().find(|x| x["member"] == m).unwrap()["state"].as_str().unwrap().to_owned();
    assert_eq!(state(&public, "MAR"), "refused", "MAR's public rule grants SEX, not AGE: {public}");
    assert_eq!(state(&operator, "MAR"), "answered");
    let totals = json!({"dataflow": "UNE_PERS", "start_period": "2024", "end_period": "2024"});
    let public = anonymous.post_json("/api/v1/query", &[], &totals).unwrap().json().unwrap();
    assert_eq!(state(&public, "MAR"), "answered");
    assert_eq!(state(&public, "EGY"), "refused", "EGY publishes nothing to the public");
    assert_eq!(anonymous.get("/api/v1/releases", &[]).unwrap().status, 403);
    assert_eq!(anonymous.get("/api/v1/members", &[]).unwrap().status, 403);
    let members = by_cert.get("/api/v1/members", &[]).unwrap().json().unwrap();
    assert!(members["members"].as_array().unwrap().iter().all(|m| m["reachable"] == true), "{members}");

    // A regional rate: MAR's unemployed and labour force leave too.
    let rate = json!({"dataflow": "UNE_RATE", "start_period": "2024", "end_period": "2024", "members": ["MAR"], "aggregate": true});
    assert_eq!(anonymous.post_json("/api/v1/query", &[("authorization", &auth)], &rate).unwrap().status, 200);

    // The transparency view: what left MAR, to whom, under which rule.
    let releases = by_cert.get("/api/v1/releases?member=MAR", &[]).unwrap().json().unwrap();
    let list = releases["releases"].as_array().unwrap();
    assert!(list.iter().any(|r| r["operator"] == "operator-token:alice" && r["rule_id"] == "hub-detail" && r["decision"] == "answered"), "{releases}");
    assert!(list.iter().any(|r| r["audience"] == "public" && r["rule_id"] == "open-data"), "{releases}");
    for part in ["UNE_PERS", "LF_PERS"] {
        assert!(list.iter().any(|r| r["dataflow"] == part && r["part_of"] == "UNE_RATE"), "{part}: {releases}");
    }
    assert!(releases["hub_log"]["checkpoint"].as_str().unwrap().starts_with("alo/hub/alo\n"));
    // And MAR's own signed checkpoint proves the leaf is in MAR's log.
    let first = &list[0];
    let proof = by_cert.get(&format!("/api/v1/releases/MAR/{}/proof", first["member_leaf"]), &[]).unwrap();
    assert_eq!(proof.status, 200, "{}", proof.text());
    let proof = proof.json().unwrap();
    assert_eq!(proof["verified"], true);
    assert_eq!(proof["leaf_hash"], first["leaf_hash"]);
    assert!(proof["member_checkpoint"].as_str().unwrap().starts_with("alo/node/MAR\n"), "{proof}");
    assert_eq!(by_cert.get("/api/v1/releases/MAR/999999/proof", &[]).unwrap().status, 404);
    assert_eq!(anonymous.get(&format!("/api/v1/releases/MAR/{}/proof", first["member_leaf"]), &[]).unwrap().status, 403);

    // Revoked: the running hub sees it at once.
    run_ok(Command::new(bin("tabadul-hub")).arg("token").arg("--config").arg(&f.hub_config).args(["revoke", "--name", "alice"])).unwrap();
    let a = whoami(&anonymous, &[("authorization", &auth)]);
    assert_eq!(a.status, 401);
    assert!(a.text().contains("revoked"), "{}", a.text());

    // Every request is on the hub's record, attributed.
    let peers: Vec<String> = f.hub_log().into_iter().filter(|e| e.kind == "federated-query").map(|e| e.peer).collect();
    assert!(peers.contains(&"operator-token:alice".to_owned()), "{peers:?}");
    // The public by a pseudonym of the day, never by address: one name
    // for this one anonymous caller, and no address anywhere in the log.
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let public: std::collections::BTreeSet<&String> = peers.iter().filter(|p| p.starts_with("public:")).collect();
    assert_eq!(public.len(), 1, "{peers:?}");
    let name = public.first().unwrap();
    assert!(name.starts_with(&format!("public:{today}:")) && name.len() == "public:yyyy-mm-dd:".len() + 12, "{name}");
    let raw: Vec<String> = f.hub_log().into_iter().map(|e| format!("{} {}", e.peer, e.detail)).collect();
    assert!(!raw.iter().any(|e| e.contains("127.0.0.1")), "an address in the hub's log: {raw:?}");
}

#[test]
fn limits_give_clear_errors() {
    let f = Federation::start(
        false,
        "[http]\ndangerous_plain_http = true\nrate_per_minute = 6\nburst = 4\nmax_body_bytes = 512\nmax_cells = 2\nheader_read_timeout_ms = 500\n",
    );
    let http = f.client();
    // A client that never finishes its headers is cut off.
    {
        use std::io::{Read, Write};
        let mut slow = std::net::TcpStream::connect(f.hub.http.unwrap()).unwrap();
        slow.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        slow.write_all(b"GET /api/v1/whoami HTTP/1.1\r\nhost: x\r\n").unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the connection was held {:?}", started.elapsed());
    }
    let auth = bearer(&f.issue_token("alice"));
    let big =
        json!({"dataflow": "UNE_PERS", "breakdown": ["SEX"], "members": ["MAR"], "start_period": "2022", "end_period": "2024", "padding": "x".repeat(600)});
    let a = http.post_json("/api/v1/query", &[("authorization", &auth)], &big).unwrap();
    assert_eq!(a.status, 413, "{}", a.text());
    let q = json!({"dataflow": "UNE_PERS", "breakdown": ["SEX"], "members": ["MAR"], "start_period": "2022", "end_period": "2024"});
    let a = http.post_json("/api/v1/query", &[("authorization", &auth)], &q).unwrap();
    assert_eq!(a.status, 413);
    assert!(a.json().unwrap()["error"]["message"].as_str().unwrap().contains("the limit is 2"), "{}", a.text());
    let a = http.post_json("/api/v1/query", &[("authorization", &auth)], &json!({"dataflow": "UNE_PERS", "members": ["MAR"], "bogus": 1})).unwrap();
    assert_eq!(a.status, 400);
    assert!(a.text().contains("bogus"), "{}", a.text());
    // Four in the burst are spent (the two above past the body check, and
    // these two: an announced body over the limit is refused before anyone
    // is asked who is calling); the next waits, and says how long.
    assert_eq!(http.get("/api/v1/whoami", &[("authorization", &auth)]).unwrap().status, 200);
    assert_eq!(http.get("/api/v1/whoami", &[("authorization", &auth)]).unwrap().status, 200);
    let a = http.get("/api/v1/whoami", &[("authorization", &auth)]).unwrap();
    assert_eq!(a.status, 429, "{}", a.text());
    let wait: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    // Another operator has a bucket of their own.
    let bob = bearer(&f.issue_token("bob"));
    assert_eq!(http.get("/api/v1/whoami", &[("authorization", &bob)]).unwrap().status, 200);
}

/// A screenshot's pixels: width, height, RGB rows.
fn pixels(path: &std::path::Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let px = buf[..info.buffer_size()].chunks(step).map(|p| [p[0], p[1], p[2]]).collect();
    (info.width, info.height, px)
}

#[test]
fn the_dashboard_shows_the_federation_in_arabic_and_english() {
    let f = Federation::start(true, PLAIN);
    let token = f.issue_token("dashboard");
    let base = format!("http://{}", f.hub.http.unwrap());
    let out = tempfile::tempdir().unwrap();
    let mut shots = BTreeMap::new();
    for lang in ["ar", "en"] {
        let url = format!("{base}/ui/?lang={lang}&run=1&flow=UNE_RATE&breakdown=SEX&codes=F,M&start=2022&end=2024#explorer&token={token}");
        let dom = String::from_utf8(chromium(&["--dump-dom"], &url).stdout).unwrap();
        if let Ok(keep) = std::env::var("TABADUL_SCREENSHOTS") {
            std::fs::write(std::path::Path::new(&keep).join(format!("dashboard-{lang}.html")), &dom).unwrap();
        }
        assert!(dom.contains("data-ready=\"1\""), "{lang}: the page never finished:\n{dom}");
        let dir = if lang == "ar" { "rtl" } else { "ltr" };
        assert!(dom.contains(&format!("lang=\"{lang}\"")) && dom.contains(&format!("dir=\"{dir}\"")), "{lang}");
        // Each member's status, as the hub gave it.
        for (member, state) in [("MAR", "answered"), ("JOR", "answered"), ("EGY", "refused"), ("LBY", "unreachable")] {
            assert!(dom.contains(&format!("data-member=\"{member}\" data-state=\"{state}\"")), "{lang}: {member} {state}");
        }
        // A line per member and sex, and the regional aggregate.
        assert!(dom.contains("data-member=\"MAR\" data-code=\"F\""), "{lang}: no MAR line");
        assert!(dom.contains("data-member=\"aggregate\""), "{lang}: no aggregate line");
        assert_eq!(dom.matches("<tr data-member=\"MAR\"").count(), 6, "{lang}: 2 sexes x 3 years of MAR in the table");
        let (morocco, egypt_reason) =
            if lang == "ar" { ("المغرب", "does not grant a breakdown by SEX") } else { ("Morocco", "does not grant a breakdown by SEX") };
        assert!(dom.contains(morocco), "{lang}: country names are localised");
        assert!(dom.contains(egypt_reason), "{lang}: EGY's refusal gives its policy's reason");
        let shot = out.path().join(format!("{lang}.png"));
        let o = chromium(&[&format!("--screenshot={}", shot.display())], &url);
        assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&o.stderr));
        shots.insert(lang, pixels(&shot));
        if let Ok(keep) = std::env::var("TABADUL_SCREENSHOTS") {
            std::fs::copy(&shot, std::path::Path::new(&keep).join(format!("dashboard-{lang}.png"))).unwrap();
        }
    }
    for (lang, (w, h, px)) in &shots {
        assert_eq!((*w, *h), (1280, 1400), "{lang}");
        // The chart is drawn: many strongly coloured pixels.
        let coloured = px.iter().filter(|p| p.iter().max().unwrap() - p.iter().min().unwrap() > 90).count();
        assert!(coloured > 3000, "{lang}: only {coloured} coloured pixels: no chart?");
        // Text flows from the right in Arabic, from the left in English:
        // compare where the dark (text) pixels of the top band sit.
        let band = (*w as usize) * 160;
        let dark: Vec<usize> =
            px[..band].iter().enumerate().filter(|(_, p)| p.iter().map(|&c| u32::from(c)).sum::<u32>() < 200).map(|(i, _)| i % *w as usize).collect();
        assert!(dark.len() > 200, "{lang}: no heading text");
        let centre = dark.iter().sum::<usize>() as f64 / dark.len() as f64;
        if *lang == "ar" {
            assert!(centre > 640.0, "Arabic heading text centred at x={centre}: not right-to-left");
        } else {
            assert!(centre < 640.0, "English heading text centred at x={centre}: not left-to-right");
        }
    }
    assert_ne!(shots["ar"].2, shots["en"].2, "the two languages render differently");

    // The transparency page lists what left MAR, with the hub's checkpoint.
    let url = format!("{base}/ui/?lang=en#transparency&token={token}");
    let dom = String::from_utf8(chromium(&["--dump-dom"], &url).stdout).unwrap();
    assert!(dom.contains("data-ready=\"1\""), "{dom}");
    assert!(dom.contains("id=\"checkpoint\"") && dom.contains("alo/hub/alo"), "the hub's signed checkpoint is shown");
    assert!(dom.contains("data-member=\"MAR\" data-decision=\"answered\""), "MAR's release is listed");
    assert!(dom.contains("data-verify=\"MAR/"), "each release can be verified against the member's log");
    if let Ok(keep) = std::env::var("TABADUL_SCREENSHOTS") {
        let shot = std::path::Path::new(&keep).join("transparency-ar.png");
        chromium(&[&format!("--screenshot={}", shot.display())], &url.replace("lang=en", "lang=ar"));
    }
}

/// Attribute `name`'s value inside one tag's text.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[start..].split('"').next()
}

/// Member → colour of the chart's lines and of the legend's swatches.
fn colour_key(dom: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let tags = |open: &str| dom.split(open).skip(1).map(|t| t.split('>').next().unwrap_or("").to_owned()).collect::<Vec<_>>();
    let mut lines = BTreeMap::new();
    for tag in tags("<path ") {
        if let (Some(class), Some(stroke), Some(member)) = (attr(&tag, "class"), attr(&tag, "stroke"), attr(&tag, "data-member"))
            && class.split(' ').any(|c| c == "line")
        {
            lines.insert(member.to_owned(), stroke.to_ascii_lowercase());
        }
    }
    let mut legend = BTreeMap::new();
    for chunk in dom.split("data-legend=\"").skip(1) {
        let member = chunk.split('"').next().unwrap_or("");
        // The swatch is the button's first child: its custom property.
        if let Some(c) = chunk.split("--c:").nth(1).and_then(|c| c.split([';', '"']).next()) {
            legend.insert(member.to_owned(), c.trim().to_ascii_lowercase());
        }
    }
    (lines, legend)
}

/// The page's own Content-Security-Policy (`style-src 'self'`) blocks style
/// attributes set from script: every view, in both languages and both
/// tiers, must run without a policy violation or a script error, and the
/// legend's colour key must be the colours of the lines it names.
#[test]
fn the_dashboard_breaks_none_of_its_own_rules_and_its_key_matches_its_lines() {
    let f = Federation::start(true, PLAIN);
    let token = f.issue_token("dashboard");
    let base = format!("http://{}", f.hub.http.unwrap());
    let mut keys_checked = 0;
    for lang in ["ar", "en"] {
        for (view, operator) in [("explorer", true), ("explorer", false), ("corridors", true), ("corridors", false), ("transparency", true)] {
            let mut url = format!("{base}/ui/?lang={lang}&run=1&flow=UNE_RATE&breakdown=SEX&codes=F,M&start=2022&end=2024#{view}");
            if operator {
                url.push_str(&format!("&token={token}"));
            }
            let out = chromium(&["--enable-logging=stderr", "--v=0", "--dump-dom"], &url);
            let dom = String::from_utf8_lossy(&out.stdout);
            assert!(dom.contains("data-ready=\"1\""), "{lang} {view}: the page never finished");
            let console: Vec<String> = String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains(":CONSOLE")).map(str::to_owned).collect();
            let broken: Vec<&String> = console.iter().filter(|l| l.contains("Content Security Policy") || l.contains("Uncaught")).collect();
            assert!(broken.is_empty(), "{lang} {view} (operator: {operator}): {broken:#?}");
            if view == "explorer" && operator {
                let (lines, legend) = colour_key(&dom);
                assert!(lines.len() >= 3 && lines.contains_key("aggregate"), "{lang}: lines {lines:?}");
                for (member, colour) in &lines {
                    assert_eq!(legend.get(member), Some(colour), "{lang}: {member}'s swatch is not its line's colour (legend {legend:?})");
                }
                let distinct: std::collections::BTreeSet<&String> = lines.values().collect();
                assert_eq!(distinct.len(), lines.len(), "{lang}: two members share a colour: {lines:?}");
                keys_checked += 1;
            }
        }
    }
    assert_eq!(keys_checked, 2);
}

/// Stock clients' habits: pysdmx's REST client ends resource paths with a
/// slash, and RFC 9110 makes the auth scheme case-insensitive.
#[test]
fn a_trailing_slash_and_any_case_of_bearer_are_understood() {
    let f = Federation::start(false, PLAIN);
    let http = f.client();
    let token = f.issue_token("alice");
    for path in ["/sdmx/dataflow/ALO/UNE_RATE/latest/", "/sdmx/dataflow/", "/api/v1/catalogue/", "/sdmx/data/UNE_RATE/MAR.F.Y_GE15._T/?startPeriod=2024"] {
        let a = http.get(path, &[("authorization", &bearer(&token))]).unwrap();
        let without = http.get(path.replacen("/?", "?", 1).trim_end_matches('/'), &[("authorization", &bearer(&token))]).unwrap();
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        assert_eq!(a.status, without.status, "{path}");
    }
    // The dashboard keeps its own slash.
    assert_eq!(http.get("/ui/", &[]).unwrap().status, 200);
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let who = http.get("/api/v1/whoami", &[("authorization", &format!("{scheme} {token}"))]).unwrap().json().unwrap();
        assert_eq!(who["operator"], "alice", "{scheme}: {who}");
    }
    let a = http.get("/api/v1/whoami", &[("authorization", &format!("Basic {token}"))]).unwrap();
    assert_eq!(a.status, 401, "another scheme is refused: {}", a.text());

    // Periods as dates, date-times and reporting periods select what the
    // years they fall in select.
    let csv = |range: &str| {
        let a = http
            .get(
                &format!("/sdmx/data/UNE_RATE/MAR.F.Y_GE15._T?{range}"),
                &[("authorization", &bearer(&token)), ("accept", "application/vnd.sdmx.data+csv;version=1.0.0")],
            )
            .unwrap();
        (a.status, a.text().lines().skip(1).map(String::from).collect::<Vec<_>>())
    };
    let (status, years) = csv("startPeriod=2023&endPeriod=2024");
    assert_eq!(status, 200);
    assert_eq!(years.len(), 2, "{years:?}");
    for range in [
        "startPeriod=2023-01-01&endPeriod=2024-12-31",
        "startPeriod=2023-03-15T08:00:00Z&endPeriod=2024-06",
        "startPeriod=2023-M02&endPeriod=2024-Q4",
        "startPeriod=2023-W10&endPeriod=2024-D200",
        "startPeriod=2023-A1&endPeriod=2024-S1",
    ] {
        assert_eq!(csv(range), (200, years.clone()), "{range}");
    }
    let (status, _) = csv("startPeriod=2024-13-01");
    assert_eq!(status, 400);
}

/// Every error in its documented format, and a wrong statistic refused
/// before any member is asked.
#[test]
fn every_error_is_in_the_documented_format() {
    let f = Federation::start(false, PLAIN);
    let http = f.client();
    let auth = bearer(&f.issue_token("alice"));
    for (path, status) in [
        ("/api/v1/releases?limit=abc", 400),
        ("/api/v1/releases?limit=0", 400),
        ("/api/v1/releases?limit=5001", 400),
        ("/api/v1/releases?member=XXX", 400),
        ("/api/v1/releases?limt=5", 400),
        ("/api/v1/nope", 404),
        ("/api/v1/query", 405),
    ] {
        let a = http.get(path, &[("authorization", &auth)]).unwrap();
        assert_eq!(a.status, status, "{path}: {}", a.text());
        let body = a.json().unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", a.text()));
        assert_eq!(body["error"]["code"], status, "{path}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty(), "{path}: {body}");
    }
    let a = http.get("/sdmx/data/UNE_RATE/all?lastNObservations=abc", &[("authorization", &auth)]).unwrap();
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("<mes:Error") || a.text().contains("Error"), "an SDMX-ML error message: {}", a.text());
    assert!(a.header("content-type").unwrap().contains("xml"), "{:?}", a.header("content-type"));
    // Refused at the hub: no member is asked, so no member logs anything.
    let entries = || -> Vec<u64> {
        f.nodes
            .values()
            .map(|(node, _)| {
                let status = String::from_utf8(run_ok(node.command(&["status"])).unwrap().stdout).unwrap();
                status.lines().find(|l| l.starts_with("log entries")).unwrap().split_whitespace().nth(2).unwrap().parse().unwrap()
            })
            .collect()
    };
    let before = entries();
    for (flow, statistic, says) in [("UNE_RATE", "mean", "indicator dataflow"), ("PES_JOBSEEKER_RECORDS", "median", "must be one of")] {
        let a = http.post_json("/api/v1/query", &[("authorization", &auth)], &json!({"dataflow": flow, "statistic": statistic})).unwrap();
        assert_eq!(a.status, 400, "{}", a.text());
        assert!(a.text().contains(says), "{}", a.text());
    }
    assert_eq!(entries(), before, "a member was asked");
}

/// Compressed answers for clients that accept them, and CORS for the
/// public tier only: read from any page, never with credentials.
#[test]
fn answers_are_compressed_and_the_public_tier_is_open_to_web_pages() {
    let f = Federation::start(false, PLAIN);
    let http = f.client();
    let plain = http.get("/sdmx/datastructure/ALO/DSD_UNE_RATE/latest", &[]).unwrap();
    assert_eq!(plain.header("content-encoding"), None);
    for encoding in ["gzip", "br"] {
        let a = http.get("/sdmx/datastructure/ALO/DSD_UNE_RATE/latest", &[("accept-encoding", encoding)]).unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-encoding"), Some(encoding));
        assert!(!a.body.is_empty() && a.body.len() * 3 < plain.body.len(), "{encoding}: {} of {} bytes", a.body.len(), plain.body.len());
    }
    // A web page of another origin reads the public tier...
    let origin = ("origin", "https://dashboard.example");
    let a = http.get("/sdmx/dataflow", &[origin]).unwrap();
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(a.header("access-control-allow-credentials"), None);
    let pre = http
        .request("OPTIONS", "/api/v1/query", &[origin, ("access-control-request-method", "POST"), ("access-control-request-headers", "content-type")], b"")
        .unwrap();
    assert_eq!((pre.status, pre.header("access-control-allow-origin")), (204, Some("*")));
    // ...but never with an operator's credentials.
    let pre = http
        .request(
            "OPTIONS",
            "/api/v1/query",
            &[origin, ("access-control-request-method", "POST"), ("access-control-request-headers", "authorization, content-type")],
            b"",
        )
        .unwrap();
    assert_eq!(pre.header("access-control-allow-origin"), None, "{:?}", pre.headers);
    let token = f.issue_token("alice");
    let a = http.get("/api/v1/whoami", &[origin, ("authorization", &bearer(&token))]).unwrap();
    assert_eq!(a.header("access-control-allow-origin"), None);
}
