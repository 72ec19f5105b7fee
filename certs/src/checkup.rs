//! The certificate half of `doctor`: is our own certificate the right
//! role, how long until it expires, is the CRL fresh. Shared by node and
//! hub, which add their own checks.

use crate::tls::{self, TlsFiles};
use crate::{Identity, Role};

/// One finding, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked: `certificate`, `crl`, a member code, ...
    pub subject: String,
    pub ok: bool,
    pub detail: String,
}

impl Finding {
    pub fn new(subject: &str, ok: bool, detail: impl Into<String>) -> Self {
        Finding { subject: subject.to_owned(), ok, detail: detail.into() }
    }
}

/// A certificate expiring sooner than this is reported: time to renew.
pub const RENEW_WITHIN_DAYS: i64 = 30;

/// A certificate expiring sooner than this is a problem (`doctor` fails).
pub const URGENT_WITHIN_DAYS: i64 = 7;

const RENEW_HOW: &str = "tabadul-certs request --key <this key> … --out <dir>, then the CA signs the .csr";

/// Checks the certificate (role `role`, expiry) and the CRL of `files`.
/// Returns the findings and our identity when the certificate is usable.
pub fn tls_files(files: &TlsFiles, role: Role) -> (Vec<Finding>, Option<Identity>) {
    let mut out = Vec::new();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let identity = match files.own_identity() {
        Ok(id) if id.role() == role => {
            out.push(Finding::new("certificate", true, format!("identity {id}")));
            Some(id)
        }
        Ok(id) => {
            out.push(Finding::new("certificate", false, format!("names {id}, which is not a {role} identity")));
            None
        }
        Err(e) => {
            out.push(Finding::new("certificate", false, format!("cannot be read: {e}")));
            None
        }
    };
    match tls::not_after(&files.cert) {
        Ok(t) if t <= now => out.push(Finding::new("certificate", false, "has expired: peers refuse it; get a new one from the network CA")),
        Ok(t) if t - now < URGENT_WITHIN_DAYS * 86_400 => {
            out.push(Finding::new("certificate", false, format!("expires in {} days: renew it now ({RENEW_HOW})", (t - now) / 86_400)));
        }
        Ok(t) if t - now < RENEW_WITHIN_DAYS * 86_400 => {
            out.push(Finding::new("certificate", true, format!("expires in {} days: renew it soon ({RENEW_HOW})", (t - now) / 86_400)));
        }
        Ok(t) => out.push(Finding::new("certificate", true, format!("valid for {} more days", (t - now) / 86_400))),
        Err(e) => out.push(Finding::new("certificate", false, e.to_string())),
    }
    match &files.crl {
        None => out.push(Finding::new("crl", false, "none configured: revoked certificates are not refused")),
        Some(path) => match tls::crl_next_update(path) {
            Ok(Some(t)) if t < now => out.push(Finding::new("crl", false, format!("stale since {} hours: fetch the network's new CRL", (now - t) / 3600))),
            Ok(Some(t)) => out.push(Finding::new("crl", true, format!("fresh for {} more hours", (t - now) / 3600))),
            Ok(None) => out.push(Finding::new("crl", true, "loaded (no next-update date)")),
            Err(e) => out.push(Finding::new("crl", false, e.to_string())),
        },
    }
    (out, identity)
}

/// The report `doctor` prints (one line per finding, then a verdict) and
/// the number of problems.
pub fn render(findings: &[Finding]) -> (String, usize) {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!("{} {:<12} {}\n", if f.ok { "ok     " } else { "PROBLEM" }, f.subject, f.detail));
    }
    let problems = findings.iter().filter(|f| !f.ok).count();
    out.push_str(&if problems > 0 { format!("\n{problems} problem(s)\n") } else { "\nall checks passed\n".to_owned() });
    (out, problems)
}
