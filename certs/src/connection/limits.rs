//! `[connections]`: how many connections a listener holds, and how long a
//! connection may stay without doing useful work. One set of settings for
//! the node's and hub's gRPC listeners and the hub's HTTPS front door.

use std::time::Duration;

/// The limits of one listener. Every timeout is what an honest client
/// never comes near; a client past one is cut off (and logged with its
/// address), so a slow or silent client holds a slot for a bounded time.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Most connections open at once (handshakes included). When all are
    /// taken, the connection quiet longest (no request in progress) is
    /// closed to make room; if every one has a request in progress, new
    /// connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Most connections open at once from one IP address; more are closed
    /// at once. Keeps one host (or one NAT) from taking every slot.
    pub max_connections_per_address: usize,
    /// Longest a TLS handshake may take, from the TCP accept (a client that
    /// sends nothing at all is cut off here).
    pub handshake_timeout_ms: u64,
    /// Longest from the TCP accept until the first request has arrived
    /// (its headers; for HTTP/2, after the preface and SETTINGS).
    pub first_request_timeout_ms: u64,
    /// Longest a connection may stay open with no request in progress.
    pub idle_timeout_ms: u64,
    /// Oldest a connection may get. Then it is told to go away (HTTP/2
    /// GOAWAY: requests in progress finish, clients reconnect) and closed
    /// `max_connection_age_grace_ms` later. A connection also closes when
    /// its peer's certificate expires, and when a new CRL revokes it.
    pub max_connection_age_s: u64,
    pub max_connection_age_grace_ms: u64,
    /// HTTP/2 pings to a connection quiet this long; one unanswered for
    /// `keep_alive_timeout_ms` closes it (a dead or silent peer).
    pub keep_alive_interval_ms: u64,
    pub keep_alive_timeout_ms: u64,
    /// Most requests (HTTP/2 streams) in progress on one connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 512,
            max_connections_per_address: 64,
            handshake_timeout_ms: 10_000,
            first_request_timeout_ms: 10_000,
            idle_timeout_ms: 120_000,
            max_connection_age_s: 3600,
            max_connection_age_grace_ms: 70_000,
            keep_alive_interval_ms: 30_000,
            keep_alive_timeout_ms: 10_000,
            max_concurrent_streams: 100,
        }
    }
}

impl ConnectionLimits {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.max(1))
    }
    pub fn first_request_timeout(&self) -> Duration {
        Duration::from_millis(self.first_request_timeout_ms.max(1))
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.max(1))
    }
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_connection_age_s.max(1))
    }
    pub fn max_age_grace(&self) -> Duration {
        Duration::from_millis(self.max_connection_age_grace_ms)
    }
    pub fn keep_alive_interval(&self) -> Duration {
        Duration::from_millis(self.keep_alive_interval_ms.max(1))
    }
    pub fn keep_alive_timeout(&self) -> Duration {
        Duration::from_millis(self.keep_alive_timeout_ms.max(1))
    }
}
