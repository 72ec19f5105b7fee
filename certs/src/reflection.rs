//! gRPC server reflection as our servers offer it: both protocol versions
//! (grpcurl and Python's grpcio-reflection still speak v1alpha), listing
//! exactly the services a port serves, health and reflection included.

use tonic_reflection::pb::{v1, v1alpha};
use tonic_reflection::server::Builder;

use crate::Error;

/// The services every one of our gRPC ports serves besides its own.
const ALWAYS: [&str; 3] = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// The v1 and v1alpha reflection services for a port serving `services`
/// (fully qualified, e.g. `tabadul.v1.Node`), described by `descriptors`.
#[allow(clippy::type_complexity)]
pub fn services(
    descriptors: &'static [u8],
    services: &[&str],
) -> Result<
    (
        v1::server_reflection_server::ServerReflectionServer<impl v1::server_reflection_server::ServerReflection>,
        v1alpha::server_reflection_server::ServerReflectionServer<impl v1alpha::server_reflection_server::ServerReflection>,
    ),
    Error,
> {
    let builder = || {
        services.iter().copied().chain(ALWAYS).fold(
            Builder::configure()
                .register_encoded_file_descriptor_set(descriptors)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(v1alpha::FILE_DESCRIPTOR_SET)
                .include_reflection_service(false),
            |b, name| b.with_service_name(name),
        )
    };
    let bad = |e: tonic_reflection::server::Error| Error::Invalid { what: "reflection", reason: e.to_string() };
    Ok((builder().build_v1().map_err(bad)?, builder().build_v1alpha().map_err(bad)?))
}
