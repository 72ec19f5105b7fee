//! A node's publication policy file, through the loader the node uses
//! (`Policy::parse`). Never panics; a rejection names a line of the file;
//! an accepted policy loads the same way twice, and its decisions are
//! consistent: an allowed request names a rule that matches the requester
//! and the dataflow and grants every breakdown asked (listed, or scoped by
//! `rows`), rows bound to the requester are its own code and never reach a
//! hub, and what the public tier may see is something the full policy also
//! allows.
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;

use tabadul_certs::Identity;
use tabadul_policy::{Grant, Policy};

#[path = "shipped.rs"]
mod shipped;
use shipped::dict;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("policy.toml");
    let policy = match Policy::parse(text, path, dict()) {
        Ok(p) => p,
        Err(e) => {
            let lines = text.matches('\n').count() + 1;
            assert!(e.line >= 1 && e.line <= lines, "error on line {} of {lines}: {}", e.line, e.reason);
            return;
        }
    };
    let again = Policy::parse(text, path, dict()).expect("a policy that loaded loads again");
    assert_eq!(policy.version, again.version);

    let public = policy.public_only();
    let who: [Identity; 3] = ["spiffe://alo/hub/hub".parse().unwrap(), "spiffe://alo/node/EGY".parse().unwrap(), "spiffe://alo/hub/other".parse().unwrap()];
    let ids = dict().dataflows().map(|f| f.id.clone()).chain(dict().microdata_tables().map(|t| t.id.clone()));
    let asks: [BTreeSet<String>; 4] =
        [BTreeSet::new(), ["SEX".to_owned()].into(), ["SEX".to_owned(), "AGE".to_owned()].into(), ["NATIONALITY".to_owned()].into()];
    for id in ids {
        for who in &who {
            for asked in &asks {
                if let Grant::Allowed(rule) = policy.decide_id(who, &id, asked) {
                    assert!(rule.requester.matches(who) && rule.applies_to(who) && rule.dataflows.contains(&id));
                    assert!(asked.iter().all(|d| rule.breakdowns.contains(d) || rule.rows.contains_key(d)));
                    for (dim, scope) in &rule.rows {
                        let codes = &rule.rows_for(who)[dim];
                        match scope {
                            tabadul_policy::policy::RowScope::Requester => {
                                assert_eq!(who.role(), tabadul_certs::Role::Node, "a hub was granted rows bound to a member code");
                                assert!(codes.len() == 1 && codes.contains(who.id()));
                            }
                            tabadul_policy::policy::RowScope::Codes(listed) => assert_eq!(codes, listed),
                        }
                    }
                    if dict().microdata(&id).is_some() {
                        assert!(policy.disclosure_params(&rule.id, &id).is_some(), "no disclosure parameters for rule {} on {id}", rule.id);
                    }
                }
                if matches!(public.decide_id(who, &id, asked), Grant::Allowed(_)) {
                    assert!(matches!(policy.decide_id(who, &id, asked), Grant::Allowed(_)));
                }
            }
        }
    }
});
