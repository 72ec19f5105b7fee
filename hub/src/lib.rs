//! The ALO hub: federates an operator's query to the member nodes and
//! merges what they release.
//!
//! The hub asks every member concurrently, each under its own deadline
//! ([`fanout`]), so a node that is down, slow or refusing never holds up the
//! others; it merges the released cells into one table by REF_AREA and, on
//! request, computes a regional aggregate from released figures only: sums
//! for counts, numerator over denominator for rates ([`merge`]). Each
//! member's status (answered, refused with the node's reason, unreachable,
//! timed out) travels with the answer.
//!
//! Operators reach it over gRPC ([`server`]) or through the HTTP front
//! door: SDMX 2.1 REST, a JSON API and a bilingual dashboard, with operator
//! tokens ([`tokens`]) and an anonymous public tier that nodes answer under
//! their public rules only. Answers may be reused from a cache ([`cache`])
//! only while every member that contributed is unchanged since.
//!
//! It stores no country data beyond that cache, decides nothing on a
//! member's behalf, and never depends on the node crate.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cache;
pub mod config;
pub mod directory;
pub mod doctor;
mod error;
pub mod fanout;
mod federate;
mod http;
mod member;
pub mod merge;
mod pins;
mod roster;
pub mod server;
mod service;
mod state;
pub mod tokens;
pub mod witnessing;

pub use config::HubConfig;
pub use error::Error;
pub use server::{run, run_notify};
