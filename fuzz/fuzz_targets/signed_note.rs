//! C2SP signed notes, verifier keys, checkpoints and cosignatures, as a
//! witness or an auditor receives them from outside.
#![no_main]

use tabadul_audit::checkpoint::Checkpoint;
use tabadul_audit::{Note, Verifier};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A verifier key line.
    let _ = Verifier::parse(text.lines().next().unwrap_or(""));
    if let Ok(note) = Note::parse(text) {
        // A parsed note prints back to the same text (one spelling only).
        assert_eq!(Note::parse(&note.to_text()).map(|n| n.to_text()).ok(), Some(note.to_text()));
        let _ = Checkpoint::parse(&note.to_text());
    }
    if let Ok(cp) = Checkpoint::parse(text) {
        assert_eq!(Checkpoint::parse(&cp.body()).map(|c| c.body()).ok(), Some(cp.body()));
    }
});
