//! ILOSTAT bulk-download CSV:
//! `ref_area, indicator, sex, classif1, classif2, time, obs_value, obs_status`
//! (plus `source` and `note_*` columns, which are ignored).
//!
//! The dictionary maps each indicator to a dataflow and each `sex` /
//! `classif` code to a (dimension, code) pair; dimensions the row does not
//! mention are at their total.

use std::io::Read;

use super::Sink;

pub(super) fn parse(sink: &mut Sink<'_>, file: usize, reader: impl Read) {
    let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(reader);
    let mut record = csv::StringRecord::new();
    match csv.read_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return sink.problem(file, 1, None, "empty file: no header row"),
        Err(e) => return sink.problem(file, 1, None, format!("unreadable CSV: {e}")),
    }
    let names: Vec<String> =
        record.iter().enumerate().map(|(i, s)| if i == 0 { s.trim_start_matches('\u{feff}') } else { s }.trim().to_ascii_lowercase()).collect();
    let find = |n: &str| names.iter().position(|c| c == n);
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        let known = matches!(name.as_str(), "ref_area" | "indicator" | "sex" | "classif1" | "classif2" | "time" | "obs_value" | "obs_status" | "source")
            || name.starts_with("note_")
            || name.ends_with(".label");
        if !known {
            sink.problem(file, 1, Some((i + 1, name)), "unknown column for an ILOSTAT bulk file");
            ok = false;
        }
    }
    let mut required = |n: &str| {
        let c = find(n);
        if c.is_none() {
            sink.problem(file, 1, None, format!("the header has no {n} column"));
        }
        c
    };
    let (Some(area_c), Some(ind_c), Some(time_c), Some(value_c)) = (required("ref_area"), required("indicator"), required("time"), required("obs_value"))
    else {
        return;
    };
    if !ok {
        return;
    }
    let classif_cols: Vec<usize> = ["sex", "classif1", "classif2"].iter().filter_map(|n| find(n)).collect();
    let status_c = find("obs_status");
    let col = |i: usize| Some((i + 1, names[i].as_str()));

    let mut flows: std::collections::HashMap<String, Option<super::FlowInfo<'_>>> = std::collections::HashMap::new();
    let mut line = 1;
    loop {
        match csv.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let at = e.position().map_or(line + 1, |p| p.line());
                return sink.problem(file, at, None, format!("unreadable CSV (or not UTF-8): {e}"));
            }
        }
        line = record.position().map_or(line + 1, |p| p.line());
        if record.len() == 1 && record.get(0) == Some("") {
            continue;
        }
        if record.len() != names.len() {
            sink.problem(file, line, None, format!("{} fields, the header has {}", record.len(), names.len()));
            if sink.full() {
                return;
            }
            continue;
        }
        let indicator = record[ind_c].trim();
        if !flows.contains_key(indicator) {
            let info = sink.dict.dataflow_for_ilostat(indicator).map(|f| sink.flow_info(f));
            flows.insert(indicator.to_owned(), info);
        }
        let Some(info) = flows.get(indicator).and_then(Option::as_ref) else {
            sink.problem(file, line, col(ind_c), format!("ILOSTAT indicator {indicator:?} is not mapped in the dictionary"));
            if sink.full() {
                return;
            }
            continue;
        };
        let flow = info.flow;
        // Start from the totals, then apply the row's classifications.
        let mut codes: Vec<(&str, Option<(usize, &str)>)> =
            flow.dimensions.iter().map(|d| (sink.dict.dimension(d).and_then(|d| d.total.as_deref()).unwrap_or(""), None)).collect();
        codes[0] = (record[area_c].trim(), col(area_c));
        let mut row_ok = true;
        for &c in &classif_cols {
            let raw = record[c].trim();
            if raw.is_empty() {
                continue;
            }
            match sink.dict.ilostat_code(raw) {
                Some((dim, code)) => match flow.position(dim) {
                    Some(pos) => codes[pos] = (code, col(c)),
                    None => {
                        sink.problem(file, line, col(c), format!("{raw} classifies by {dim}, which {} does not have", flow.id));
                        row_ok = false;
                    }
                },
                None => {
                    sink.problem(file, line, col(c), format!("ILOSTAT code {raw:?} is not mapped in the dictionary"));
                    row_ok = false;
                }
            }
        }
        if row_ok {
            sink.observation(
                file,
                line,
                info,
                &codes,
                (&record[time_c], col(time_c)),
                (&record[value_c], col(value_c)),
                status_c.map_or(("", None), |c| (&record[c], col(c))),
                (None, None),
            );
        }
        if sink.full() {
            return;
        }
    }
}
