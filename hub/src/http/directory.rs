//! `GET /directory`: the signed network directory, for anyone (nodes,
//! auditors, the public) without credentials, even when the public tier is
//! off: it holds public keys and endpoints, and its worth is in its
//! signature, which every reader checks against the anchor it already has.
//!
//! - `/directory`: the latest version the hub applied (a signed note);
//! - `/directory/{version}`: any earlier one, so a reader can check the
//!   whole chain from version 1;
//! - `/directory/dictionary`: the data dictionary the directory names (by
//!   digest: readers check it).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiError, Front};

pub(super) fn routes() -> Router<Arc<Front>> {
    Router::new().route("/directory", get(latest)).route("/directory/dictionary", get(dictionary)).route("/directory/{version}", get(version))
}

const NOTE: &str = "text/plain; charset=utf-8";

fn held(front: &Front) -> Result<&crate::directory::Held, ApiError> {
    front
        .hub
        .directory
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this hub is not configured with a network directory ([directory] in hub.toml)"))
}

fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the held directory cannot be read: {e}"))
}

async fn latest(State(front): State<Arc<Front>>) -> Result<Response, ApiError> {
    let h = held(&front)?;
    let signed = h.history.latest(&h.anchor).map_err(failed)?.ok_or_else(|| failed("no version held"))?;
    Ok(([(header::CONTENT_TYPE, NOTE), (header::CACHE_CONTROL, "no-cache")], signed.note).into_response())
}

async fn version(State(front): State<Arc<Front>>, Path(version): Path<String>) -> Result<Response, ApiError> {
    let h = held(&front)?;
    let v: u64 = version.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("{version:?} is not a directory version (1, 2, ...)")))?;
    let signed =
        h.history.get(v, &h.anchor).map_err(failed)?.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("this hub holds no directory version {v}")))?;
    // A version once signed never changes.
    Ok(([(header::CONTENT_TYPE, NOTE), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], signed.note).into_response())
}

async fn dictionary(State(front): State<Arc<Front>>) -> Result<Response, ApiError> {
    let h = held(&front)?;
    let bytes = tokio::fs::read(&h.dictionary).await.map_err(failed)?;
    Ok(([(header::CONTENT_TYPE, "application/toml")], bytes).into_response())
}
