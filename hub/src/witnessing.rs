//! Getting the hub's checkpoints cosigned by its witnesses (the nodes),
//! per c2sp.org/tlog-witness, and publishing the cosigned checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tabadul_audit::service::TLOG_SIZE_METADATA;
use tabadul_audit::{Log, Note};
use tabadul_proto::pb;
use tabadul_proto::pb::witness_client::WitnessClient;
use tonic::transport::Channel;

/// One witness: a member node and what we know it last cosigned.
#[derive(Debug, Clone)]
pub struct Witness {
    pub member: String,
    pub client: WitnessClient<Channel>,
    /// The witness's cosignature key (the node's log key, type 0x04).
    pub key: tabadul_audit::Verifier,
    /// Size of our latest checkpoint this witness cosigned (0: unknown; a
    /// conflict answer tells us the real one).
    pub cosigned_size: u64,
}

/// Every `interval`, if the log grew, asks every witness to cosign the
/// latest checkpoint and stores it with the cosignatures it got. The
/// witnesses are whoever `current` holds at each round (a new network
/// directory changes them); a witness kept keeps what it last cosigned.
pub async fn run(log: Arc<Log>, mut current: tokio::sync::watch::Receiver<Vec<Witness>>, interval: Duration, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut published = 0u64;
    let mut witnesses: Vec<Witness> = current.borrow_and_update().clone();
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        if current.has_changed().unwrap_or(false) {
            let mut next = current.borrow_and_update().clone();
            for w in &mut next {
                if let Some(old) = witnesses.iter().find(|o| o.member == w.member && o.key == w.key) {
                    w.cosigned_size = old.cosigned_size;
                }
            }
            witnesses = next;
            // Ask the new set even if the log has not grown since.
            published = 0;
        }
        let latest = log.latest();
        if witnesses.is_empty() || latest.checkpoint.size == 0 || latest.checkpoint.size == published {
            continue;
        }
        let results = join_all(witnesses.iter_mut().map(|w| cosign(&log, w, &latest.note, latest.checkpoint.size))).await;
        let mut note = match Note::parse(&latest.note) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "own checkpoint does not parse");
                continue;
            }
        };
        let mut by = Vec::new();
        for (w, r) in witnesses.iter().zip(results) {
            match r {
                // Only a line that verifies as this witness's cosignature goes
                // in: a witness must not be able to spoil the published note.
                Ok(lines) => match own_cosignature(&latest.note, &lines, &w.key) {
                    Ok(line) => match note.add_lines(&line) {
                        Ok(()) => by.push(w.member.clone()),
                        Err(e) => tracing::warn!(witness = %w.member, error = %e, "cosignature not added"),
                    },
                    Err(e) => tracing::warn!(witness = %w.member, error = %e, "cosignature rejected"),
                },
                Err(e) => tracing::warn!(witness = %w.member, error = %e, "witness did not cosign"),
            }
        }
        if by.is_empty() {
            continue;
        }
        let (store, text) = (log.clone(), note.to_text());
        match tokio::task::spawn_blocking(move || store.set_cosigned(&text)).await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(()) => {
                published = latest.checkpoint.size;
                tracing::info!(size = published, witnesses = %by.join(","), "checkpoint cosigned");
            }
            Err(e) => tracing::error!(error = %e, "cannot store the cosigned checkpoint"),
        }
    }
}

/// The one line of `lines` that is a valid cosignature of `note` by `key`.
fn own_cosignature(note: &str, lines: &str, key: &tabadul_audit::Verifier) -> Result<String, String> {
    let text = Note::parse(note).map_err(|e| e.to_string())?.text;
    for line in lines.lines().take(tabadul_audit::note::MAX_SIGNATURES) {
        let candidate = format!("{text}\n{line}\n");
        if Note::parse(&candidate).is_ok_and(|n| n.verify_by(key).is_ok()) {
            return Ok(format!("{line}\n"));
        }
    }
    Err("no line is a valid cosignature by this witness's key".into())
}

/// One add-checkpoint exchange, retried once on a size conflict.
async fn cosign(log: &Arc<Log>, w: &mut Witness, note: &str, size: u64) -> Result<String, String> {
    for _ in 0..2 {
        let old = w.cosigned_size.min(size);
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            let log = log.clone();
            tokio::task::spawn_blocking(move || log.consistency_proof(old, size)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?
        };
        let request = pb::AddCheckpointRequest { old_size: old, consistency_proof: proof.iter().map(|h| h.to_vec()).collect(), checkpoint: note.to_owned() };
        let mut request = tonic::Request::new(request);
        request.set_timeout(Duration::from_secs(5));
        match w.client.add_checkpoint(request).await {
            Ok(r) => {
                w.cosigned_size = size;
                return Ok(r.into_inner().cosignatures);
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                let known = s.metadata().get(TLOG_SIZE_METADATA).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                match known {
                    Some(k) => w.cosigned_size = k,
                    None => return Err(format!("conflict without a size: {}", s.message())),
                }
            }
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    Err("size conflict twice".into())
}

/// The witnesses' sizes, for status output.
pub fn sizes(witnesses: &[Witness]) -> BTreeMap<String, u64> {
    witnesses.iter().map(|w| (w.member.clone(), w.cosigned_size)).collect()
}
