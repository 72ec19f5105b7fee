//! Imports of indicator tables: SDMX-CSV (1.0 and 2.0) and ILOSTAT bulk CSV.
//!
//! An import is all-or-nothing across every file given: all rows of all
//! files are parsed and validated against the dictionary first
//! (`tabadul_formats`, which writes nothing); only if no row has a problem
//! are they written, as one atomically ingested SST file. A rejected import
//! reports every problem it found with file, line, column and reason, and
//! leaves the store exactly as it was.

use std::path::PathBuf;

use tabadul_proto::Dictionary;

pub use tabadul_formats::{Format, ImportError, ImportReport, MAX_REPORTED_PROBLEMS, Problem, check, detect_format, normalise_period};
use tabadul_formats::{Validated, validate};

use crate::store::Store;

/// Validates and stores `files` atomically.
pub fn import(
    store: &Store,
    dict: &Dictionary,
    member: &str,
    files: &[(PathBuf, Option<Format>)],
    progress: &indicatif::ProgressBar,
) -> Result<ImportReport, crate::Error> {
    let started = std::time::Instant::now();
    let Validated { arenas, rows, dataflows } = validate(dict, member, files, progress)?;
    let validate_time = started.elapsed();
    // One SST file per core, each a contiguous run of the sorted rows.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let run_len = rows.len().div_ceil(threads).max(1);
    let arenas = &arenas;
    store.put_sorted(rows.chunks(run_len).map(|run| run.iter().map(move |r| (r.key(arenas), r.value(arenas)))).collect())?;
    Ok(ImportReport { observations: rows.len() as u64, dataflows, validate_time, write_time: started.elapsed() - validate_time })
}
