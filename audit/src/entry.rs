//! The leaf encoding: one exchange event as canonical text, version 1.
//!
//! ```text
//! tabadul-exchange/v1
//! time 1763894400123
//! kind query
//! peer spiffe://alo/hub/alo
//! query 3f1a…(hex SHA-256 of the query)
//! decision allowed
//! rule hub-aggregates
//! policy 2026-11-01.3
//! released 9c0e…(hex SHA-256, salted, of what was released)
//! detail 12 cells; allowed by rule hub-aggregates
//! receipt MAR 41 5be2…(leaf hash hex) 42
//! ```
//!
//! Every field line appears once, in this order; `receipt` lines (hub
//! leaves, and a node's `peer-query` leaves: answers it asked another
//! member for) follow, sorted by member. A line is `key value`, or `key`
//! alone when the value is empty. Values hold no control characters
//! (the encoder turns them into spaces). An encoding is valid only if
//! re-encoding its parse gives the same bytes, so each entry has exactly
//! one spelling, and a leaf hash commits to one meaning.
//!
//! No data values: `released` is `SHA-256("tabadul-released/v1" ‖ salt ‖
//! canonical cells)`, where the 16-byte salt is kept beside the log, never
//! in it. Whoever holds the released figures and the salt (the receiving
//! hub) can prove what was released; an auditor shown the log learns
//! nothing about the figures.

use crate::Error;
use crate::merkle::Hash;

/// The first line of every version-1 leaf.
pub const MAGIC_V1: &str = "tabadul-exchange/v1";

/// One exchange event.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Entry {
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// `query`, `describe`, `withdraw`, `reinstate`, `import`,
    /// `policy-load`, `federated-query`, `peer-query`, `witness`.
    pub kind: String,
    /// The verified identity of the requester, or `local-admin`/`local`.
    pub peer: String,
    pub query_digest: String,
    /// `allowed`, `partly-allowed`, `refused`, `invalid`, `ok`, `failed`, ...
    pub decision: String,
    pub rule_id: String,
    pub policy_version: String,
    /// Salted digest of what was released (hex), empty when nothing was.
    pub released: String,
    /// A short human explanation (a refusal reason, member statuses, ...).
    pub detail: String,
    /// Hub leaves: the node receipts the answer was built on; a node's
    /// `peer-query` leaf: the other node's receipt for what it received.
    pub receipts: Vec<ReceiptRef>,
}

/// A node's receipt as the hub records it: enough to find and check the
/// node's leaf (`cross-check`) without the node's salt.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ReceiptRef {
    pub member: String,
    pub index: u64,
    #[serde(with = "hex_hash")]
    pub leaf_hash: Hash,
    /// Size of the node checkpoint that proved inclusion.
    pub tree_size: u64,
}

mod hex_hash {
    pub fn serialize<S: serde::Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }
}

impl Entry {
    /// An entry stamped with the current time.
    pub fn now(kind: &str, peer: &str) -> Self {
        Entry {
            time_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
            kind: kind.to_owned(),
            peer: peer.to_owned(),
            ..Entry::default()
        }
    }

    /// The canonical version-1 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str(MAGIC_V1);
        out.push('\n');
        let mut field = |key: &str, value: &str| {
            out.push_str(key);
            let value = clean(value);
            if !value.is_empty() {
                out.push(' ');
                out.push_str(&value);
            }
            out.push('\n');
        };
        field("time", &self.time_ms.to_string());
        field("kind", &self.kind);
        field("peer", &self.peer);
        field("query", &self.query_digest);
        field("decision", &self.decision);
        field("rule", &self.rule_id);
        field("policy", &self.policy_version);
        field("released", &self.released);
        field("detail", &self.detail);
        let mut receipts = self.receipts.clone();
        receipts.sort();
        for r in &receipts {
            field("receipt", &format!("{} {} {} {}", clean(&r.member).replace(' ', "_"), r.index, hex::encode(r.leaf_hash), r.tree_size));
        }
        out.into_bytes()
    }

    /// Parses canonical version-1 bytes; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |why: String| Error::Entry(why);
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let body = text.strip_suffix('\n').ok_or_else(|| bad("does not end with a newline".into()))?;
        let mut lines = body.split('\n');
        match lines.next() {
            Some(MAGIC_V1) => {}
            other => return Err(bad(format!("first line {other:?} is not {MAGIC_V1:?}"))),
        }
        let mut next = |key: &str| -> Result<String, Error> {
            let line = lines.next().ok_or_else(|| bad(format!("missing line {key:?}")))?;
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            if k != key {
                return Err(bad(format!("line {line:?}: expected {key:?}")));
            }
            Ok(v.to_owned())
        };
        let time = next("time")?;
        let mut e = Entry {
            time_ms: time.parse().map_err(|_| bad(format!("time {time:?} is not an integer")))?,
            kind: next("kind")?,
            peer: next("peer")?,
            query_digest: next("query")?,
            decision: next("decision")?,
            rule_id: next("rule")?,
            policy_version: next("policy")?,
            released: next("released")?,
            detail: next("detail")?,
            receipts: Vec::new(),
        };
        for line in lines {
            let rest = line.strip_prefix("receipt ").ok_or_else(|| bad(format!("unexpected line {line:?}")))?;
            let parts: Vec<&str> = rest.split(' ').collect();
            let [member, index, hash, size] = parts[..] else {
                return Err(bad(format!("receipt {rest:?} is not: member index leaf-hash tree-size")));
            };
            let leaf_hash =
                hex::decode(hash).ok().and_then(|h| h.try_into().ok()).ok_or_else(|| bad(format!("receipt leaf hash {hash:?} is not 32 hex bytes")))?;
            e.receipts.push(ReceiptRef {
                member: member.to_owned(),
                index: index.parse().map_err(|_| bad(format!("receipt index {index:?}")))?,
                leaf_hash,
                tree_size: size.parse().map_err(|_| bad(format!("receipt tree size {size:?}")))?,
            });
        }
        if e.encode() != bytes {
            return Err(bad("not in canonical form".into()));
        }
        Ok(e)
    }
}

const FIELDS: [&str; 9] = ["time", "kind", "peer", "query", "decision", "rule", "policy", "released", "detail"];

/// Checks that `bytes` are a canonical version-1 entry without building
/// one: what an audit does for every entry, so it allocates nothing. It
/// accepts exactly what [`Entry::decode`] accepts (a test flips every byte
/// of sample entries to hold the two together).
pub fn check(bytes: &[u8]) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::Entry(why.to_owned()));
    let Ok(text) = std::str::from_utf8(bytes) else { return bad("not UTF-8") };
    let Some(body) = text.strip_suffix('\n') else { return bad("does not end with a newline") };
    // Control characters: every byte below 0x20 (or DEL) must be one of
    // the newlines counted below. Counting, rather than stopping at the
    // first, lets the compiler vectorise the scan.
    let low = body.bytes().fold(0u32, |n, b| n.wrapping_add(u32::from((b < 0x20) | (b == 0x7f))));
    if body.as_bytes().contains(&0xc2) && has_c1(body.as_bytes()) {
        return bad("not in canonical form");
    }
    let mut newlines = 0u32;
    let mut lines = split_ascii(body, b'\n').inspect(|_| newlines += 1);
    if lines.next() != Some(MAGIC_V1) {
        return bad("first line is not tabadul-exchange/v1");
    }
    for key in FIELDS {
        let Some(line) = lines.next() else { return bad("missing line") };
        let (k, v) = match split_once_ascii(line, b' ') {
            // An empty value is written as the bare key, never `key `.
            Some((_, "")) => return bad("not in canonical form"),
            Some((k, v)) => (k, v),
            None => (line, ""),
        };
        if k != key {
            return bad("field out of order");
        }
        if !canonical_value(v) {
            return bad("not in canonical form");
        }
        if key == "time" {
            let digits = v.strip_prefix('-').unwrap_or(v);
            if !canonical_int(digits) || v == "-0" || v.parse::<i64>().is_err() {
                return bad("time is not a canonical integer");
            }
        }
    }
    let mut previous: Option<(&str, u64, &str, u64)> = None;
    for line in lines {
        let Some(rest) = line.strip_prefix("receipt ") else { return bad("unexpected line") };
        let mut parts = split_ascii(rest, b' ');
        let (Some(member), Some(index), Some(hash), Some(size), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) else {
            return bad("receipt is not: member index leaf-hash tree-size");
        };
        if member.is_empty() || !canonical_value(member) || !canonical_int(index) || !canonical_int(size) {
            return bad("receipt not in canonical form");
        }
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return bad("receipt leaf hash is not 32 lowercase hex bytes");
        }
        let (Ok(index), Ok(size)) = (index.parse::<u64>(), size.parse::<u64>()) else { return bad("receipt number out of range") };
        let this = (member, index, hash, size);
        if previous.is_some_and(|p| p > this) {
            return bad("receipts not sorted");
        }
        previous = Some(this);
    }
    if low != newlines.wrapping_sub(1) {
        return bad("not in canonical form");
    }
    Ok(())
}

/// `s.split(sep)` for an ASCII separator, as a plain byte scan: the
/// generic `str` searcher costs more than the whole check on short lines.
fn split_ascii(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match find_byte(r.as_bytes(), sep) {
            // An ASCII byte is always a char boundary.
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The first `needle` in `hay`, eight bytes at a time: the classic
/// "has a zero byte" word trick on `word ^ needle·0x01…01`. The lowest
/// flagged byte is always a true match (false flags only follow one).
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks.remainder().iter().position(|&b| b == needle).map(|p| at + p)
}

fn split_once_ascii(s: &str, sep: u8) -> Option<(&str, &str)> {
    let i = find_byte(s.as_bytes(), sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Whether UTF-8 `bytes` hold a C1 control character (U+0080..U+009F,
/// encoded 0xC2 0x80..0x9F).
fn has_c1(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]))
}

/// What [`clean`] leaves unchanged, for a value already known to hold no
/// control character: no whitespace at either end.
fn canonical_value(v: &str) -> bool {
    !v.starts_with(char::is_whitespace) && !v.ends_with(char::is_whitespace)
}

/// Decimal digits without a leading zero (`0` itself allowed).
fn canonical_int(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && (v == "0" || !v.starts_with('0'))
}

fn clean(value: &str) -> String {
    value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned()
}

/// A fresh random salt for [`released_digest`].
pub fn new_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    // The system random source does not fail on supported platforms; a
    // zero salt would still give a correct (if guessable) commitment.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
    salt
}

/// The salted commitment to released content (see the module docs).
/// `canonical` is the released content in a canonical encoding chosen by
/// the caller (`tabadul-proto` defines the one for query answers).
pub fn released_digest(salt: &[u8], canonical: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tabadul-released/v1");
    ctx.update(salt);
    ctx.update(canonical);
    hex::encode(ctx.finish())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            time_ms: 1_763_894_400_123,
            kind: "federated-query".into(),
            peer: "spiffe://alo/operator/analyst".into(),
            query_digest: "ab".repeat(32),
            decision: "ok".into(),
            rule_id: String::new(),
            policy_version: String::new(),
            released: "cd".repeat(32),
            detail: "MAR=answered\nEGY=refused".into(),
            receipts: vec![
                ReceiptRef { member: "MAR".into(), index: 9, leaf_hash: [2; 32], tree_size: 10 },
                ReceiptRef { member: "EGY".into(), index: 0, leaf_hash: [1; 32], tree_size: 4 },
            ],
        }
    }

    #[test]
    fn encoding_is_canonical_and_round_trips() {
        let e = sample();
        let bytes = e.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("tabadul-exchange/v1\ntime 1763894400123\nkind federated-query\n"), "{text}");
        assert!(text.contains("\nrule\npolicy\n"), "empty values are bare keys: {text}");
        assert!(text.contains("detail MAR=answered EGY=refused\n"), "control characters become spaces: {text}");
        let egy = text.find("receipt EGY").unwrap();
        assert!(egy < text.find("receipt MAR").unwrap(), "receipts sorted by member");
        let back = Entry::decode(&bytes).unwrap();
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.receipts.len(), 2);
    }

    #[test]
    fn non_canonical_or_malformed_bytes_are_rejected() {
        let good = String::from_utf8(sample().encode()).unwrap();
        for (bad, why) in [
            (good.replacen("kind", "kinds", 1), "expected"),
            (good.replacen("time 1", "time 01", 1), "canonical"),
            (good.replacen("\nrule\n", "\nrule \n", 1), "canonical"),
            (good.trim_end().to_owned(), "newline"),
            (good.replacen("tabadul-exchange/v1", "tabadul-exchange/v2", 1), "first line"),
            (good.replacen("receipt EGY 0", "receipt EGY x", 1), "index"),
            (format!("{good}extra\n"), "unexpected"),
        ] {
            let e = Entry::decode(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn check_accepts_exactly_what_decode_accepts() {
        let mut samples = vec![sample().encode(), Entry { time_ms: -5, ..sample() }.encode(), Entry::default().encode()];
        samples.push(Entry { time_ms: 0, detail: "x".into(), ..Entry::default() }.encode());
        for bytes in samples {
            assert!(check(&bytes).is_ok() && Entry::decode(&bytes).is_ok());
            for i in 0..bytes.len() {
                for delta in [0x01u8, 0x20, 0x0b, 0x80] {
                    let mut m = bytes.clone();
                    m[i] ^= delta;
                    assert_eq!(check(&m).is_ok(), Entry::decode(&m).is_ok(), "byte {i} ^ {delta:#x}: {:?}", String::from_utf8_lossy(&m));
                }
                let mut shorter = bytes.clone();
                shorter.remove(i);
                assert_eq!(check(&shorter).is_ok(), Entry::decode(&shorter).is_ok(), "without byte {i}");
                let mut longer = bytes.clone();
                longer.insert(i, b' ');
                assert_eq!(check(&longer).is_ok(), Entry::decode(&longer).is_ok(), "space at {i}");
                let mut zero = bytes.clone();
                zero.insert(i, b'0');
                assert_eq!(check(&zero).is_ok(), Entry::decode(&zero).is_ok(), "zero at {i}: {:?}", String::from_utf8_lossy(&zero));
            }
        }
    }

    #[test]
    fn find_byte_agrees_with_a_plain_scan() {
        let hay: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        for needle in [0u8, b'\n', b' ', 0x80, 0xff, 36] {
            for start in 0..hay.len() {
                let h = &hay[start..];
                assert_eq!(find_byte(h, needle), h.iter().position(|&b| b == needle), "needle {needle} from {start}");
            }
        }
        assert_eq!(find_byte(b"", b'x'), None);
        assert_eq!(find_byte(b"\x01\x00\n", b'\n'), Some(2));
    }

    #[test]
    fn the_released_digest_depends_on_salt_and_content() {
        let a = released_digest(&[1; 16], b"cells");
        assert_eq!(a, released_digest(&[1; 16], b"cells"));
        assert_ne!(a, released_digest(&[2; 16], b"cells"));
        assert_ne!(a, released_digest(&[1; 16], b"cellz"));
    }
}
