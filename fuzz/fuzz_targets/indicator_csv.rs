//! An indicator file as a national team imports it (SDMX-CSV 1.0/2.0 or
//! ILOSTAT CSV), through the same parse-and-validate step as a real import
//! (`tabadul_formats::check`, which writes nothing): never panics, and
//! accepts no more observations than the file has lines.
#![no_main]

use tabadul_formats::Format;

#[path = "shipped.rs"]
mod shipped;
use shipped::{dict, scratch};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let format = match pick % 3 {
        0 => Some(Format::SdmxCsv),
        1 => Some(Format::Ilostat),
        _ => None,
    };
    std::fs::write(scratch("indicator"), body).expect("scratch file");
    let files = [(scratch("indicator").to_path_buf(), format)];
    if let Ok(n) = tabadul_formats::check(dict(), "MAR", &files) {
        let lines = body.split(|b| *b == b'\n').count() as u64;
        assert!(n <= lines, "{n} observations from {lines} lines");
    }
});
