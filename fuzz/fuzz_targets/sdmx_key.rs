//! An SDMX REST data reference as the hub's front door receives it (the
//! flowRef and the dotted series key of `/sdmx/data/{flowRef}/{key}`):
//! parsing never panics, and a key that parses always yields a query the
//! dictionary accepts, asking only member codes of the area codelist, each
//! once.
#![no_main]


use tabadul_proto::{pb, sdmx_key};

#[path = "shipped.rs"]
mod shipped;
use shipped::dict;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (flow_ref, key) = text.split_once('/').unwrap_or(("UNE_RATE", &text));
    let _ = sdmx_key::parse_flow_ref(flow_ref);
    let flows: Vec<_> = dict().dataflows().collect();
    let flow = flows[usize::from(pick) % flows.len()];
    let Ok(k) = sdmx_key::parse_key(dict(), flow, key) else { return };
    for (i, m) in k.members.iter().enumerate() {
        assert!(dict().has_code(tabadul_proto::REF_AREA, m), "member {m:?} accepted");
        assert!(!k.members[..i].contains(m), "member {m:?} named twice in {:?}", k.members);
    }
    // What the hub does next with the list: never longer than what was
    // named, never a repeat, refused past the membership.
    let configured = usize::from(pick % 23);
    match tabadul_proto::distinct_members(&k.members, configured) {
        Ok(d) => assert!(d == k.members && d.len() <= configured),
        Err(_) => assert!(k.members.len() > configured),
    }
    let q = pb::Query { dataflow: flow.id.clone(), breakdown: k.breakdown, filters: k.filters, ..Default::default() };
    if let Err(e) = tabadul_proto::resolve(dict(), &q) {
        panic!("key {key:?} on {} parsed into a query the dictionary refuses: {e:?}", flow.id);
    }
});
