//! SDMX-CSV 1.0 (`DATAFLOW,…`) and 2.0 (`STRUCTURE,STRUCTURE_ID[,ACTION],…`).
//!
//! One file may mix dataflows: every row names its own, must fill the
//! columns of that dataflow's dimensions and leave other dimension columns
//! empty. Header and code cells may carry labels (`F: Female`); the code is
//! the part before `": "`.

use std::collections::HashMap;
use std::io::Read;

use tabadul_proto::{Dataflow, TIME_PERIOD};

use super::Sink;

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
    let mut record = csv::ByteRecord::new();
    match csv.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return sink.problem(file, 1, None, "empty file: no header row"),
        Err(e) => return sink.problem(file, 1, None, format!("unreadable CSV: {e}")),
    }
    let Some(header) = parse_header(sink, file, &record) else { return };
    let mut flows: HashMap<Vec<u8>, Option<&Dataflow>> = HashMap::new();
    let mut line: u64 = 1;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let at = e.position().map_or(line + 1, |p| p.line());
                sink.problem(file, at, None, format!("unreadable CSV: {e}"));
                return;
            }
        }
        line = record.position().map_or(line + 1, |p| p.line());
        if record.len() == 1 && record.get(0).is_some_and(<[u8]>::is_empty) {
            continue; // a blank line
        }
        if record.len() != header.names.len() {
            sink.problem(file, line, None, format!("{} fields, the header has {}", record.len(), header.names.len()));
            if sink.full() { return; }
            continue;
        }
        row(sink, file, line, &header, &record, &mut flows);
        if sink.full() {
            return;
        }
    }
}

fn col<'h>(h: &'h Header, i: usize) -> Option<(usize, &'h str)> {
    Some((i + 1, h.names[i].as_str()))
}

fn text(record: &csv::ByteRecord, i: usize) -> Result<&str, ()> {
    std::str::from_utf8(&record[i]).map_err(|_| ())
}

fn code(cell: &str) -> &str {
    cell.split_once(": ").map_or(cell, |(c, _)| c).trim()
}

fn row<'d>(
    sink: &mut Sink<'d>,
    file: usize,
    line: u64,
    h: &Header,
    record: &csv::ByteRecord,
    flows: &mut HashMap<Vec<u8>, Option<&'d Dataflow>>,
) {
    for i in 0..record.len() {
        if text(record, i).is_err() {
            return sink.problem(file, line, col(h, i), "not valid UTF-8");
        }
    }
    let cell = |i: usize| text(record, i).unwrap_or_default();
    if let Some(i) = h.structure_col
        && !cell(i).trim().eq_ignore_ascii_case("dataflow")
    {
        return sink.problem(file, line, col(h, i), format!("STRUCTURE {:?}: only dataflow is supported", cell(i)));
    }
    if let Some(i) = h.action_col {
        let action = cell(i).trim();
        if !matches!(action, "" | "I" | "A" | "R" | "M") {
            return sink.problem(file, line, col(h, i), format!(
                "ACTION {action:?} is not supported: use I, A, R or M (withdraw data with `tabadul-node withdraw`)"));
        }
    }
    let flow_cell = &record[h.flow_col];
    let flow = match flows.get(flow_cell) {
        Some(f) => *f,
        None => {
            let id = flow_id(cell(h.flow_col));
            let f = sink.dict.dataflow(id);
            flows.insert(flow_cell.to_vec(), f);
            f
        }
    };
    let Some(flow) = flow else {
        return sink.problem(file, line, col(h, h.flow_col), format!(
            "unknown dataflow {:?} (not in dictionary {})", cell(h.flow_col), sink.dict.version));
    };
    let mut codes = Vec::with_capacity(flow.dimensions.len());
    for dim in &flow.dimensions {
        match h.dims.get(dim) {
            Some(&i) => codes.push((code(cell(i)), col(h, i))),
            None => return sink.problem(file, line, None, format!("column {dim}, a dimension of {}, is missing from the header", flow.id)),
        }
    }
    for (dim, &i) in &h.dims {
        if !flow.dimensions.contains(dim) && !cell(i).trim().is_empty() {
            return sink.problem(file, line, col(h, i), format!("{} has no dimension {dim}; leave this cell empty", flow.id));
        }
    }
    sink.observation(
        file,
        line,
        flow,
        &codes,
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

fn parse_header(sink: &mut Sink<'_>, file: usize, record: &csv::ByteRecord) -> Option<Header> {
    let mut names = Vec::with_capacity(record.len());
    for (i, raw) in record.iter().enumerate() {
        let Ok(s) = std::str::from_utf8(raw) else {
            sink.problem(file, 1, Some((i + 1, "?")), "header is not valid UTF-8");
            return None;
        };
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
            sink.problem(file, 1, Some((1, names.first().map_or("", String::as_str))),
                "an SDMX-CSV header starts with DATAFLOW (1.0) or STRUCTURE (2.0)");
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
                sink.problem(file, 1, Some((i + 1, name)),
                    "unknown column: not a dimension of the dictionary, TIME_PERIOD, OBS_VALUE, OBS_STATUS or UNIT_MULT");
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
    Some(Header {
        names,
        flow_col,
        structure_col,
        action_col,
        time_col: time_col?,
        value_col: value_col?,
        status_col,
        mult_col,
        dims,
    })
}

#[cfg(test)]
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
