//! Log leaves (`tabadul-exchange/v1`), as an auditor reads them from a
//! fetched log: the fast `check` accepts exactly what `decode` accepts, and
//! what decodes re-encodes to the very same bytes.
#![no_main]

use tabadul_audit::entry::{Entry, check};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decoded = Entry::decode(data);
    assert_eq!(check(data).is_ok(), decoded.is_ok(), "check and decode disagree");
    if let Ok(entry) = decoded {
        assert_eq!(entry.encode(), data, "two spellings of one entry");
    }
});
