//! What may leave a Tabadul node, decided by pure functions: the national
//! team's publication policy ([`policy`]: a default-deny TOML file, checked
//! in full when it loads, deciding each request by its first matching
//! rule) and statistical disclosure control over microdata cells
//! ([`disclosure`]: primary and secondary suppression, the group rule,
//! cell-key perturbation and differential privacy).
//!
//! This crate reads no store, writes no ledger, holds no state between
//! calls and opens no connection: the node feeds it what it read and acts
//! on what it decides. That keeps it testable on its own and small enough
//! to fuzz (`fuzz/fuzz_targets/policy.rs`).
#![forbid(unsafe_code)]

pub mod disclosure;
pub mod policy;

pub use policy::{Grant, Policy, PolicyError};
