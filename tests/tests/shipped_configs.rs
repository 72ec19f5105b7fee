//! The example configurations in deploy/examples stay valid.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use tabadul_hub::HubConfig;
use tabadul_node::NodeConfig;
use tabadul_node::policy::Policy;
use tabadul_proto::Dictionary;

#[test]
fn example_configs_parse_and_the_policy_validates() {
    let examples = tabadul_tests::repo_root().join("deploy/examples");
    let node = NodeConfig::load(&examples.join("node.toml")).unwrap();
    let dict = Dictionary::load(&node.dictionary).unwrap();
    let policy = Policy::load(&node.policy, &dict).unwrap();
    assert_eq!(policy.rules.len(), 5);
    // The microdata rules carry checked disclosure settings: the table's
    // defaults (cell key) and the rule's own (differential privacy).
    let hub_js = policy.disclosure_params("hub-jobseekers", "PES_JOBSEEKER_RECORDS").unwrap();
    assert_eq!(hub_js.threshold, 10);
    assert!(hub_js.cell_key.is_some() && hub_js.dp.is_none());
    let jor = policy.disclosure_params("jor-jobseekers-dp", "PES_JOBSEEKER_RECORDS").unwrap();
    assert_eq!(jor.dp, Some((0.5, 10.0)));
    assert!(policy.version.starts_with("mar-2026-11@"));
    let hub = HubConfig::load(&examples.join("hub.toml")).unwrap();
    assert_eq!(hub.members.iter().map(|m| m.code.as_str()).collect::<Vec<_>>(), ["MAR", "EGY", "JOR"]);
    assert_eq!(hub.members[1].identity.as_ref().unwrap().to_string(), "spiffe://alo/node/EGY");
    // The example keys parse, and name the logs they belong to.
    for m in &hub.members {
        assert_eq!(tabadul_audit::Verifier::parse(&m.log_vkey).unwrap().name(), format!("alo/node/{}", m.code));
    }
    assert_eq!(tabadul_audit::Verifier::parse(&node.witness_logs[0]).unwrap().name(), "alo/hub/alo");
    assert!(!hub.members[2].witness);
    assert_eq!((node.max_concurrent_per_peer, node.max_queries_per_second_per_peer), (64, 200));
}

#[test]
fn systemd_units_run_commands_the_binaries_accept_and_are_hardened() {
    let dir = tabadul_tests::repo_root().join("deploy/systemd");
    for unit in ["tabadul-node.service", "tabadul-hub.service"] {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap();
        for line in ["User=tabadul", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadOnlyPaths=/etc/tabadul"] {
            assert!(text.lines().any(|l| l == line), "{unit} lacks {line}");
        }
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
        // Every listener the unit asks for must be one it can bind: a port
        // below 1024 needs CAP_NET_BIND_SERVICE, and no other capability is
        // granted.
        let ports: Vec<u16> =
            exec.split_whitespace().skip_while(|w| !w.ends_with("listen")).filter_map(|w| w.rsplit_once(':').and_then(|(_, p)| p.parse().ok())).collect();
        let privileged = ports.iter().any(|p| *p < 1024);
        let caps = if privileged { "CAP_NET_BIND_SERVICE" } else { "" };
        for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
            let line = format!("{key}={caps}");
            assert!(text.lines().any(|l| l == line), "{unit} listens on {ports:?} and needs exactly {line}");
        }
        let mut words = exec.split_whitespace();
        let binary = std::path::Path::new(words.next().unwrap()).file_name().unwrap().to_str().unwrap().to_owned();
        // The same arguments with --help: clap rejects any flag it does not know.
        let out = std::process::Command::new(tabadul_tests::bin(&binary)).args(words).arg("--help").output().unwrap();
        assert!(out.status.success(), "{unit}: {exec}\n{}", String::from_utf8_lossy(&out.stderr));
        let mut bad = exec.split_whitespace().skip(1).map(str::to_owned).collect::<Vec<_>>();
        bad.push("--no-such-flag".into());
        let out = std::process::Command::new(tabadul_tests::bin(&binary)).args(&bad).arg("--help").output().unwrap();
        assert!(!out.status.success(), "the check itself must be able to fail");
    }
    // The runbook serves the front door where the hub's unit does.
    let hub = std::fs::read_to_string(dir.join("tabadul-hub.service")).unwrap();
    let front = hub.split_whitespace().skip_while(|w| *w != "--http-listen").nth(1).expect("the hub's unit serves the front door");
    let runbook = std::fs::read_to_string(tabadul_tests::repo_root().join("deploy/README.md")).unwrap();
    assert!(runbook.contains(&format!("--http-listen {front}")), "deploy/README.md does not serve the front door on {front} as the unit does");
}

/// Splits a shell command line into words (double and single quotes, a
/// `$(…)` kept inside its word, no expansions: enough for the runbook's
/// commands).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut any = false;
    let mut depth = 0usize;
    for ch in line.chars() {
        if depth > 0 || (ch == '(' && word.ends_with('$')) {
            depth = match ch {
                '(' => depth + 1,
                ')' => depth - 1,
                _ => depth,
            };
            word.push(ch);
            continue;
        }
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(ch);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    out
}

/// Every `tabadul-*` command in the runbook's shell blocks is one its
/// binary accepts: the same words with `--help` appended, which clap
/// refuses if any flag or subcommand is unknown. The runbook cannot drift
/// from the command lines again without this failing.
#[test]
fn every_runbook_command_is_accepted_by_its_binary() {
    let runbook = std::fs::read_to_string(tabadul_tests::repo_root().join("deploy/README.md")).unwrap();
    let mut in_sh = false;
    let mut commands: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in runbook.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = trimmed == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = trimmed.split(" # ").next().unwrap_or("").trim_end();
        match code.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(code);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    let mut checked = 0;
    for command in &commands {
        let mut w: Vec<String> = words(command).into_iter().filter(|w| w != "…").collect();
        if w.first().is_some_and(|x| x == "sudo") {
            w.drain(..3.min(w.len()));
        }
        let Some(binary) = w.first().filter(|b| ["tabadul-node", "tabadul-hub", "tabadul-certs", "tabadul-audit"].contains(&b.as_str())).cloned() else {
            continue;
        };
        let out = std::process::Command::new(tabadul_tests::bin(&binary)).args(&w[1..]).arg("--help").output().unwrap();
        assert!(out.status.success(), "deploy/README.md: `{command}` is refused by {binary}:\n{}", String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} runbook commands found: {commands:?}");
    // The check can fail: a flag the binary does not have is refused.
    let out = std::process::Command::new(tabadul_tests::bin("tabadul-node")).args(["backup", "--to", "/x", "--help"]).output().unwrap();
    assert!(!out.status.success());
}
