//! Tabadul's PKI and mutual TLS: the one crate that touches X.509.
//!
//! It makes the network CA, issues role certificates whose URI SAN carries the
//! identity (`spiffe://<network>/<role>/<id>`), revokes them into a CRL, and
//! builds the rustls client and server configurations that node and hub use.
//! After a handshake it turns the *verified* peer certificate into an
//! [`Identity`]: no other crate parses a certificate, and no other source of
//! identity (headers, request fields) exists.
//!
//! It does not decide what an identity may do: authorization belongs to the
//! node's publication policy and to the hub's operator API.
#![forbid(unsafe_code)]

pub mod checkup;
pub mod connection;
mod error;
mod identity;
pub mod pki;
pub mod reflection;
pub mod tls;
pub mod verifier;
mod x509;

pub use error::Error;
pub use identity::{Identity, Role};
