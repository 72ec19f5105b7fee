//! Importing unit records from CSV, all or nothing.
//!
//! The header names the table's columns (any order): TIME_PERIOD, every
//! dimension, every variable and the weight column; nothing else. Each row
//! is one record. A dimension holds a code of its codelist other than the
//! total code (a record has a category, not "all of them"); variables are
//! finite numbers; weights are positive. Every problem is reported with
//! file, line, column and reason, and a rejected import writes nothing.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use rocksdb::{WriteBatch, WriteOptions};
use tabadul_proto::Dictionary;

use super::{CHUNK, KEY_COLUMN, Schema, TableMeta, chunk_key, meta, meta_key};
use crate::Error;
use crate::import::{ImportError, MAX_REPORTED_PROBLEMS, Problem};
use crate::store::{CF_MICRO, Store};

static IMPORT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What an import stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroImportReport {
    pub table: String,
    pub records: u64,
    /// Records in the table after the import.
    pub total: u64,
    pub validate_time: std::time::Duration,
    pub write_time: std::time::Duration,
}

/// Parsed columns, before they are cut into chunks.
struct Columns {
    categorical: Vec<Vec<u16>>,
    numeric: Vec<Vec<f64>>,
}

/// Imports the records in `path` into microdata table `table`.
pub fn import_records(
    store: &Store,
    dict: &Dictionary,
    table: &str,
    path: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<MicroImportReport, Error> {
    let started = std::time::Instant::now();
    let t = dict.microdata(table).ok_or_else(|| {
        let known: Vec<&str> = dict.microdata_tables().map(|t| t.id.as_str()).collect();
        Error::Invalid(format!("unknown microdata table {table:?} (the dictionary has {})", known.join(", ")))
    })?;
    let schema = Schema::of(dict, t);
    // Two imports at once would both append at the same chunk numbers.
    let _one_at_a_time = IMPORT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut meta = meta(store, table)?;
    let columns = parse(&schema, &mut meta, path, progress)?;
    let validate_time = started.elapsed();
    let records = columns.categorical.first().map_or(0, Vec::len);
    if records == 0 {
        return Err(ImportError {
            problems: vec![Problem { file: path.to_owned(), line: 1, column: None, reason: "the file holds no records".into() }],
            truncated: false,
        }
        .into());
    }

    // Keys are drawn from the OS's CSPRNG: a record key an outsider could
    // predict would let them predict the cell-key noise.
    let mut keys = vec![0u8; records];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut keys)
        .map_err(|_| Error::Invalid("the system random number generator failed".into()))?;

    let cf = store.cf(CF_MICRO);
    let mut batch = WriteBatch::default();
    for (i, start) in (0..records).step_by(CHUNK).enumerate() {
        let end = (start + CHUNK).min(records);
        let chunk = meta.chunks + u32::try_from(i).map_err(|_| Error::Invalid("too many chunks".into()))?;
        for (name, col) in schema.categorical.iter().zip(&columns.categorical) {
            let bytes: Vec<u8> = col[start..end].iter().flat_map(|v| v.to_le_bytes()).collect();
            batch.put_cf(cf, chunk_key(table, chunk, name), bytes);
        }
        for (name, col) in schema.numeric.iter().zip(&columns.numeric) {
            let bytes: Vec<u8> = col[start..end].iter().flat_map(|v| v.to_le_bytes()).collect();
            batch.put_cf(cf, chunk_key(table, chunk, name), bytes);
        }
        batch.put_cf(cf, chunk_key(table, chunk, KEY_COLUMN), &keys[start..end]);
    }
    meta.import_starts.push(meta.chunks);
    meta.chunks += u32::try_from(records.div_ceil(CHUNK)).map_err(|_| Error::Invalid("too many chunks".into()))?;
    meta.records += records as u64;
    meta.imports += 1;
    let encoded = serde_json::to_vec(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
    batch.put_cf(cf, meta_key(table), encoded);
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    // Crash point: one batch, so after a crash either every chunk and the
    // new meta are there, or none is (chunks beyond meta.chunks are never read).
    store.db().write_opt(batch, &wo).map_err(|e| store.err(e))?;
    store.invalidate_micro(table);
    Ok(MicroImportReport {
        table: table.to_owned(),
        records: records as u64,
        total: meta.records,
        validate_time,
        write_time: started.elapsed() - validate_time,
    })
}

/// Parses and validates a records file for `table` as [`import_records`]
/// does, writing nothing: the number of records, or every problem found.
pub fn check_records(dict: &Dictionary, table: &str, path: &Path) -> Result<u64, Error> {
    let t = dict.microdata(table).ok_or_else(|| Error::Invalid(format!("unknown microdata table {table:?}")))?;
    let schema = Schema::of(dict, t);
    let columns = parse(&schema, &mut TableMeta::default(), path, &indicatif::ProgressBar::hidden())?;
    Ok(columns.categorical.first().map_or(0, Vec::len) as u64)
}

/// Where each file column goes.
enum Target {
    Categorical(usize),
    Numeric(usize),
}

fn parse(schema: &Schema, meta: &mut TableMeta, path: &Path, progress: &indicatif::ProgressBar) -> Result<Columns, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = progress.wrap_read(std::io::BufReader::with_capacity(1 << 20, file));
    let mut problems = Vec::new();
    let mut truncated = false;
    let mut report = |problems: &mut Vec<Problem>, line: u64, column: Option<(usize, String)>, reason: String| {
        if problems.len() < MAX_REPORTED_PROBLEMS {
            problems.push(Problem { file: path.to_owned(), line, column, reason });
        } else {
            truncated = true;
        }
    };
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(skip_bom(reader));
    let header = csv.headers().map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?.clone();
    let table = &schema.table.id;

    let mut targets = Vec::with_capacity(header.len());
    let mut seen = vec![false; schema.categorical.len() + schema.numeric.len()];
    for (i, name) in header.iter().enumerate() {
        let name = name.trim();
        let target = if let Some(c) = schema.categorical_index(name) {
            seen[c] = true;
            Some(Target::Categorical(c))
        } else if let Some(n) = schema.numeric_index(name) {
            seen[schema.categorical.len() + n] = true;
            Some(Target::Numeric(n))
        } else {
            report(&mut problems, 1, Some((i + 1, name.to_owned())),
                format!("{table} has no column {name:?} (its columns: {})", all_columns(schema)));
            None
        };
        targets.push(target);
    }
    for (i, name) in schema.categorical.iter().chain(&schema.numeric).enumerate() {
        if !seen[i] {
            report(&mut problems, 1, None, format!("column {name} of {table} is missing from the header"));
        }
    }
    if !problems.is_empty() {
        return Err(ImportError { problems, truncated }.into());
    }

    // Code -> index per dimension; the total code is not a category.
    let lookups: Vec<HashMap<&str, u16>> = schema
        .codes
        .iter()
        .map(|codes| codes.iter().enumerate().map(|(i, code)| (code.as_str(), u16::try_from(i).unwrap_or(u16::MAX))).collect())
        .collect();
    let mut period_index: HashMap<String, u16> = meta.periods.iter().enumerate().map(|(i, p)| (p.clone(), i as u16)).collect();
    let weight = schema.weight_index();

    let mut cols = Columns {
        categorical: vec![Vec::new(); schema.categorical.len()],
        numeric: vec![Vec::new(); schema.numeric.len()],
    };
    let mut record = csv::StringRecord::new();
    let mut line = 1u64;
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                report(&mut problems, line + 1, None, format!("not valid CSV: {e}"));
                break;
            }
        }
        line = record.position().map_or(line + 1, |p| p.line());
        if record.len() != header.len() {
            report(&mut problems, line, None, format!("{} fields, the header has {}", record.len(), header.len()));
            continue;
        }
        for (i, (field, target)) in record.iter().zip(&targets).enumerate() {
            let field = field.trim();
            let col = || Some((i + 1, header[i].trim().to_owned()));
            match target {
                Some(Target::Categorical(0)) => {
                    let Some(period) = crate::import::normalise_period(field) else {
                        report(&mut problems, line, col(), format!("{field:?} is not an SDMX period (YYYY, YYYY-Qn, YYYY-Sn, YYYY-MM)"));
                        cols.categorical[0].push(0);
                        continue;
                    };
                    let next = period_index.len();
                    let index = match period_index.get(period.as_ref()) {
                        Some(i) => *i,
                        None if next < usize::from(u16::MAX) => {
                            period_index.insert(period.clone().into_owned(), next as u16);
                            meta.periods.push(period.into_owned());
                            next as u16
                        }
                        None => {
                            report(&mut problems, line, col(), "too many distinct periods in one table".into());
                            0
                        }
                    };
                    cols.categorical[0].push(index);
                }
                Some(Target::Categorical(c)) => {
                    let dim = &schema.categorical[*c];
                    let index = match lookups[*c].get(field) {
                        Some(i) if schema.totals[*c].as_deref() != Some(field) => *i,
                        Some(_) => {
                            report(&mut problems, line, col(), format!("{field:?} is the total code of {dim}; a record needs its own category"));
                            0
                        }
                        None => {
                            report(&mut problems, line, col(), format!("unknown code {field:?} for {dim}"));
                            0
                        }
                    };
                    cols.categorical[*c].push(index);
                }
                Some(Target::Numeric(n)) => {
                    let value = match field.parse::<f64>() {
                        Ok(v) if v.is_finite() && (Some(*n) != weight || v > 0.0) => v,
                        Ok(_) if Some(*n) == weight => {
                            report(&mut problems, line, col(), format!("weight {field:?} must be a positive number"));
                            0.0
                        }
                        _ => {
                            report(&mut problems, line, col(), format!("{field:?} is not a finite number"));
                            0.0
                        }
                    };
                    cols.numeric[*n].push(value);
                }
                None => {}
            }
        }
    }
    if !problems.is_empty() {
        return Err(ImportError { problems, truncated }.into());
    }
    Ok(cols)
}

fn all_columns(schema: &Schema) -> String {
    schema.categorical.iter().chain(&schema.numeric).cloned().collect::<Vec<_>>().join(", ")
}

/// Skips a UTF-8 byte-order mark, which spreadsheet exports often start with.
fn skip_bom<R: Read>(mut r: R) -> impl Read {
    let mut head = [0u8; 3];
    let mut n = 0;
    while n < 3 {
        match r.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let kept = if n == 3 && head == [0xEF, 0xBB, 0xBF] { Vec::new() } else { head[..n].to_vec() };
    std::io::Cursor::new(kept).chain(r)
}
