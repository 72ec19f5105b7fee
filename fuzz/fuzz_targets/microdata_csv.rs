//! A unit-record file for a microdata table, through the same parser as a
//! real import (`tabadul_formats::microdata::parse_records`, which writes
//! nothing). Never panics; what it accepts is well formed: one value per
//! record in every column, no more records than lines, every code index
//! inside its codelist (or the periods it registered), numbers finite and
//! weights positive.
#![no_main]

use tabadul_formats::microdata::{Schema, parse_records};

#[path = "shipped.rs"]
mod shipped;
use shipped::{dict, scratch};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let tables: Vec<_> = dict().microdata_tables().collect();
    let table = tables[usize::from(pick) % tables.len()];
    let schema = Schema::of(dict(), table);
    std::fs::write(scratch("micro"), body).expect("scratch file");
    let mut periods = vec!["2019".to_owned()];
    let Ok(cols) = parse_records(&schema, &mut periods, scratch("micro"), &indicatif::ProgressBar::hidden()) else { return };
    let n = cols.len();
    let lines = body.split(|b| *b == b'\n').count();
    assert!(n > 0 && n < lines, "{n} records from {lines} lines");
    assert_eq!(cols.categorical.len(), schema.categorical.len());
    assert_eq!(cols.numeric.len(), schema.numeric.len());
    for (c, col) in cols.categorical.iter().enumerate() {
        assert_eq!(col.len(), n);
        let codes = if c == 0 { periods.len() } else { schema.codes[c].len() };
        assert!(col.iter().all(|&i| usize::from(i) < codes), "code index out of {}", schema.categorical[c]);
        if let Some(total) = &schema.totals[c] {
            let total = schema.codes[c].iter().position(|code| code == total);
            assert!(col.iter().all(|&i| Some(usize::from(i)) != total), "a total code was accepted as a category");
        }
    }
    let weight = schema.weight_index();
    for (v, col) in cols.numeric.iter().enumerate() {
        assert_eq!(col.len(), n);
        assert!(col.iter().all(|x| x.is_finite() && (Some(v) != weight || *x > 0.0)));
    }
});
