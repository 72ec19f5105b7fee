//! SDMX-CSV 1.0 (`DATAFLOW,…`) and 2.0 (`STRUCTURE,STRUCTURE_ID[,ACTION],…`).
//!
//! One file may mix dataflows: every row names its own, must fill the
//! columns of that dataflow's dimensions and leave other dimension columns
//! empty. Header and code cells may carry labels (`F: Female`); the code is
//! the part before `": "`.

use std::collections::HashMap;
use std::io::Read;

use tabadul_proto::TIME_PERIOD;

use super::{FlowInfo, MAX_DIMENSIONS, Sink};

struct Header {
    names: Vec<String>,
    flow_col: usize,
    /// SDMX-CSV 2.0's STRUCTURE column (must say `dataflow`).
    structure_col: Option<usize>,
    action_col: Option<usize>,
    time_col: usize,
    value_col: usize,
    status_col: Option<usize>,
    mult_col: Option<usize>,
    /// Dimension id -> column.
    dims: HashMap<String, usize>,
}

pub(super) fn parse(sink: &mut Sink<'_>, file: usize, reader: impl Read) {
    let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(reader);
    let Some(header) = read_header(sink, file, &mut csv) else { return };
    parse_rows(sink, file, &header, &mut csv, 0);
}

/// Files at least this large are parsed on several threads.
pub(super) const PARALLEL_MIN_BYTES: u64 = 16 << 20;

/// Parses a whole file held in memory, its rows split among `threads`
/// threads at line boundaries. A file with a quote character anywhere is
/// parsed on one thread: a quoted field may hold a line break, so a line
/// boundary would not be a record boundary.
pub(super) fn parse_in_memory(sink: &mut Sink<'_>, file: usize, data: &[u8], threads: usize) {
    let body_start = data.iter().position(|&b| b == b'\n').map_or(data.len(), |i| i + 1);
    let (head, body) = data.split_at(body_start);
    if threads < 2 || body.contains(&b'"') {
        return parse(sink, file, data);
    }
    let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(head);
    let Some(header) = read_header(sink, file, &mut csv) else { return };
    // Chunk boundaries just after a line break, and the line each chunk starts on.
    let mut chunks = Vec::with_capacity(threads);
    let (mut start, mut first_line) = (0, 2u64);
    for k in 1..=threads {
        let target = (body.len() * k / threads).max(start);
        let end = if k == threads { body.len() } else { body[target..].iter().position(|&b| b == b'\n').map_or(body.len(), |i| target + i + 1) };
        chunks.push((&body[start..end], first_line));
        first_line += body[start..end].iter().filter(|&&b| b == b'\n').count() as u64;
        start = end;
    }
    let parts: Vec<Sink<'_>> = std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .iter()
            .map(|&(chunk, first_line)| {
                let mut part = sink.fork();
                let header = &header;
                scope.spawn(move || {
                    let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(chunk);
                    parse_rows(&mut part, file, header, &mut csv, first_line - 1);
                    part
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a parser thread panicked")).collect()
    });
    sink.join(parts);
}

fn read_header<R: Read>(sink: &mut Sink<'_>, file: usize, csv: &mut csv::Reader<R>) -> Option<Header> {
    let mut record = csv::StringRecord::new();
    match csv.read_record(&mut record) {
        Ok(true) => parse_header(sink, file, &record),
        Ok(false) => {
            sink.problem(file, 1, None, "empty file: no header row");
            None
        }
        Err(e) => {
            sink.problem(file, 1, None, format!("unreadable CSV header: {e}"));
            None
        }
    }
}

/// Parses data rows; `line_offset` is added to the reader's own line numbers.
fn parse_rows<R: Read>(sink: &mut Sink<'_>, file: usize, header: &Header, csv: &mut csv::Reader<R>, line_offset: u64) {
    let mut record = csv::StringRecord::new();
    // Rows of one dataflow usually come together: remember the last one.
    let mut last: Option<(String, Option<(FlowInfo<'_>, Columns)>)> = None;
    let mut line: u64 = 1;
    loop {
        match csv.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let at = e.position().map_or(line + 1, |p| p.line()) + line_offset;
                sink.problem(file, at, None, format!("unreadable CSV (or not UTF-8): {e}"));
                return;
            }
        }
        line = record.position().map_or(line + 1, |p| p.line());
        let line = line + line_offset;
        if record.len() == 1 && record.get(0) == Some("") {
            continue; // a blank line
        }
        if record.len() != header.names.len() {
            sink.problem(file, line, None, format!("{} fields, the header has {}", record.len(), header.names.len()));
            if sink.full() {
                return;
            }
            continue;
        }
        let flow_cell = &record[header.flow_col];
        if last.as_ref().is_none_or(|(cell, _)| cell != flow_cell) {
            let info = sink.dict.dataflow(flow_id(flow_cell)).map(|f| (sink.flow_info(f), columns(header, f)));
            last = Some((flow_cell.to_owned(), info));
        }
        let info = last.as_ref().and_then(|(_, info)| info.as_ref());
        row(sink, file, line, header, &record, info);
        if sink.full() {
            return;
        }
    }
}

fn col(h: &Header, i: usize) -> Option<(usize, &str)> {
    Some((i + 1, h.names[i].as_str()))
}

/// The code in a cell that may carry a label (`F: Female`).
fn code(cell: &str) -> &str {
    let b = cell.as_bytes();
    match b.iter().position(|&c| c == b':') {
        Some(i) if b.get(i + 1) == Some(&b' ') => cell[..i].trim(),
        _ => cell.trim(),
    }
}

/// Where a dataflow's dimensions are in this file, worked out once per dataflow.
struct Columns {
    /// Per dimension of the dataflow, its column, or the name of the missing one.
    dims: Result<Vec<usize>, String>,
    /// Columns of dimensions this dataflow does not have (must be empty).
    others: Vec<(usize, String)>,
}

fn columns(h: &Header, flow: &tabadul_proto::Dataflow) -> Columns {
    let dims = flow.dimensions.iter().map(|d| h.dims.get(d).copied().ok_or_else(|| d.clone())).collect::<Result<Vec<_>, _>>();
    let others = h.dims.iter().filter(|(d, _)| !flow.dimensions.contains(d)).map(|(d, &i)| (i, d.clone())).collect();
    Columns { dims, others }
}

fn row(sink: &mut Sink<'_>, file: usize, line: u64, h: &Header, record: &csv::StringRecord, info: Option<&(FlowInfo<'_>, Columns)>) {
    let cell = |i: usize| &record[i];
    if let Some(i) = h.structure_col
        && !cell(i).trim().eq_ignore_ascii_case("dataflow")
    {
        return sink.problem(file, line, col(h, i), format!("STRUCTURE {:?}: only dataflow is supported", cell(i)));
    }
    if let Some(i) = h.action_col {
        let action = cell(i).trim();
        if !matches!(action, "" | "I" | "A" | "R" | "M") {
            return sink.problem(
                file,
                line,
                col(h, i),
                format!("ACTION {action:?} is not supported: use I, A, R or M (withdraw data with `tabadul-node withdraw`)"),
            );
        }
    }
    let Some((info, columns)) = info else {
        return sink.problem(file, line, col(h, h.flow_col), format!("unknown dataflow {:?} (not in dictionary {})", cell(h.flow_col), sink.dict.version));
    };
    let flow = info.flow;
    let dims = match &columns.dims {
        Ok(dims) => dims,
        Err(dim) => return sink.problem(file, line, None, format!("column {dim}, a dimension of {}, is missing from the header", flow.id)),
    };
    let mut codes: [(&str, Option<(usize, &str)>); MAX_DIMENSIONS] = [("", None); MAX_DIMENSIONS];
    for (slot, &i) in codes.iter_mut().zip(dims) {
        *slot = (code(cell(i)), col(h, i));
    }
    for (i, dim) in &columns.others {
        if !cell(*i).trim().is_empty() {
            return sink.problem(file, line, col(h, *i), format!("{} has no dimension {dim}; leave this cell empty", flow.id));
        }
    }
    sink.observation(
        file,
        line,
        info,
        &codes[..flow.dimensions.len()],
        (code(cell(h.time_col)), col(h, h.time_col)),
        (cell(h.value_col), col(h, h.value_col)),
        h.status_col.map_or(("", None), |i| (code(cell(i)), col(h, i))),
        h.mult_col.map_or((None, None), |i| (Some(code(cell(i))), col(h, i))),
    );
}

/// `ALO:UNE_RATE(1.0)` or `UNE_RATE` -> `UNE_RATE`.
fn flow_id(cell: &str) -> &str {
    let cell = cell.trim();
    let no_version = cell.split_once('(').map_or(cell, |(id, _)| id);
    no_version.rsplit_once(':').map_or(no_version, |(_, id)| id).trim()
}

fn parse_header(sink: &mut Sink<'_>, file: usize, record: &csv::StringRecord) -> Option<Header> {
    let mut names = Vec::with_capacity(record.len());
    for (i, s) in record.iter().enumerate() {
        let s = if i == 0 { s.trim_start_matches('\u{feff}') } else { s };
        names.push(s.split_once(':').map_or(s, |(id, _)| id).trim().to_owned());
    }
    let find = |n: &str| names.iter().position(|c| c.eq_ignore_ascii_case(n));
    let (flow_col, structure_col, action_col) = match names.first().map(|s| s.to_ascii_uppercase()) {
        Some(f) if f == "DATAFLOW" => (0, None, None),
        Some(f) if f == "STRUCTURE" => {
            let Some(id) = find("STRUCTURE_ID") else {
                sink.problem(file, 1, None, "SDMX-CSV 2.0 header has STRUCTURE but no STRUCTURE_ID column");
                return None;
            };
            (id, Some(0), find("ACTION"))
        }
        _ => {
            sink.problem(file, 1, Some((1, names.first().map_or("", String::as_str))), "an SDMX-CSV header starts with DATAFLOW (1.0) or STRUCTURE (2.0)");
            return None;
        }
    };
    let mut dims = HashMap::new();
    let (mut time_col, mut value_col, mut status_col, mut mult_col) = (None, None, None, None);
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        if i == flow_col || Some(i) == structure_col || Some(i) == action_col {
            continue;
        }
        let slot = match name.as_str() {
            TIME_PERIOD => &mut time_col,
            "OBS_VALUE" => &mut value_col,
            "OBS_STATUS" => &mut status_col,
            "UNIT_MULT" => &mut mult_col,
            dim if sink.dict.dimension(dim).is_some() => {
                if dims.insert(dim.to_owned(), i).is_some() {
                    sink.problem(file, 1, Some((i + 1, name)), "column appears twice");
                    ok = false;
                }
                continue;
            }
            _ => {
                sink.problem(
                    file,
                    1,
                    Some((i + 1, name)),
                    "unknown column: not a dimension of the dictionary, TIME_PERIOD, OBS_VALUE, OBS_STATUS or UNIT_MULT",
                );
                ok = false;
                continue;
            }
        };
        if slot.replace(i).is_some() {
            sink.problem(file, 1, Some((i + 1, name)), "column appears twice");
            ok = false;
        }
    }
    for (name, slot) in [(TIME_PERIOD, time_col), ("OBS_VALUE", value_col)] {
        if slot.is_none() {
            sink.problem(file, 1, None, format!("the header has no {name} column"));
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(Header { names, flow_col, structure_col, action_col, time_col: time_col?, value_col: value_col?, status_col, mult_col, dims })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flow_ids() {
        assert_eq!(flow_id("ALO:UNE_RATE(1.0)"), "UNE_RATE");
        assert_eq!(flow_id("UNE_RATE"), "UNE_RATE");
        assert_eq!(flow_id("ALO:UNE_RATE"), "UNE_RATE");
        assert_eq!(flow_id("ALO:UNE_RATE(1.0): Unemployment rate"), "UNE_RATE");
    }
}
