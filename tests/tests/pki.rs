//! `tabadul-certs`: what it writes, what it refuses, what it never prints.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use tabadul_certs::tls;
use tabadul_tests::{Pki, bin};

#[test]
fn issue_writes_private_keys_0600_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(pki.ca_dir.join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let out = Command::new(bin("tabadul-certs"))
        .args(["issue", "--role", "node", "--id", "MAR", "--ip", "127.0.0.1", "--ca-dir"])
        .arg(&pki.ca_dir)
        .arg("--out")
        .arg(&pki.certs_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    let key = pki.certs_dir.join("node-MAR.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"));
    let chain = tls::load_certs(&pki.certs_dir.join("node-MAR.pem")).unwrap();
    assert_eq!(tls::identity_of(&chain[0]).unwrap().to_string(), "spiffe://alo/node/MAR");
}

#[test]
fn bad_requests_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let issue = |role: &str, id: &str| {
        Command::new(bin("tabadul-certs"))
            .args(["issue", "--role", role, "--id", id, "--ca-dir"])
            .arg(&pki.ca_dir)
            .arg("--out")
            .arg(&pki.certs_dir)
            .output()
            .unwrap()
    };
    let out = issue("node", "Morocco");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ISO 3166-1 alpha-3"));
    let out = issue("king", "x");
    assert!(!out.status.success());
    // init refuses to overwrite an existing CA.
    let out = Command::new(bin("tabadul-certs"))
        .args(["init", "--network", "alo", "--ca-dir"])
        .arg(&pki.ca_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
}

#[test]
fn revoke_puts_the_serial_in_a_fresh_crl() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let cert = pki.issue("hub", "alo").unwrap();
    let before = std::fs::read(pki.crl()).unwrap();
    pki.revoke(&cert).unwrap();
    let after = std::fs::read(pki.crl()).unwrap();
    assert_ne!(before, after);
    let serial = tls::serial_hex(&tls::load_certs(&cert.cert).unwrap()[0]).unwrap();
    let crl_der = &tls::load_crls(&pki.crl()).unwrap()[0];
    let serial_bytes = hex_decode(&serial);
    assert!(crl_der.as_ref().windows(serial_bytes.len()).any(|w| w == serial_bytes), "serial {serial} not in CRL");
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
