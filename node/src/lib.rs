//! A Tabadul country node: it holds one member state's labour-market
//! statistics and releases them only as its own publication policy allows.
//!
//! The node imports indicator tables into RocksDB ([`import`], [`store`])
//! and unit-record microdata in column chunks ([`microdata`]), which leave
//! only as aggregates protected by disclosure control ([`micro_query`],
//! [`disclosure`], with the release [`ledger`]). It
//! decides every request against a default-deny policy ([`policy`],
//! [`query`]; both pure, from the `tabadul-policy` crate), honours the national team's withdrawals, records every
//! decision in its signed log (answering with a receipt), and serves the
//! `Node`, `Audit` and `Witness` gRPC services over mutual TLS plus a local
//! admin API on a Unix socket ([`server`]). [`backup`] takes online backups
//! and restores them.
//!
//! It never trusts an identity that did not come from a verified client
//! certificate, never evaluates query strings, and does not talk to other
//! nodes or depend on the hub crate.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backup;
pub mod config;
pub mod directory;
pub mod doctor;
mod error;
pub mod import;
pub mod ledger;
pub mod limits;
pub mod micro_query;
pub mod microdata;
mod peer;
pub mod private;
pub mod query;
pub mod server;
mod service;
pub mod store;

pub use tabadul_policy::{disclosure, policy};

pub use config::NodeConfig;
pub use error::Error;
pub use server::{run, run_notify};
