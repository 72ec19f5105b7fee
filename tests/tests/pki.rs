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
    let out = Command::new(bin("tabadul-certs")).args(["init", "--network", "alo", "--ca-dir"]).arg(&pki.ca_dir).output().unwrap();
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

/// `tabadul-certs <args>`: its output, whatever the outcome.
fn certs(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(tabadul_tests::bin("tabadul-certs")).args(args).output().unwrap()
}

#[tokio::test]
async fn a_node_enrols_with_a_request_and_its_key_never_leaves() {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().unwrap();
    let pki = tabadul_tests::Pki::init(dir.path()).unwrap();
    // The node's team: a key and a request, on the node's machine.
    let node = dir.path().join("node-machine");
    let out = certs(
        &["request", "--network", "alo", "--role", "node", "--id", "MAR", "--ip", "127.0.0.1", "--dns", "localhost", "--out"]
            .map(OsStr::new)
            .into_iter()
            .chain([node.as_os_str()])
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csr = node.join("node-MAR.csr");
    let key = node.join("node-MAR.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let csr_text = std::fs::read_to_string(&csr).unwrap();
    assert!(csr_text.starts_with("-----BEGIN CERTIFICATE REQUEST-----") && !csr_text.contains("PRIVATE KEY"));

    // The administrator: signs what they approve, into another directory.
    let admin = dir.path().join("admin");
    let sign = |csr: &std::path::Path, id: &str| {
        certs(&[
            OsStr::new("sign"),
            OsStr::new("--ca-dir"),
            pki.ca_dir.as_os_str(),
            OsStr::new("--csr"),
            csr.as_os_str(),
            OsStr::new("--role"),
            OsStr::new("node"),
            OsStr::new("--id"),
            OsStr::new(id),
            OsStr::new("--out"),
            admin.as_os_str(),
        ])
    };
    // Attacks first: a request for EGY presented as MAR's, a tampered request.
    let egy = dir.path().join("egy-machine");
    assert!(
        certs(
            &["request", "--network", "alo", "--role", "node", "--id", "EGY", "--ip", "127.0.0.1", "--out"]
                .map(OsStr::new)
                .into_iter()
                .chain([egy.as_os_str()])
                .collect::<Vec<_>>()
        )
        .status
        .success()
    );
    let out = sign(&egy.join("node-EGY.csr"), "MAR");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("it names spiffe://alo/node/EGY, but the approved identity is spiffe://alo/node/MAR"), "{err}");
    let other_net = dir.path().join("other-net");
    assert!(
        certs(
            &["request", "--network", "evil", "--role", "node", "--id", "MAR", "--out"]
                .map(OsStr::new)
                .into_iter()
                .chain([other_net.as_os_str()])
                .collect::<Vec<_>>()
        )
        .status
        .success()
    );
    assert!(String::from_utf8_lossy(&sign(&other_net.join("node-MAR.csr"), "MAR").stderr).contains("spiffe://evil/node/MAR"));
    let mut lines: Vec<String> = csr_text.lines().map(str::to_owned).collect();
    // One base64 character in the signed part (the identity's region).
    let n = lines.len() / 2;
    let mut bytes = lines[n].clone().into_bytes();
    bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
    lines[n] = String::from_utf8(bytes).unwrap();
    let tampered = dir.path().join("tampered.csr");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let out = sign(&tampered, "MAR");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid, self-signed request"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!admin.join("node-MAR.pem").exists(), "nothing is issued for a refused request");

    // The real request: signed, and the node serves with it and its own key.
    let out = sign(&csr, "MAR");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("spiffe://alo/node/MAR") && text.contains("ip          127.0.0.1"), "{text}");
    let node_dir = tabadul_tests::NodeDir::create(&dir.path().join("nodes"), &pki, "MAR", "").unwrap();
    // NodeDir made a certificate the old way; replace it with the enrolled one.
    std::fs::copy(admin.join("node-MAR.pem"), pki.certs_dir.join("node-MAR.pem")).unwrap();
    std::fs::copy(&key, pki.certs_dir.join("node-MAR.key")).unwrap();
    let proc = node_dir.start().unwrap();
    let hub = pki.issue("hub", "alo").unwrap();
    let mut client = tabadul_tests::node_client(proc.addr, &pki.tls_files(&hub), "MAR").unwrap();
    let described = client.describe(tabadul_proto::pb::DescribeRequest {}).await.unwrap().into_inner();
    assert_eq!(described.member, "MAR");
}

/// Renewal before expiry, as the runbook says: `doctor` warns from 30 days
/// out and fails inside 7; `request --key` makes a request for the key in
/// use (no new secret); the CA signs it; the node, which reloads changed
/// certificate files, serves the renewed certificate with the same key and
/// `doctor` is content again.
#[tokio::test]
async fn a_certificate_is_renewed_with_its_own_key_before_it_expires() {
    use std::ffi::OsStr;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = tabadul_tests::NodeDir::create(dir.path(), &pki, "MAR", "").unwrap();
    let (cert, key) = (pki.certs_dir.join("node-MAR.pem"), pki.certs_dir.join("node-MAR.key"));
    let issue = |days: &str| {
        let out = certs(&[
            OsStr::new("issue"),
            OsStr::new("--role"),
            OsStr::new("node"),
            OsStr::new("--id"),
            OsStr::new("MAR"),
            OsStr::new("--ip"),
            OsStr::new("127.0.0.1"),
            OsStr::new("--dns"),
            OsStr::new("localhost"),
            OsStr::new("--days"),
            OsStr::new(days),
            OsStr::new("--ca-dir"),
            pki.ca_dir.as_os_str(),
            OsStr::new("--out"),
            pki.certs_dir.as_os_str(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let proc = node.start().unwrap();
    let doctor = || {
        let out = node.command(&["doctor"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, text) = doctor();
    assert_eq!(code, Some(0), "a fresh certificate (90 days by default) is fine: {text}");
    assert!(!text.contains("renew it"), "{text}");
    issue("20");
    let (code, text) = doctor();
    assert_eq!(code, Some(0), "20 days left is a warning, not a failure: {text}");
    assert!(text.contains("renew it soon") && text.contains("request --key"), "{text}");
    issue("3");
    let (code, text) = doctor();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("renew it now"), "{text}");

    // The renewal: a request for the key in use; nothing secret written.
    let key_before = std::fs::read(&key).unwrap();
    let req_dir = dir.path().join("renewal");
    let out = certs(&[
        OsStr::new("request"),
        OsStr::new("--network"),
        OsStr::new("alo"),
        OsStr::new("--role"),
        OsStr::new("node"),
        OsStr::new("--id"),
        OsStr::new("MAR"),
        OsStr::new("--ip"),
        OsStr::new("127.0.0.1"),
        OsStr::new("--dns"),
        OsStr::new("localhost"),
        OsStr::new("--key"),
        key.as_os_str(),
        OsStr::new("--out"),
        req_dir.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!req_dir.join("node-MAR.key").exists(), "a renewal writes no new key");
    assert_eq!(std::fs::read(&key).unwrap(), key_before, "the key in use is untouched");
    let signed = dir.path().join("signed");
    let out = certs(&[
        OsStr::new("sign"),
        OsStr::new("--ca-dir"),
        pki.ca_dir.as_os_str(),
        OsStr::new("--csr"),
        req_dir.join("node-MAR.csr").as_os_str(),
        OsStr::new("--role"),
        OsStr::new("node"),
        OsStr::new("--id"),
        OsStr::new("MAR"),
        OsStr::new("--out"),
        signed.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::copy(signed.join("node-MAR.pem"), &cert).unwrap();
    let (code, text) = doctor();
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("renew it"), "{text}");
    // The running node serves it with the key it had (the key file was
    // never touched): a fresh handshake, whose signature proves the key
    // matches the certificate, sees the new serial.
    let serial = tls::serial_hex(&tls::load_certs(&cert).unwrap()[0]).unwrap();
    let hub = pki.issue("hub", "alo").unwrap();
    let served = tabadul_tests::eventually(std::time::Duration::from_secs(10), async || {
        let config = tls::client_config(&pki.tls_files(&hub)).unwrap();
        let tcp = tokio::net::TcpStream::connect(proc.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let Ok(s) = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await else { return false };
        s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| tls::serial_hex(c).unwrap()) == Some(serial.clone())
    })
    .await;
    assert!(served, "the node does not serve the renewed certificate");
}
