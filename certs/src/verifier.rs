//! What the network demands of a peer's certificate beyond what webpki
//! checks, and the rustls verifiers that demand it at every handshake.
//!
//! webpki verifies signatures, validity, CRLs and (when present) the
//! extended key usage, but it treats the trust anchor as a bare name and
//! key: the network CA's `pathLenConstraint = 0` is not enforced, so a CA
//! certificate the network CA signed by mistake could mint identities for
//! anyone. And a certificate without key usage or extended key usage is,
//! to webpki, good for every purpose. The network issues only leaf
//! certificates signed directly by its CA, each with `digitalSignature` and
//! the extended key usage of its role, so that is what is required:
//!
//! - the chain is the leaf and the anchor, nothing between (a peer may
//!   repeat the CA certificate itself, which adds nothing);
//! - the leaf is not a CA, has key usage `digitalSignature`, and an
//!   extended key usage with `clientAuth` (for a client) or `serverAuth`
//!   (for a server);
//! - it names exactly one `spiffe://` identity.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{Error, Identity};

/// Which end of a connection a certificate authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The side that connects (needs `clientAuth`).
    Client,
    /// The side that listens (needs `serverAuth`).
    Server,
}

/// Checks a chain webpki has already verified against the network's rules
/// (see the module docs) and returns the identity it names. `anchors` are
/// the trusted CA certificates, as DER.
pub fn check_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: &[CertificateDer<'static>],
    purpose: Purpose,
) -> Result<Identity, Error> {
    let refuse = |reason: String| Error::PeerRefused(reason);
    for extra in intermediates {
        if anchors.iter().any(|a| a.as_ref() == extra.as_ref()) {
            continue;
        }
        let subject = x509_parser::parse_x509_certificate(extra)
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_else(|_| "an unreadable certificate".into());
        return Err(refuse(format!(
            "the chain goes through an intermediate certificate ({subject}); the network CA allows none (path length 0) and signs every certificate itself"
        )));
    }
    let (_, leaf) =
        x509_parser::parse_x509_certificate(end_entity).map_err(|_| refuse("the certificate is not valid X.509".into()))?;
    if leaf.is_ca() {
        return Err(refuse("the certificate is a CA certificate, not a leaf".into()));
    }
    match leaf.key_usage() {
        Ok(Some(ku)) if ku.value.digital_signature() => {}
        Ok(Some(_)) => return Err(refuse("the certificate's key usage lacks digitalSignature".into())),
        Ok(None) => return Err(refuse("the certificate has no key usage extension (digitalSignature is required)".into())),
        Err(_) => return Err(refuse("the certificate's key usage extension is malformed".into())),
    }
    let (wanted, name) = match purpose {
        Purpose::Client => (|e: &x509_parser::extensions::ExtendedKeyUsage<'_>| e.client_auth, "clientAuth"),
        Purpose::Server => (|e: &x509_parser::extensions::ExtendedKeyUsage<'_>| e.server_auth, "serverAuth"),
    };
    match leaf.extended_key_usage() {
        Ok(Some(eku)) if wanted(eku.value) => {}
        Ok(Some(_)) => return Err(refuse(format!("the certificate's extended key usage lacks {name}"))),
        Ok(None) => return Err(refuse(format!("the certificate has no extended key usage ({name} is required)"))),
        Err(_) => return Err(refuse("the certificate's extended key usage extension is malformed".into())),
    }
    crate::tls::identity_of(end_entity).map_err(|e| refuse(e.to_string()))
}

fn rejected(e: Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// A client verifier: webpki first, then [`check_chain`] for a client.
#[derive(Debug)]
pub(crate) struct NetworkClientVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub anchors: Vec<CertificateDer<'static>>,
}

impl ClientCertVerifier for NetworkClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        check_chain(end_entity, intermediates, &self.anchors, Purpose::Client).map_err(rejected)?;
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server verifier: webpki first, then [`check_chain`] for a server.
#[derive(Debug)]
pub(crate) struct NetworkServerVerifier {
    pub inner: Arc<dyn ServerCertVerifier>,
    pub anchors: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for NetworkServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        check_chain(end_entity, intermediates, &self.anchors, Purpose::Server).map_err(rejected)?;
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
