//! Tabadul's shared vocabulary: the gRPC wire contract and the data dictionary.
//!
//! [`pb`] is the code generated from `proto/tabadul.proto` (the only
//! generated code in the workspace). [`dictionary`] loads and validates the
//! network's data dictionary: the dataflows, their dimensions and codelists,
//! and how ILOSTAT's codes map onto them. Node and hub both read it, so a code
//! means the same thing at both ends.
//!
//! [`distinct_members`] is the one place a federated request's member list
//! is de-duplicated and capped, whichever door it came in by.
//!
//! [`sdmx_key`] reads SDMX REST data references (flowRef, dotted keys) into
//! queries.
//!
//! This crate holds no policy, no storage and no networking.
#![forbid(unsafe_code)]

pub mod dictionary;
mod digest;
mod members;
mod query_text;
mod resolve;
pub mod sdmx_key;

pub use dictionary::{Dataflow, Dictionary, DictionaryError, Measure, MicroTable};
pub use digest::{decision_word, query_digest, released_canonical};
pub use members::{MembersError, distinct_members};
pub use query_text::query_from_args;
pub use resolve::{InvalidQuery, Resolved, resolve};

/// The statistics a microdata query may name (the node's disclosure
/// control computes them; the hub checks the word before asking anyone).
pub const STATISTICS: [&str; 5] = ["count", "weighted-count", "sum", "mean", "ratio"];

/// The asymmetry of a mirror pair, as migration statisticians compare
/// mirror flows: `(destination − origin) / max(destination, origin)`, in
/// [−1, 1] (positive when the destination counts more), to three decimals;
/// none when both are zero. The hub's corridor tables and a node's own use
/// this one definition.
pub fn mirror_asymmetry(origin: f64, destination: f64) -> Option<f64> {
    let scale = origin.max(destination);
    (scale > 0.0).then(|| ((destination - origin) / scale * 1000.0).round() / 1000.0)
}

/// Generated protobuf and gRPC types (package `tabadul.v1`).
#[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("tabadul.v1");
}

/// The encoded `FileDescriptorSet` of the wire contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tabadul_descriptor");

/// The dimension that names the member state of an observation.
pub const REF_AREA: &str = "REF_AREA";
/// The time dimension, always last in a series key.
pub const TIME_PERIOD: &str = "TIME_PERIOD";
