//! Runs the hub: the operator API over mutual TLS on an already-bound listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tabadul_audit::Log;
use tabadul_audit::service::{AuditService, Readers};
use tabadul_certs::Role;
use tabadul_certs::tls::{self, ServerTls};
use tabadul_proto::pb::audit_server::AuditServer;
use tabadul_proto::pb::hub_server::HubServer;
use tabadul_proto::{Dictionary, FILE_DESCRIPTOR_SET};
use tokio::net::TcpListener;

use crate::service::HubService;
use crate::state::HubState;
pub use crate::state::state_word;
use crate::{Error, HubConfig};

/// Serves until `shutdown` completes, then lets in-flight queries finish.
pub async fn run(listener: TcpListener, config: HubConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_notify(listener, None, None, config, shutdown, || ()).await
}

/// [`run`], calling `ready` once the configuration is loaded and the
/// listener is about to accept.
pub async fn run_notify(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    http_listener: Option<TcpListener>,
    config: HubConfig,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), Error> {
    let identity = config.tls.own_identity()?;
    if identity.role() != Role::Hub {
        return Err(Error::NotAHub(identity.to_string()));
    }
    let dict = Arc::new(Dictionary::load(&config.dictionary)?);
    // The hub's log, its salts and the token file: for the hub's user only.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&config.data_dir)
        .map_err(|source| Error::Io { path: config.data_dir.clone(), source })?;
    let signer = tabadul_audit::load_signer(&config.log_key)?;
    let origin = format!("{}/hub/{}", identity.network(), identity.id());
    if signer.name() != origin {
        return Err(Error::Config {
            path: config.log_key.clone(),
            reason: format!("the log key is for {:?}; this hub's log is {origin:?} (make one with tabadul-audit keygen --origin {origin})", signer.name()),
        });
    }
    let directory = match (&config.directory, &config.signed_directory) {
        (Some(c), Some(signed)) => Some(crate::directory::apply(c, signed, &config.data_dir, identity.id(), &signer.verifier(), &config.dictionary)?),
        _ => None,
    };
    let log = Arc::new(Log::open(&config.data_dir.join("log"), signer)?);
    // Reloaded with the CRL below: a revoked member's open connection is
    // closed, not reused.
    let client_tls = tls::ClientTls::load(config.tls.clone())?;
    let connector = crate::roster::Connector {
        network: identity.network().to_owned(),
        client_tls: client_tls.clone(),
        log: log.clone(),
        max_in_flight: config.max_in_flight_per_member,
    };
    let (members, witnesses) = connector.roster(&config.members, None)?;
    let server_tls = ServerTls::load(config.tls.clone())?;
    if let Some(crl) = &config.tls.crl {
        tls::check_crl_freshness(crl);
    }
    let state = Arc::new(HubState {
        identity: identity.clone(),
        dict,
        members: std::sync::RwLock::new(Arc::new(members)),
        directory,
        log: log.clone(),
        metrics: metrics_registry(),
        default_deadline: Duration::from_millis(config.deadline_ms),
        max_deadline: Duration::from_millis(config.max_deadline_ms),
        cache: crate::cache::AnswerCache::new(config.cache.max_entries, Duration::from_secs(config.cache.max_age_s)),
        admission: crate::admission::Admission::new(config.max_concurrent_queries, config.max_queued_queries, Duration::from_millis(config.max_queue_wait_ms)),
    });
    tracing::info!(hub = %identity, addr = ?listener.local_addr().ok(), members = state.members().len(), "hub serving");

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<HubServer<HubService>>().await;
    // Exactly what this port serves: the hub's services, not the nodes'.
    let (reflection, reflection_v1alpha) = tabadul_certs::reflection::services(FILE_DESCRIPTOR_SET, &["tabadul.v1.Hub", "tabadul.v1.Audit"])
        .map_err(|e| Error::Config { path: "reflection".into(), reason: e.to_string() })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (witnesses_tx, witnesses_rx) = tokio::sync::watch::channel(witnesses);
    let witnessing = (config.witness_interval_ms > 0).then(|| {
        let mut rx = stop_rx.clone();
        tokio::spawn(crate::witnessing::run(log.clone(), witnesses_rx, Duration::from_millis(config.witness_interval_ms), async move {
            let _ = rx.wait_for(|s| *s).await;
        }))
    });
    // A newer signed directory installed while the hub runs replaces the
    // members (checked on the same interval as the TLS files).
    let following = config.directory.clone().map(|d| {
        let mut rx = stop_rx.clone();
        let every = Duration::from_millis(config.crl_reload_interval_ms.max(50));
        let following = crate::roster::Following {
            state: state.clone(),
            connector: connector.clone(),
            config: d,
            dictionary: config.dictionary.clone(),
            entries: config.members.clone(),
            witnesses: witnesses_tx,
            every,
        };
        tokio::spawn(following.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }))
    });
    let metrics = metrics_listener.map(|l| {
        let st = state.clone();
        let cert = config.tls.cert.clone();
        let crl = config.tls.crl.clone();
        let refresh = Arc::new(move |m: &tabadul_telemetry::Registry| {
            m.set("tabadul_hub_log_entries", &[], st.log.len() as f64);
            m.set("tabadul_hub_log_writable", &[], if st.log.failure().is_some() { 0.0 } else { 1.0 });
            let (_, age) = st.log.published();
            m.set("tabadul_hub_log_published_checkpoint_age_seconds", &[], age.as_secs_f64());
            m.set("tabadul_hub_cache_entries", &[], st.cache.len() as f64);
            m.set("tabadul_hub_queries_working", &[], st.admission.working() as f64);
            m.set("tabadul_hub_queries_waiting", &[], st.admission.waiting() as f64);
            if let Ok(Some(c)) = st.log.cosigned()
                && let Ok(cp) = tabadul_audit::offline::peek(&c)
            {
                m.set("tabadul_hub_cosigned_size", &[], cp.size as f64);
            }
            for member in st.members().values() {
                let forked = member.forked.lock().unwrap_or_else(|p| p.into_inner()).is_some();
                m.set("tabadul_hub_member_log_forked", &[("member", &member.code)], if forked { 1.0 } else { 0.0 });
            }
            if let Ok(t) = tls::not_after(&cert) {
                m.set("tabadul_hub_certificate_expiry_seconds", &[], (t - time::OffsetDateTime::now_utc().unix_timestamp()) as f64);
            }
            if let Some(left) = crl.as_deref().and_then(tls::crl_seconds_left) {
                m.set("tabadul_hub_crl_next_update_seconds", &[], left as f64);
            }
        });
        let mut rx = stop_rx.clone();
        tokio::spawn(tabadul_telemetry::serve(l, state.metrics.clone(), refresh, async move {
            let _ = rx.wait_for(|s| *s).await;
        }))
    });
    let http_tls = match (&http_listener, config.http.dangerous_plain_http) {
        (Some(_), false) => Some(ServerTls::load_https(config.tls.clone())?),
        (Some(_), true) => {
            tracing::warn!("the HTTP front door serves plain HTTP (dangerous_plain_http): operator tokens cross the network in clear text");
            None
        }
        (None, _) => None,
    };
    let http = match http_listener {
        Some(l) => {
            let tls = http_tls.clone();
            let front = Arc::new(crate::http::Front {
                hub: state.clone(),
                tokens: crate::tokens::Tokens::new(config.http.tokens.clone()),
                limiter: crate::http::RateLimiter::new(config.http.rate_per_minute, config.http.burst),
                config: config.http.clone(),
                pseudonyms: Default::default(),
            });
            let _ = front.tokens.refresh();
            tracing::info!(addr = ?l.local_addr().ok(), tls = tls.is_some(), public_tier = config.http.public_tier, "HTTP front door serving");
            let mut rx = shutdown_rx.clone();
            let grace = Duration::from_millis(config.shutdown_grace_ms);
            Some(tokio::spawn(crate::http::serve(l, front, tls, grace, async move {
                let _ = rx.wait_for(|s| *s).await;
            })))
        }
        None => None,
    };
    // A new CRL, certificate or key applies to the next handshake on both
    // listeners: rotation and revocation need no restart.
    let tls_watch = {
        let files: Vec<std::path::PathBuf> =
            [Some(config.tls.cert.clone()), Some(config.tls.key.clone()), config.tls.crl.clone()].into_iter().flatten().collect();
        let tls_sets: Vec<Arc<ServerTls>> = std::iter::once(server_tls.clone()).chain(http_tls.clone()).collect();
        let client_tls = client_tls.clone();
        let mut rx = stop_rx.clone();
        let every = Duration::from_millis(config.crl_reload_interval_ms.max(50));
        tokio::spawn(async move {
            let stamp = || -> Vec<Option<(std::time::SystemTime, u64)>> {
                files.iter().map(|p| std::fs::metadata(p).ok().and_then(|m| m.modified().ok().map(|t| (t, m.len())))).collect()
            };
            let mut seen = stamp();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = rx.wait_for(|s| *s) => return,
                    _ = tick.tick() => {}
                }
                let now = stamp();
                if now != seen {
                    seen = now;
                    for t in &tls_sets {
                        match t.reload() {
                            Ok(closed) => {
                                tracing::info!(closed_connections = closed, "TLS configuration reloaded (certificate, key or CRL changed)");
                                if let Some(crl) = &t.files().crl {
                                    tls::check_crl_freshness(crl);
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "new TLS files rejected; the previous configuration stays in force"),
                        }
                    }
                    match client_tls.reload() {
                        Ok(closed) => tracing::info!(closed_connections = closed, "TLS configuration for calling members reloaded"),
                        Err(e) => tracing::error!(error = %e, "new TLS files rejected for calling members; the previous configuration stays in force"),
                    }
                }
            }
        })
    };
    let audit = AuditServer::new(AuditService { log, identity: identity.clone(), readers: Readers::Auditors });
    let server = tls::grpc_server(&config.connections)
        // Longest a federated query can take: waiting to be admitted, then
        // its deadline, then the log append; past that something is stuck.
        .timeout(state.admission.max_wait() + state.max_deadline + Duration::from_secs(5))
        .add_service(HubServer::new(HubService { state }).max_decoding_message_size(64 * 1024))
        .add_service(audit)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(tls::incoming(listener, server_tls, config.connections.clone()), async {
            let _ = shutdown_rx.clone().wait_for(|s| *s).await;
        });
    ready();
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let signal = async move {
        shutdown.await;
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: finishing in-flight queries");
        let _ = shutdown_tx.send(true);
        // An operator's idle connection must not hold the hub up for ever.
        tokio::time::sleep(grace).await;
    };
    let served = tokio::select! {
        r = server => r,
        () = signal => {
            tracing::warn!("grace period over: closing the connections still open");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    if let Some(w) = witnessing {
        let _ = w.await;
    }
    if let Some(f) = following {
        let _ = f.await;
    }
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Some(h) = http {
        let _ = h.await;
    }
    let _ = tls_watch.await;
    served?;
    tracing::info!("hub stopped");
    Ok(())
}

fn metrics_registry() -> Arc<tabadul_telemetry::Registry> {
    use tabadul_telemetry::Kind;
    let m = tabadul_telemetry::Registry::new();
    m.describe(
        "tabadul_hub_federated_queries_total",
        Kind::Counter,
        "Federated queries, by outcome (answered, cached: served from the cache after revalidation, refused-role, busy: not admitted).",
    );
    m.describe("tabadul_hub_queries_working", Kind::Gauge, "Federated queries being worked on now (at most max_concurrent_queries).");
    m.describe("tabadul_hub_queries_waiting", Kind::Gauge, "Federated queries waiting to be admitted (at most max_queued_queries).");
    m.describe("tabadul_hub_admission_wait_seconds", Kind::Histogram, "Time a federated query waited to be admitted.");
    m.describe("tabadul_hub_federated_query_seconds", Kind::Histogram, "Time to answer a federated query, fan-out included.");
    m.describe("tabadul_hub_member_answers_total", Kind::Counter, "Member outcomes of federated queries (answered, refused, unreachable, timed-out, failed).");
    m.describe("tabadul_hub_log_entries", Kind::Gauge, "Entries in the hub's signed exchange log.");
    m.describe(
        "tabadul_hub_log_writable",
        Kind::Gauge,
        "0 when the hub's log has failed (disk full, I/O error) and federated queries are refused; 1 otherwise.",
    );
    m.describe(
        "tabadul_hub_log_published_checkpoint_age_seconds",
        Kind::Gauge,
        "Seconds since the hub's log last published (synced) a signed checkpoint; alert when it grows while queries come in.",
    );
    m.describe("tabadul_hub_cosigned_size", Kind::Gauge, "Tree size of the latest checkpoint the witnesses cosigned.");
    m.describe("tabadul_hub_member_log_forked", Kind::Gauge, "1 when a member's node was caught forking its log.");
    m.describe("tabadul_hub_certificate_expiry_seconds", Kind::Gauge, "Seconds until the hub's TLS certificate expires.");
    m.describe(
        "tabadul_hub_crl_next_update_seconds",
        Kind::Gauge,
        "Seconds until the CRL's next update; negative when stale (still enforced, exchange goes on).",
    );
    m.describe("tabadul_hub_cache_entries", Kind::Gauge, "Federated answers held in the cache.");
    m.describe(
        "tabadul_hub_cache_invalidations_total",
        Kind::Counter,
        "Cached answers dropped because a member's generation changed or it did not confirm it.",
    );
    m
}

/// Drops the hub's pin of `member`'s log (see `tabadul-hub unpin`) and logs
/// the decision. Needs the hub stopped: it opens the hub's log itself.
/// Returns the size that was pinned, if any, and the log entry's index.
pub fn unpin(config: &HubConfig, member: &str, reason: &str) -> Result<(Option<u64>, u64), Error> {
    let identity = config.tls.own_identity()?;
    if !config.members.iter().any(|m| m.code == member) {
        return Err(Error::Config { path: "hub.toml".into(), reason: format!("{member} is not a member configured on this hub") });
    }
    if reason.trim().is_empty() {
        return Err(Error::Config { path: "--reason".into(), reason: "say why the rollback is accepted".into() });
    }
    let origin = format!("{}/node/{member}", identity.network());
    let signer = tabadul_audit::load_signer(&config.log_key)?;
    let log = Log::open(&config.data_dir.join("log"), signer).map_err(|e| match e {
        tabadul_audit::Error::Db { .. } => {
            Error::Config { path: config.data_dir.clone(), reason: format!("cannot open the hub's log ({e}); is the hub still running? stop it first") }
        }
        other => other.into(),
    })?;
    let dropped = log.pinned(&origin)?.and_then(|n| tabadul_audit::offline::peek(&n).ok()).map(|c| c.size);
    let mut entry = tabadul_audit::Entry::now("pin-reset", "local-admin");
    entry.decision = "ok".into();
    entry.detail = format!("{origin} pin at size {} dropped: {}", dropped.map_or("none".to_owned(), |s| s.to_string()), reason.trim());
    // Crash point: the decision is logged before the pin goes, so an
    // auditor never finds an unpinned log without its reason.
    let appended = log.append(&entry, None)?;
    log.clear_pinned(&origin)?;
    Ok((dropped, appended.index))
}
