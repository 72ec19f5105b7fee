//! Revocation and expiry apply to connections already open, not only to
//! the next handshake: after the CRL that revokes a peer is published, the
//! next request on its old connection fails, on the node's gRPC, the hub's
//! gRPC and the hub's HTTPS front door; a certificate that expires while
//! connected is cut off too. Controls: an unrevoked peer's connection
//! opened at the same time keeps working.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::Duration;

use tabadul_certs::pki::{CaDir, IssueRequest};
use tabadul_certs::tls::{self, Expect, TlsFiles};
use tabadul_certs::{Identity, Role};
use tabadul_proto::pb;
use tabadul_tests::{NodeDir, Pki, Proc, collect, eventually, hostile, node_client, start_hub_with};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const POLICY: &str = "[[rule]]\nid = \"hub\"\nrequester = \"hub\"\ndataflows = [\"UNE_RATE\"]\n";
const CLOSED: &str = "closing the connection: its peer certificate is no longer accepted";

fn q() -> pb::Query {
    pb::Query { dataflow: "UNE_RATE".into(), ..Default::default() }
}

/// Waits until the server has loaded the new CRL: a fresh connection with
/// the revoked certificate is refused.
async fn reloaded(mut refused: impl AsyncFnMut() -> bool) {
    assert!(eventually(Duration::from_secs(10), async || refused().await).await, "the new CRL was not loaded");
}

async fn logged(proc: &Proc, says: &str) {
    let seen = eventually(Duration::from_secs(10), async || proc.log_text().contains(says)).await;
    assert!(seen, "log lacks {says:?}:\n{}", proc.log_text());
}

#[tokio::test]
async fn a_revoked_hub_loses_its_open_connection_to_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap().start().unwrap();
    let (revoked, kept) = (pki.issue("hub", "alo").unwrap(), pki.issue("hub", "alo2").unwrap());
    let mut old = node_client(node.addr, &pki.tls_files(&revoked), "MAR").unwrap();
    let mut control = node_client(node.addr, &pki.tls_files(&kept), "MAR").unwrap();
    collect(&mut old, q()).await.expect("valid before revocation");
    collect(&mut control, q()).await.expect("valid before revocation");
    pki.revoke(&revoked).unwrap();
    reloaded(async || collect(&mut node_client(node.addr, &pki.tls_files(&revoked), "MAR").unwrap(), q()).await.is_err()).await;
    let err = collect(&mut old, q()).await.expect_err("the revoked hub's open channel still got an answer");
    assert!(matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown), "{err:?}");
    collect(&mut control, q()).await.expect("an unrevoked hub's open channel keeps working");
    logged(&node, CLOSED).await;
}

#[tokio::test]
async fn a_revoked_operator_loses_its_open_grpc_channel_to_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &[], 2000, "crl_reload_interval_ms = 200\n").unwrap();
    let (revoked, kept) = (pki.issue("operator", "ana").unwrap(), pki.issue("operator", "bo").unwrap());
    let health = |files: TlsFiles| {
        let channel = tls::channel(
            &hub.addr.to_string(),
            Expect::Role { network: "alo".into(), role: Role::Hub },
            tls::client_config(&files).unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        tonic_health::pb::health_client::HealthClient::new(channel)
    };
    let ask = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let (mut old, mut control) = (health(pki.tls_files(&revoked)), health(pki.tls_files(&kept)));
    old.check(ask.clone()).await.expect("valid before revocation");
    control.check(ask.clone()).await.expect("valid before revocation");
    pki.revoke(&revoked).unwrap();
    reloaded(async || health(pki.tls_files(&revoked)).check(ask.clone()).await.is_err()).await;
    assert!(old.check(ask.clone()).await.is_err(), "the revoked operator's open channel still got an answer");
    control.check(ask).await.expect("an unrevoked operator's open channel keeps working");
    logged(&hub, CLOSED).await;
}

/// One HTTP/1.1 keep-alive request on `s`; the status, or `None` if the
/// connection failed or closed.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, path: &str) -> Option<u16> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    s.flush().await.ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = text.get(9..12)?.parse().ok()?;
    let length: usize = text.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok())?;
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).await.ok()?;
    Some(status)
}

async fn keep_alive(
    pki: &Pki,
    cert: &tabadul_tests::Cert,
    front: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = hostile::client_tls(pki, Some(cert), &[b"http/1.1"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(front).await?;
    tokio_rustls::TlsConnector::from(tls).connect("localhost".try_into().unwrap(), tcp).await
}

#[tokio::test]
async fn a_revoked_operator_loses_its_open_https_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &[], 2000, "crl_reload_interval_ms = 200\n").unwrap();
    let front = hub.http.unwrap();
    let (revoked, kept) = (pki.issue("operator", "ana").unwrap(), pki.issue("operator", "bo").unwrap());
    let (mut old, mut control) = (keep_alive(&pki, &revoked, front).await.unwrap(), keep_alive(&pki, &kept, front).await.unwrap());
    assert_eq!(get(&mut old, "/api/v1/whoami").await, Some(200));
    assert_eq!(get(&mut control, "/api/v1/whoami").await, Some(200));
    pki.revoke(&revoked).unwrap();
    reloaded(async || match keep_alive(&pki, &revoked, front).await {
        Ok(mut fresh) => get(&mut fresh, "/api/v1/whoami").await.is_none(),
        Err(_) => true,
    })
    .await;
    assert_eq!(get(&mut old, "/api/v1/whoami").await, None, "the revoked operator's keep-alive connection still got an answer");
    assert_eq!(get(&mut control, "/api/v1/whoami").await, Some(200), "an unrevoked operator's connection keeps working");
    logged(&hub, CLOSED).await;
}

#[tokio::test]
async fn a_certificate_that_expires_while_connected_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap().start().unwrap();
    let ca = CaDir::open(&pki.ca_dir).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let req = IssueRequest {
        identity: Identity::new("alo", Role::Hub, "brief").unwrap(),
        dns_names: vec![],
        ip_addresses: vec![],
        not_before: now - time::Duration::minutes(1),
        not_after: now + time::Duration::seconds(4),
    };
    let issued = ca.issue(&req, &dir.path().join("brief")).unwrap();
    let files = TlsFiles { ca: pki.ca_cert(), cert: issued.cert_path, key: issued.key_path, crl: Some(pki.crl()) };
    let mut client = node_client(node.addr, &files, "MAR").unwrap();
    collect(&mut client, q()).await.expect("valid until it expires");
    let expired = eventually(Duration::from_secs(10), async || collect(&mut client, q()).await.is_err()).await;
    assert!(expired, "an expired certificate's open channel still got answers");
    logged(&node, "the peer's certificate has expired").await;
}

#[tokio::test]
async fn a_connection_older_than_the_age_limit_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let extra = "[http.connections]\nmax_connection_age_s = 2\nmax_connection_age_grace_ms = 0\n";
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &[], 2000, extra).unwrap();
    let operator = pki.issue("operator", "ana").unwrap();
    let mut s = keep_alive(&pki, &operator, hub.http.unwrap()).await.unwrap();
    assert_eq!(get(&mut s, "/api/v1/whoami").await, Some(200));
    // Kept busy (within every other limit) until past its age.
    let mut aged = false;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if get(&mut s, "/api/v1/whoami").await.is_none() {
            aged = true;
            break;
        }
    }
    assert!(aged, "a connection lived past max_connection_age_s");
    logged(&hub, "older than max_connection_age_s").await;
}

fn federated() -> pb::FederatedQueryRequest {
    pb::FederatedQueryRequest { query: Some(q()), ..Default::default() }
}

/// The hub's side of a member's revocation: its pooled connection to the
/// revoked node is closed at the CRL reload and no new one is made, so
/// the member stops answering within the reload interval (the runbook's
/// promise), while another member's connection is untouched.
#[tokio::test]
async fn a_revoked_member_stops_answering_through_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let (mar, egy) = (NodeDir::create(dir.path(), &pki, "MAR", POLICY).unwrap(), NodeDir::create(dir.path(), &pki, "EGY", POLICY).unwrap());
    let (mar_proc, egy_proc) = (mar.start().unwrap(), egy.start().unwrap());
    let members = [
        tabadul_tests::HubMember::new(&pki, "MAR", mar_proc.addr.to_string()).unwrap(),
        tabadul_tests::HubMember::new(&pki, "EGY", egy_proc.addr.to_string()).unwrap(),
    ];
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &members, 3000, "crl_reload_interval_ms = 200\n").unwrap();
    let operator = pki.issue("operator", "ana").unwrap();
    let mut client = tabadul_tests::hub_client(hub.addr, &pki.tls_files(&operator)).unwrap();
    let states = async |client: &mut pb::hub_client::HubClient<tonic::transport::Channel>| {
        let r = client.federated_query(federated()).await.unwrap().into_inner();
        let state = |code: &str| r.members.iter().find(|m| m.member == code).map(|m| (m.state, m.detail.clone())).unwrap();
        (state("MAR"), state("EGY"))
    };
    let answered = pb::MemberState::Answered as i32;
    let ((mar_state, _), (egy_state, _)) = states(&mut client).await;
    assert_eq!((mar_state, egy_state), (answered, answered), "both answer before the revocation");
    let egy_cert = tabadul_tests::Cert { cert: pki.certs_dir.join("node-EGY.pem"), key: pki.certs_dir.join("node-EGY.key") };
    pki.revoke(&egy_cert).unwrap();
    let mut last = None;
    let cut_off = eventually(Duration::from_secs(10), async || {
        let (m, e) = states(&mut client).await;
        let out = e.0 != answered;
        last = Some((m, e));
        out
    })
    .await;
    assert!(cut_off, "the revoked member still answers through the hub: {last:?}\n{}", hub.log_text());
    let ((mar_state, mar_reason), (_, egy_reason)) = last.unwrap();
    assert_eq!(mar_state, answered, "the unrevoked member is cut off too: {mar_reason}");
    assert!(egy_reason.to_lowercase().contains("revoked") || egy_reason.contains("certificate"), "the reason should name the certificate: {egy_reason}");
    logged(&hub, CLOSED).await;
    logged(&hub, "node/EGY").await;
    // And it stays out: later queries make new handshakes, which the CRL refuses.
    let (_, (egy_state, _)) = states(&mut client).await;
    assert_ne!(egy_state, answered);
}

/// A revoked operator is told why, not "transport error", and the hub's
/// log names whose certificate it refused (identity and serial), not only
/// the address it came from.
#[tokio::test]
async fn a_revoked_operator_is_told_why_and_the_hub_logs_whose_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = start_hub_with(&dir.path().join("hub"), &pki, &hub_cert, &[], 2000, "crl_reload_interval_ms = 200\n").unwrap();
    let revoked = pki.issue("operator", "ana").unwrap();
    let serial = tls::serial_hex(&tls::load_certs(&revoked.cert).unwrap()[0]).unwrap();
    let run = |cert: tabadul_tests::Cert| {
        let (addr, ca) = (hub.addr.to_string(), pki.ca_cert());
        std::process::Command::new(tabadul_tests::bin("tabadul-hub"))
            .args(["query", "--hub", &addr, "--dataflow", "UNE_RATE", "--ca"])
            .arg(ca)
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .output()
            .unwrap()
    };
    assert!(run(revoked.clone()).status.success(), "valid before revocation");
    pki.revoke(&revoked).unwrap();
    reloaded(async || !run(revoked.clone()).status.success()).await;
    let out = run(revoked.clone());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("our certificate: it has been revoked"), "{stderr}");
    logged(&hub, "client certificate refused").await;
    let line = hub.log_text().lines().find(|l| l.contains("client certificate refused")).unwrap_or_default().to_owned();
    assert!(line.contains("spiffe://alo/operator/ana") && line.contains(&serial), "the refusal names neither identity nor serial {serial}: {line}");
}
