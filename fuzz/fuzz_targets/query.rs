//! A protobuf `Query` as a node or the hub receives it: decoding, the
//! canonical digest and the check against the shipped dictionary never
//! panic, and the digest does not depend on the order of lists.
#![no_main]


use prost::Message;
use tabadul_proto::pb;

#[path = "shipped.rs"]
mod shipped;
use shipped::dict;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(q) = pb::Query::decode(data) else { return };
    let digest = tabadul_proto::query_digest(&q);
    let mut reordered = q.clone();
    reordered.breakdown.reverse();
    reordered.filters.reverse();
    for f in &mut reordered.filters {
        f.codes.reverse();
    }
    assert_eq!(digest, tabadul_proto::query_digest(&reordered));
    let _ = tabadul_proto::resolve(dict(), &q);
});
