//! C2SP `tlog-checkpoint` bodies: origin, tree size, root hash, and
//! optional extension lines.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::Error;
use crate::merkle::Hash;
use crate::note::{Note, Verifier};

/// A checkpoint body, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines, without their newline; Tabadul writes none.
    pub extensions: Vec<String>,
}

fn bad(what: impl Into<String>) -> Error {
    Error::Checkpoint(what.into())
}

impl Checkpoint {
    /// The note text: `origin\nsize\nbase64(root)\n` plus extensions.
    pub fn body(&self) -> String {
        let mut out = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    /// Parses a checkpoint body (the note text, without signatures).
    pub fn parse(body: &str) -> Result<Self, Error> {
        let lines: Vec<&str> = body.strip_suffix('\n').ok_or_else(|| bad("a checkpoint ends with a newline"))?.split('\n').collect();
        if lines.len() < 3 {
            return Err(bad("a checkpoint has at least three lines: origin, size, root"));
        }
        let origin = lines[0];
        if origin.is_empty() {
            return Err(bad("empty origin line"));
        }
        let size_text = lines[1];
        // Decimal, no sign, no leading zeros: one spelling per size.
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_digit()) || (size_text.len() > 1 && size_text.starts_with('0')) {
            return Err(bad(format!("tree size {size_text:?} is not a decimal number")));
        }
        let size = size_text.parse().map_err(|_| bad(format!("tree size {size_text:?} is out of range")))?;
        let root: Hash =
            B64.decode(lines[2]).ok().and_then(|r| r.try_into().ok()).ok_or_else(|| bad(format!("root hash {:?} is not 32 base64-encoded bytes", lines[2])))?;
        let extensions: Vec<String> = lines[3..].iter().map(|l| (*l).to_owned()).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty extension line"));
        }
        let cp = Checkpoint { origin: origin.to_owned(), size, root, extensions };
        if cp.body() != body {
            return Err(bad("checkpoint is not in canonical form"));
        }
        Ok(cp)
    }

    /// Parses a signed checkpoint and checks the log's signature and origin.
    pub fn open(note_text: &str, log_key: &Verifier) -> Result<(Self, Note), Error> {
        let note = Note::parse(note_text)?;
        // Strict: a second, invalid line by the log's own key fails too.
        if note.verify_known(std::slice::from_ref(log_key))? != [true] {
            return Err(Error::Note(format!("the note carries no signature by {}", log_key.name())));
        }
        let cp = Checkpoint::parse(&note.text)?;
        if cp.origin != log_key.name() {
            return Err(bad(format!("checkpoint origin {:?} is not the log's name {:?}", cp.origin, log_key.name())));
        }
        Ok((cp, note))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::note::Signer;

    #[test]
    fn bodies_round_trip_and_only_canonical_ones_parse() {
        let cp = Checkpoint { origin: "alo/node/MAR".into(), size: 42, root: [7; 32], extensions: vec![] };
        assert_eq!(Checkpoint::parse(&cp.body()).unwrap(), cp);
        assert_eq!(cp.body(), "alo/node/MAR\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n");
        for body in [
            "alo\n042\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "alo\n-1\nx\n",
            "alo\n1\nAAAA\n",
            "alo\n1\n",
            "\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        ] {
            assert!(Checkpoint::parse(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn open_checks_signature_and_origin() {
        let key = Signer::generate("alo/node/MAR").unwrap();
        let cp = Checkpoint { origin: "alo/node/MAR".into(), size: 1, root: [1; 32], extensions: vec![] };
        let (got, _) = Checkpoint::open(&key.sign(&cp.body()).unwrap(), &key.verifier()).unwrap();
        assert_eq!(got, cp);
        let impostor = Signer::generate("alo/node/MAR").unwrap();
        assert!(Checkpoint::open(&impostor.sign(&cp.body()).unwrap(), &key.verifier()).is_err());
        let wrong_origin = Checkpoint { origin: "alo/node/EGY".into(), ..cp };
        let e = Checkpoint::open(&key.sign(&wrong_origin.body()).unwrap(), &key.verifier()).unwrap_err();
        assert!(e.to_string().contains("origin"), "{e}");
    }
}
