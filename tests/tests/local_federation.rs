//! The README's first command: the whole local federation comes up, answers,
//! and shows each kind of member status.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::os::unix::fs::PermissionsExt;

use tabadul_tests::{bin, run_ok};

#[test]
fn the_local_federation_runs_its_demo() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(std::process::Command::new(bin("tabadul-local-federation")).arg("--exit-after-demo").arg("--dir").arg(dir.path())).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SYNTHETIC"), "{text}");
    assert!(text.contains("started 21 nodes"), "{text}");
    for expect in [
        "refused",
        "unreachable",
        "breakdown by SEX",
        "under embargo",
        "withdrawn",
        "Regional aggregate",
        // Job-seeker records: small cells withheld, the rest perturbed.
        "PES_JOBSEEKER_RECORDS",
        "cell-key",
        // The auditor's step: both logs verify, the hub's with a witness majority.
        "cosigned by:",
        "verified: no problems found",
        "cross-checked the hub log",
        // Corridors: node to node, SAU grants EGY its own nationals' rows, KWT nothing.
        "PARTLY-ALLOWED for this node, answered by SAU",
        "REFUSED for this node, answered by KWT",
        "logged  SAU's leaf",
    ] {
        assert!(text.contains(expect), "missing {expect:?}:\n{text}");
    }
    // A withheld job-seeker cell is marked C with no rule named (which
    // would say "1 to 9 people").
    let withheld = text.lines().filter(|l| l.starts_with("MAR ") && l.contains(" withheld ")).collect::<Vec<_>>();
    assert!(!withheld.is_empty() && withheld.iter().all(|l| l.trim_end().ends_with(" C")), "{text}");
    assert!(text.contains("expires"), "the demo's token has a lifetime");
    // Every secret the demo wrote is its user's alone: keys and the token
    // file 0600, the data directories of the hub and the nodes 0700.
    let mut secrets = 0;
    let mut stack = vec![dir.path().to_owned()];
    while let Some(d) = stack.pop() {
        for item in std::fs::read_dir(&d).unwrap() {
            let path = item.unwrap().path();
            let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name == "data" {
                    assert_eq!(mode, 0o700, "{} is mode {mode:o}", path.display());
                }
                stack.push(path);
            } else if name.ends_with(".key") || name == "tokens.json" {
                assert_eq!(mode, 0o600, "{} is mode {mode:o}", path.display());
                secrets += 1;
            }
        }
    }
    assert!(secrets > 22, "found only {secrets} keys and token files");
}
