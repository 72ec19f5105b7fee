//! Runs a node: the `Node` service (plus health and reflection) over mutual
//! TLS on an already-bound listener, and the admin API on a Unix socket.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tabadul_audit::service::{AuditService, Readers, WitnessService};
use tabadul_audit::{Log, Verifier};
use tabadul_certs::Role;
use tabadul_certs::tls::{self, ServerTls};
use tabadul_proto::pb::audit_server::AuditServer;
use tabadul_proto::pb::node_admin_server::NodeAdminServer;
use tabadul_proto::pb::node_server::NodeServer;
use tabadul_proto::pb::witness_server::WitnessServer;
use tabadul_proto::{Dictionary, FILE_DESCRIPTOR_SET};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tonic::transport::Server;

use crate::policy::Policy;
use crate::service::{AdminService, NodeService, NodeState};
use crate::store::Store;
use crate::{Error, NodeConfig};

/// Serves until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish, and returns.
pub async fn run(listener: TcpListener, config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_notify(listener, None, config, shutdown, || ()).await
}

/// [`run`], calling `ready` once the store is open, the policy loaded and
/// both the network and the admin listeners accept; with
/// `metrics_listener`, Prometheus metrics are served there (plain HTTP,
/// `GET /metrics`).
pub async fn run_notify(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: NodeConfig,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), Error> {
    let identity = config.tls.own_identity()?;
    if identity.role() != Role::Node {
        return Err(Error::NotANode(identity.to_string()));
    }
    // A node that follows the network directory serves only with the
    // dictionary it names.
    crate::directory::check_at_start(&config)?;
    let dict = Arc::new(Dictionary::load(&config.dictionary)?);
    if !dict.has_code(tabadul_proto::REF_AREA, identity.id()) {
        return Err(Error::Invalid(format!("member {} is not in the dictionary's REF_AREA codelist (dictionary {})", identity.id(), dict.version)));
    }
    let policy = Policy::load(&config.policy, &dict)?;
    // Before RocksDB opens them, so they exist with the node's mode.
    for dir in [config.data_dir.clone(), config.store_dir(), config.log_dir()] {
        crate::private::create_dir(&dir)?;
    }
    // Held while serving: `restore` refuses to swap the data under us.
    let _running = crate::private::lock_data_dir(&config.data_dir)?;
    let store = Arc::new(Store::open(&config.store_dir())?);
    let signer = tabadul_audit::load_signer(&config.log_key)?;
    let origin = format!("{}/node/{}", identity.network(), identity.id());
    if signer.name() != origin {
        return Err(Error::Invalid(format!(
            "log key {} is for {:?}; this node's log is {origin:?} (make one with tabadul-audit keygen --origin {origin})",
            config.log_key.display(),
            signer.name()
        )));
    }
    let witness_logs =
        config.witness_logs.iter().map(|v| Verifier::parse(v).map_err(|e| Error::Invalid(format!("witness_logs: {e}")))).collect::<Result<Vec<_>, _>>()?;
    let cosigner = match &config.witness_key {
        Some(path) => {
            let key = tabadul_audit::load_signer(path)?;
            let name = format!("{}/witness/{}", identity.network(), identity.id());
            if key.name() != name {
                return Err(Error::Invalid(format!(
                    "witness key {} is for {:?}; this node's witness key is {name:?} (make one with tabadul-audit keygen --origin {name})",
                    path.display(),
                    key.name()
                )));
            }
            Some(key)
        }
        None if witness_logs.is_empty() => None,
        None if config.dangerous_witness_with_log_key => {
            tracing::warn!("no witness_key: cosignatures are made with the log key (dangerous_witness_with_log_key); give the witness its own key");
            None
        }
        None => {
            let name = format!("{}/witness/{}", identity.network(), identity.id());
            return Err(Error::Invalid(format!(
                "witness_logs is set but witness_key is not: a witness cosigns with a key of its own (make one with tabadul-audit keygen --origin {name}), \
                 or set dangerous_witness_with_log_key = true to cosign with the log key"
            )));
        }
    };
    let log = Arc::new(Log::open(&config.log_dir(), signer)?);
    let server_tls = ServerTls::load(config.tls.clone())?;
    let client_tls = tls::ClientTls::load(config.tls.clone())?;
    if let Some(crl) = &config.tls.crl {
        tls::check_crl_freshness(crl);
    }
    let withdrawals = RwLock::new(Arc::new(store.withdrawals()?));
    let state = Arc::new(NodeState {
        withdrawals,
        identity: identity.clone(),
        dict,
        policy: RwLock::new(Arc::new(policy)),
        policy_path: config.policy.clone(),
        store,
        log: log.clone(),
        client_tls,
        witnessed: witness_logs.iter().map(|v| v.name().to_owned()).collect(),
        metrics: metrics_registry(),
        limits: crate::limits::Limits::new(config.max_concurrent_per_peer, config.max_queries_per_second_per_peer),
        release_lock: std::sync::Mutex::new(()),
        kept_spans: Default::default(),
        boot: hex::encode(&tabadul_audit::new_salt()[..8]),
        changes: std::sync::atomic::AtomicU64::new(0),
    });
    tracing::info!(member = %identity.id(), addr = ?listener.local_addr().ok(), policy = %state.policy().version, "node serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let metrics = metrics_listener.map(|l| {
        let st = state.clone();
        let cert = config.tls.cert.clone();
        let crl = config.tls.crl.clone();
        let refresh = Arc::new(move |m: &tabadul_telemetry::Registry| {
            if let Some(left) = crl.as_deref().and_then(tls::crl_seconds_left) {
                m.set("tabadul_node_crl_next_update_seconds", &[], left as f64);
            }
            m.set("tabadul_node_log_entries", &[], st.log.len() as f64);
            m.set("tabadul_node_log_writable", &[], if st.log.failure().is_some() { 0.0 } else { 1.0 });
            let (_, age) = st.log.published();
            m.set("tabadul_node_log_published_checkpoint_age_seconds", &[], age.as_secs_f64());
            m.clear("tabadul_node_policy_info");
            m.set("tabadul_node_policy_info", &[("version", &st.policy().version)], 1.0);
            if let Ok(t) = tls::not_after(&cert) {
                m.set("tabadul_node_certificate_expiry_seconds", &[], (t - time::OffsetDateTime::now_utc().unix_timestamp()) as f64);
            }
        });
        tokio::spawn(tabadul_telemetry::serve(l, state.metrics.clone(), refresh, stopped(stop_rx.clone())))
    });
    let reloader = tokio::spawn(watch_files(state.clone(), server_tls.clone(), config.reload_interval_ms, stopped(stop_rx.clone())));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NodeServer<NodeService>>().await;
    // Health follows the log: a node that cannot record decisions is not
    // serving (it refuses every query), and says so to load balancers.
    let health_watch = {
        let (health, st) = (health.clone(), state.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(why) = st.log.failure() {
                    tracing::error!(reason = %why, "log stopped: reporting NOT_SERVING");
                    health.set_not_serving::<NodeServer<NodeService>>().await;
                    // The whole server too: load balancers and doctors ask for "".
                    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                    return;
                }
            }
        })
    };
    // Exactly what this port serves: not the admin API (on its own
    // socket), not the hub's.
    let (reflection, reflection_v1alpha) =
        tabadul_certs::reflection::services(FILE_DESCRIPTOR_SET, &["tabadul.v1.Node", "tabadul.v1.Audit", "tabadul.v1.Witness"])?;
    let node = NodeServer::new(NodeService { state: state.clone() }).max_decoding_message_size(config.max_request_bytes);
    let public = tls::grpc_server(&config.connections)
        .timeout(Duration::from_secs(60))
        .add_service(node)
        .add_service(AuditServer::new(AuditService { log: log.clone(), identity: identity.clone(), readers: Readers::AuditorsAndHubProofs }))
        .add_service(WitnessServer::new(match cosigner {
            Some(key) => WitnessService::new(log, witness_logs, identity.clone()).with_cosigner(key),
            None => WitnessService::new(log, witness_logs, identity.clone()),
        }))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(tls::incoming(listener, server_tls, config.connections.clone()), stopped(stop_rx.clone()));

    let socket = config.admin_socket();
    // A socket file left by a killed node would make bind fail.
    let _ = std::fs::remove_file(&socket);
    let admin_listener = UnixListener::bind(&socket).map_err(|e| Error::io(&socket, e))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(|e| Error::io(&socket, e))?;
    let admin = Server::builder()
        .add_service(NodeAdminServer::new(AdminService { state }))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(admin_listener), stopped(stop_rx));

    ready();
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let signal = async move {
        shutdown.await;
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        // In-flight requests get this long; a peer that keeps an idle
        // connection open must not hold the node up for ever.
        tokio::time::sleep(grace).await;
    };
    let servers = async { tokio::join!(public, admin) };
    let outcome = tokio::select! {
        (public, admin) = servers => public.and(admin).map_err(Error::from),
        () = signal => {
            tracing::warn!("grace period over: closing the connections still open");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&socket);
    reloader.abort();
    health_watch.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    outcome?;
    // The log publishes its latest checkpoint when the last handle drops.
    tracing::info!("node stopped");
    Ok(())
}

/// Reloads the policy when its file changes or on SIGHUP, and the TLS
/// configuration when the certificate, key or CRL file changes (or on
/// SIGHUP): renewal and revocation need no restart. A broken file is
/// logged and recorded; what was in force stays in force.
async fn watch_files(state: Arc<NodeState>, server_tls: Arc<ServerTls>, interval_ms: u64, stop: impl Future<Output = ()>) {
    let fingerprint = |path: &std::path::Path| std::fs::read(path).ok().map(|b| ring::digest::digest(&ring::digest::SHA256, &b).as_ref().to_vec());
    let files = server_tls.files().clone();
    let tls_paths: Vec<std::path::PathBuf> = [Some(files.cert.clone()), Some(files.key.clone()), files.crl.clone()].into_iter().flatten().collect();
    let tls_fingerprint = || tls_paths.iter().map(|p| fingerprint(p)).collect::<Vec<_>>();
    let mut policy_seen = fingerprint(&state.policy_path);
    let mut tls_seen = tls_fingerprint();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(50)));
    tokio::pin!(stop);
    loop {
        let forced = tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = fingerprint(&state.policy_path);
        if forced || now != policy_seen {
            policy_seen = now;
            // Reading the file and the synced log append block: not on the
            // runtime's threads.
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || st.reload_policy()).await;
        }
        let now = tls_fingerprint();
        if forced || now != tls_seen {
            tls_seen = now;
            // Outgoing calls (asking other members) follow the same files.
            if let Err(e) = state.client_tls.reload() {
                tracing::error!(error = %e, "new TLS files rejected for outgoing calls; the previous configuration stays in force");
            }
            match server_tls.reload() {
                Ok(closed) => {
                    tracing::info!(closed_connections = closed, "TLS configuration reloaded (certificate, key or CRL changed)");
                    if let Some(crl) = &files.crl {
                        tls::check_crl_freshness(crl);
                    }
                }
                // A certificate replaced before its key (or the reverse)
                // fails here until the other file follows.
                Err(e) => tracing::error!(error = %e, "new TLS files rejected; the previous configuration stays in force"),
            }
        }
    }
}

fn metrics_registry() -> Arc<tabadul_telemetry::Registry> {
    use tabadul_telemetry::Kind;
    let m = tabadul_telemetry::Registry::new();
    m.describe(
        "tabadul_node_queries_total",
        Kind::Counter,
        "Queries, by decision (refused-role: refused for the caller's role before the policy; limited: over a per-requester limit).",
    );
    m.describe("tabadul_node_query_seconds", Kind::Histogram, "Time to decide, log and start streaming an answer.");
    m.describe("tabadul_node_log_entries", Kind::Gauge, "Entries in the signed exchange log.");
    m.describe("tabadul_node_log_writable", Kind::Gauge, "0 once a log write failed: the node then releases nothing until restarted.");
    m.describe("tabadul_node_log_published_checkpoint_age_seconds", Kind::Gauge, "Time since a log checkpoint was last published.");
    m.describe("tabadul_node_policy_info", Kind::Gauge, "The publication policy in force (its version is the label).");
    m.describe("tabadul_node_certificate_expiry_seconds", Kind::Gauge, "Seconds until the node's TLS certificate expires.");
    m.describe(
        "tabadul_node_crl_next_update_seconds",
        Kind::Gauge,
        "Seconds until the CRL's next update; negative when stale (still enforced, exchange goes on).",
    );
    m
}
