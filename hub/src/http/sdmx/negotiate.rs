//! Content negotiation with the exact SDMX media types, and the `format`
//! query parameter that browsers and download links use instead.

use axum::http::{HeaderMap, StatusCode, header};

use crate::http::ApiError;

/// A data format this hub writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataFormat {
    Generic,
    StructureSpecific,
    Json,
    Csv1,
    Csv2,
}

impl DataFormat {
    pub fn media_type(self) -> &'static str {
        match self {
            DataFormat::Generic => "application/vnd.sdmx.genericdata+xml; version=2.1",
            DataFormat::StructureSpecific => "application/vnd.sdmx.structurespecificdata+xml; version=2.1",
            DataFormat::Json => "application/vnd.sdmx.data+json; version=1.0.0",
            DataFormat::Csv1 => "application/vnd.sdmx.data+csv; version=1.0.0",
            DataFormat::Csv2 => "application/vnd.sdmx.data+csv; version=2.0.0",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            DataFormat::Generic | DataFormat::StructureSpecific => "xml",
            DataFormat::Json => "json",
            DataFormat::Csv1 | DataFormat::Csv2 => "csv",
        }
    }
}

pub(crate) const STRUCTURE_MEDIA_TYPE: &str = "application/vnd.sdmx.structure+xml; version=2.1";

/// One entry of an Accept header: type/subtype, its `version` parameter, q.
#[derive(Debug)]
struct Range {
    mime: String,
    version: Option<String>,
    q: f32,
}

fn ranges(headers: &HeaderMap) -> Vec<Range> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return vec![Range { mime: "*/*".into(), version: None, q: 1.0 }];
    };
    let mut out: Vec<Range> = accept
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let mime = pieces.next()?.trim().to_ascii_lowercase();
            if mime.is_empty() {
                return None;
            }
            let mut r = Range { mime, version: None, q: 1.0 };
            for p in pieces {
                if let Some((k, v)) = p.split_once('=') {
                    match k.trim().to_ascii_lowercase().as_str() {
                        "version" => r.version = Some(v.trim().trim_matches('"').to_owned()),
                        "q" => r.q = v.trim().parse().unwrap_or(0.0),
                        _ => {}
                    }
                }
            }
            Some(r)
        })
        .filter(|r| r.q > 0.0)
        .collect();
    // Stable: equal q keeps the client's order.
    out.sort_by(|a, b| b.q.total_cmp(&a.q));
    out
}

fn not_acceptable(what: &str, offered: &[&str]) -> ApiError {
    ApiError::new(StatusCode::NOT_ACCEPTABLE, format!("{what}; this hub offers: {}", offered.join(", "))).sdmx()
}

const DATA_OFFERED: [&str; 5] = [
    "application/vnd.sdmx.genericdata+xml;version=2.1",
    "application/vnd.sdmx.structurespecificdata+xml;version=2.1",
    "application/vnd.sdmx.data+json;version=1.0.0",
    "application/vnd.sdmx.data+csv;version=1.0.0",
    "application/vnd.sdmx.data+csv;version=2.0.0",
];

/// The data format for a request: `format=` wins over `Accept`.
pub(crate) fn data_format(headers: &HeaderMap, format: Option<&str>) -> Result<DataFormat, ApiError> {
    if let Some(f) = format {
        return match f.to_ascii_lowercase().as_str() {
            "genericdata" | "generic" | "sdmx-ml" | "xml" => Ok(DataFormat::Generic),
            "structurespecificdata" | "structurespecific" => Ok(DataFormat::StructureSpecific),
            "jsondata" | "sdmx-json" | "json" => Ok(DataFormat::Json),
            "csv" | "csvfile" | "sdmx-csv" => Ok(DataFormat::Csv1),
            "sdmx-csv2" | "csv2" => Ok(DataFormat::Csv2),
            other => Err(not_acceptable(
                &format!("format={other} is not a data format"),
                &["genericdata", "structurespecificdata", "jsondata", "sdmx-csv", "sdmx-csv2"],
            )),
        };
    }
    let wanted = ranges(headers);
    for r in &wanted {
        let v = r.version.as_deref();
        let found = match r.mime.as_str() {
            "application/vnd.sdmx.genericdata+xml" if matches!(v, None | Some("2.1")) => Some(DataFormat::Generic),
            "application/vnd.sdmx.structurespecificdata+xml" if matches!(v, None | Some("2.1")) => Some(DataFormat::StructureSpecific),
            "application/vnd.sdmx.data+json" if matches!(v, None | Some("1.0.0") | Some("1.0.0-wd") | Some("1.0")) => Some(DataFormat::Json),
            "application/vnd.sdmx.data+csv" if matches!(v, None | Some("1.0.0") | Some("1.0")) => Some(DataFormat::Csv1),
            "application/vnd.sdmx.data+csv" if matches!(v, Some("2.0.0") | Some("2.0")) => Some(DataFormat::Csv2),
            "application/json" => Some(DataFormat::Json),
            "text/csv" => Some(DataFormat::Csv1),
            "application/xml" | "text/xml" | "application/*" | "text/*" | "*/*" => Some(DataFormat::Generic),
            _ => None,
        };
        if let Some(f) = found {
            return Ok(f);
        }
    }
    Err(not_acceptable("none of the media types in Accept is a data format this hub writes", &DATA_OFFERED))
}

/// Structures come only as SDMX-ML 2.1.
pub(crate) fn structure_format(headers: &HeaderMap, format: Option<&str>) -> Result<(), ApiError> {
    if let Some(f) = format {
        return match f.to_ascii_lowercase().as_str() {
            "sdmx-ml" | "xml" | "structure" | "sdmx-2.1" => Ok(()),
            other => Err(not_acceptable(&format!("format={other} is not a structure format"), &[STRUCTURE_MEDIA_TYPE])),
        };
    }
    for r in ranges(headers) {
        let v = r.version.as_deref();
        let ok = match r.mime.as_str() {
            "application/vnd.sdmx.structure+xml" => matches!(v, None | Some("2.1")),
            "application/xml" | "text/xml" | "application/*" | "text/*" | "*/*" => true,
            _ => false,
        };
        if ok {
            return Ok(());
        }
    }
    Err(not_acceptable("structures are served as SDMX-ML 2.1 only", &["application/vnd.sdmx.structure+xml;version=2.1"]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn exact_media_types_and_preferences() {
        assert_eq!(data_format(&HeaderMap::new(), None).unwrap(), DataFormat::Generic);
        assert_eq!(data_format(&accept("application/vnd.sdmx.data+csv;version=2.0.0"), None).unwrap(), DataFormat::Csv2);
        assert_eq!(data_format(&accept("application/vnd.sdmx.data+csv; version=1.0.0"), None).unwrap(), DataFormat::Csv1);
        assert_eq!(
            data_format(&accept("application/vnd.sdmx.genericdata+xml;version=2.1;q=0.5, application/vnd.sdmx.structurespecificdata+xml;version=2.1"), None)
                .unwrap(),
            DataFormat::StructureSpecific
        );
        assert_eq!(data_format(&accept("application/vnd.sdmx.data+json;version=1.0.0-wd"), None).unwrap(), DataFormat::Json);
        let e = data_format(&accept("application/vnd.sdmx.data+json;version=2.0.0"), None).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_ACCEPTABLE);
        assert!(data_format(&accept("image/png"), None).is_err());
        assert_eq!(data_format(&accept("image/png"), Some("csv")).unwrap(), DataFormat::Csv1, "format= wins");
        assert!(structure_format(&accept("application/vnd.sdmx.structure+json;version=1.0.0"), None).is_err());
        assert!(structure_format(&accept("application/vnd.sdmx.structure+xml;version=2.1"), None).is_ok());
    }
}
