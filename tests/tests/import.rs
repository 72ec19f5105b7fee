//! Imports: every class of bad input is refused with file, line, column and
//! reason, and leaves the store byte-for-byte as it was; kill -9 mid-import
//! leaves all or nothing.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tabadul_node::store::Store;
use tabadul_tests::{NodeDir, Pki, run_ok, synthetic};

const POLICY: &str = "[[rule]]\nid = \"hub\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\"]\n";

const HEADER: &str = "DATAFLOW,REF_AREA,SEX,AGE,REGION,TIME_PERIOD,OBS_VALUE,OBS_STATUS,UNIT_MULT";

fn digest(node: &NodeDir) -> (String, u64) {
    let store = Store::open(&node.dir.join("data/store")).unwrap();
    (store.snapshot_digest().unwrap(), store.count().unwrap())
}

fn setup() -> (tempfile::TempDir, NodeDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(&good, synthetic::to_sdmx_csv(&synthetic::generate("MAR", 2020..=2021))).unwrap();
    run_ok(node.command(&["import"]).arg(&good)).unwrap();
    (dir, node)
}

#[test]
fn every_bad_import_is_refused_precisely_and_changes_nothing() {
    let (dir, node) = setup();
    let before = digest(&node);
    assert!(before.1 > 100);
    let row = "ALO:UNE_RATE(1.0),MAR,F,Y_GE15,_T,2023,12.5,A,0";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown code",
            format!("{HEADER}\n{row}\nALO:UNE_RATE(1.0),MAR,X,Y_GE15,_T,2023,1,A,0\n"),
            ":3: column 3 (SEX): unknown code \"X\" for SEX (codelist CL_SEX)",
        ),
        (
            "non-numeric",
            format!("{HEADER}\n{row}\nALO:UNE_RATE(1.0),MAR,M,Y_GE15,_T,2023,twelve,A,0\n"),
            ":3: column 7 (OBS_VALUE): observation value \"twelve\" is not a number",
        ),
        ("duplicate key", format!("{HEADER}\n{row}\n{row}\n"), ":3: duplicate observation UNE_RATE MAR.F.Y_GE15._T at 2023, first given at"),
        (
            "foreign REF_AREA",
            format!("{HEADER}\n{row}\nALO:UNE_RATE(1.0),EGY,M,Y_GE15,_T,2023,1,A,0\n"),
            ":3: column 2 (REF_AREA): REF_AREA \"EGY\" is not this node's member MAR",
        ),
        ("unknown dataflow", format!("{HEADER}\nALO:NOPE(1.0),MAR,F,Y_GE15,_T,2023,1,A,0\n"), ":2: column 1 (DATAFLOW): unknown dataflow \"ALO:NOPE(1.0)\""),
        ("unknown column", format!("{HEADER},COLOUR\n{row},blue\n"), ":1: column 10 (COLOUR): unknown column"),
        (
            "missing dimension",
            "DATAFLOW,REF_AREA,SEX,AGE,TIME_PERIOD,OBS_VALUE\nALO:UNE_RATE(1.0),MAR,F,Y_GE15,2023,1\n".into(),
            ":2: column REGION, a dimension of UNE_RATE, is missing from the header",
        ),
        ("bad period", format!("{HEADER}\nALO:UNE_RATE(1.0),MAR,F,Y_GE15,_T,2023-13,1,A,0\n"), ":2: column 6 (TIME_PERIOD): time period \"2023-13\""),
        ("bad status", format!("{HEADER}\nALO:UNE_RATE(1.0),MAR,F,Y_GE15,_T,2023,1,ZZ,0\n"), ":2: column 8 (OBS_STATUS): OBS_STATUS \"ZZ\""),
        ("ragged row", format!("{HEADER}\nALO:UNE_RATE(1.0),MAR,F\n"), ":2: 3 fields, the header has 9"),
        ("not CSV of ours", "hello,world\n1,2\n".into(), ":1: cannot tell the format"),
        (
            "ilostat unknown indicator",
            "ref_area,indicator,sex,classif1,classif2,time,obs_value,obs_status\nMAR,XYZ_NB,SEX_T,,,2023,1,\n".into(),
            ":2: column 2 (indicator): ILOSTAT indicator \"XYZ_NB\" is not mapped",
        ),
        (
            "ilostat unknown classif",
            "ref_area,indicator,sex,classif1,classif2,time,obs_value,obs_status\nMAR,UNE_TUNE_SEX_AGE_NB,SEX_T,AGE_10YRBANDS_Y15-24,,2023,1,\n".into(),
            ":2: column 4 (classif1): ILOSTAT code \"AGE_10YRBANDS_Y15-24\" is not mapped",
        ),
    ];
    for (name, text, expect) in cases {
        let file = dir.path().join(format!("{}.csv", name.replace(' ', "-")));
        std::fs::write(&file, text).unwrap();
        let out = node.import(&[&file]).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(stderr.contains(&format!("{}{expect}", file.display())), "{name}: {stderr}");
        assert!(stderr.contains("nothing was stored"), "{name}: {stderr}");
        assert_eq!(digest(&node), before, "{name}: the store changed");
    }

    // All-or-nothing across files: a good file is not stored next to a bad one.
    let good = dir.path().join("new-good.csv");
    std::fs::write(&good, format!("{HEADER}\nALO:UNE_RATE(1.0),MAR,F,Y_GE15,_T,2030,9.9,A,0\n")).unwrap();
    let out = node.import(&[&good, &dir.path().join("non-numeric.csv")]).unwrap();
    assert!(!out.status.success());
    assert_eq!(digest(&node), before);
    // ... and is stored on its own.
    run_ok(node.command(&["import"]).arg(&good)).unwrap();
    assert_eq!(digest(&node).1, before.1 + 1);
}

#[test]
fn ilostat_and_sdmx_csv_1_0_are_understood() {
    let (dir, node) = setup();
    let (_, n0) = digest(&node);
    let ilo = dir.path().join("ilostat.csv");
    std::fs::write(
        &ilo,
        "ref_area,indicator,source,sex,classif1,classif2,time,obs_value,obs_status,note_classif,note_indicator,note_source\n\
        MAR,UNE_TUNE_SEX_AGE_NB,BA:123,SEX_F,AGE_YTHADULT_Y15-24,,2019Q3,123.4,P,,,\n\
        MAR,UNE_DEAP_SEX_AGE_RT,BA:123,SEX_T,AGE_YTHADULT_YGE15,,2019,11.9,,,,\n",
    )
    .unwrap();
    let out = run_ok(node.command(&["import"]).arg(&ilo)).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 observations"));
    let sdmx10 = dir.path().join("sdmx10.csv");
    std::fs::write(&sdmx10, "DATAFLOW,REF_AREA,SEX,ECO,TIME_PERIOD,OBS_VALUE\nALO:EMP_ECO(1.0),MAR,F: Female,C: Manufacturing,2019,321\n").unwrap();
    run_ok(node.command(&["import"]).arg(&sdmx10)).unwrap();
    let store = Store::open(&node.dir.join("data/store")).unwrap();
    assert_eq!(store.count().unwrap(), n0 + 3);
    let mut une = Vec::new();
    store
        .scan("UNE_PERS", |o| {
            if o.time_period == "2019-Q3" {
                une.push(o)
            }
        })
        .unwrap();
    assert_eq!(une.len(), 1);
    assert_eq!(une[0].key, ["MAR", "F", "Y15T24", "_T"]);
    assert_eq!((une[0].value, une[0].unit_mult, une[0].obs_status.as_str()), (123.4, 3, "P"));
    let mut emp = Vec::new();
    store
        .scan("EMP_ECO", |o| {
            if o.time_period == "2019" {
                emp.push(o)
            }
        })
        .unwrap();
    assert_eq!(emp[0].key, ["MAR", "F", "C"]);
    assert_eq!(emp[0].unit_mult, 3, "the dataflow's default UNIT_MULT applies");
}

#[test]
fn a_running_node_imports_through_its_admin_socket() {
    let (dir, node) = setup();
    let proc = node.start().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("{HEADER}\nALO:UNE_RATE(1.0),MAR,F,Y_GE15,_T,2023,x,A,0\n")).unwrap();
    let out = node.import(&[&bad]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("observation value \"x\" is not a number"));
    let good = dir.path().join("good2.csv");
    std::fs::write(&good, format!("{HEADER}\nALO:UNE_RATE(1.0),MAR,F,Y_GE15,_T,2031,4.2,A,0\n")).unwrap();
    let out = run_ok(node.command(&["import"]).arg(&good)).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported by the running node"));
    let status = run_ok(&mut node.command(&["status"])).unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let n: u64 = text.lines().find(|l| l.starts_with("observations")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    // Both imports, the failed one too, are in the signed log, and status
    // shows its checkpoint and key.
    assert!(text.contains("log entries   2\n"), "{text}");
    assert!(text.contains("checkpoint    size 2, root ") && text.contains("log key       alo/node/MAR+"), "{text}");
    drop(proc);
    let store = Store::open(&node.dir.join("data/store")).unwrap();
    assert_eq!(store.count().unwrap(), n);
}

/// A big file: monthly series over many years.
fn big_file(path: &Path) -> u64 {
    let mut text = String::from(HEADER);
    text.push('\n');
    let mut n = 0;
    for flow in ["UNE_PERS", "LF_PERS", "POP_WA", "PES_JOBSEEKERS"] {
        for sex in ["T", "M", "F"] {
            for age in ["Y_GE15", "Y15T24", "Y_GE25"] {
                for region in ["_T", "MA-01", "MA-03", "MA-04", "MA-06"] {
                    for year in 1900..2100 {
                        for month in 1..=12 {
                            text.push_str(&format!("ALO:{flow}(1.0),MAR,{sex},{age},{region},{year}-{month:02},{}.5,A,3\n", year + month));
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    std::fs::write(path, text).unwrap();
    n
}

#[test]
fn large_files_parsed_in_parallel_report_exact_lines() {
    // Big enough to be split between threads; the faults sit in the last part.
    let (dir, node) = setup();
    let before = digest(&node);
    let file = dir.path().join("big-bad.csv");
    let rows = big_file(&file);
    let base = std::fs::read_to_string(&file).unwrap();
    let first_row = base.lines().nth(1).unwrap().to_owned();
    let at = |line: u64| format!("{}:{line}", file.display());

    std::fs::write(&file, format!("{base}ALO:UNE_PERS(1.0),MAR,T,Y_GE15,_T,2150-01,many,A,3\n")).unwrap();
    let out = node.import(&[&file]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{}: column 7 (OBS_VALUE): observation value \"many\"", at(rows + 2))), "{stderr}");
    assert_eq!(digest(&node), before);

    // A duplicate of the first row, found across the threads' shares.
    std::fs::write(&file, format!("{base}{first_row}\n")).unwrap();
    let out = node.import(&[&file]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{}: duplicate observation", at(rows + 2))), "{stderr}");
    assert!(stderr.contains(&format!("first given at {}", at(2))), "{stderr}");
    assert_eq!(digest(&node), before);
}

#[test]
fn kill_9_during_import_leaves_all_or_nothing() {
    let (dir, node) = setup();
    let (_, base) = digest(&node);
    let file = dir.path().join("big.csv");
    let rows = big_file(&file);
    for delay_ms in [30, 150, 300, 450, 600, 750, 900, 1200] {
        let mut child = Command::new(tabadul_tests::bin("tabadul-node"))
            .arg("import")
            .arg(&file)
            .arg("--config")
            .arg(&node.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let (_, n) = digest(&node);
        assert!(n == base || n == base + rows, "after kill at {delay_ms} ms: {n} observations, expected {base} or {}", base + rows);
        let leftovers =
            std::fs::read_dir(node.dir.join("data/store")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".sst.tmp")).count();
        assert_eq!(leftovers, 0, "a killed import's temporary file survived reopening the store");
    }
    run_ok(node.command(&["import"]).arg(&file)).unwrap();
    assert_eq!(digest(&node).1, base + rows);
}
