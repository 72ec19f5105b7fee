//! What a holder (a hub, a node, an auditor) has seen of the directory:
//! every version it accepted, as signed, in `<dir>/<version>.note`. A new
//! version is accepted only if it follows the latest one held (its
//! `previous` is that note's digest); an older one is a rollback, and a
//! different document for a version held is two histories. Every read
//! verifies again: a file changed on disk is refused like a forged one.

use std::path::{Path, PathBuf};

use tabadul_audit::Verifier;

use crate::Error;
use crate::signed::SignedDirectory;

/// The versions held, on disk.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
}

/// What [`History::accept`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A version newer than any held: now the latest.
    New,
    /// The version already held, byte for byte.
    Unchanged,
}

impl History {
    /// The history kept in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(History { dir: dir.to_owned() })
    }

    /// The versions held, in order.
    pub fn versions(&self) -> Result<Vec<u64>, Error> {
        let mut out = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let name = item.map_err(|e| Error::io(&self.dir, e))?.file_name().to_string_lossy().into_owned();
            if let Some(v) = name.strip_suffix(".note").and_then(|v| v.parse::<u64>().ok()).filter(|v| name == format!("{v}.note")) {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Version `version` as held, verified again against `anchor`.
    pub fn get(&self, version: u64, anchor: &Verifier) -> Result<Option<SignedDirectory>, Error> {
        let path = self.path(version);
        let note = match std::fs::read_to_string(&path) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let signed = SignedDirectory::open(&note, anchor).map_err(|e| Error::Refused(format!("{} (held at {}): {e}", version, path.display())))?;
        if signed.doc.version != version {
            return Err(Error::Refused(format!("{} holds version {}", path.display(), signed.doc.version)));
        }
        Ok(Some(signed))
    }

    /// The latest version held, verified again.
    pub fn latest(&self, anchor: &Verifier) -> Result<Option<SignedDirectory>, Error> {
        match self.versions()?.last() {
            Some(&v) => self.get(v, anchor),
            None => Ok(None),
        }
    }

    /// Accepts `new` if it is the latest held or follows it; the first
    /// version a holder sees is trusted on its signature alone (its own
    /// earlier versions can be checked with [`verify_chain`]).
    pub fn accept(&self, new: &SignedDirectory, anchor: &Verifier) -> Result<Accepted, Error> {
        let v = new.doc.version;
        if let Some(held) = self.latest(anchor)? {
            let h = held.doc.version;
            if v < h {
                return match self.get(v, anchor)? {
                    Some(old) if old.note != new.note => Err(Error::Equivocation { version: v }),
                    _ => Err(Error::Rollback { got: v, held: h }),
                };
            }
            if v == h {
                return if held.note == new.note { Ok(Accepted::Unchanged) } else { Err(Error::Equivocation { version: v }) };
            }
            if v != h + 1 {
                return Err(Error::Chain { version: v, previous: h, why: format!("versions {}..{} are missing: fetch them first", h + 1, v - 1) });
            }
            if new.doc.previous.as_deref() != Some(held.digest().as_str()) {
                return Err(Error::Chain {
                    version: v,
                    previous: h,
                    why: "it does not name the held version's digest as its previous: another history".into(),
                });
            }
        }
        // Crash point: the temporary file may be left behind; the rename
        // makes the version appear whole or not at all.
        let path = self.path(v);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &new.note).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|e| Error::io(&path, e))?;
        Ok(Accepted::New)
    }

    fn path(&self, version: u64) -> PathBuf {
        self.dir.join(format!("{version}.note"))
    }
}

/// Verifies a whole history, version 1 first: every note signed by the
/// anchor, versions contiguous, each naming the digest of the one before.
pub fn verify_chain(notes: &[String], anchor: &Verifier) -> Result<Vec<SignedDirectory>, Error> {
    let mut out: Vec<SignedDirectory> = Vec::with_capacity(notes.len());
    for (i, note) in notes.iter().enumerate() {
        let signed = SignedDirectory::open(note, anchor)?;
        let want = i as u64 + 1;
        if signed.doc.version != want {
            return Err(Error::Chain { version: signed.doc.version, previous: want.saturating_sub(1), why: format!("expected version {want} here") });
        }
        if let Some(before) = out.last()
            && signed.doc.previous.as_deref() != Some(before.digest().as_str())
        {
            return Err(Error::Chain { version: want, previous: want - 1, why: "its previous is not the digest of that version".into() });
        }
        out.push(signed);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::signed::tests::sample;
    use tabadul_audit::Signer;

    #[test]
    fn a_holder_refuses_rollbacks_gaps_and_second_histories() {
        let authority = Signer::generate("alo/directory").unwrap();
        let anchor = authority.verifier();
        let tmp = tempfile::tempdir().unwrap();
        let h = History::open(tmp.path()).unwrap();
        let v1 = SignedDirectory::sign(&sample(1, None, &["MAR", "EGY"]), &authority).unwrap();
        let v2 = SignedDirectory::sign(&sample(2, Some(v1.digest()), &["MAR"]), &authority).unwrap();
        let v3 = SignedDirectory::sign(&sample(3, Some(v2.digest()), &["MAR"]), &authority).unwrap();
        assert_eq!(h.accept(&v1, &anchor).unwrap(), Accepted::New);
        assert_eq!(h.accept(&v1, &anchor).unwrap(), Accepted::Unchanged);
        assert!(matches!(h.accept(&v3, &anchor), Err(Error::Chain { .. })), "a gap");
        assert_eq!(h.accept(&v2, &anchor).unwrap(), Accepted::New);
        assert!(matches!(h.accept(&v1, &anchor), Err(Error::Rollback { got: 1, held: 2 })));
        // The authority signing another version 2: caught.
        let other2 = SignedDirectory::sign(&sample(2, Some(v1.digest()), &["EGY"]), &authority).unwrap();
        assert!(matches!(h.accept(&other2, &anchor), Err(Error::Equivocation { version: 2 })));
        // A version 3 that does not follow the held version 2.
        let fork3 = SignedDirectory::sign(&sample(3, Some(other2.digest()), &["MAR"]), &authority).unwrap();
        assert!(matches!(h.accept(&fork3, &anchor), Err(Error::Chain { .. })));
        assert_eq!(h.accept(&v3, &anchor).unwrap(), Accepted::New);
        assert_eq!(h.latest(&anchor).unwrap().unwrap(), v3);
        // The whole chain verifies; out of order or forked, it does not.
        assert_eq!(verify_chain(&[v1.note.clone(), v2.note.clone(), v3.note.clone()], &anchor).unwrap().len(), 3);
        assert!(verify_chain(&[v1.note.clone(), other2.note.clone(), v3.note.clone()], &anchor).is_err());
        assert!(verify_chain(&[v2.note.clone(), v3.note.clone()], &anchor).is_err());
        // A held file changed on disk is refused on the next read.
        let path = tmp.path().join("3.note");
        std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("node.MAR", "node.XXX")).unwrap();
        assert!(h.latest(&anchor).is_err());
    }
}
