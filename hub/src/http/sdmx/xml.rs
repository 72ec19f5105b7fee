//! XML text for SDMX-ML messages: escaping, URNs and artefact ids, shared
//! by the structure and data writers.

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `urn:sdmx:org.sdmx.infomodel.<class>=<agency>:<id>(<version>)`.
pub(crate) fn urn(class: &str, agency: &str, id: &str, version: &str) -> String {
    format!("urn:sdmx:org.sdmx.infomodel.{class}={}:{}({})", esc(agency), esc(id), esc(version))
}

/// The data structure definition of a dataflow.
pub(crate) fn dsd_id(flow: &str) -> String {
    format!("DSD_{flow}")
}
