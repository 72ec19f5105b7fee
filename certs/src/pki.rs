//! The network CA on disk: `init`, `issue`, `revoke` and the CRL.
//!
//! A CA directory holds `ca.pem`, `ca.key` (0600), `crl.pem` and
//! `state.json` (issued serials, revocations, the CRL number). Every file is
//! written to a temporary name and renamed, so a crash leaves either the old
//! or the new file, never half of one.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::{Error, Identity, Role};

/// How long a CRL is valid before peers must get a fresh one.
pub const CRL_VALIDITY: Duration = Duration::days(7);
/// Default validity of an issued leaf certificate: short, so that rotation is routine.
pub const DEFAULT_LEAF_DAYS: i64 = 90;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    network: String,
    crl_number: u64,
    issued: Vec<IssuedRecord>,
    revoked: Vec<RevokedRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IssuedRecord {
    serial: String,
    identity: String,
    not_after: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RevokedRecord {
    serial: String,
    revoked_at: i64,
    reason: String,
}

/// A CA directory (see the module docs for its layout).
#[derive(Debug, Clone)]
pub struct CaDir {
    dir: PathBuf,
}

/// What to put in a new leaf certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub identity: Identity,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// What the administrator approves when signing a request.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub identity: Identity,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// What `sign` wrote, and the names it took from the request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub cert_path: PathBuf,
    pub serial_hex: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

/// Where `issue` wrote a certificate and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub serial_hex: String,
}

/// The parameters of a leaf certificate for `req` and its fresh serial.
fn leaf_params(state: &State, req: &IssueRequest) -> Result<(CertificateParams, String), Error> {
    if req.identity.network() != state.network {
        return Err(Error::Invalid { what: "identity", reason: format!("{} is not in this CA's network {:?}", req.identity, state.network) });
    }
    if req.not_after <= req.not_before {
        return Err(Error::Invalid { what: "validity", reason: "not_after must be after not_before".into() });
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, format!("Tabadul network {}", state.network));
    dn.push(DnType::CommonName, req.identity.uri());
    params.distinguished_name = dn;
    params.subject_alt_names = subject_names(&req.identity, &req.dns_names, &req.ip_addresses)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match req.identity.role() {
        Role::Node | Role::Hub => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        Role::Operator | Role::Auditor => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.not_before = req.not_before;
    params.not_after = req.not_after;
    let serial = random_serial()?;
    let serial_hex = hex::encode(serial.to_bytes());
    params.serial_number = Some(serial);
    params.use_authority_key_identifier_extension = true;
    Ok((params, serial_hex))
}

/// The identity's URI, then the endpoint's DNS names and IP addresses.
fn subject_names(identity: &Identity, dns_names: &[String], ip_addresses: &[IpAddr]) -> Result<Vec<SanType>, Error> {
    let mut names = vec![SanType::URI(identity.uri().try_into()?)];
    for dns in dns_names {
        names.push(SanType::DnsName(dns.clone().try_into()?));
    }
    names.extend(ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(names)
}

fn record(state: &mut State, serial_hex: &str, req: &IssueRequest) {
    state.issued.push(IssuedRecord { serial: serial_hex.to_owned(), identity: req.identity.uri(), not_after: req.not_after.unix_timestamp() });
}

/// Makes a key and a certificate signing request for `identity` where the
/// key will live (a node's server): `<role>-<id>.key` (0600) and
/// `<role>-<id>.csr` in `out_dir`. Only the request goes to the network
/// administrator, who signs it with [`CaDir::sign`].
pub fn request(identity: &Identity, dns_names: &[String], ip_addresses: &[IpAddr], out_dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    request_with(identity, dns_names, ip_addresses, None, out_dir)
}

/// [`request`], or with `existing` a request for a key already in use:
/// renewal of a certificate that keeps its key (nothing secret is
/// written; only `<role>-<id>.csr`). Returns the request's and the key's
/// paths.
pub fn request_with(
    identity: &Identity,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
    existing: Option<&Path>,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.uri());
    params.distinguished_name = dn;
    params.subject_alt_names = subject_names(identity, dns_names, ip_addresses)?;
    fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let stem = format!("{}-{}", identity.role(), identity.id());
    let csr_path = out_dir.join(format!("{stem}.csr"));
    let (key, key_path) = match existing {
        Some(path) => {
            let pem = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let key = KeyPair::from_pem(&pem)
                .map_err(|e| Error::Invalid { what: "key", reason: format!("{}: not a private key this tool can use ({e})", path.display()) })?;
            (key, path.to_owned())
        }
        None => {
            let key_path = out_dir.join(format!("{stem}.key"));
            if key_path.exists() {
                return Err(Error::Invalid {
                    what: "key",
                    reason: format!("{} exists; move it away first (a request never overwrites a key), or renew with it (--key)", key_path.display()),
                });
            }
            let key = KeyPair::generate()?;
            write_secret(&key_path, key.serialize_pem().as_bytes())?;
            (key, key_path)
        }
    };
    let csr = params.serialize_request(&key)?;
    write_atomic(&csr_path, csr.pem()?.as_bytes(), 0o644)?;
    Ok((csr_path, key_path))
}

impl CaDir {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let ca = CaDir { dir: dir.into() };
        if !ca.cert_path().exists() {
            return Err(Error::Invalid { what: "CA directory", reason: format!("{} has no ca.pem; run `tabadul-certs init` first", ca.dir.display()) });
        }
        Ok(ca)
    }

    /// Makes a new network CA. Refuses to overwrite an existing one.
    pub fn init(dir: impl Into<PathBuf>, network: &str, valid_days: i64) -> Result<Self, Error> {
        let dir = dir.into();
        // Validates the network name with the same rules as identities.
        Identity::new(network, Role::Hub, "x")?;
        if dir.join("ca.pem").exists() {
            return Err(Error::Invalid { what: "CA directory", reason: format!("{} already holds a CA; refusing to overwrite it", dir.display()) });
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Tabadul network");
        dn.push(DnType::CommonName, format!("Tabadul network CA ({network})"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        // CrlSign is what lets this CA's CRLs be accepted at all.
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(valid_days);
        params.serial_number = Some(random_serial()?);
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key)?;
        let ca = CaDir { dir };
        write_secret(&ca.key_path(), key.serialize_pem().as_bytes())?;
        write_atomic(&ca.cert_path(), cert.pem().as_bytes(), 0o644)?;
        let mut state = State { network: network.to_owned(), ..State::default() };
        ca.write_crl(&mut state)?;
        ca.save_state(&state)?;
        Ok(ca)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn network(&self) -> Result<String, Error> {
        Ok(self.load_state()?.network)
    }

    /// Issues a certificate for `req.identity` into `out_dir` as
    /// `<role>-<id>.pem` and `<role>-<id>.key` (0600). The key is made
    /// here; prefer [`CaDir::sign`] so that it never leaves its owner.
    pub fn issue(&self, req: &IssueRequest, out_dir: &Path) -> Result<Issued, Error> {
        let mut state = self.load_state()?;
        let (params, serial_hex) = leaf_params(&state, req)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let stem = format!("{}-{}", req.identity.role(), req.identity.id());
        let cert_path = out_dir.join(format!("{stem}.pem"));
        let key_path = out_dir.join(format!("{stem}.key"));
        write_secret(&key_path, key.serialize_pem().as_bytes())?;
        write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
        record(&mut state, &serial_hex, req);
        self.save_state(&state)?;
        Ok(Issued { cert_path, key_path, serial_hex })
    }

    /// Signs a certificate signing request made by [`request`] where the
    /// key lives. The administrator states the identity they approve
    /// (`approved.identity`); the request must name exactly that identity
    /// and nothing else but DNS names and IP addresses, which are taken from
    /// it. Everything else in the certificate (key usages, validity, serial)
    /// is the CA's choice, whatever the request asked. Writes
    /// `<role>-<id>.pem` into `out_dir`.
    pub fn sign(&self, csr_pem: &str, approved: &SignRequest, out_dir: &Path) -> Result<Signed, Error> {
        let invalid = |reason: String| Error::Invalid { what: "certificate request", reason };
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| invalid(format!("not a valid, self-signed request ({e})")))?;
        let mut uris = Vec::new();
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        for san in &csr.params.subject_alt_names {
            match san {
                SanType::URI(u) => uris.push(u.as_str().to_owned()),
                SanType::DnsName(d) => dns_names.push(d.as_str().to_owned()),
                SanType::IpAddress(ip) => ip_addresses.push(*ip),
                other => return Err(invalid(format!("it asks for a name this network does not issue: {other:?}"))),
            }
        }
        let wanted = approved.identity.uri();
        if uris != [wanted.clone()] {
            return Err(invalid(format!(
                "it names {}, but the approved identity is {wanted}",
                if uris.is_empty() { "no identity".to_owned() } else { uris.join(" and ") }
            )));
        }
        if csr.params.is_ca != IsCa::NoCa {
            return Err(invalid("it asks to be a CA".into()));
        }
        let req = IssueRequest {
            identity: approved.identity.clone(),
            dns_names: dns_names.clone(),
            ip_addresses: ip_addresses.clone(),
            not_before: approved.not_before,
            not_after: approved.not_after,
        };
        let mut state = self.load_state()?;
        let (params, serial_hex) = leaf_params(&state, &req)?;
        csr.params = params;
        let cert = csr.signed_by(&self.issuer()?)?;
        fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let cert_path = out_dir.join(format!("{}-{}.pem", req.identity.role(), req.identity.id()));
        write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
        record(&mut state, &serial_hex, &req);
        self.save_state(&state)?;
        Ok(Signed { cert_path, serial_hex, dns_names, ip_addresses })
    }

    /// Revokes a certificate by serial (hex) and rewrites the CRL.
    pub fn revoke(&self, serial_hex: &str, reason: &str) -> Result<(), Error> {
        let mut state = self.load_state()?;
        let serial_hex = serial_hex.to_ascii_lowercase();
        if !state.issued.iter().any(|i| i.serial == serial_hex) {
            return Err(Error::Invalid { what: "serial", reason: format!("{serial_hex} was not issued by this CA") });
        }
        if !state.revoked.iter().any(|r| r.serial == serial_hex) {
            state.revoked.push(RevokedRecord { serial: serial_hex, revoked_at: OffsetDateTime::now_utc().unix_timestamp(), reason: reason.to_owned() });
        }
        self.write_crl(&mut state)?;
        self.save_state(&state)
    }

    /// Re-signs the CRL with a fresh validity window (run it before `next_update`).
    pub fn refresh_crl(&self) -> Result<(), Error> {
        let mut state = self.load_state()?;
        self.write_crl(&mut state)?;
        self.save_state(&state)
    }

    /// Signs a CRL with the next CRL number. The caller saves `state` only
    /// after the CRL is in place, so a crash in between re-uses a number for
    /// an identical list, never skips a revocation.
    fn write_crl(&self, state: &mut State) -> Result<(), Error> {
        state.crl_number += 1;
        let issuer = self.issuer()?;
        let now = OffsetDateTime::now_utc();
        let revoked_certs = state
            .revoked
            .iter()
            .map(|r| {
                let bytes = hex::decode(&r.serial).map_err(|e| Error::Invalid { what: "state.json", reason: format!("serial {:?}: {e}", r.serial) })?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: OffsetDateTime::from_unix_timestamp(r.revoked_at).unwrap_or(now),
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from(state.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer)?;
        write_atomic(&self.crl_path(), crl.pem()?.as_bytes(), 0o644)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, Error> {
        let key_pem = fs::read_to_string(self.key_path()).map_err(|e| Error::io(self.key_path(), e))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let cert_pem = fs::read_to_string(self.cert_path()).map_err(|e| Error::io(self.cert_path(), e))?;
        Ok(Issuer::from_ca_cert_pem(&cert_pem, key)?)
    }

    fn load_state(&self) -> Result<State, Error> {
        let path = self.state_path();
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid { what: "state.json", reason: e.to_string() })
    }

    fn save_state(&self, state: &State) -> Result<(), Error> {
        let mut state_to_write = serde_json::to_vec_pretty(state).map_err(|e| Error::Invalid { what: "state.json", reason: e.to_string() })?;
        state_to_write.push(b'\n');
        write_atomic(&self.state_path(), &state_to_write, 0o644)
    }
}

fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| Error::Invalid { what: "serial", reason: "system RNG failed".into() })?;
    // Positive and without a leading zero byte, as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic(path, bytes, 0o600)
}

/// Writes `bytes` to a temporary file created with `mode`, syncs it and renames
/// it over `path`. The mode is set at creation, so a secret is never readable
/// by others, not even for an instant.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
