//! The README's first command: the whole local federation comes up, answers,
//! and shows each kind of member status.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use tabadul_tests::{bin, run_ok};

#[test]
fn the_local_federation_runs_its_demo() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(std::process::Command::new(bin("tabadul-local-federation")).arg("--exit-after-demo").arg("--dir").arg(dir.path()))
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SYNTHETIC"), "{text}");
    assert!(text.contains("started 21 nodes"), "{text}");
    for expect in [
        "refused", "unreachable", "breakdown by SEX", "under embargo", "withdrawn", "Regional aggregate",
        // Job-seeker records: small cells withheld, the rest perturbed.
        "PES_JOBSEEKER_RECORDS", "threshold", "cell-key",
        // The auditor's step: both logs verify, the hub's with a witness majority.
        "cosigned by:", "verified: no problems found", "cross-checked the hub log",
    ] {
        assert!(text.contains(expect), "missing {expect:?}:\n{text}");
    }
}
