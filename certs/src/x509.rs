//! Reading what a certificate says about its holder: the network identity
//! in its `spiffe://` URI SAN, and its serial number. The TLS set-up and the
//! chain verifier both need these; neither should need the other for them.

use rustls::pki_types::CertificateDer;

use crate::{Error, Identity};

/// The identity in a certificate's `spiffe://` URI SAN. Exactly one such SAN
/// must be present: two would make the holder ambiguous.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, Error> {
    let bad = |reason: &str| Error::BadIdentity { input: "<certificate>".into(), reason: reason.into() };
    let (_, x509) = x509_parser::parse_x509_certificate(cert).map_err(|_| bad("not a valid X.509 certificate"))?;
    let san = x509.subject_alternative_name().map_err(|_| bad("malformed subjectAltName"))?.ok_or_else(|| bad("no subjectAltName"))?;
    let mut uris = san.value.general_names.iter().filter_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => uri.parse(),
        (None, _) => Err(bad("no spiffe:// URI SAN")),
        (Some(_), Some(_)) => Err(bad("more than one spiffe:// URI SAN")),
    }
}

/// The serial number of a certificate, as lowercase hex.
pub fn serial_hex(cert: &CertificateDer<'_>) -> Result<String, Error> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|_| Error::BadIdentity { input: "<certificate>".into(), reason: "not a valid X.509 certificate".into() })?;
    Ok(hex::encode(x509.raw_serial()))
}
