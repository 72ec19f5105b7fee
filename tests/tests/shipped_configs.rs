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
    assert_eq!(policy.rules.len(), 3);
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
