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
