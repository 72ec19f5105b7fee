//! The node's data is readable by the node's own user only.
//!
//! The data directory holds unit-record microdata, the release ledger and
//! the signed log: nothing another account on the host may read. The node
//! creates every directory it owns with mode 0700; the files RocksDB
//! writes inside (0644 by its default) are then out of others' reach, since
//! reaching a file needs search permission on every directory above it.
//! `doctor` flags a data directory that is looser (one made by hand, or
//! before this rule).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::Error;

/// Mode of every directory the node creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and any missing parents) with mode 0700. An existing
/// directory is left as it is: `doctor` says when it is too open.
pub fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(|e| Error::io(dir, e))
}

/// The file a serving node holds locked, so that offline commands that
/// replace its data (`restore`) can tell it is running without opening
/// the store, which may be the very thing that is damaged.
pub const LOCK_FILE: &str = "node.lock";

/// Takes the data directory's lock (created if missing); held until the
/// returned file is dropped. Fails if another process holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, Error> {
    create_dir(data_dir)?;
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(Error::Invalid(format!("{} is locked by a running node (or another restore): stop it first", path.display())))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// The permission bits of `path` that let others than the owner in, if any.
pub fn too_open(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_data_lock_is_held_by_one_holder_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let held = lock_data_dir(tmp.path()).unwrap();
        let second = lock_data_dir(tmp.path()).unwrap_err().to_string();
        assert!(second.contains("locked by a running node"), "{second}");
        drop(held);
        lock_data_dir(tmp.path()).expect("free again once dropped");
    }

    #[test]
    fn created_private_and_loose_modes_are_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(too_open(&dir), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(too_open(&dir), Some(0o755));
    }
}
