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
//! The hub serves only operators ([`server`]); it stores no country data,
//! decides nothing on a member's behalf, and never depends on the node crate.
#![forbid(unsafe_code)]

pub mod config;
pub mod doctor;
mod error;
pub mod fanout;
pub mod merge;
pub mod server;
mod service;
pub mod witnessing;

pub use config::HubConfig;
pub use error::Error;
pub use server::{run, run_notify};
