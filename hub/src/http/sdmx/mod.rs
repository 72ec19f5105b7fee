//! SDMX 2.1 REST: structure queries answered from the data dictionary,
//! data queries answered by a federated query, in the formats SDMX tools
//! read (SDMX-ML 2.1 Generic and StructureSpecific data, SDMX-JSON 1.0,
//! SDMX-CSV 1.0 and 2.0) chosen by content negotiation.
//!
//! Artefacts: agency = the dictionary's, version = the dictionary's
//! version; each indicator dataflow `F` has the data structure `DSD_F`;
//! all concepts are in the scheme `CS_TABADUL`. Microdata tables are not
//! SDMX dataflows: they are asked for through the JSON API.

mod data;
mod negotiate;
mod structure;
mod write;
mod xml;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use super::{ApiError, Front};

pub(crate) fn routes() -> Router<Arc<Front>> {
    let mut r = Router::new();
    for kind in ["dataflow", "datastructure", "codelist", "conceptscheme"] {
        r = r
            .route(&format!("/sdmx/{kind}"), get(structure::handle))
            .route(&format!("/sdmx/{kind}/{{agency}}"), get(structure::handle))
            .route(&format!("/sdmx/{kind}/{{agency}}/{{id}}"), get(structure::handle))
            .route(&format!("/sdmx/{kind}/{{agency}}/{{id}}/{{version}}"), get(structure::handle));
    }
    r.route("/sdmx/data/{flow}", get(data::handle))
        .route("/sdmx/data/{flow}/{key}", get(data::handle))
        .route("/sdmx/data/{flow}/{key}/{provider}", get(data::handle))
        .route("/sdmx/{*rest}", get(not_supported))
}

/// SDMX resources this service does not offer get 501, anything else 404.
async fn not_supported(axum::extract::Path(rest): axum::extract::Path<String>) -> ApiError {
    let resource = rest.split('/').next().unwrap_or_default();
    const KNOWN: [&str; 22] = [
        "agencyscheme",
        "attachmentconstraint",
        "availableconstraint",
        "categorisation",
        "categoryscheme",
        "conceptscheme",
        "contentconstraint",
        "dataconsumerscheme",
        "dataproviderscheme",
        "hierarchicalcodelist",
        "metadata",
        "metadataflow",
        "metadatastructure",
        "organisationscheme",
        "organisationunitscheme",
        "process",
        "provisionagreement",
        "reportingtaxonomy",
        "schema",
        "structure",
        "structureset",
        "actualconstraint",
    ];
    if KNOWN.contains(&resource) {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("/{resource} is an SDMX resource this hub does not offer; it serves dataflow, datastructure, codelist, conceptscheme and data"),
        )
        .sdmx()
    } else {
        ApiError::new(StatusCode::NOT_FOUND, format!("/sdmx/{rest} is not an SDMX 2.1 REST resource")).sdmx()
    }
}

/// SDMX-ML 2.1 error message (`mes:Error`), with the SDMX error code that
/// corresponds to the HTTP status.
pub(crate) fn error_message(status: StatusCode, message: &str) -> String {
    let code = match status.as_u16() {
        404 => 100,
        401 => 110,
        403 => 150,
        413 => 130,
        400 => 140,
        406 => 406,
        501 => 501,
        503 => 503,
        other => other,
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mes:Error xmlns:mes=\"{}\" xmlns:com=\"{}\">\n<mes:ErrorMessage code=\"{code}\"><com:Text xml:lang=\"en\">{}</com:Text></mes:ErrorMessage>\n</mes:Error>\n",
        write::NS_MESSAGE,
        write::NS_COMMON,
        xml::esc(message)
    )
}
