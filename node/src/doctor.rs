//! `tabadul-node doctor`: checks what the node depends on and says what is
//! wrong in plain words: its certificate, the CRL, the dictionary and
//! policy, its log key, the hub keys it witnesses for, the modes of its
//! data directory, and whether the
//! running node answers on its admin socket.

use tabadul_certs::Role;

use crate::NodeConfig;
use crate::policy::Policy;

pub use tabadul_certs::checkup::Finding as Check;

fn check(subject: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check::new(subject, ok, detail)
}

/// Runs every check; never fails, every problem is a finding.
pub async fn run(config: &NodeConfig) -> Vec<Check> {
    let (mut out, identity) = tabadul_certs::checkup::tls_files(&config.tls, Role::Node);
    match tabadul_proto::Dictionary::load(&config.dictionary) {
        Err(e) => out.push(check("dictionary", false, e.to_string())),
        Ok(dict) => {
            out.push(check("dictionary", true, format!("version {}", dict.version)));
            match Policy::load(&config.policy, &dict) {
                Ok(p) => out.push(check("policy", true, format!("version {}, {} rules", p.version, p.rules.len()))),
                Err(e) => out.push(check("policy", false, e.to_string())),
            }
        }
    }
    match (tabadul_audit::load_signer(&config.log_key), &identity) {
        (Ok(s), Some(id)) if s.name() == format!("{}/node/{}", id.network(), id.id()) => {
            out.push(check("log key", true, format!("signs as {} (the ALO needs this key)", s.verifier())));
        }
        (Ok(s), _) => out.push(check("log key", false, format!("is for {}, not this node's log", s.name()))),
        (Err(e), _) => out.push(check("log key", false, e.to_string())),
    }
    match (&config.witness_key, &identity) {
        (None, _) if config.witness_logs.is_empty() => out.push(check("witness key", true, "no witness_key, and no log to witness")),
        (None, _) if config.dangerous_witness_with_log_key => out.push(check("witness key", false, "no witness_key: cosignatures are made with the log key (dangerous_witness_with_log_key; make one with tabadul-audit keygen --origin <network>/witness/<member>)")),
        (None, _) => out.push(check("witness key", false, "no witness_key: the node will not start while witness_logs is set (make one with tabadul-audit keygen --origin <network>/witness/<member>)")),
        (Some(path), Some(id)) => match tabadul_audit::load_signer(path) {
            Ok(s) if s.name() == format!("{}/witness/{}", id.network(), id.id()) => {
                out.push(check("witness key", true, format!("cosigns as {} (the ALO needs this key too)", s.verifier())));
            }
            Ok(s) => out.push(check("witness key", false, format!("is for {}, not this node's witness", s.name()))),
            Err(e) => out.push(check("witness key", false, e.to_string())),
        },
        (Some(_), None) => {}
    }
    if config.witness_logs.is_empty() {
        out.push(check("witness", false, "no hub key in witness_logs: this node cosigns nothing"));
    }
    for v in &config.witness_logs {
        match tabadul_audit::Verifier::parse(v) {
            Ok(k) => out.push(check("witness", true, format!("cosigns {}", k.name()))),
            Err(e) => out.push(check("witness", false, format!("witness_logs entry: {e}"))),
        }
    }
    out.extend(data_dir_modes(config));
    match crate::admin::connect(&config.admin_socket()).await {
        None => out.push(check("server", false, format!("not running (no admin socket in {})", config.data_dir.display()))),
        Some(mut admin) => match admin.status(tabadul_proto::pb::StatusRequest {}).await {
            Ok(s) => {
                let s = s.into_inner();
                out.push(check("server", true, format!("running: {} observations, {} log entries, policy {}", s.observations, s.events, s.policy_version)));
            }
            Err(e) => out.push(check("server", false, format!("admin socket does not answer: {}", e.message()))),
        },
    }
    out
}

/// The data directory (microdata, release ledger, log) and the stores in it
/// must not let other accounts in.
fn data_dir_modes(config: &NodeConfig) -> Vec<Check> {
    if !config.data_dir.exists() {
        return vec![check("data directory", true, format!("{} does not exist yet; the node will create it with mode 700", config.data_dir.display()))];
    }
    let loose: Vec<String> = [config.data_dir.clone(), config.store_dir(), config.log_dir()]
        .iter()
        .filter_map(|d| crate::private::too_open(d).map(|mode| format!("{} is mode {mode:o}", d.display())))
        .collect();
    if loose.is_empty() {
        vec![check("data directory", true, format!("{} is readable by the node's user only", config.data_dir.display()))]
    } else {
        vec![check("data directory", false, format!("{}: others may read microdata, the release ledger and the log; chmod 700 them", loose.join(", ")))]
    }
}
