//! Online backup and offline restore of a node's data: the store and the
//! signed log, as consistent RocksDB checkpoints, with a manifest.
//!
//! A backup directory holds `store/`, `log/` and `backup.json`. Restore
//! puts them in place of the node's data (moving what was there aside,
//! never deleting it) and opens both to prove the copy is sound: the log's
//! recovery recomputes its root against its signed checkpoint.
//!
//! Restoring rolls the log back to the backup: entries logged after it are
//! gone, and the hub, which pins every node's log, will refuse the node's
//! answers until the ALO accepts the rollback (`tabadul-hub unpin`, which
//! logs the decision). That is deliberate: a log
//! that can silently lose entries proves nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tabadul_audit::Log;

use crate::store::Store;
use crate::{Error, NodeConfig};

/// `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub member: String,
    /// RFC 3339.
    pub created: String,
    pub observations: u64,
    pub log_entries: u64,
    /// The latest signed log checkpoint in the backup.
    pub checkpoint: String,
}

/// Takes a backup of a running (or stopped) node's store and log into the
/// new directory `dir`.
pub fn backup(member: &str, store: &Store, log: &Log, dir: &Path) -> Result<Manifest, Error> {
    if dir.exists() && std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.next().is_some() {
        return Err(Error::Invalid(format!("backup directory {} is not empty; choose a new one", dir.display())));
    }
    crate::private::create_dir(dir)?;
    let latest = independent_copies(store, log, dir)?;
    let manifest = Manifest {
        member: member.to_owned(),
        created: time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        // Counted in the copy, not the live store, which may have grown since.
        observations: Store::count_at(&dir.join("store"))?,
        log_entries: latest.checkpoint.size,
        checkpoint: latest.note.clone(),
    };
    let path = dir.join("backup.json");
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
    // Written last: a directory without it is an unfinished backup.
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    Ok(manifest)
}

/// Restores a backup into a stopped node's data directory: copies and
/// verifies it beside the data first, then swaps it in; the current
/// `store/` and `log/` are moved to `<data_dir>/before-restore-<time>/`.
/// Returns the manifest and where the old data went.
pub fn restore(config: &NodeConfig, member: &str, from: &Path) -> Result<(Manifest, Option<PathBuf>), Error> {
    let manifest_path = from.join("backup.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e} (an unfinished or damaged backup?)", manifest_path.display())))?;
    if manifest.member != member {
        return Err(Error::Invalid(format!("{} is a backup of {}, not of {member}", from.display(), manifest.member)));
    }
    for part in ["store", "log"] {
        if !from.join(part).is_dir() {
            return Err(Error::Invalid(format!("{} has no {part}/ directory", from.display())));
        }
    }
    // The node must be stopped. Its lock file says so without opening the
    // store, which may be damaged (the usual reason to restore): what is
    // there is moved aside as it is, never opened or repaired.
    let _stopped = crate::private::lock_data_dir(&config.data_dir)?;
    // Copy the backup next to the data and check it there: nothing of ours
    // moves until the copy is whole and its log verifies.
    let staging = config.data_dir.join(".restore-new");
    let _ = std::fs::remove_dir_all(&staging);
    let staged = (|| {
        copy_tree(&from.join("store"), &staging.join("store"))?;
        copy_tree(&from.join("log"), &staging.join("log"))?;
        Store::open(&staging.join("store"))?;
        let log = Log::open(&staging.join("log"), tabadul_audit::load_signer(&config.log_key)?)?;
        if log.len() != manifest.log_entries {
            return Err(Error::Invalid(format!("the backup's log holds {} entries, its manifest says {}", log.len(), manifest.log_entries)));
        }
        Ok(())
    })();
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // Two renames per part, within one filesystem: the old data goes aside,
    // the checked copy comes in. On failure the old data is put back.
    let aside = config.data_dir.join(format!("before-restore-{}", time::OffsetDateTime::now_utc().unix_timestamp()));
    let mut moved = None;
    let mut done: Vec<&str> = Vec::new();
    for part in ["store", "log"] {
        let current = config.data_dir.join(part);
        let result = (|| {
            if current.exists() {
                std::fs::create_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
                std::fs::rename(&current, aside.join(part)).map_err(|e| Error::io(&current, e))?;
            }
            std::fs::rename(staging.join(part), &current).map_err(|e| Error::io(&current, e))
        })();
        match result {
            Ok(()) => {
                if aside.join(part).exists() {
                    moved = Some(aside.clone());
                }
                done.push(part);
            }
            Err(e) => {
                // Put back what was already swapped, then report.
                for back in done.iter().copied().chain([part]) {
                    let current = config.data_dir.join(back);
                    if aside.join(back).exists() {
                        let _ = std::fs::remove_dir_all(&current);
                        let _ = std::fs::rename(aside.join(back), &current);
                    }
                }
                return Err(Error::Invalid(format!("restore failed and was undone ({e}); the node's data is as it was")));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok((manifest, moved))
}

/// Writes the store's and the log's checkpoints into `dir` as files of
/// their own. A RocksDB checkpoint hard-links the live SST files where it
/// can, and a backup that shares its inodes with the live store is damaged
/// with it: so the checkpoints are made beside the live data (same
/// filesystem, cheap links), copied byte for byte into `dir`, compared,
/// and the links removed. Returns the log checkpoint the copy holds.
fn independent_copies(store: &Store, log: &Log, dir: &Path) -> Result<std::sync::Arc<tabadul_audit::SignedCheckpoint>, Error> {
    let data_dir = store.path().parent().unwrap_or(Path::new("."));
    let staging = data_dir.join(format!(".backup-links-{}-{}", std::process::id(), time::OffsetDateTime::now_utc().unix_timestamp_nanos()));
    let result = (|| {
        crate::private::create_dir(&staging)?;
        store.backup_to(&staging.join("store"))?;
        let latest = log.backup_to(&staging.join("log"))?;
        for part in ["store", "log"] {
            copy_tree(&staging.join(part), &dir.join(part))?;
            same_tree(&staging.join(part), &dir.join(part))?;
        }
        Ok(latest)
    })();
    // Crash point: a leftover `.backup-links-*` holds only links to files
    // the store also holds; removing it (by hand, or at the next backup's
    // end) loses nothing.
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Checks that every file under `a` is under `b` with the same bytes.
fn same_tree(a: &Path, b: &Path) -> Result<(), Error> {
    for item in std::fs::read_dir(a).map_err(|e| Error::io(a, e))? {
        let item = item.map_err(|e| Error::io(a, e))?;
        let (x, y) = (item.path(), b.join(item.file_name()));
        if x.is_dir() {
            same_tree(&x, &y)?;
        } else if digest_of(&x)? != digest_of(&y)? {
            return Err(Error::Invalid(format!("the backup's copy {} differs from what was written; the backup is not usable", y.display())));
        }
    }
    Ok(())
}

fn digest_of(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(ctx.finish().as_ref().to_vec());
        }
        ctx.update(&buf[..n]);
    }
}

/// Copies a directory of files (RocksDB directories are flat), each
/// synced to disk before the backup's manifest is written.
fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    crate::private::create_dir(to)?;
    for item in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let item = item.map_err(|e| Error::io(from, e))?;
        let target = to.join(item.file_name());
        if item.path().is_dir() {
            copy_tree(&item.path(), &target)?;
        } else {
            std::fs::copy(item.path(), &target).map_err(|e| Error::io(&target, e))?;
            std::fs::File::open(&target).and_then(|f| f.sync_all()).map_err(|e| Error::io(&target, e))?;
        }
    }
    Ok(())
}
