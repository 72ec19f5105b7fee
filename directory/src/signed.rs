//! The directory as a signed note: how the authority signs it, and the one
//! way every consumer opens it.

use ring::digest::{SHA256, digest as sha256};
use tabadul_audit::{Note, Signer, Verifier};

use crate::Error;
use crate::document::Directory;

/// The name of a network's directory key: `<network>/directory`.
pub fn anchor_name(network: &str) -> String {
    format!("{network}/directory")
}

/// SHA-256 of `bytes`, lower-case hex: how versions link and how the
/// dictionary is named.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(sha256(&SHA256, bytes))
}

/// A directory whose signature by the anchor verified, with the note it
/// came in (kept byte for byte: it is what the next version's `previous`
/// names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDirectory {
    pub note: String,
    pub doc: Directory,
}

impl SignedDirectory {
    /// Signs `doc` with the authority's key. The note text is the JSON
    /// document, pretty-printed (a note's text may hold no blank line and
    /// no control character but newlines, which JSON without literal tabs
    /// satisfies).
    pub fn sign(doc: &Directory, key: &Signer) -> Result<Self, Error> {
        doc.validate()?;
        if key.name() != anchor_name(&doc.network) {
            return Err(Error::Refused(format!(
                "the key {:?} is not the directory key of network {:?} ({:?})",
                key.name(),
                doc.network,
                anchor_name(&doc.network)
            )));
        }
        let text = serde_json::to_string_pretty(doc).map_err(|e| Error::Refused(e.to_string()))? + "\n";
        let note = key.sign(&text).map_err(|e| Error::Refused(e.to_string()))?;
        Ok(SignedDirectory { note, doc: doc.clone() })
    }

    /// Opens a signed directory: the anchor's signature must verify (and
    /// no line by the anchor may fail), the anchor must be the network's
    /// directory key, and the document must be valid. Anything else is
    /// refused whole.
    pub fn open(note: &str, anchor: &Verifier) -> Result<Self, Error> {
        let parsed = Note::parse(note).map_err(|e| Error::Refused(format!("not a signed note: {e}")))?;
        match parsed.verify_known(std::slice::from_ref(anchor)) {
            Ok(signed) if signed == [true] => {}
            Ok(_) => return Err(Error::Refused(format!("not signed by the directory anchor {}", anchor.name()))),
            Err(e) => return Err(Error::Refused(e.to_string())),
        }
        let doc: Directory = serde_json::from_str(&parsed.text).map_err(|e| Error::Refused(format!("the signed text is not a directory document: {e}")))?;
        if anchor.name() != anchor_name(&doc.network) {
            return Err(Error::Refused(format!("the anchor {:?} is not network {:?}'s directory key", anchor.name(), doc.network)));
        }
        doc.validate()?;
        Ok(SignedDirectory { note: note.to_owned(), doc })
    }

    /// The digest the next version names as `previous`.
    pub fn digest(&self) -> String {
        digest(self.note.as_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::document::{DictionaryRef, FORMAT, HubEntry, MemberEntry};

    pub(crate) fn sample(version: u64, previous: Option<String>, members: &[&str]) -> Directory {
        let key = |origin: &str| Signer::generate(origin).unwrap().verifier().to_string();
        Directory {
            format: FORMAT.into(),
            network: "alo".into(),
            version,
            previous,
            issued: "2026-12-03T20:00:00Z".into(),
            crl_url: Some("https://pki.alo.example/crl.pem".into()),
            dictionary: DictionaryRef { version: "2026.4".into(), sha256: digest(b"dictionary") },
            witness_quorum: members.len().min(1),
            hubs: vec![HubEntry {
                id: "alo".into(),
                endpoint: "hub.alo.example:7443".into(),
                https: Some("hub.alo.example:8443".into()),
                log_vkey: key("alo/hub/alo"),
            }],
            members: members
                .iter()
                .map(|m| MemberEntry {
                    code: (*m).into(),
                    endpoint: format!("node.{m}.example:7443"),
                    log_vkey: key(&format!("alo/node/{m}")),
                    previous_log_vkeys: vec![],
                    witness_vkey: Some(key(&format!("alo/witness/{m}"))),
                })
                .collect(),
        }
    }

    #[test]
    fn only_the_anchor_opens_a_directory_and_every_changed_byte_is_refused() {
        let authority = Signer::generate("alo/directory").unwrap();
        let signed = SignedDirectory::sign(&sample(1, None, &["MAR", "EGY"]), &authority).unwrap();
        let opened = SignedDirectory::open(&signed.note, &authority.verifier()).unwrap();
        assert_eq!(opened, signed);
        // Any flipped byte: refused, never a different document accepted.
        for at in 0..signed.note.len() {
            let mut bytes = signed.note.clone().into_bytes();
            bytes[at] ^= 0x01;
            let Ok(text) = String::from_utf8(bytes) else { continue };
            assert!(SignedDirectory::open(&text, &authority.verifier()).is_err(), "byte {at} flipped and still opened");
        }
        // Another key of the same name, or another network's anchor.
        let impostor = Signer::generate("alo/directory").unwrap();
        assert!(SignedDirectory::open(&signed.note, &impostor.verifier()).is_err());
        let other_net = Signer::generate("oic/directory").unwrap();
        assert!(SignedDirectory::sign(&sample(1, None, &["MAR"]), &other_net).is_err());
        // A changed endpoint re-signed by someone else is still refused.
        let mut changed = sample(1, None, &["MAR"]);
        changed.members[0].endpoint = "attacker.example:7443".into();
        let forged = SignedDirectory::sign(&changed, &impostor).unwrap();
        let e = SignedDirectory::open(&forged.note, &authority.verifier()).unwrap_err();
        assert!(e.to_string().contains("not signed by the directory anchor"), "{e}");
    }

    #[test]
    fn documents_whose_keys_do_not_match_their_names_are_refused() {
        let authority = Signer::generate("alo/directory").unwrap();
        let mut d = sample(1, None, &["MAR", "EGY"]);
        d.members[1].log_vkey = d.members[0].log_vkey.clone();
        let e = SignedDirectory::sign(&d, &authority).unwrap_err();
        assert!(e.to_string().contains("member EGY log_vkey is a key for \"alo/node/MAR\""), "{e}");
        let mut d = sample(1, None, &["MAR"]);
        d.witness_quorum = 2;
        assert!(SignedDirectory::sign(&d, &authority).unwrap_err().to_string().contains("cannot be met"));
        assert!(SignedDirectory::sign(&sample(2, None, &["MAR"]), &authority).is_err());
        let mut d = sample(1, None, &["MAR", "MAR"]);
        d.witness_quorum = 0;
        assert!(SignedDirectory::sign(&d, &authority).unwrap_err().to_string().contains("listed twice"));
    }
}
