//! `tabadul-hub doctor`: checks what the hub depends on and says what is
//! wrong in plain words: its certificate, the CRL, its log key, and for
//! every member the connection (TLS, identity, health), the key the
//! member's log is signed with, and the member's clock.

use std::time::{Duration, Instant};

use tabadul_audit::{Checkpoint, Verifier};
use tabadul_certs::tls::{self, Expect};
use tabadul_certs::{Identity, Role};
use tabadul_proto::pb;

use crate::HubConfig;

pub use tabadul_certs::checkup::Finding as Check;

fn check(subject: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check::new(subject, ok, detail)
}

/// Largest clock difference with a member that is not reported.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(60);

/// Runs every check; never fails, every problem is a finding.
pub async fn run(config: &HubConfig) -> Vec<Check> {
    let (mut out, identity) = tabadul_certs::checkup::tls_files(&config.tls, Role::Hub);
    match (tabadul_audit::load_signer(&config.log_key), &identity) {
        (Ok(s), Some(id)) if s.name() == format!("{}/hub/{}", id.network(), id.id()) => {
            out.push(check("log key", true, format!("signs as {}", s.verifier())));
        }
        (Ok(s), _) => out.push(check("log key", false, format!("is for {}, not this hub's log", s.name()))),
        (Err(e), _) => out.push(check("log key", false, e.to_string())),
    }
    if let Some(d) = &config.signed_directory {
        // Loading the configuration verified it; what is left to say is
        // which version, and whether this hub is listed with its key.
        let listed = identity.as_ref().and_then(|id| d.doc.hub(id.id())).map(|h| h.log_vkey.clone());
        let own = tabadul_audit::load_signer(&config.log_key).ok().map(|s| s.verifier().to_string());
        let ok = listed.is_some() && listed == own;
        out.push(check(
            "network directory",
            ok,
            if ok {
                format!("version {} verified against the anchor: {} members, dictionary {}", d.doc.version, d.doc.members.len(), d.doc.dictionary.version)
            } else {
                format!("version {} does not list this hub with the log key it signs with", d.doc.version)
            },
        ));
    }
    out.extend(front_door(config));
    out.push(data_dir(config));
    let Some(identity) = identity else { return out };
    let client_tls = match tls::client_config(&config.tls) {
        Ok(c) => c,
        Err(e) => {
            out.push(check("certificate", false, format!("cannot make a TLS client: {e}")));
            return out;
        }
    };
    let members = futures::future::join_all(config.members.iter().map(|m| {
        let client_tls = client_tls.clone();
        let identity = identity.clone();
        async move { member(m, &identity, client_tls).await }
    }))
    .await;
    out.extend(members.into_iter().flatten());
    out
}

async fn member(m: &crate::config::MemberConfig, hub: &Identity, client_tls: std::sync::Arc<rustls::ClientConfig>) -> Vec<Check> {
    let code = m.code.as_str();
    let expected = match &m.identity {
        Some(id) => id.clone(),
        None => match Identity::new(hub.network(), Role::Node, code) {
            Ok(id) => id,
            Err(e) => return vec![check(code, false, e.to_string())],
        },
    };
    let channel = match tls::channel(&m.endpoint, Expect::Identity(expected.clone()), client_tls, Duration::from_secs(3)) {
        Ok(c) => c,
        Err(e) => return vec![check(code, false, format!("endpoint {}: {e}", m.endpoint))],
    };
    let mut out = Vec::new();
    let started = Instant::now();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
    request.set_timeout(Duration::from_secs(3));
    match tokio::time::timeout(Duration::from_secs(4), health.check(request)).await {
        Err(_) => return vec![check(code, false, format!("{} accepts connections but does not answer within 4 s", m.endpoint))],
        Ok(Err(s)) => {
            let mut why = s.message().to_owned();
            let mut source = std::error::Error::source(&s);
            while let Some(e) = source {
                why.push_str(": ");
                why.push_str(&e.to_string());
                source = e.source();
            }
            return vec![check(code, false, format!("unreachable at {}: {why}", m.endpoint))];
        }
        Ok(Ok(r)) => {
            let serving = r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
            out.push(check(
                code,
                serving,
                format!(
                    "{} at {}: TLS and identity verified, {} in {} ms",
                    expected,
                    m.endpoint,
                    if serving { "serving" } else { "NOT serving" },
                    started.elapsed().as_millis()
                ),
            ));
            if let Some(skew) = clock_skew(r.metadata()) {
                let ok = skew.unsigned_abs() <= CLOCK_TOLERANCE.as_secs();
                out.push(check(
                    code,
                    ok,
                    if ok {
                        format!("clock within {} s of ours", skew.unsigned_abs())
                    } else {
                        format!(
                            "clock is {} s {} ours: embargoes and certificate checks will misfire",
                            skew.unsigned_abs(),
                            if skew > 0 { "ahead of" } else { "behind" }
                        )
                    },
                ));
            }
        }
    }
    match Verifier::parse(&m.log_vkey) {
        Err(e) => out.push(check(code, false, format!("log_vkey in hub.toml: {e}"))),
        Ok(key) => {
            let mut audit = pb::audit_client::AuditClient::new(channel);
            match tokio::time::timeout(Duration::from_secs(4), audit.checkpoint(pb::CheckpointRequest { size: 0 })).await {
                Err(_) => out.push(check(code, false, "does not serve its log checkpoint within 4 s")),
                Ok(Err(s)) => out.push(check(code, false, format!("cannot read its log checkpoint: {}", s.message()))),
                Ok(Ok(r)) => match Checkpoint::open(&r.into_inner().checkpoint, &key) {
                    Ok((cp, _)) => out.push(check(code, true, format!("log at size {} signed with the configured key", cp.size))),
                    Err(e) => out.push(check(
                        code,
                        false,
                        format!("its log is not signed with the log_vkey in hub.toml ({e}): every answer from it will be rejected"),
                    )),
                },
            }
        }
    }
    out
}

/// Peer clock minus ours, in seconds, from the HTTP `date` header.
fn clock_skew(meta: &tonic::metadata::MetadataMap) -> Option<i64> {
    let date = meta.get("date")?.to_str().ok()?;
    let format = time::macros::format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");
    let theirs = time::PrimitiveDateTime::parse(date, &format).ok()?.assume_utc().unix_timestamp();
    Some(theirs - time::OffsetDateTime::now_utc().unix_timestamp())
}

/// The hub's log (and its salts) and the token file live in `data_dir`,
/// which the hub creates 0700; one made looser by hand is reported.
fn data_dir(config: &HubConfig) -> Check {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(&config.data_dir) {
        Err(_) => check("data directory", true, format!("{} does not exist yet; the hub will create it with mode 700", config.data_dir.display())),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => check(
            "data directory",
            false,
            format!("{} is mode {:o}: others may read the hub's log and salts; chmod 700 it", config.data_dir.display(), m.permissions().mode() & 0o777),
        ),
        Ok(_) => check("data directory", true, format!("{} is readable by the hub's user only", config.data_dir.display())),
    }
}

/// The HTTP front door's own files and settings.
fn front_door(config: &HubConfig) -> Vec<Check> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let h = &config.http;
    if h.dangerous_plain_http {
        out.push(check("front door", false, "dangerous_plain_http: operator tokens cross the network in clear text (only behind a TLS proxy on this host)"));
    }
    match std::fs::metadata(&h.tokens) {
        Err(_) => out.push(check("operator tokens", true, format!("none issued yet ({})", h.tokens.display()))),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => out.push(check(
            "operator tokens",
            false,
            format!("{} is readable by others (mode {:o}); chmod 600 it", h.tokens.display(), m.permissions().mode() & 0o777),
        )),
        Ok(_) => match crate::tokens::list(&h.tokens) {
            Ok(list) => {
                let now = time::OffsetDateTime::now_utc();
                let live = list.iter().filter(|t| t.live_at(now)).count();
                let revoked = list.iter().filter(|t| t.revoked.is_some()).count();
                out.push(check("operator tokens", true, format!("{live} live, {revoked} revoked, {} expired", list.len() - live - revoked)));
                let legacy: Vec<String> = list.iter().filter(|t| t.is_legacy() && t.live_at(now)).map(|t| format!("{} ({})", t.id, t.name)).collect();
                if !legacy.is_empty() {
                    out.push(check(
                        "operator tokens",
                        false,
                        format!(
                            "{} never expire (issued before tokens had lifetimes): issue a new token with --expires-in, then revoke these by id",
                            legacy.join(", ")
                        ),
                    ));
                }
            }
            Err(e) => out.push(check("operator tokens", false, e.to_string())),
        },
    }
    for m in config.members.iter().filter(|m| m.witness && m.witness_vkey.is_none()) {
        out.push(check(&format!("{} witness key", m.code), false, "no witness_vkey: its cosignatures are checked against its log key"));
    }
    out
}
