//! Imports of indicator tables: SDMX-CSV (1.0 and 2.0) and ILOSTAT bulk CSV.
//!
//! An import is all-or-nothing across every file given: all rows of all
//! files are parsed and validated against the dictionary first; only if no
//! row has a problem are they written, as one atomic RocksDB batch. A
//! rejected import reports every problem it found (up to
//! [`MAX_REPORTED_PROBLEMS`]) with file, line, column and reason, and leaves
//! the store exactly as it was.

mod ilostat;
mod sdmx_csv;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use tabadul_proto::{Dataflow, Dictionary};

use crate::store::Store;

/// Beyond this many problems a report stops listing them.
pub const MAX_REPORTED_PROBLEMS: usize = 50;

/// The input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    SdmxCsv,
    Ilostat,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sdmx-csv" => Ok(Format::SdmxCsv),
            "ilostat" => Ok(Format::Ilostat),
            other => Err(format!("unknown format {other:?} (expected sdmx-csv or ilostat)")),
        }
    }
}

/// One thing wrong with an input file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    /// 1-based column number and its header name, when one column is at fault.
    pub column: Option<(usize, String)>,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if let Some((n, name)) = &self.column {
            write!(f, ": column {n} ({name})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A rejected import. Nothing was written.
#[derive(Debug, Clone)]
pub struct ImportError {
    pub problems: Vec<Problem>,
    /// More problems were found than are listed.
    pub truncated: bool,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "import rejected, nothing was stored ({} problem{}",
            self.problems.len(), if self.problems.len() == 1 { "" } else { "s" })?;
        if self.truncated {
            write!(f, " shown, more not listed")?;
        }
        write!(f, "):")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportError {}

/// What an import stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    pub observations: u64,
    pub dataflows: BTreeSet<String>,
}

/// An observation parsed and validated, already encoded for the store.
pub(crate) struct Row {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub file: usize,
    pub line: u64,
}

/// Collects rows and problems while files are parsed.
pub(crate) struct Sink<'a> {
    pub dict: &'a Dictionary,
    pub member: &'a str,
    pub rows: Vec<Row>,
    pub problems: Vec<Problem>,
    pub problem_count: usize,
    pub dataflows: BTreeSet<String>,
    pub files: Vec<PathBuf>,
}

impl Sink<'_> {
    pub fn problem(&mut self, file: usize, line: u64, column: Option<(usize, &str)>, reason: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < MAX_REPORTED_PROBLEMS {
            self.problems.push(Problem {
                file: self.files[file].clone(),
                line,
                column: column.map(|(n, s)| (n, s.to_owned())),
                reason: reason.into(),
            });
        }
    }

    pub fn full(&self) -> bool {
        self.problem_count >= MAX_REPORTED_PROBLEMS
    }

    /// Validates one observation's codes and values and encodes it.
    /// `codes` are in the dataflow's dimension order, each with the column it came from.
    #[allow(clippy::too_many_arguments)]
    pub fn observation(
        &mut self,
        file: usize,
        line: u64,
        flow: &Dataflow,
        codes: &[(&str, Option<(usize, &str)>)],
        time: (&str, Option<(usize, &str)>),
        value: (&str, Option<(usize, &str)>),
        status: (&str, Option<(usize, &str)>),
        unit_mult: (Option<&str>, Option<(usize, &str)>),
    ) {
        let mut ok = true;
        for (dim, (code, col)) in flow.dimensions.iter().zip(codes) {
            if dim == tabadul_proto::REF_AREA {
                if *code != self.member {
                    self.problem(file, line, *col, format!(
                        "REF_AREA {code:?} is not this node's member {}: a node holds only its own country's data", self.member));
                    ok = false;
                }
            } else if !self.dict.has_code(dim, code) {
                let cl = self.dict.dimension(dim).map(|d| d.codelist.as_str()).unwrap_or("?");
                self.problem(file, line, *col, format!("unknown code {code:?} for {dim} (codelist {cl})"));
                ok = false;
            }
        }
        let Some(period) = normalise_period(time.0) else {
            self.problem(file, line, time.1, format!(
                "time period {:?} is not YYYY, YYYY-S1, YYYY-Q1 or YYYY-MM", time.0));
            return;
        };
        let number = match value.0.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ => {
                let reason = if value.0.trim().is_empty() { "empty observation value".to_owned() }
                    else { format!("observation value {:?} is not a number", value.0) };
                self.problem(file, line, value.1, reason);
                return;
            }
        };
        let status_code = match status.0.trim() {
            "" => "A",
            s if OBS_STATUS.contains(&s) => s,
            s => {
                self.problem(file, line, status.1, format!("OBS_STATUS {s:?} is not an SDMX observation status code"));
                return;
            }
        };
        let mult = match unit_mult.0.map(str::trim) {
            None | Some("") => flow.unit_mult,
            Some(s) => match s.parse::<i32>() {
                Ok(m) if (-12..=12).contains(&m) => m,
                _ => {
                    self.problem(file, line, unit_mult.1, format!("UNIT_MULT {s:?} is not an integer between -12 and 12"));
                    return;
                }
            },
        };
        if !ok {
            return;
        }
        let mut key = Vec::with_capacity(48);
        key.extend_from_slice(flow.id.as_bytes());
        key.push(0);
        for (code, _) in codes {
            key.extend_from_slice(code.as_bytes());
            key.push(0x1f);
        }
        key.extend_from_slice(period.as_bytes());
        let mut encoded = Vec::with_capacity(10);
        encoded.extend_from_slice(&number.to_le_bytes());
        encoded.push(mult as i8 as u8);
        encoded.extend_from_slice(status_code.as_bytes());
        if !self.dataflows.contains(&flow.id) {
            self.dataflows.insert(flow.id.clone());
        }
        self.rows.push(Row { key, value: encoded, file, line });
    }
}

/// SDMX observation status codes (CL_OBS_STATUS).
const OBS_STATUS: &[&str] = &["A", "B", "D", "E", "F", "G", "I", "K", "L", "M", "N", "O", "P", "Q", "S", "U", "V"];

/// SDMX period forms, accepting ILOSTAT's `2023Q1` / `2023M01` spellings.
fn normalise_period(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let s = raw.trim();
    let b = s.as_bytes();
    let year = b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit);
    if !year {
        return None;
    }
    let rest = &s[4..];
    let digit = |c: &str, lo: u8, hi: u8| c.len() == 1 && (lo..=hi).contains(&c.as_bytes()[0]);
    match rest.as_bytes() {
        [] => Some(s.into()),
        [b'-', b'Q', ..] if digit(&rest[2..], b'1', b'4') => Some(s.into()),
        [b'-', b'S', ..] if digit(&rest[2..], b'1', b'2') => Some(s.into()),
        [b'Q', ..] if digit(&rest[1..], b'1', b'4') => Some(format!("{}-{}", &s[..4], rest).into()),
        [b'-', m1, m2] | [b'M', m1, m2] if month(*m1, *m2) => Some(format!("{}-{}{}", &s[..4], *m1 as char, *m2 as char).into()),
        _ => None,
    }
}

fn month(a: u8, b: u8) -> bool {
    a.is_ascii_digit() && b.is_ascii_digit() && (1..=12).contains(&((a - b'0') * 10 + (b - b'0')))
}

/// Reads the header of a CSV file to tell SDMX-CSV from ILOSTAT.
pub fn detect_format(path: &Path) -> Result<Format, Problem> {
    use std::io::BufRead;
    let problem = |reason: String| Problem { file: path.to_owned(), line: 1, column: None, reason };
    let file = std::fs::File::open(path).map_err(|e| problem(format!("cannot open: {e}")))?;
    let mut first = String::new();
    std::io::BufReader::new(file).read_line(&mut first).map_err(|e| problem(format!("cannot read: {e}")))?;
    let first = first.trim_start_matches('\u{feff}').trim().to_ascii_lowercase();
    let col = first.split([',', ';']).next().unwrap_or("").trim_matches('"').to_owned();
    match col.as_str() {
        "dataflow" | "structure" => Ok(Format::SdmxCsv),
        "ref_area" => Ok(Format::Ilostat),
        _ => Err(problem(format!(
            "cannot tell the format: an SDMX-CSV file starts with DATAFLOW or STRUCTURE, an ILOSTAT file with ref_area (found {col:?})"))),
    }
}

/// Parses and validates `files` without touching any store.
pub(crate) fn validate(
    dict: &Dictionary,
    member: &str,
    files: &[(PathBuf, Option<Format>)],
    progress: &indicatif::ProgressBar,
) -> Result<(Vec<Row>, BTreeSet<String>), ImportError> {
    let mut sink = Sink {
        dict,
        member,
        rows: Vec::new(),
        problems: Vec::new(),
        problem_count: 0,
        dataflows: BTreeSet::new(),
        files: files.iter().map(|(p, _)| p.clone()).collect(),
    };
    for (i, (path, format)) in files.iter().enumerate() {
        let format = match format {
            Some(f) => *f,
            None => match detect_format(path) {
                Ok(f) => f,
                Err(p) => {
                    sink.problem(i, p.line, None, p.reason);
                    continue;
                }
            },
        };
        let reader = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                sink.problem(i, 0, None, format!("cannot open: {e}"));
                continue;
            }
        };
        let reader = progress.wrap_read(std::io::BufReader::with_capacity(1 << 20, reader));
        match format {
            Format::SdmxCsv => sdmx_csv::parse(&mut sink, i, reader),
            Format::Ilostat => ilostat::parse(&mut sink, i, reader),
        }
        if sink.full() {
            break;
        }
    }
    if sink.problem_count == 0 {
        // Sorting puts duplicates side by side and gives RocksDB keys in order.
        sink.rows.sort_by(|a, b| a.key.cmp(&b.key).then(a.file.cmp(&b.file)).then(a.line.cmp(&b.line)));
        let mut dups = Vec::new();
        for pair in sink.rows.windows(2) {
            if pair[0].key == pair[1].key {
                dups.push((pair[0].file, pair[0].line, pair[1].file, pair[1].line, describe_key(&pair[1].key)));
            }
        }
        for (f0, l0, f1, l1, key) in dups {
            let first = format!("{}:{}", sink.files[f0].display(), l0);
            sink.problem(f1, l1, None, format!("duplicate observation {key}, first given at {first}"));
        }
    }
    if sink.problem_count > 0 {
        return Err(ImportError { truncated: sink.problem_count > sink.problems.len(), problems: sink.problems });
    }
    Ok((sink.rows, sink.dataflows))
}

fn describe_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let (flow, rest) = text.split_once('\0').unwrap_or(("?", &text));
    let mut parts: Vec<&str> = rest.split('\u{1f}').collect();
    let time = parts.pop().unwrap_or("");
    format!("{flow} {} at {time}", parts.join("."))
}

/// Validates and stores `files` atomically.
pub fn import(
    store: &Store,
    dict: &Dictionary,
    member: &str,
    files: &[(PathBuf, Option<Format>)],
    progress: &indicatif::ProgressBar,
) -> Result<ImportReport, crate::Error> {
    let (rows, dataflows) = validate(dict, member, files, progress)?;
    store.put_encoded(rows.iter().map(|r| (r.key.as_slice(), r.value.as_slice())))?;
    Ok(ImportReport { observations: rows.len() as u64, dataflows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(normalise_period("2024").as_deref(), Some("2024"));
        assert_eq!(normalise_period("2024Q3").as_deref(), Some("2024-Q3"));
        assert_eq!(normalise_period("2024-Q3").as_deref(), Some("2024-Q3"));
        assert_eq!(normalise_period("2024M07").as_deref(), Some("2024-07"));
        assert_eq!(normalise_period("2024-12").as_deref(), Some("2024-12"));
        for bad in ["24", "2024-13", "2024Q5", "2024-", "abcd", "2024-Q", "2024-00"] {
            assert_eq!(normalise_period(bad), None, "{bad}");
        }
    }
}
