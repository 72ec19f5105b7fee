//! The data dictionary loader: any text is either a dictionary whose
//! cross-references hold, or an error; never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(dict) = tabadul_proto::Dictionary::parse(text, "fuzz") {
        // What loading promises: every dimension of every flow resolves.
        for flow in dict.dataflows() {
            for d in &flow.dimensions {
                assert!(dict.dimension(d).is_some(), "{} names unknown {d}", flow.id);
            }
        }
        for t in dict.microdata_tables() {
            for d in &t.dimensions {
                assert!(dict.codes_of(d).is_some(), "{} names unknown {d}", t.id);
            }
        }
    }
});
