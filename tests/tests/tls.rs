//! Attacks on the mutual-TLS boundary: each must be refused at the handshake
//! (or right after it, before any request is served).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::sync::Arc;
use std::time::Duration;

use tabadul_certs::pki::{CaDir, IssueRequest};
use tabadul_certs::tls::{self, Expect};
use tabadul_certs::{Identity, Role};
use tabadul_proto::pb;
use tabadul_tests::{NodeDir, Pki, collect, eventually, node_client};

const POLICY: &str = "[[rule]]\nid = \"hub\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\"]\n";

fn q() -> pb::Query {
    pb::Query { dataflow: "UNE_RATE".into(), ..Default::default() }
}

struct Fixture {
    dir: tempfile::TempDir,
    pki: Pki,
    proc: tabadul_tests::Proc,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap();
    let proc = node.start().unwrap();
    Fixture { dir, pki, proc }
}

async fn refused(f: &Fixture, client: &mut pb::node_client::NodeClient<tonic::transport::Channel>, log_says: &str) {
    let err = collect(client, q()).await.expect_err("the node answered an attacker");
    // The connection is torn down: TLS 1.3 clients see it when they first
    // read, as a failed or cancelled call; never as an answer or a decision.
    assert!(matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown), "{err:?}");
    let logged = eventually(Duration::from_secs(5), async || f.proc.log_text().contains(log_says)).await;
    assert!(logged, "node log lacks {log_says:?}:\n{}", f.proc.log_text());
}

#[tokio::test]
async fn the_genuine_hub_gets_an_answer() {
    // The control for every attack below: same node, right certificate.
    let f = start();
    let hub = f.pki.issue("hub", "alo").unwrap();
    let mut client = node_client(f.proc.addr, &f.pki.tls_files(&hub), "MAR").unwrap();
    let (d, _) = collect(&mut client, q()).await.unwrap();
    assert_eq!(d.rule_id, "hub");
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let f = start();
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::load_certs(&f.pki.ca_cert()).unwrap() {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let expect = Expect::Identity(Identity::new("alo", Role::Node, "MAR").unwrap());
    let channel = tls::channel(&f.proc.addr.to_string(), expect, Arc::new(config), Duration::from_secs(5)).unwrap();
    let mut client = pb::node_client::NodeClient::new(channel);
    refused(&f, &mut client, "TLS handshake refused").await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let f = start();
    let other = Pki::init(&f.dir.path().join("rogue")).unwrap();
    let rogue_hub = other.issue("hub", "alo").unwrap();
    // The rogue trusts the real CA so that only *our* check can fail.
    let mut files = other.tls_files(&rogue_hub);
    files.ca = f.pki.ca_cert();
    files.crl = None;
    let mut client = node_client(f.proc.addr, &files, "MAR").unwrap();
    refused(&f, &mut client, "TLS handshake refused").await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let f = start();
    let ca = CaDir::open(&f.pki.ca_dir).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let req = IssueRequest {
        identity: Identity::new("alo", Role::Hub, "old").unwrap(),
        dns_names: vec![],
        ip_addresses: vec![],
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    let issued = ca.issue(&req, &f.dir.path().join("expired")).unwrap();
    let files = tls::TlsFiles { ca: f.pki.ca_cert(), cert: issued.cert_path, key: issued.key_path, crl: None };
    let mut client = node_client(f.proc.addr, &files, "MAR").unwrap();
    refused(&f, &mut client, "TLS handshake refused").await;
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_once_the_crl_is_published() {
    let f = start();
    let hub = f.pki.issue("hub", "alo").unwrap();
    let files = f.pki.tls_files(&hub);
    let mut client = node_client(f.proc.addr, &files, "MAR").unwrap();
    collect(&mut client, q()).await.expect("valid before revocation");
    f.pki.revoke(&hub).unwrap();
    // The running node reloads the CRL; a new connection is then refused.
    let refused_now = eventually(Duration::from_secs(10), async || {
        let mut fresh = node_client(f.proc.addr, &files, "MAR").unwrap();
        collect(&mut fresh, q()).await.is_err()
    })
    .await;
    assert!(refused_now, "revoked certificate still accepted:\n{}", f.proc.log_text());
    // The client sees the alert before the node has written its log line.
    let logged = eventually(Duration::from_secs(5), async || f.proc.log_text().contains("TLS handshake refused")).await;
    assert!(logged, "node log lacks the refusal:\n{}", f.proc.log_text());
    // Revocation was of that certificate only.
    let other = f.pki.issue("hub", "alo2").unwrap();
    let mut ok = node_client(f.proc.addr, &f.pki.tls_files(&other), "MAR").unwrap();
    collect(&mut ok, q()).await.expect("an unrevoked hub still gets in");
}

#[tokio::test]
async fn a_server_with_the_wrong_identity_is_not_believed() {
    // The hub expects EGY at this address, but MAR's node answers: a spoof.
    let f = start();
    let hub = f.pki.issue("hub", "alo").unwrap();
    let mut client = node_client(f.proc.addr, &f.pki.tls_files(&hub), "EGY").unwrap();
    let err = collect(&mut client, q()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let mut chain = format!("{err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&e.to_string());
        source = e.source();
    }
    assert!(chain.contains("presented identity spiffe://alo/node/MAR, expected spiffe://alo/node/EGY"), "{chain}");
}
