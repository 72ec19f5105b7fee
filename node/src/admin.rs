//! The client side of the node's local admin socket, used by the CLI to
//! act on a running node (withdraw, import, reload) so that the one process
//! holding the RocksDB lock does the writing.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tabadul_proto::pb::node_admin_client::NodeAdminClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to a running node's admin socket; `None` when no node is
/// running there (no socket, or a stale one nobody listens on).
pub async fn connect(socket: &Path) -> Option<NodeAdminClient<Channel>> {
    if !socket.exists() {
        return None;
    }
    let socket: PathBuf = socket.to_owned();
    let channel = Endpoint::from_static("http://admin.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .ok()?;
    Some(NodeAdminClient::new(channel))
}
