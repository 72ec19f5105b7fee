//! Certificates the network CA would never issue, forged at test time with
//! the CA's own key (as a mistake or a stolen key would make them), thrown
//! at every entry point: the node's gRPC, the hub's gRPC and the hub's
//! HTTPS front door. webpki alone accepts them (CRLs are off here, the
//! weakest configuration); the network's own checks must refuse each one
//! with a precise reason, while proper certificates still work. Also: the
//! operator CLI refuses a hub of another network before sending anything.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use tabadul_certs::tls::TlsFiles;
use tabadul_proto::pb;
use tabadul_tests::http::Client;
use tabadul_tests::{Cert, HubMember, NodeDir, Pki, Proc, bin, collect, eventually, hub_client, node_client, restart_hub, start_hub};

const POLICY: &str = "[[rule]]\nid = \"hub\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\"]\n\n\
                      [[rule]]\nid = \"open\"\nrequester = \"public\"\ndataflows = [\"UNE_RATE\"]\n";

/// What is wrong with a forged certificate.
#[derive(Debug, Clone, Copy)]
enum Flaw {
    /// Signed by an intermediate CA that the network CA signed.
    Intermediate,
    NoKeyUsage,
    NoExtendedKeyUsage,
    TwoIdentities,
    NoIdentity,
}

impl Flaw {
    const ALL: [Flaw; 5] = [Flaw::Intermediate, Flaw::NoKeyUsage, Flaw::NoExtendedKeyUsage, Flaw::TwoIdentities, Flaw::NoIdentity];

    /// What the refusal must say.
    fn reason(self) -> &'static str {
        match self {
            Flaw::Intermediate => "intermediate certificate",
            Flaw::NoKeyUsage => "no key usage extension",
            Flaw::NoExtendedKeyUsage => "no extended key usage",
            Flaw::TwoIdentities => "more than one spiffe:// URI SAN",
            Flaw::NoIdentity => "no spiffe:// URI SAN",
        }
    }
}

fn network_ca(pki: &Pki) -> Issuer<'static, KeyPair> {
    let key = KeyPair::from_pem(&std::fs::read_to_string(pki.ca_dir.join("ca.key")).unwrap()).unwrap();
    Issuer::from_ca_cert_pem(&std::fs::read_to_string(pki.ca_cert()).unwrap(), key).unwrap()
}

/// Leaf parameters as `tabadul-certs issue` makes them for `uri` (client
/// and server use, loopback names), before a flaw is applied.
fn proper_leaf(uri: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, uri);
    params.distinguished_name = dn;
    params.subject_alt_names =
        vec![SanType::URI(uri.try_into().unwrap()), SanType::DnsName("localhost".try_into().unwrap()), SanType::IpAddress("127.0.0.1".parse().unwrap())];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(1);
    params.use_authority_key_identifier_extension = true;
    params
}

/// Forges a certificate for `uri` with `flaw`, signed (directly or through
/// an intermediate) with the network CA's key; the PEM holds the chain.
fn forge(pki: &Pki, dir: &Path, uri: &str, flaw: Option<Flaw>) -> Cert {
    let ca = network_ca(pki);
    let mut params = proper_leaf(uri);
    match flaw {
        None | Some(Flaw::Intermediate) => {}
        Some(Flaw::NoKeyUsage) => params.key_usages.clear(),
        Some(Flaw::NoExtendedKeyUsage) => params.extended_key_usages.clear(),
        Some(Flaw::TwoIdentities) => params.subject_alt_names.push(SanType::URI("spiffe://alo/operator/mallory".try_into().unwrap())),
        Some(Flaw::NoIdentity) => params.subject_alt_names.retain(|s| !matches!(s, SanType::URI(_))),
    }
    let key = KeyPair::generate().unwrap();
    let pem = if let Some(Flaw::Intermediate) = flaw {
        let mut inter = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Rogue intermediate CA");
        inter.distinguished_name = dn;
        inter.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        inter.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        inter.not_before = params.not_before;
        inter.not_after = params.not_after;
        let inter_key = KeyPair::generate().unwrap();
        let inter_cert = inter.clone().signed_by(&inter_key, &ca).unwrap();
        let leaf = params.signed_by(&key, &Issuer::new(inter, inter_key)).unwrap();
        format!("{}{}", leaf.pem(), inter_cert.pem())
    } else {
        params.signed_by(&key, &ca).unwrap().pem()
    };
    std::fs::create_dir_all(dir).unwrap();
    let stem = format!("{flaw:?}").replace(['(', ')'], "");
    let cert = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, pem).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Cert { cert, key: key_path }
}

fn files(pki: &Pki, cert: &Cert) -> TlsFiles {
    TlsFiles { ca: pki.ca_cert(), cert: cert.cert.clone(), key: cert.key.clone(), crl: None }
}

/// Drops the `crl = ...` line of a config: no CRL, so webpki alone would
/// let the intermediate through.
fn without_crl(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("crl =")).collect();
    std::fs::write(config, kept.join("\n") + "\n").unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    pki: Pki,
    node: Proc,
    hub: Proc,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node_dir = NodeDir::create(&dir.path().join("nodes"), &pki, "MAR", POLICY).unwrap();
    without_crl(&node_dir.config);
    let node = node_dir.start().unwrap();
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let members = [HubMember::new(&pki, "MAR", node.addr.to_string()).unwrap()];
    let hub_dir = dir.path().join("hub");
    let mut hub = start_hub(&hub_dir, &pki, &hub_cert, &members, 3000).unwrap();
    hub.kill();
    without_crl(&hub_dir.join("hub.toml"));
    let hub = restart_hub(&hub_dir).unwrap();
    Fixture { dir, pki, node, hub }
}

fn q() -> pb::Query {
    pb::Query { dataflow: "UNE_RATE".into(), ..Default::default() }
}

/// The call failed and the server's log says exactly why.
async fn refused_at_handshake(server: &Proc, result: Result<(), tonic::Status>, flaw: Flaw) {
    let err = result.expect_err(&format!("{flaw:?}: the server answered"));
    assert!(matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown), "{flaw:?}: {err:?}");
    let logged =
        eventually(Duration::from_secs(5), async || server.log_text().lines().any(|l| l.contains("TLS handshake refused") && l.contains(flaw.reason()))).await;
    assert!(logged, "{flaw:?}: no refusal naming {:?} in the server log:\n{}", flaw.reason(), server.log_text());
}

#[tokio::test]
async fn forged_certificates_are_refused_at_every_entry_point() {
    let f = start();
    let forged = f.dir.path().join("forged");

    // Controls: certificates made the same way, without a flaw, get in.
    let good_hub = forge(&f.pki, &forged.join("good-hub"), "spiffe://alo/hub/alo", None);
    let mut node = node_client(f.node.addr, &files(&f.pki, &good_hub), "MAR").unwrap();
    collect(&mut node, q()).await.expect("a proper hub certificate reaches the node");
    let good_op = forge(&f.pki, &forged.join("good-op"), "spiffe://alo/operator/analyst", None);
    let mut hub = hub_client(f.hub.addr, &files(&f.pki, &good_op)).unwrap();
    let request = pb::FederatedQueryRequest { query: Some(q()), members: vec!["MAR".into()], ..Default::default() };
    hub.federated_query(request.clone()).await.expect("a proper operator certificate reaches the hub");
    let https = Client::tls(f.hub.http.unwrap(), &f.pki.ca_cert(), Some(&files(&f.pki, &good_op))).unwrap();
    let me = https.get("/api/v1/whoami", &[]).unwrap();
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json().unwrap()["operator"], "spiffe://alo/operator/analyst");

    for flaw in Flaw::ALL {
        // The node, as if the hub called it.
        let hub_cert = forge(&f.pki, &forged.join(format!("node-{flaw:?}")), "spiffe://alo/hub/alo", Some(flaw));
        let mut client = node_client(f.node.addr, &files(&f.pki, &hub_cert), "MAR").unwrap();
        refused_at_handshake(&f.node, collect(&mut client, q()).await.map(|_| ()), flaw).await;

        // The hub's operator API.
        let op = forge(&f.pki, &forged.join(format!("hub-{flaw:?}")), "spiffe://alo/operator/analyst", Some(flaw));
        let mut client = hub_client(f.hub.addr, &files(&f.pki, &op)).unwrap();
        refused_at_handshake(&f.hub, client.federated_query(request.clone()).await.map(|_| ()), flaw).await;

        // The front door: a 403 that says why, on every path, never the
        // public tier.
        let client = Client::tls(f.hub.http.unwrap(), &f.pki.ca_cert(), Some(&files(&f.pki, &op))).unwrap();
        for (path, body) in [("/api/v1/whoami", None), ("/api/v1/query", Some(serde_json::json!({ "dataflow": "UNE_RATE" })))] {
            let answer = match &body {
                None => client.get(path, &[]).unwrap(),
                Some(b) => client.post_json(path, &[], b).unwrap(),
            };
            assert_eq!(answer.status, 403, "{flaw:?} {path}: {}", answer.text());
            let message = answer.json().unwrap()["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.contains(flaw.reason()), "{flaw:?} {path}: {message}");
        }
        let sdmx = client.get("/sdmx/data/UNE_RATE/MAR...", &[]).unwrap();
        assert_eq!(sdmx.status, 403, "{flaw:?}: {}", sdmx.text());
        assert!(sdmx.text().contains(flaw.reason()), "{flaw:?}: {}", sdmx.text());
    }

    // And the public tier itself is still open to a client without one.
    let public = Client::tls(f.hub.http.unwrap(), &f.pki.ca_cert(), None).unwrap();
    assert_eq!(public.get("/api/v1/whoami", &[]).unwrap().json().unwrap()["tier"], "public");
}

/// A server certificate without an extended key usage (webpki would take
/// it as good for anything): clients refuse it before sending a request.
/// (One with `clientAuth` only, webpki refuses by itself.)
#[tokio::test]
async fn a_server_without_server_auth_is_not_believed() {
    let f = start();
    let dir = f.dir.path().join("no-eku");
    let ca = network_ca(&f.pki);
    let mut params = proper_leaf("spiffe://alo/node/MAR");
    params.extended_key_usages.clear();
    let key = KeyPair::generate().unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("node.pem"), params.signed_by(&key, &ca).unwrap().pem()).unwrap();
    std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
    let server_files = TlsFiles { ca: f.pki.ca_cert(), cert: dir.join("node.pem"), key: dir.join("node.key"), crl: None };
    let (addr, got_bytes) = serve_once(&server_files).await;
    let hub = f.pki.issue("hub", "alo").unwrap();
    let mut client = node_client(addr, &f.pki.tls_files(&hub), "MAR").unwrap();
    let err = collect(&mut client, q()).await.unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains("no extended key usage (serverAuth is required)"), "{chain}");
    assert_eq!(got_bytes.await.unwrap(), 0, "the client sent a request to a server it should not believe");
}

/// `tabadul-hub query` against a hub whose certificate (signed by our CA's
/// key) names another network: refused before a byte of the query is sent.
#[tokio::test]
async fn the_operator_cli_refuses_a_hub_of_another_network() {
    let f = start();
    let evil = forge(&f.pki, &f.dir.path().join("evil"), "spiffe://evil/hub/alo", None);
    let (addr, got_bytes) = serve_once(&files(&f.pki, &evil)).await;
    let op = f.pki.issue("operator", "analyst").unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin("tabadul-hub"))
            .args(["query", "--hub", &addr.to_string(), "--dataflow", "UNE_RATE"])
            .arg("--ca")
            .arg(f.pki.ca_cert())
            .arg("--cert")
            .arg(&op.cert)
            .arg("--key")
            .arg(&op.key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("presented identity spiffe://evil/hub/alo, expected a hub identity of network \"alo\""), "{stderr}");
    assert_eq!(got_bytes.await.unwrap(), 0, "the CLI sent its query to the other network's hub");
}

/// A TLS server (mutual TLS, as node and hub serve) that completes one
/// handshake and counts the application bytes the client then sends.
async fn serve_once(files: &TlsFiles) -> (std::net::SocketAddr, tokio::task::JoinHandle<usize>) {
    use tokio::io::AsyncReadExt;
    let config: Arc<rustls::ServerConfig> = tabadul_certs::tls::server_config(files).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await else { return 0 };
        let mut buf = vec![0u8; 4096];
        let mut total = 0;
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    (addr, task)
}

fn error_chain(err: &tonic::Status) -> String {
    let mut chain = format!("{err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        chain.push_str(&e.to_string());
        source = e.source();
    }
    chain
}
