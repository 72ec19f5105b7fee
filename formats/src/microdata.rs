//! Reading the unit-record files national teams import into a microdata
//! table (`[microdata.*]` in the dictionary), writing nothing.
//!
//! The header names the table's columns (any order): TIME_PERIOD, every
//! dimension, every variable and the weight column; nothing else. Each row
//! is one record. A dimension holds a code of its codelist other than the
//! total code (a record has a category, not "all of them"); variables are
//! finite numbers; weights are positive. Every problem is reported with
//! file, line, column and reason. The node stores what this returns in one
//! synced batch (`tabadul_node::microdata::import_records`); the fuzz target
//! `microdata_csv` runs this same parser.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tabadul_proto::{Dictionary, MicroTable};

use crate::{ImportError, MAX_REPORTED_PROBLEMS, Problem, normalise_period};

/// A table's records, parsed: one vector per stored column, in
/// [`Schema`] order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub categorical: Vec<Vec<u16>>,
    pub numeric: Vec<Vec<f64>>,
}

impl Columns {
    /// Records parsed.
    pub fn len(&self) -> usize {
        self.categorical.first().map_or(0, Vec::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A table's columns as stored: categorical first (TIME_PERIOD, then the
/// dimensions in dictionary order), then numeric (variables, then weight).
#[derive(Debug, Clone)]
pub struct Schema {
    pub table: MicroTable,
    /// Categorical column names; index 0 is TIME_PERIOD.
    pub categorical: Vec<String>,
    /// For each categorical column, its codes in codelist order (empty for
    /// TIME_PERIOD, whose codes are in the periods [`parse_records`] fills in).
    pub codes: Vec<Vec<String>>,
    /// For each categorical column, its total code (None for TIME_PERIOD).
    pub totals: Vec<Option<String>>,
    /// Numeric column names: variables, then the weight column if any.
    pub numeric: Vec<String>,
}

impl Schema {
    pub fn of(dict: &Dictionary, table: &MicroTable) -> Schema {
        let mut categorical = vec![tabadul_proto::TIME_PERIOD.to_owned()];
        let mut codes = vec![Vec::new()];
        let mut totals = vec![None];
        for d in &table.dimensions {
            categorical.push(d.clone());
            codes.push(dict.codes_of(d).unwrap_or_default().into_iter().map(str::to_owned).collect());
            totals.push(dict.dimension(d).and_then(|d| d.total.clone()));
        }
        let mut numeric: Vec<String> = table.variables.iter().map(|(v, _)| v.clone()).collect();
        numeric.extend(table.weight.iter().cloned());
        Schema { table: table.clone(), categorical, codes, totals, numeric }
    }

    pub fn categorical_index(&self, name: &str) -> Option<usize> {
        self.categorical.iter().position(|c| c == name)
    }
    pub fn numeric_index(&self, name: &str) -> Option<usize> {
        self.numeric.iter().position(|c| c == name)
    }
    pub fn weight_index(&self) -> Option<usize> {
        self.table.weight.as_ref().and_then(|w| self.numeric_index(w))
    }
}

/// Where each file column goes.
enum Target {
    Categorical(usize),
    Numeric(usize),
}

/// Parses and validates the records in `path` for `schema`'s table. New
/// TIME_PERIOD codes are appended to `periods` (the table's stored period
/// codes, by index), which the columns then refer to.
pub fn parse_records(schema: &Schema, periods: &mut Vec<String>, path: &Path, progress: &indicatif::ProgressBar) -> Result<Columns, ImportError> {
    let one = |line: u64, reason: String| ImportError { problems: vec![Problem { file: path.to_owned(), line, column: None, reason }], truncated: false };
    let file = std::fs::File::open(path).map_err(|e| one(0, format!("cannot open: {e}")))?;
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
    let header = csv.headers().map_err(|e| one(1, format!("cannot read the header: {e}")))?.clone();
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
            report(&mut problems, 1, Some((i + 1, name.to_owned())), format!("{table} has no column {name:?} (its columns: {})", all_columns(schema)));
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
        return Err(ImportError { problems, truncated });
    }

    // Code -> index per dimension; the total code is not a category.
    let lookups: Vec<HashMap<&str, u16>> =
        schema.codes.iter().map(|codes| codes.iter().enumerate().map(|(i, code)| (code.as_str(), u16::try_from(i).unwrap_or(u16::MAX))).collect()).collect();
    let mut period_index: HashMap<String, u16> = periods.iter().enumerate().map(|(i, p)| (p.clone(), i as u16)).collect();
    let weight = schema.weight_index();

    let mut cols = Columns { categorical: vec![Vec::new(); schema.categorical.len()], numeric: vec![Vec::new(); schema.numeric.len()] };
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
                    let Some(period) = normalise_period(field) else {
                        report(&mut problems, line, col(), format!("{field:?} is not an SDMX period (YYYY, YYYY-Qn, YYYY-Sn, YYYY-MM)"));
                        cols.categorical[0].push(0);
                        continue;
                    };
                    let next = period_index.len();
                    let index = match period_index.get(period.as_ref()) {
                        Some(i) => *i,
                        None if next < usize::from(u16::MAX) => {
                            period_index.insert(period.clone().into_owned(), next as u16);
                            periods.push(period.into_owned());
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
        return Err(ImportError { problems, truncated });
    }
    if cols.is_empty() {
        return Err(one(1, "the file holds no records".into()));
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
