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
        let subject = x509_parser::parse_x509_certificate(extra).map(|(_, c)| c.subject().to_string()).unwrap_or_else(|_| "an unreadable certificate".into());
        return Err(refuse(format!(
            "the chain goes through an intermediate certificate ({subject}); the network CA allows none (path length 0) and signs every certificate itself"
        )));
    }
    let (_, leaf) = x509_parser::parse_x509_certificate(end_entity).map_err(|_| refuse("the certificate is not valid X.509".into()))?;
    if leaf.is_ca() {
        return Err(refuse("the certificate is a CA certificate, not a leaf".into()));
    }
    match leaf.key_usage() {
        Ok(Some(ku)) if ku.value.digital_signature() => {}
        Ok(Some(_)) => return Err(refuse("the certificate's key usage lacks digitalSignature".into())),
        Ok(None) => return Err(refuse("the certificate has no key usage extension (digitalSignature is required)".into())),
        Err(_) => return Err(refuse("the certificate's key usage extension is malformed".into())),
    }
    let name = match purpose {
        Purpose::Client => "clientAuth",
        Purpose::Server => "serverAuth",
    };
    let wanted = |eku: &x509_parser::extensions::ExtendedKeyUsage<'_>| match purpose {
        Purpose::Client => eku.client_auth,
        Purpose::Server => eku.server_auth,
    };
    match leaf.extended_key_usage() {
        Ok(Some(eku)) if wanted(eku.value) => {}
        Ok(Some(_)) => return Err(refuse(format!("the certificate's extended key usage lacks {name}"))),
        Ok(None) => return Err(refuse(format!("the certificate has no extended key usage ({name} is required)"))),
        Err(_) => return Err(refuse("the certificate's extended key usage extension is malformed".into())),
    }
    crate::x509::identity_of(end_entity).map_err(|e| refuse(e.to_string()))
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
        let result = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .and_then(|verified| check_chain(end_entity, intermediates, &self.anchors, Purpose::Client).map(|_| verified).map_err(rejected));
        if let Err(error) = &result {
            // The listener only knows the address; the operator needs to
            // know whose certificate it was.
            let who = crate::x509::identity_of(end_entity).map_or_else(|_| "no identity".to_owned(), |id| id.to_string());
            let serial = crate::x509::serial_hex(end_entity).unwrap_or_default();
            tracing::warn!(%who, %serial, %error, "client certificate refused");
        }
        result
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

    use super::*;

    fn ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.clone().self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(params, key))
    }

    fn leaf(edit: impl FnOnce(&mut CertificateParams)) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI("spiffe://alo/node/MAR".try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        edit(&mut params);
        params
    }

    fn signed(params: CertificateParams, issuer: &Issuer<'_, KeyPair>) -> CertificateDer<'static> {
        params.signed_by(&KeyPair::generate().unwrap(), issuer).unwrap().der().clone()
    }

    fn refusal(r: Result<Identity, Error>) -> String {
        match r {
            Err(Error::PeerRefused(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn proper_leaves_pass_for_their_side() {
        let (ca_der, ca) = ca();
        let anchors = [ca_der.clone()];
        let good = signed(leaf(|_| {}), &ca);
        assert_eq!(check_chain(&good, &[], &anchors, Purpose::Client).unwrap().to_string(), "spiffe://alo/node/MAR");
        // Repeating the CA in the chain adds nothing and is harmless.
        check_chain(&good, &[ca_der], &anchors, Purpose::Server).unwrap();
        let client_only = signed(leaf(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]), &ca);
        check_chain(&client_only, &[], &anchors, Purpose::Client).unwrap();
        assert!(refusal(check_chain(&client_only, &[], &anchors, Purpose::Server)).contains("lacks serverAuth"));
    }

    #[test]
    fn what_the_network_never_issues_is_refused_with_the_reason() {
        let (ca_der, ca) = ca();
        let anchors = [ca_der];
        let no_ku = signed(leaf(|p| p.key_usages.clear()), &ca);
        assert!(refusal(check_chain(&no_ku, &[], &anchors, Purpose::Client)).contains("no key usage"));
        let wrong_ku = signed(leaf(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]), &ca);
        assert!(refusal(check_chain(&wrong_ku, &[], &anchors, Purpose::Client)).contains("lacks digitalSignature"));
        let no_eku = signed(leaf(|p| p.extended_key_usages.clear()), &ca);
        assert!(refusal(check_chain(&no_eku, &[], &anchors, Purpose::Client)).contains("no extended key usage (clientAuth"));
        let two = signed(leaf(|p| p.subject_alt_names.push(SanType::URI("spiffe://alo/hub/alo".try_into().unwrap()))), &ca);
        assert!(refusal(check_chain(&two, &[], &anchors, Purpose::Client)).contains("more than one"));
        let none = signed(leaf(|p| p.subject_alt_names.clear()), &ca);
        assert!(refusal(check_chain(&none, &[], &anchors, Purpose::Client)).contains("no subjectAltName"));
        // An intermediate CA under the network CA, and a leaf under it.
        let inter_key = KeyPair::generate().unwrap();
        let mut inter = CertificateParams::default();
        inter.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        inter.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let inter_der = inter.clone().signed_by(&inter_key, &ca).unwrap().der().clone();
        let under = signed(leaf(|_| {}), &Issuer::new(inter, inter_key));
        assert!(refusal(check_chain(&under, &[inter_der], &anchors, Purpose::Client)).contains("intermediate certificate"));
    }
}
