//! gRPC server reflection as stock clients use it: both protocol versions
//! (grpcurl and Python's grpcio-reflection still speak v1alpha), each port
//! listing exactly the services it serves.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeSet;
use std::time::Duration;

use tabadul_certs::tls::{self, Expect};
use tabadul_certs::{Identity, Role};
use tabadul_tests::{NodeDir, Pki, start_hub};
use tonic_reflection::pb::{v1, v1alpha};

async fn list_v1(channel: tonic::transport::Channel) -> BTreeSet<String> {
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    match answers.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::ListServicesResponse(list) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("{other:?}"),
    }
}

async fn list_v1alpha(channel: tonic::transport::Channel) -> BTreeSet<String> {
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    match answers.message().await.unwrap().unwrap().message_response.unwrap() {
        MessageResponse::ListServicesResponse(list) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn each_port_lists_exactly_its_services_in_both_reflection_versions() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path()).unwrap();
    let node = NodeDir::create(dir.path(), &pki, "MAR", "version = \"closed\"\n").unwrap();
    let node_proc = node.start().unwrap();
    let hub_cert = pki.issue("hub", "alo").unwrap();
    let hub = start_hub(&dir.path().join("hub"), &pki, &hub_cert, &[], 2000).unwrap();
    let reflection = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "grpc.health.v1.Health"];
    let set = |names: &[&str]| -> BTreeSet<String> { names.iter().chain(&reflection).map(|s| s.to_string()).collect() };

    let as_hub = tls::client_config(&pki.tls_files(&hub_cert)).unwrap();
    let to_node = || {
        tls::channel(&node_proc.addr.to_string(), Expect::Identity(Identity::new("alo", Role::Node, "MAR").unwrap()), as_hub.clone(), Duration::from_secs(5))
            .unwrap()
    };
    let node_services = set(&["tabadul.v1.Node", "tabadul.v1.Audit", "tabadul.v1.Witness"]);
    assert_eq!(list_v1(to_node()).await, node_services);
    assert_eq!(list_v1alpha(to_node()).await, node_services);

    let operator = pki.issue("operator", "ana").unwrap();
    let as_operator = tls::client_config(&pki.tls_files(&operator)).unwrap();
    let to_hub =
        || tls::channel(&hub.addr.to_string(), Expect::Role { network: "alo".into(), role: Role::Hub }, as_operator.clone(), Duration::from_secs(5)).unwrap();
    let hub_services = set(&["tabadul.v1.Hub", "tabadul.v1.Audit"]);
    assert_eq!(list_v1(to_hub()).await, hub_services);
    assert_eq!(list_v1alpha(to_hub()).await, hub_services);
}
