//! Writers for SDMX messages: XML escaping, URNs, headers, and the data
//! formats (SDMX-ML 2.1 Generic and StructureSpecific, SDMX-JSON 1.0,
//! SDMX-CSV 1.0 and 2.0) from one [`DataSet`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::negotiate::DataFormat;
use super::xml::{esc, urn};

pub(crate) const NS_MESSAGE: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/message";
pub(crate) const NS_COMMON: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/common";
const NS_STRUCTURE: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/structure";
const NS_GENERIC: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/data/generic";
const NS_SPECIFIC: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/data/structurespecific";
const NS_FOOTER: &str = "http://www.sdmx.org/resources/sdmxml/schemas/v2_1/message/footer";
const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

fn prepared() -> String {
    time::OffsetDateTime::now_utc().replace_nanosecond(0).ok().and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_default()
}

fn message_id() -> String {
    format!("IREF{}", hex::encode(&tabadul_audit::new_salt()[..6]))
}

fn header(out: &mut String, sender: &str, structure: Option<&str>) {
    let _ = writeln!(
        out,
        "<mes:Header><mes:ID>{}</mes:ID><mes:Test>false</mes:Test><mes:Prepared>{}</mes:Prepared><mes:Sender id=\"{}\"/>{}</mes:Header>",
        message_id(),
        prepared(),
        esc(sender),
        structure.unwrap_or_default()
    );
}

pub(crate) fn structure_header(sender: &str) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mes:Structure xmlns:mes=\"{NS_MESSAGE}\" xmlns:str=\"{NS_STRUCTURE}\" xmlns:com=\"{NS_COMMON}\">\n"
    );
    header(&mut out, sender, None);
    out
}

/// One observation ready to write.
#[derive(Debug, Clone)]
pub(crate) struct Obs {
    pub period: String,
    /// NaN when withheld.
    pub value: f64,
    pub obs_status: String,
    pub conf_status: String,
    pub unit_mult: i32,
    pub flags: Vec<String>,
}

impl Obs {
    fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut a = Vec::new();
        if !self.obs_status.is_empty() {
            a.push(("OBS_STATUS", self.obs_status.clone()));
        }
        if !self.conf_status.is_empty() {
            a.push(("CONF_STATUS", self.conf_status.clone()));
        }
        a.push(("UNIT_MULT", self.unit_mult.to_string()));
        if !self.flags.is_empty() {
            a.push(("DISCLOSURE_FLAGS", self.flags.join(" ")));
        }
        a
    }
}

/// How much to write (`detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    Full,
    DataOnly,
    SeriesKeysOnly,
    NoData,
}

impl Detail {
    fn observations(self) -> bool {
        matches!(self, Detail::Full | Detail::DataOnly)
    }
    fn attributes(self) -> bool {
        matches!(self, Detail::Full | Detail::NoData)
    }
}

/// A member's part in the answer, reported in every format that can carry
/// it (the SDMX-ML footer, SDMX-JSON annotations), and always in a
/// response header. (Not as data-set annotations in SDMX-ML: sdmx1 cannot
/// attach those and fails the whole message.)
#[derive(Debug, Clone)]
pub(crate) struct MemberNote {
    pub member: String,
    pub state: &'static str,
    pub detail: String,
}

/// What a data message says.
#[derive(Debug)]
pub(crate) struct DataSet<'a> {
    pub agency: &'a str,
    pub version: &'a str,
    pub flow: &'a str,
    pub flow_name: &'a str,
    /// Series-key dimensions in DSD order (REF_AREA first).
    pub dimensions: &'a [String],
    /// Series key → observations by period.
    pub series: BTreeMap<Vec<String>, Vec<Obs>>,
    pub members: Vec<MemberNote>,
    pub detail: Detail,
    /// Flat: every dimension at the observation.
    pub all_dimensions: bool,
    /// Names of codes, for SDMX-JSON: dimension → code → name.
    pub code_names: BTreeMap<String, BTreeMap<String, String>>,
}

impl DataSet<'_> {
    fn dsd(&self) -> String {
        super::xml::dsd_id(self.flow)
    }
    fn structure_id(&self) -> String {
        format!("{}_{}_{}", self.agency, self.dsd(), self.version.replace('.', "_"))
    }
    fn dsd_ref(&self) -> String {
        format!(
            "<Ref agencyID=\"{}\" id=\"{}\" version=\"{}\" class=\"DataStructure\" package=\"datastructure\"/>",
            esc(self.agency),
            esc(&self.dsd()),
            esc(self.version)
        )
    }
    fn obs_dimension(&self) -> &'static str {
        if self.all_dimensions { "AllDimensions" } else { "TIME_PERIOD" }
    }
    fn footer(&self, out: &mut String) {
        if self.members.is_empty() {
            return;
        }
        out.push_str("<footer:Footer>");
        for m in &self.members {
            let (code, severity) = match m.state {
                "answered" => (200, "Information"),
                "refused" => (403, "Warning"),
                "timed-out" => (504, "Warning"),
                _ => (503, "Warning"),
            };
            let _ = write!(
                out,
                "<footer:Message code=\"{code}\" severity=\"{severity}\"><com:Text xml:lang=\"en\">{} {}: {}</com:Text></footer:Message>",
                esc(&m.member),
                m.state,
                esc(&m.detail)
            );
        }
        out.push_str("</footer:Footer>\n");
    }
}

fn number(v: f64) -> String {
    if v.is_nan() { "NaN".into() } else { format!("{v}") }
}

pub(crate) fn render(ds: &DataSet<'_>, format: DataFormat) -> String {
    match format {
        DataFormat::Generic => generic(ds),
        DataFormat::StructureSpecific => structure_specific(ds),
        DataFormat::Json => json(ds).to_string(),
        DataFormat::Csv1 => csv(ds, false),
        DataFormat::Csv2 => csv(ds, true),
    }
}

fn generic(ds: &DataSet<'_>) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mes:GenericData xmlns:mes=\"{NS_MESSAGE}\" xmlns:gen=\"{NS_GENERIC}\" xmlns:com=\"{NS_COMMON}\" xmlns:footer=\"{NS_FOOTER}\">\n"
    );
    let structure = format!(
        "<mes:Structure structureID=\"{}\" dimensionAtObservation=\"{}\"><com:Structure>{}</com:Structure></mes:Structure>",
        ds.structure_id(),
        ds.obs_dimension(),
        ds.dsd_ref()
    );
    header(&mut out, ds.agency, Some(&structure));
    let _ = write!(out, "<mes:DataSet structureRef=\"{}\" action=\"Information\">", ds.structure_id());
    let values = |out: &mut String, tag: &str, pairs: &mut dyn Iterator<Item = (&str, &str)>| {
        let _ = write!(out, "<gen:{tag}>");
        for (id, v) in pairs {
            let _ = write!(out, "<gen:Value id=\"{}\" value=\"{}\"/>", esc(id), esc(v));
        }
        let _ = write!(out, "</gen:{tag}>");
    };
    let obs_tail = |out: &mut String, o: &Obs| {
        if ds.detail.observations() {
            let _ = write!(out, "<gen:ObsValue value=\"{}\"/>", number(o.value));
        }
        if ds.detail.attributes() {
            let attrs = o.attributes();
            values(out, "Attributes", &mut attrs.iter().map(|(k, v)| (*k, v.as_str())));
        }
    };
    for (key, observations) in &ds.series {
        if ds.all_dimensions {
            if !ds.detail.observations() && ds.detail != Detail::NoData {
                continue;
            }
            for o in observations {
                out.push_str("<gen:Obs>");
                values(
                    &mut out,
                    "ObsKey",
                    &mut ds.dimensions.iter().map(String::as_str).zip(key.iter().map(String::as_str)).chain([("TIME_PERIOD", o.period.as_str())]),
                );
                obs_tail(&mut out, o);
                out.push_str("</gen:Obs>\n");
            }
            continue;
        }
        out.push_str("<gen:Series>");
        values(&mut out, "SeriesKey", &mut ds.dimensions.iter().map(String::as_str).zip(key.iter().map(String::as_str)));
        if ds.detail.observations() {
            for o in observations {
                let _ = write!(out, "<gen:Obs><gen:ObsDimension value=\"{}\"/>", esc(&o.period));
                obs_tail(&mut out, o);
                out.push_str("</gen:Obs>");
            }
        }
        out.push_str("</gen:Series>\n");
    }
    out.push_str("</mes:DataSet>\n");
    ds.footer(&mut out);
    out.push_str("</mes:GenericData>\n");
    out
}

fn structure_specific(ds: &DataSet<'_>) -> String {
    let ns = format!("{}:ObsLevelDim:{}", urn("datastructure.DataStructure", ds.agency, &ds.dsd(), ds.version), ds.obs_dimension());
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mes:StructureSpecificData xmlns:mes=\"{NS_MESSAGE}\" xmlns:ss=\"{NS_SPECIFIC}\" xmlns:com=\"{NS_COMMON}\" xmlns:footer=\"{NS_FOOTER}\" xmlns:xsi=\"{NS_XSI}\" xmlns:ns1=\"{ns}\">\n"
    );
    let structure = format!(
        "<mes:Structure structureID=\"{}\" namespace=\"{ns}\" dimensionAtObservation=\"{}\"><com:Structure>{}</com:Structure></mes:Structure>",
        ds.structure_id(),
        ds.obs_dimension(),
        ds.dsd_ref()
    );
    header(&mut out, ds.agency, Some(&structure));
    let _ = write!(
        out,
        "<mes:DataSet ss:structureRef=\"{}\" xsi:type=\"ns1:DataSetType\" ss:dataScope=\"DataStructure\" ss:action=\"Information\">",
        ds.structure_id()
    );
    let obs_attrs = |out: &mut String, o: &Obs| {
        if ds.detail.observations() {
            let _ = write!(out, " OBS_VALUE=\"{}\"", number(o.value));
        }
        if ds.detail.attributes() {
            for (k, v) in o.attributes() {
                let _ = write!(out, " {k}=\"{}\"", esc(&v));
            }
        }
    };
    for (key, observations) in &ds.series {
        let key_attrs: String = ds.dimensions.iter().zip(key).map(|(d, c)| format!(" {}=\"{}\"", esc(d), esc(c))).collect();
        if ds.all_dimensions {
            for o in observations {
                let _ = write!(out, "<Obs{key_attrs} TIME_PERIOD=\"{}\"", esc(&o.period));
                obs_attrs(&mut out, o);
                out.push_str("/>\n");
            }
            continue;
        }
        let _ = write!(out, "<Series{key_attrs}>");
        if ds.detail.observations() {
            for o in observations {
                let _ = write!(out, "<Obs TIME_PERIOD=\"{}\"", esc(&o.period));
                obs_attrs(&mut out, o);
                out.push_str("/>");
            }
        }
        out.push_str("</Series>\n");
    }
    out.push_str("</mes:DataSet>\n");
    ds.footer(&mut out);
    out.push_str("</mes:StructureSpecificData>\n");
    out
}

/// SDMX-JSON 1.0: values are indices into the structure's value lists.
fn json(ds: &DataSet<'_>) -> Value {
    let name_of = |dim: &str, code: &str| ds.code_names.get(dim).and_then(|m| m.get(code)).cloned().unwrap_or_else(|| code.to_owned());
    // Value lists per dimension, in first-seen sorted order.
    let mut codes: Vec<Vec<String>> = vec![Vec::new(); ds.dimensions.len()];
    let mut periods: Vec<String> = Vec::new();
    for (key, obs) in &ds.series {
        for (i, c) in key.iter().enumerate() {
            if !codes[i].contains(c) {
                codes[i].push(c.clone());
            }
        }
        for o in obs {
            if !periods.contains(&o.period) {
                periods.push(o.period.clone());
            }
        }
    }
    periods.sort();
    let attr_ids = ["OBS_STATUS", "CONF_STATUS", "UNIT_MULT", "DISCLOSURE_FLAGS"];
    let mut attr_values: Vec<Vec<String>> = vec![Vec::new(); attr_ids.len()];
    let obs_array = |o: &Obs, attr_values: &mut Vec<Vec<String>>| -> Value {
        let mut arr = vec![if o.value.is_nan() || !ds.detail.observations() { Value::Null } else { json!(o.value) }];
        if ds.detail.attributes() {
            let attrs = o.attributes();
            for (i, id) in attr_ids.iter().enumerate() {
                match attrs.iter().find(|(k, _)| k == id) {
                    Some((_, v)) => {
                        let pos = attr_values[i].iter().position(|x| x == v).unwrap_or_else(|| {
                            attr_values[i].push(v.clone());
                            attr_values[i].len() - 1
                        });
                        arr.push(json!(pos));
                    }
                    None => arr.push(Value::Null),
                }
            }
        }
        Value::Array(arr)
    };
    let key_index = |key: &[String]| -> Vec<usize> { key.iter().enumerate().map(|(i, c)| codes[i].iter().position(|x| x == c).unwrap_or(0)).collect() };
    let mut data_set = serde_json::Map::new();
    data_set.insert("action".into(), json!("Information"));
    data_set.insert("annotations".into(), json!((0..ds.members.len()).collect::<Vec<_>>()));
    if ds.all_dimensions {
        let mut observations = serde_json::Map::new();
        for (key, obs) in &ds.series {
            let k = key_index(key);
            for o in obs {
                let p = periods.iter().position(|x| *x == o.period).unwrap_or(0);
                let idx = k.iter().map(usize::to_string).chain([p.to_string()]).collect::<Vec<_>>().join(":");
                observations.insert(idx, obs_array(o, &mut attr_values));
            }
        }
        data_set.insert("observations".into(), Value::Object(observations));
    } else {
        let mut series = serde_json::Map::new();
        for (key, obs) in &ds.series {
            let idx = key_index(key).iter().map(usize::to_string).collect::<Vec<_>>().join(":");
            let mut observations = serde_json::Map::new();
            if ds.detail.observations() || ds.detail == Detail::NoData {
                for o in obs {
                    let p = periods.iter().position(|x| *x == o.period).unwrap_or(0);
                    observations.insert(p.to_string(), obs_array(o, &mut attr_values));
                }
            }
            series.insert(idx, json!({ "attributes": [], "observations": observations }));
        }
        data_set.insert("series".into(), Value::Object(series));
    }
    let dimension_values = |i: usize, d: &str| -> Value {
        json!({
            "id": d, "name": d, "keyPosition": i,
            "values": codes[i].iter().map(|c| json!({"id": c, "name": name_of(d, c)})).collect::<Vec<_>>(),
        })
    };
    let time = json!({
        "id": "TIME_PERIOD", "name": "Time period", "keyPosition": ds.dimensions.len(), "role": "time",
        "values": periods.iter().map(|p| json!({"id": p, "name": p})).collect::<Vec<_>>(),
    });
    let series_dims: Vec<Value> = ds.dimensions.iter().enumerate().map(|(i, d)| dimension_values(i, d)).collect();
    let (series_level, obs_level) =
        if ds.all_dimensions { (Vec::new(), series_dims.into_iter().chain([time]).collect::<Vec<_>>()) } else { (series_dims, vec![time]) };
    let observation_attributes: Vec<Value> = if ds.detail.attributes() {
        attr_ids
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"id": id, "name": id, "values": attr_values[i].iter().map(|v| json!({"id": v, "name": v})).collect::<Vec<_>>()}))
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "header": {
            "id": message_id(), "test": false, "prepared": prepared(),
            "sender": {"id": ds.agency},
        },
        "dataSets": [Value::Object(data_set)],
        "structure": {
            "links": [{"rel": "datastructure", "urn": urn("datastructure.DataStructure", ds.agency, &ds.dsd(), ds.version)}],
            "name": ds.flow_name,
            "dimensions": {"dataSet": [], "series": series_level, "observation": obs_level},
            "attributes": {"dataSet": [], "series": [], "observation": observation_attributes},
            "annotations": ds.members.iter().map(|m| json!({
                "title": m.member, "type": "TABADUL_MEMBER_STATUS", "text": format!("{}: {}", m.state, m.detail),
            })).collect::<Vec<_>>(),
        },
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

fn csv(ds: &DataSet<'_>, v2: bool) -> String {
    let flow_ref = format!("{}:{}({})", ds.agency, ds.flow, ds.version);
    let mut cols: Vec<String> = if v2 { vec!["STRUCTURE".into(), "STRUCTURE_ID".into(), "ACTION".into()] } else { vec!["DATAFLOW".into()] };
    cols.extend(ds.dimensions.iter().cloned());
    cols.push("TIME_PERIOD".into());
    if ds.detail.observations() {
        cols.push("OBS_VALUE".into());
    }
    if ds.detail.attributes() {
        cols.extend(["OBS_STATUS", "CONF_STATUS", "UNIT_MULT", "DISCLOSURE_FLAGS"].map(String::from));
    }
    let mut out = cols.join(",");
    out.push('\n');
    for (key, obs) in &ds.series {
        for o in obs {
            let mut row: Vec<String> = if v2 { vec!["dataflow".into(), flow_ref.clone(), "I".into()] } else { vec![flow_ref.clone()] };
            row.extend(key.iter().map(|c| csv_field(c)));
            row.push(csv_field(&o.period));
            if ds.detail.observations() {
                row.push(if o.value.is_nan() { String::new() } else { format!("{}", o.value) });
            }
            if ds.detail.attributes() {
                row.push(csv_field(&o.obs_status));
                row.push(csv_field(&o.conf_status));
                row.push(o.unit_mult.to_string());
                row.push(csv_field(&o.flags.join(" ")));
            }
            out.push_str(&row.join(","));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(detail: Detail, all_dimensions: bool) -> DataSet<'static> {
        static DIMS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let dims = DIMS.get_or_init(|| vec!["REF_AREA".into(), "SEX".into()]);
        let obs =
            |p: &str, v: f64, conf: &str| Obs { period: p.into(), value: v, obs_status: "A".into(), conf_status: conf.into(), unit_mult: 3, flags: vec![] };
        DataSet {
            agency: "ALO",
            version: "2026.3",
            flow: "UNE_PERS",
            flow_name: "Unemployed <persons> & \"others\"",
            dimensions: dims,
            series: BTreeMap::from([
                (vec!["MAR".into(), "F".into()], vec![obs("2020", 1.5, ""), obs("2021", f64::NAN, "C")]),
                (vec!["TUN".into(), "F".into()], vec![obs("2020", 2.0, "")]),
            ]),
            members: vec![MemberNote { member: "EGY".into(), state: "refused", detail: "default deny <x>".into() }],
            detail,
            all_dimensions,
            code_names: BTreeMap::new(),
        }
    }

    #[test]
    fn csv_rows_and_withheld_cells() {
        let v1 = csv(&sample(Detail::Full, false), false);
        let lines: Vec<&str> = v1.lines().collect();
        assert_eq!(lines[0], "DATAFLOW,REF_AREA,SEX,TIME_PERIOD,OBS_VALUE,OBS_STATUS,CONF_STATUS,UNIT_MULT,DISCLOSURE_FLAGS");
        assert_eq!(lines[1], "ALO:UNE_PERS(2026.3),MAR,F,2020,1.5,A,,3,");
        assert_eq!(lines[2], "ALO:UNE_PERS(2026.3),MAR,F,2021,,A,C,3,", "a withheld value is empty, its status says why");
        let v2 = csv(&sample(Detail::DataOnly, false), true);
        assert!(v2.starts_with("STRUCTURE,STRUCTURE_ID,ACTION,REF_AREA,SEX,TIME_PERIOD,OBS_VALUE\ndataflow,ALO:UNE_PERS(2026.3),I,MAR,F,2020,1.5\n"), "{v2}");
    }

    #[test]
    fn xml_is_escaped_and_reports_members() {
        let g = generic(&sample(Detail::Full, false));
        assert!(g.contains("<gen:ObsValue value=\"NaN\"/>"));
        assert!(g.contains("default deny &lt;x&gt;"));
        assert!(g.contains("<footer:Message code=\"403\" severity=\"Warning\">"));
        assert_eq!(g.matches("<gen:Series>").count(), 2);
        let s = structure_specific(&sample(Detail::SeriesKeysOnly, false));
        assert!(s.contains("<Series REF_AREA=\"MAR\" SEX=\"F\"></Series>"), "{s}");
        assert!(!s.contains("<Obs "));
        let flat = structure_specific(&sample(Detail::Full, true));
        assert!(flat.contains("ObsLevelDim:AllDimensions"));
        // The data set's attributes are the structure-specific namespace's
        // (the official XSD refuses an unqualified `action`).
        assert!(flat.contains("ss:dataScope=\"DataStructure\" ss:action=\"Information\"") && !flat.contains(" action="), "{flat}");
        assert!(flat.contains("<Obs REF_AREA=\"TUN\" SEX=\"F\" TIME_PERIOD=\"2020\" OBS_VALUE=\"2\" OBS_STATUS=\"A\" UNIT_MULT=\"3\"/>"), "{flat}");
    }

    #[test]
    fn json_indices_point_at_the_structure() {
        let j = json(&sample(Detail::Full, false));
        let series = &j["dataSets"][0]["series"];
        assert_eq!(series["0:0"]["observations"]["0"][0], json!(1.5));
        assert_eq!(series["0:0"]["observations"]["1"][0], Value::Null, "withheld is null");
        assert_eq!(series["1:0"]["observations"]["0"][0], json!(2.0));
        assert_eq!(j["structure"]["dimensions"]["series"][0]["values"][1]["id"], json!("TUN"));
        assert_eq!(j["structure"]["dimensions"]["observation"][0]["values"][1]["id"], json!("2021"));
        let conf = series["0:0"]["observations"]["1"][2].as_u64().unwrap() as usize;
        assert_eq!(j["structure"]["attributes"]["observation"][1]["values"][conf]["id"], json!("C"));
    }
}
