//! Reading indicator tables that national teams import: SDMX-CSV (1.0 and
//! 2.0) and ILOSTAT bulk CSV, parsed and validated against the data
//! dictionary, every problem reported with file, line, column and reason
//! (up to [`MAX_REPORTED_PROBLEMS`]).
//!
//! Valid rows come out already encoded as the node's store keys and values
//! ([`Validated`]), sorted, so the node can write them as one atomically
//! ingested file. Unit-record files for microdata tables are read by
//! [`microdata`] into columns. This crate writes nothing and links no
//! store: that keeps it small enough to fuzz (`fuzz/fuzz_targets/
//! indicator_csv.rs`, `microdata_csv.rs`). The all-or-nothing writes are
//! `tabadul_node::import::import` and `tabadul_node::microdata::import_records`.
#![forbid(unsafe_code)]

pub mod encoding;
mod ilostat;
pub mod microdata;
mod sdmx_csv;

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use tabadul_proto::{Dataflow, Dictionary};

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
        write!(f, "import rejected, nothing was stored ({} problem{}", self.problems.len(), if self.problems.len() == 1 { "" } else { "s" })?;
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
    /// Time spent parsing and validating, and writing.
    pub validate_time: std::time::Duration,
    pub write_time: std::time::Duration,
}

/// An observation parsed and validated, already encoded for the store: its
/// key and value bytes live in a shared arena (one per parser thread), so
/// millions of rows cost no per-row allocation.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    start: usize,
    key_len: u32,
    value_len: u32,
    file: u32,
    arena: u16,
    line: u64,
}

impl Row {
    pub fn key<'a>(&self, arenas: &'a [Vec<u8>]) -> &'a [u8] {
        &arenas[usize::from(self.arena)][self.start..self.start + self.key_len as usize]
    }
    pub fn value<'a>(&self, arenas: &'a [Vec<u8>]) -> &'a [u8] {
        let v = self.start + self.key_len as usize;
        &arenas[usize::from(self.arena)][v..v + self.value_len as usize]
    }
}

/// Everything an import validated, ready to write: rows in key order.
#[derive(Debug)]
pub struct Validated {
    pub arenas: Vec<Vec<u8>>,
    pub rows: Vec<Row>,
    pub dataflows: BTreeSet<String>,
}

/// The most dimensions a dataflow may have (the dictionary has at most 4).
pub(crate) const MAX_DIMENSIONS: usize = 16;

/// A dataflow with its dimensions' codelists looked up once, not per row.
pub(crate) struct FlowInfo<'d> {
    pub flow: &'d Dataflow,
    codelists: Vec<Option<&'d std::collections::BTreeMap<String, String>>>,
}

/// Collects rows and problems while files are parsed.
pub(crate) struct Sink<'a> {
    pub dict: &'a Dictionary,
    pub member: &'a str,
    pub rows: Vec<Row>,
    /// Encoded keys and values; rows point into them. New rows go to the last.
    pub arenas: Vec<Vec<u8>>,
    pub problems: Vec<Problem>,
    pub problem_count: usize,
    pub dataflows: BTreeSet<String>,
    pub files: Vec<PathBuf>,
}

impl<'a> Sink<'a> {
    pub fn problem(&mut self, file: usize, line: u64, column: Option<(usize, &str)>, reason: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < MAX_REPORTED_PROBLEMS {
            self.problems.push(Problem { file: self.files[file].clone(), line, column: column.map(|(n, s)| (n, s.to_owned())), reason: reason.into() });
        }
    }

    /// An empty sink for one thread's share of a file.
    pub fn fork(&self) -> Sink<'a> {
        Sink {
            dict: self.dict,
            member: self.member,
            rows: Vec::new(),
            arenas: vec![Vec::new()],
            problems: Vec::new(),
            problem_count: 0,
            dataflows: BTreeSet::new(),
            files: self.files.clone(),
        }
    }

    /// Takes in forked sinks' findings, in the order of their input.
    pub fn join(&mut self, parts: Vec<Sink<'a>>) {
        for part in parts {
            // Arenas move, they are not copied: rows only need new arena numbers.
            let base = self.arenas.len() as u16;
            self.arenas.extend(part.arenas);
            self.rows.extend(part.rows.into_iter().map(|r| Row { arena: r.arena + base, ..r }));
            self.problem_count += part.problem_count;
            let room = MAX_REPORTED_PROBLEMS.saturating_sub(self.problems.len());
            self.problems.extend(part.problems.into_iter().take(room));
            self.dataflows.extend(part.dataflows);
        }
    }

    /// Looks up what validating rows of `flow` needs, and notes the dataflow.
    pub fn flow_info(&mut self, flow: &'a Dataflow) -> FlowInfo<'a> {
        self.dataflows.insert(flow.id.clone());
        let dict = self.dict;
        FlowInfo { flow, codelists: flow.dimensions.iter().map(|d| dict.dimension(d).and_then(|d| dict.codelist(&d.codelist)).map(|cl| &cl.codes)).collect() }
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
        info: &FlowInfo<'_>,
        codes: &[(&str, Option<(usize, &str)>)],
        time: (&str, Option<(usize, &str)>),
        value: (&str, Option<(usize, &str)>),
        status: (&str, Option<(usize, &str)>),
        unit_mult: (Option<&str>, Option<(usize, &str)>),
    ) {
        let flow = info.flow;
        let mut ok = true;
        for ((dim, (code, col)), codelist) in flow.dimensions.iter().zip(codes).zip(&info.codelists) {
            if dim == tabadul_proto::REF_AREA {
                if *code != self.member {
                    self.problem(
                        file,
                        line,
                        *col,
                        format!("REF_AREA {code:?} is not this node's member {}: a node holds only its own country's data", self.member),
                    );
                    ok = false;
                }
            } else if !codelist.is_some_and(|cl| cl.contains_key(*code)) {
                let cl = self.dict.dimension(dim).map(|d| d.codelist.as_str()).unwrap_or("?");
                self.problem(file, line, *col, format!("unknown code {code:?} for {dim} (codelist {cl})"));
                ok = false;
            }
        }
        let Some(period) = normalise_period(time.0) else {
            self.problem(file, line, time.1, format!("time period {:?} is not YYYY, YYYY-S1, YYYY-Q1 or YYYY-MM", time.0));
            return;
        };
        let number = match value.0.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ => {
                let reason =
                    if value.0.trim().is_empty() { "empty observation value".to_owned() } else { format!("observation value {:?} is not a number", value.0) };
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
        let arena = (self.arenas.len() - 1) as u16;
        let a = self.arenas.last_mut().expect("a sink always has an arena");
        let start = a.len();
        encoding::append_key(a, &flow.id, codes.iter().map(|(c, _)| *c), &period);
        let key_len = (a.len() - start) as u32;
        encoding::append_value(a, number, mult as i8, status_code);
        let value_len = (a.len() - start) as u32 - key_len;
        self.rows.push(Row { start, key_len, value_len, file: file as u32, arena, line });
    }
}

/// SDMX observation status codes (CL_OBS_STATUS).
const OBS_STATUS: &[&str] = &["A", "B", "D", "E", "F", "G", "I", "K", "L", "M", "N", "O", "P", "Q", "S", "U", "V"];

/// SDMX period forms, accepting ILOSTAT's `2023Q1` / `2023M01` spellings.
pub fn normalise_period(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
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
        [b'-', m1, m2] if month(*m1, *m2) => Some(s.into()),
        [b'M', m1, m2] if month(*m1, *m2) => Some(format!("{}-{}{}", &s[..4], *m1 as char, *m2 as char).into()),
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
        _ => Err(problem(format!("cannot tell the format: an SDMX-CSV file starts with DATAFLOW or STRUCTURE, an ILOSTAT file with ref_area (found {col:?})"))),
    }
}

/// Parses and validates `files` without touching any store.
/// Parses and validates files exactly as [`import`] does, writing nothing:
/// the number of observations they hold, or every problem found. (The fuzz
/// targets use this; so could a dry run.)
pub fn check(dict: &Dictionary, member: &str, files: &[(PathBuf, Option<Format>)]) -> Result<u64, ImportError> {
    validate(dict, member, files, &indicatif::ProgressBar::hidden()).map(|v| v.rows.len() as u64)
}

pub fn validate(dict: &Dictionary, member: &str, files: &[(PathBuf, Option<Format>)], progress: &indicatif::ProgressBar) -> Result<Validated, ImportError> {
    let mut sink = Sink {
        dict,
        member,
        rows: Vec::new(),
        arenas: vec![Vec::new()],
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
        let size = reader.metadata().map(|m| m.len()).unwrap_or(0);
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        if format == Format::SdmxCsv && size >= sdmx_csv::PARALLEL_MIN_BYTES && threads > 1 {
            let mut data = Vec::with_capacity(size as usize);
            if let Err(e) = progress.wrap_read(reader).read_to_end(&mut data) {
                sink.problem(i, 0, None, format!("cannot read: {e}"));
                continue;
            }
            sdmx_csv::parse_in_memory(&mut sink, i, &data, threads);
        } else {
            let reader = progress.wrap_read(std::io::BufReader::with_capacity(1 << 20, reader));
            match format {
                Format::SdmxCsv => sdmx_csv::parse(&mut sink, i, reader),
                Format::Ilostat => ilostat::parse(&mut sink, i, reader),
            }
        }
        if sink.full() {
            break;
        }
    }
    if sink.problem_count == 0 {
        for (first, second) in sort_and_find_duplicates(&sink.arenas, &mut sink.rows, member) {
            let at = format!("{}:{}", sink.files[first.file as usize].display(), first.line);
            let key = describe_key(second.key(&sink.arenas));
            sink.problem(second.file as usize, second.line, None, format!("duplicate observation {key}, first given at {at}"));
        }
    }
    if sink.problem_count > 0 {
        return Err(ImportError { truncated: sink.problem_count > sink.problems.len(), problems: sink.problems });
    }
    Ok(Validated { arenas: sink.arenas, rows: sink.rows, dataflows: sink.dataflows })
}

/// Sorts rows into store key order (an SST file is written in order) and
/// returns the pairs of rows with the same key, (earlier, later) in input
/// order.
///
/// Every key of an import starts with a dataflow id and this node's member
/// code, so comparing whole keys mostly compares bytes that are the same.
/// Rows are sorted instead on a fixed-size prefix: the dataflow's rank, then
/// the key bytes after the member code; whole keys are compared only when
/// those prefixes tie.
fn sort_and_find_duplicates(arenas: &[Vec<u8>], rows: &mut Vec<Row>, member: &str) -> Vec<(Row, Row)> {
    const PREFIX: usize = 30;
    type Keyed = ([u8; PREFIX + 2], u32);
    let mut flows: Vec<&[u8]> = Vec::new();
    let mut keyed: Vec<Keyed> = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let key = r.key(arenas);
        let flow_end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
        let flow = &key[..flow_end];
        let rank = match flows.iter().position(|f| *f == flow) {
            Some(rank) => rank,
            None => {
                flows.push(flow);
                flows.len() - 1
            }
        };
        let rest = key.get(flow_end + 1 + member.len() + 1..).unwrap_or_default();
        let mut prefix = [0u8; PREFIX + 2];
        prefix[..2].copy_from_slice(&(rank as u16).to_be_bytes());
        let n = rest.len().min(PREFIX);
        prefix[2..2 + n].copy_from_slice(&rest[..n]);
        keyed.push((prefix, i as u32));
    }
    // Ranks in first-seen order; re-rank so they follow the dataflow ids' order.
    let mut order: Vec<usize> = (0..flows.len()).collect();
    order.sort_by_key(|&i| flows[i]);
    let mut rank_of = vec![0u16; flows.len()];
    for (new, &old) in order.iter().enumerate() {
        rank_of[old] = new as u16;
    }
    for (prefix, _) in &mut keyed {
        let first_seen = u16::from_be_bytes([prefix[0], prefix[1]]) as usize;
        prefix[..2].copy_from_slice(&rank_of[first_seen].to_be_bytes());
    }
    let cmp = |a: &Keyed, b: &Keyed| {
        a.0.cmp(&b.0).then_with(|| {
            let (ra, rb) = (rows[a.1 as usize], rows[b.1 as usize]);
            ra.key(arenas).cmp(rb.key(arenas)).then((ra.file, ra.line).cmp(&(rb.file, rb.line)))
        })
    };
    // Two halves sorted on two threads, then merged.
    let half = keyed.len() / 2;
    let (left, right) = keyed.split_at_mut(half);
    std::thread::scope(|scope| {
        scope.spawn(|| left.sort_unstable_by(cmp));
        right.sort_unstable_by(cmp);
    });
    let (left, right) = keyed.split_at(half);
    let (mut i, mut j) = (0, 0);
    let mut sorted: Vec<Row> = Vec::with_capacity(rows.len());
    while i < left.len() || j < right.len() {
        let take_left = j == right.len() || (i < left.len() && cmp(&left[i], &right[j]).is_le());
        let next = if take_left {
            i += 1;
            left[i - 1].1
        } else {
            j += 1;
            right[j - 1].1
        };
        sorted.push(rows[next as usize]);
    }
    *rows = sorted;
    rows.windows(2).filter(|p| p[0].key(arenas) == p[1].key(arenas)).map(|p| (p[0], p[1])).collect()
}

fn describe_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let (flow, rest) = text.split_once('\0').unwrap_or(("?", &text));
    let mut parts: Vec<&str> = rest.split('\u{1f}').collect();
    let time = parts.pop().unwrap_or("");
    format!("{flow} {} at {time}", parts.join("."))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
