//! Structure queries: `/dataflow`, `/datastructure`, `/codelist`,
//! `/conceptscheme`, with `references`, as SDMX-ML 2.1 Structure messages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tabadul_proto::{Dictionary, REF_AREA};

use super::negotiate;
use super::write;
use super::xml::{dsd_id, esc, urn};
use crate::http::{ApiError, Front, Principal};

/// The concept scheme that holds every concept.
pub(crate) const CONCEPT_SCHEME: &str = "CS_TABADUL";
pub(crate) const CL_OBS_STATUS: &str = "CL_OBS_STATUS";
pub(crate) const CL_CONF_STATUS: &str = "CL_CONF_STATUS";

/// Observation attributes of every data structure: id, name, codelist.
pub(crate) const ATTRIBUTES: [(&str, &str, Option<&str>); 4] = [
    ("OBS_STATUS", "Observation status", Some(CL_OBS_STATUS)),
    ("CONF_STATUS", "Confidentiality status", Some(CL_CONF_STATUS)),
    ("UNIT_MULT", "Unit multiplier (power of 10)", None),
    ("DISCLOSURE_FLAGS", "Disclosure-control rules applied (Tabadul)", None),
];

const OBS_STATUS_CODES: [(&str, &str); 10] = [
    ("A", "Normal value"),
    ("B", "Time series break"),
    ("E", "Estimated value"),
    ("F", "Forecast value"),
    ("I", "Imputed value"),
    ("L", "Missing value; data exist but were not collected"),
    ("M", "Missing value; data cannot exist"),
    ("N", "Not significant"),
    ("P", "Provisional value"),
    ("U", "Low reliability"),
];
const CONF_STATUS_CODES: [(&str, &str); 3] = [
    ("F", "Free"),
    ("C", "Confidential statistical information (primary suppression)"),
    ("D", "Secondary confidentiality set by the sender, not for publication"),
];

#[derive(Debug, serde::Deserialize, Default)]
pub(crate) struct Params {
    references: Option<String>,
    detail: Option<String>,
    format: Option<String>,
}

/// What a structure message holds.
#[derive(Debug, Default)]
struct Selection {
    flows: BTreeSet<String>,
    dsds: BTreeSet<String>,
    codelists: BTreeSet<String>,
    scheme: bool,
}

pub(crate) async fn handle(
    State(front): State<Arc<Front>>,
    _who: Principal,
    uri: axum::http::Uri,
    Path(parts): Path<BTreeMap<String, String>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    negotiate::structure_format(&headers, params.format.as_deref())?;
    let dict = &front.hub.dict;
    let kind = uri.path().trim_start_matches("/sdmx/").split('/').next().unwrap_or_default().to_owned();
    let not_found = |m: String| ApiError::new(StatusCode::NOT_FOUND, m).sdmx();
    match parts.get("agency").map(String::as_str) {
        None | Some("all" | "*") => {}
        Some(a) if a == dict.agency => {}
        Some(a) => return Err(not_found(format!("no {kind} of agency {a}: this hub's artefacts are maintained by {}", dict.agency))),
    }
    match parts.get("version").map(String::as_str) {
        None | Some("all" | "*" | "latest" | "+") => {}
        Some(v) if v == dict.version => {}
        Some(v) => return Err(not_found(format!("no {kind} in version {v}: the dictionary in force is version {}", dict.version))),
    }
    match params.detail.as_deref() {
        None | Some("full") => {}
        Some(d @ ("allstubs" | "referencestubs" | "allcompletestubs" | "referencecompletestubs" | "referencepartial")) => {
            return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, format!("detail={d} is not offered; use detail=full")).sdmx());
        }
        Some(d) => return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("detail={d} is not an SDMX structure detail")).sdmx()),
    }
    let wanted: Option<BTreeSet<&str>> = match parts.get("id").map(String::as_str) {
        None | Some("all" | "*") => None,
        Some(ids) => Some(ids.split(['+', ',']).collect()),
    };
    let pick = |id: &str| wanted.as_ref().is_none_or(|w| w.contains(id));
    let mut sel = Selection::default();
    match kind.as_str() {
        "dataflow" => sel.flows = dict.dataflows().map(|f| f.id.clone()).filter(|id| pick(id)).collect(),
        "datastructure" => sel.dsds = dict.dataflows().map(|f| dsd_id(&f.id)).filter(|id| pick(id)).collect(),
        "codelist" => sel.codelists = all_codelists(dict).into_iter().filter(|id| pick(id)).collect(),
        "conceptscheme" => sel.scheme = pick(CONCEPT_SCHEME),
        _ => return Err(not_found(format!("/{kind} is not a structure resource"))),
    }
    if sel.flows.is_empty() && sel.dsds.is_empty() && sel.codelists.is_empty() && !sel.scheme {
        let what = parts.get("id").cloned().unwrap_or_default();
        return Err(not_found(format!("no {kind} {what} in dictionary {} (agency {})", dict.version, dict.agency)));
    }
    // A data structure is useless without its codelists and concepts, so
    // unless told otherwise a DSD comes with them: the message is complete.
    let default_refs = if kind == "datastructure" { "children" } else { "none" };
    let references = params.references.as_deref().unwrap_or(default_refs);
    add_references(dict, &mut sel, &kind, references)?;
    let body = render(dict, &sel);
    Ok(([(header::CONTENT_TYPE, negotiate::STRUCTURE_MEDIA_TYPE)], body).into_response())
}

fn flow_of_dsd(dsd: &str) -> &str {
    dsd.strip_prefix("DSD_").unwrap_or(dsd)
}

/// Every codelist a data structure uses, the status codelists included.
fn all_codelists(dict: &Dictionary) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = dict.codelists().map(|c| c.id.clone()).collect();
    out.insert(CL_OBS_STATUS.into());
    out.insert(CL_CONF_STATUS.into());
    out
}

fn codelists_of_flow(dict: &Dictionary, flow: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::from([CL_OBS_STATUS.to_owned(), CL_CONF_STATUS.to_owned()]);
    if let Some(f) = dict.dataflow(flow) {
        out.extend(f.dimensions.iter().filter_map(|d| dict.dimension(d)).map(|d| d.codelist.clone()));
    }
    out
}

fn add_references(dict: &Dictionary, sel: &mut Selection, kind: &str, references: &str) -> Result<(), ApiError> {
    let (parents, children) = match references {
        "none" => (false, false),
        "parents" | "parentsandsiblings" => (true, false),
        "children" | "descendants" => (false, true),
        "all" => (true, true),
        "dataflow" | "datastructure" | "codelist" | "conceptscheme" => (true, true),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("references={other} is not one of none, parents, parentsandsiblings, children, descendants, all, or an artefact type"),
            )
            .sdmx());
        }
    };
    let only = matches!(references, "dataflow" | "datastructure" | "codelist" | "conceptscheme").then_some(references);
    let mut add = Selection::default();
    match kind {
        "dataflow" if children => {
            add.dsds = sel.flows.iter().map(|f| dsd_id(f)).collect();
            // Descendants of the DSDs come along: a DSD reference is no use
            // to a client without them.
            for f in &sel.flows {
                add.codelists.extend(codelists_of_flow(dict, f));
            }
            add.scheme = true;
        }
        "datastructure" => {
            if children {
                for d in &sel.dsds {
                    add.codelists.extend(codelists_of_flow(dict, flow_of_dsd(d)));
                }
                add.scheme = true;
            }
            if parents {
                add.flows = sel.dsds.iter().map(|d| flow_of_dsd(d).to_owned()).collect();
            }
        }
        "codelist" | "conceptscheme" if parents => {
            for f in dict.dataflows() {
                let uses = sel.scheme || codelists_of_flow(dict, &f.id).iter().any(|c| sel.codelists.contains(c));
                if uses {
                    add.dsds.insert(dsd_id(&f.id));
                    if references == "parentsandsiblings" || references == "all" {
                        add.flows.insert(f.id.clone());
                    }
                }
            }
        }
        _ => {}
    }
    if only.is_none_or(|o| o == "dataflow") {
        sel.flows.extend(add.flows);
    }
    if only.is_none_or(|o| o == "datastructure") {
        sel.dsds.extend(add.dsds);
    }
    if only.is_none_or(|o| o == "codelist") {
        sel.codelists.extend(add.codelists);
    }
    if only.is_none_or(|o| o == "conceptscheme") {
        sel.scheme |= add.scheme;
    }
    Ok(())
}

/// `<com:Name>` in English, and in Arabic when the dictionary has it.
fn names(out: &mut String, en: &str, ar: Option<&str>) {
    out.push_str(&format!("<com:Name xml:lang=\"en\">{}</com:Name>", esc(en)));
    if let Some(ar) = ar {
        out.push_str(&format!("<com:Name xml:lang=\"ar\">{}</com:Name>", esc(ar)));
    }
}

fn maintainable(out: &mut String, element: &str, class: &str, dict: &Dictionary, id: &str) {
    out.push_str(&format!(
        "<str:{element} id=\"{id}\" agencyID=\"{a}\" version=\"{v}\" isFinal=\"true\" urn=\"{}\">",
        urn(class, &dict.agency, id, &dict.version),
        a = esc(&dict.agency),
        v = esc(&dict.version),
        id = esc(id),
    ));
}

/// A `<Ref>` with `class` and `package`, as SDMX 2.1 asks.
fn reference(dict: &Dictionary, id: &str, class: &str, package: &str) -> String {
    format!("<Ref id=\"{}\" version=\"{}\" agencyID=\"{}\" package=\"{package}\" class=\"{class}\"/>", esc(id), esc(&dict.version), esc(&dict.agency))
}

fn concept_ref(dict: &Dictionary, concept: &str) -> String {
    format!(
        "<str:ConceptIdentity><Ref id=\"{}\" maintainableParentID=\"{CONCEPT_SCHEME}\" maintainableParentVersion=\"{}\" agencyID=\"{}\" package=\"conceptscheme\" class=\"Concept\"/></str:ConceptIdentity>",
        esc(concept),
        esc(&dict.version),
        esc(&dict.agency)
    )
}

/// Every concept: dimensions, time, measure, attributes.
fn concepts(dict: &Dictionary) -> Vec<(String, String, Option<String>)> {
    let mut dims: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for f in dict.dataflows() {
        for d in &f.dimensions {
            if let Some(dim) = dict.dimension(d) {
                dims.insert(d.clone(), (dim.name.clone(), dict.name_ar("dimension", d).map(str::to_owned)));
            }
        }
    }
    let mut out: Vec<(String, String, Option<String>)> = dims.into_iter().map(|(id, (n, ar))| (id, n, ar)).collect();
    out.push(("TIME_PERIOD".into(), "Time period".into(), Some("الفترة الزمنية".into())));
    out.push(("OBS_VALUE".into(), "Observation value".into(), Some("قيمة المشاهدة".into())));
    for (id, name, _) in ATTRIBUTES {
        out.push((id.into(), name.into(), None));
    }
    out
}

fn render(dict: &Dictionary, sel: &Selection) -> String {
    let mut out = write::structure_header(&dict.agency);
    out.push_str("<mes:Structures>\n");
    if !sel.flows.is_empty() {
        out.push_str("<str:Dataflows>\n");
        for id in &sel.flows {
            let Some(f) = dict.dataflow(id) else { continue };
            maintainable(&mut out, "Dataflow", "datastructure.Dataflow", dict, id);
            names(&mut out, &f.name, dict.name_ar("dataflow", id));
            out.push_str(&format!("<str:Structure>{}</str:Structure>", reference(dict, &dsd_id(id), "DataStructure", "datastructure")));
            out.push_str("</str:Dataflow>\n");
        }
        out.push_str("</str:Dataflows>\n");
    }
    if !sel.codelists.is_empty() {
        out.push_str("<str:Codelists>\n");
        for id in &sel.codelists {
            let (name, codes): (String, Vec<(String, String)>) = match id.as_str() {
                CL_OBS_STATUS => ("Observation status".into(), OBS_STATUS_CODES.iter().map(|(c, n)| ((*c).into(), (*n).into())).collect()),
                CL_CONF_STATUS => ("Confidentiality status".into(), CONF_STATUS_CODES.iter().map(|(c, n)| ((*c).into(), (*n).into())).collect()),
                _ => match dict.codelist(id) {
                    Some(cl) => (cl.name.clone(), cl.codes.iter().map(|(c, n)| (c.clone(), n.clone())).collect()),
                    None => continue,
                },
            };
            maintainable(&mut out, "Codelist", "codelist.Codelist", dict, id);
            names(&mut out, &name, dict.name_ar("codelist", id));
            for (code, n) in codes {
                out.push_str(&format!("<str:Code id=\"{}\" urn=\"{}.{}\">", esc(&code), urn("codelist.Code", &dict.agency, id, &dict.version), esc(&code)));
                names(&mut out, &n, dict.name_ar("code", &format!("{id}:{code}")));
                out.push_str("</str:Code>");
            }
            out.push_str("</str:Codelist>\n");
        }
        out.push_str("</str:Codelists>\n");
    }
    if sel.scheme {
        out.push_str("<str:Concepts>\n");
        maintainable(&mut out, "ConceptScheme", "conceptscheme.ConceptScheme", dict, CONCEPT_SCHEME);
        names(&mut out, "Tabadul concepts", Some("مفاهيم تبادل"));
        for (id, name, ar) in concepts(dict) {
            out.push_str(&format!(
                "<str:Concept id=\"{}\" urn=\"{}.{}\">",
                esc(&id),
                urn("conceptscheme.Concept", &dict.agency, CONCEPT_SCHEME, &dict.version),
                esc(&id)
            ));
            names(&mut out, &name, ar.as_deref());
            out.push_str("</str:Concept>");
        }
        out.push_str("</str:ConceptScheme>\n</str:Concepts>\n");
    }
    if !sel.dsds.is_empty() {
        out.push_str("<str:DataStructures>\n");
        for dsd in &sel.dsds {
            let Some(f) = dict.dataflow(flow_of_dsd(dsd)) else { continue };
            data_structure(&mut out, dict, f, dsd);
        }
        out.push_str("</str:DataStructures>\n");
    }
    out.push_str("</mes:Structures>\n</mes:Structure>\n");
    out
}

fn data_structure(out: &mut String, dict: &Dictionary, f: &tabadul_proto::Dataflow, dsd: &str) {
    let component_urn = |class: &str, id: &str| format!("{}.{}", urn(&format!("datastructure.{class}"), &dict.agency, dsd, &dict.version), esc(id));
    maintainable(out, "DataStructure", "datastructure.DataStructure", dict, dsd);
    names(out, &format!("{} (structure)", f.name), dict.name_ar("dataflow", &f.id));
    out.push_str("<str:DataStructureComponents>");
    out.push_str(&format!("<str:DimensionList id=\"DimensionDescriptor\" urn=\"{}\">", component_urn("DimensionDescriptor", "DimensionDescriptor")));
    for (i, d) in f.dimensions.iter().enumerate() {
        let codelist = dict.dimension(d).map(|x| x.codelist.clone()).unwrap_or_default();
        out.push_str(&format!("<str:Dimension id=\"{}\" position=\"{}\" urn=\"{}\">", esc(d), i + 1, component_urn("Dimension", d)));
        out.push_str(&concept_ref(dict, d));
        out.push_str(&format!(
            "<str:LocalRepresentation><str:Enumeration>{}</str:Enumeration></str:LocalRepresentation>",
            reference(dict, &codelist, "Codelist", "codelist")
        ));
        out.push_str("</str:Dimension>");
        debug_assert!(i > 0 || d == REF_AREA);
    }
    out.push_str(&format!(
        "<str:TimeDimension id=\"TIME_PERIOD\" position=\"{}\" urn=\"{}\">{}<str:LocalRepresentation><str:TextFormat textType=\"ObservationalTimePeriod\"/></str:LocalRepresentation></str:TimeDimension>",
        f.dimensions.len() + 1,
        component_urn("TimeDimension", "TIME_PERIOD"),
        concept_ref(dict, "TIME_PERIOD")
    ));
    out.push_str("</str:DimensionList>");
    out.push_str(&format!("<str:AttributeList id=\"AttributeDescriptor\" urn=\"{}\">", component_urn("AttributeDescriptor", "AttributeDescriptor")));
    for (id, _, codelist) in ATTRIBUTES {
        out.push_str(&format!("<str:Attribute id=\"{id}\" assignmentStatus=\"Conditional\" urn=\"{}\">", component_urn("DataAttribute", id)));
        out.push_str(&concept_ref(dict, id));
        match codelist {
            Some(cl) => out.push_str(&format!(
                "<str:LocalRepresentation><str:Enumeration>{}</str:Enumeration></str:LocalRepresentation>",
                reference(dict, cl, "Codelist", "codelist")
            )),
            None if id == "UNIT_MULT" => out.push_str("<str:LocalRepresentation><str:TextFormat textType=\"Integer\"/></str:LocalRepresentation>"),
            None => out.push_str("<str:LocalRepresentation><str:TextFormat textType=\"String\"/></str:LocalRepresentation>"),
        }
        out.push_str("<str:AttributeRelationship><str:PrimaryMeasure><Ref id=\"OBS_VALUE\"/></str:PrimaryMeasure></str:AttributeRelationship></str:Attribute>");
    }
    out.push_str("</str:AttributeList>");
    out.push_str(&format!(
        "<str:MeasureList id=\"MeasureDescriptor\" urn=\"{}\"><str:PrimaryMeasure id=\"OBS_VALUE\" urn=\"{}\">{}<str:LocalRepresentation><str:TextFormat textType=\"Double\"/></str:LocalRepresentation></str:PrimaryMeasure></str:MeasureList>",
        component_urn("MeasureDescriptor", "MeasureDescriptor"),
        component_urn("PrimaryMeasure", "OBS_VALUE"),
        concept_ref(dict, "OBS_VALUE")
    ));
    out.push_str("</str:DataStructureComponents></str:DataStructure>\n");
}
