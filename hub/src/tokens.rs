//! Operator tokens for the HTTP front door: issued and revoked by the hub's
//! administrator (`tabadul-hub token`), stored hashed, checked by the
//! running hub, which re-reads the file whenever it changes.
//!
//! A token is `tabadul-<id>-<secret>`: the id finds the record, the
//! SHA-256 of the whole token must match the stored hash (compared in
//! constant time). The secret has 256 bits from the OS CSPRNG, so a fast
//! hash is enough: there is nothing to brute-force. The file holds no
//! secret and is written atomically with mode 0600.
//!
//! Every token expires: `--expires-in` at issue, [`DEFAULT_LIFETIME`]
//! otherwise, at most [`MAX_LIFETIME`]. An operator may hold two live
//! tokens at once, so a token is rotated without downtime: issue the new
//! one, switch the clients over, revoke the old one by its id.
//!
//! Records written before tokens expired have no `expires`. They keep
//! working (a hub upgrade must not lock every operator out at once, and an
//! expiry counted from when the hub loads the file would restart with every
//! restart, so would never come), are shown as `legacy, never expires` by
//! `token list`, and `doctor` flags them until they are rotated.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::Error;

/// One issued token, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    /// The operator it authenticates, as the hub's log names them.
    pub name: String,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339, once revoked.
    #[serde(default)]
    pub revoked: Option<String>,
    /// RFC 3339: when it stops working. `None` only in records made before
    /// tokens expired (legacy; see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A token's lifetime when `--expires-in` is not given.
pub const DEFAULT_LIFETIME: time::Duration = time::Duration::days(90);
/// The longest lifetime a token may be issued with.
pub const MAX_LIFETIME: time::Duration = time::Duration::days(400);
/// Live tokens one operator may hold at once: two, for rotation.
pub const MAX_LIVE_PER_OPERATOR: usize = 2;

impl TokenRecord {
    /// When it expires, if it does and the stored time reads.
    pub fn expires_at(&self) -> Option<time::OffsetDateTime> {
        self.expires.as_deref().and_then(|e| time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok())
    }

    /// Neither revoked nor expired at `now`.
    pub fn live_at(&self, now: time::OffsetDateTime) -> bool {
        self.revoked.is_none() && self.expires_at().is_none_or(|e| now < e)
    }

    /// A record made before tokens expired.
    pub fn is_legacy(&self) -> bool {
        self.expires.is_none()
    }

    /// `live`, `revoked <time>` or `expired <time>`, with the expiry.
    pub fn describe(&self, now: time::OffsetDateTime) -> String {
        let expiry = match &self.expires {
            None => "legacy, never expires: rotate it".to_owned(),
            Some(e) => format!("expires {e}"),
        };
        match (&self.revoked, self.live_at(now)) {
            (Some(r), _) => format!("revoked {r}  ({expiry})"),
            (None, true) => format!("live  {expiry}"),
            (None, false) => format!("expired  ({expiry})"),
        }
    }
}

/// Reads a lifetime such as `90d`, `12h` or `30m` (days, hours, minutes).
pub fn parse_lifetime(text: &str) -> Result<time::Duration, Error> {
    let bad = |why: &str| bad(Path::new("--expires-in"), format!("{text:?}: {why}"));
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = digits.parse().map_err(|_| bad("a whole number then d, h or m, such as 90d or 12h"))?;
    let lifetime = match unit {
        "d" => time::Duration::days(n),
        "h" => time::Duration::hours(n),
        "m" => time::Duration::minutes(n),
        _ => return Err(bad("the unit is d (days), h (hours) or m (minutes)")),
    };
    if lifetime <= time::Duration::ZERO {
        return Err(bad("a token must live for some time"));
    }
    if lifetime > MAX_LIFETIME {
        return Err(bad(&format!("at most {} days", MAX_LIFETIME.whole_days())));
    }
    Ok(lifetime)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Config { path: path.to_owned(), reason: reason.into() }
}

fn read(path: &Path) -> Result<Vec<TokenRecord>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let file: TokenFile = serde_json::from_str(&text).map_err(|e| bad(path, format!("not a token file: {e}")))?;
            Ok(file.tokens)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::Io { path: path.to_owned(), source }),
    }
}

fn write(path: &Path, tokens: Vec<TokenRecord>) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(&TokenFile { tokens }).map_err(|e| bad(path, e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn now() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// Issues a token for `name` that lives `lifetime` ([`DEFAULT_LIFETIME`]
/// if `None`); returns the token (shown once, never stored) and its record.
pub fn issue(path: &Path, name: &str, lifetime: Option<time::Duration>) -> Result<(String, TokenRecord), Error> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
        return Err(bad(Path::new("--name"), format!("{name:?}: 1 to 64 letters, digits, '-', '_', '.' or '@'")));
    }
    let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
    if lifetime <= time::Duration::ZERO || lifetime > MAX_LIFETIME {
        return Err(bad(Path::new("--expires-in"), format!("a lifetime between 1 minute and {} days", MAX_LIFETIME.whole_days())));
    }
    let mut tokens = read(path)?;
    let issued_at = time::OffsetDateTime::now_utc();
    let live = tokens.iter().filter(|t| t.name == name && t.live_at(issued_at)).count();
    if live >= MAX_LIVE_PER_OPERATOR {
        return Err(bad(
            path,
            format!("{name} already has {live} live tokens (two at most, for rotation); revoke the old one first (tabadul-hub token revoke --name <id>)"),
        ));
    }
    let rng = ring::rand::SystemRandom::new();
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    rng.fill(&mut id).and_then(|()| rng.fill(&mut secret)).map_err(|_| bad(path, "the OS random generator failed"))?;
    let id = hex::encode(id);
    let token = format!("tabadul-{id}-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let record = TokenRecord {
        id,
        name: name.to_owned(),
        sha256: sha256_hex(&token),
        created: rfc3339(issued_at),
        revoked: None,
        expires: Some(rfc3339(issued_at + lifetime)),
    };
    tokens.push(record.clone());
    write(path, tokens)?;
    Ok((token, record))
}

/// Revokes the live tokens of an operator name or the token with that id;
/// returns how many were revoked.
pub fn revoke(path: &Path, name_or_id: &str) -> Result<usize, Error> {
    let mut tokens = read(path)?;
    let mut n = 0;
    for t in tokens.iter_mut().filter(|t| t.revoked.is_none() && (t.name == name_or_id || t.id == name_or_id)) {
        t.revoked = Some(now());
        n += 1;
    }
    if n == 0 {
        return Err(bad(path, format!("no live token is named or has the id {name_or_id:?}")));
    }
    write(path, tokens)?;
    Ok(n)
}

pub fn list(path: &Path) -> Result<Vec<TokenRecord>, Error> {
    read(path)
}

/// Why a presented token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    Unknown,
    Revoked(String),
    Expired(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Malformed => f.write_str("the bearer token is not a Tabadul operator token (tabadul-<id>-<secret>)"),
            Rejected::Unknown => f.write_str("the bearer token is not one this hub issued"),
            Rejected::Revoked(at) => write!(f, "the bearer token was revoked at {at}"),
            Rejected::Expired(at) => write!(f, "the bearer token expired at {at}; ask the hub's administrator for a new one"),
        }
    }
}

/// When and how long the token file was when last read.
type Stamp = Option<(SystemTime, u64)>;

/// The running hub's view of the token file.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    loaded: Mutex<(Stamp, Vec<TokenRecord>)>,
}

impl Tokens {
    pub fn new(path: PathBuf) -> Self {
        Tokens { path, loaded: Mutex::new((None, Vec::new())) }
    }

    /// Re-reads the file if it changed since the last look. Returns the
    /// new records when it did, so the caller can log the change.
    pub fn refresh(&self) -> Result<Option<Vec<TokenRecord>>, Error> {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 == stamp && stamp.is_some() {
            return Ok(None);
        }
        let records = read(&self.path)?;
        let changed = loaded.1 != records;
        *loaded = (stamp, records.clone());
        Ok(changed.then_some(records))
    }

    /// The operator name a token authenticates.
    pub fn check(&self, token: &str) -> Result<String, Rejected> {
        let id = token.strip_prefix("tabadul-").and_then(|rest| rest.split_once('-')).map(|(id, _)| id).ok_or(Rejected::Malformed)?;
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let record = loaded.1.iter().find(|t| t.id == id).ok_or(Rejected::Unknown)?;
        // Comparing digests, not secrets: timing can at most reveal how much
        // of a SHA-256 output an attacker's guess matches, which does not
        // help find a preimage.
        if sha256_hex(token) != record.sha256 {
            return Err(Rejected::Unknown);
        }
        if let Some(at) = &record.revoked {
            return Err(Rejected::Revoked(at.clone()));
        }
        match record.expires_at() {
            Some(at) if time::OffsetDateTime::now_utc() >= at => Err(Rejected::Expired(rfc3339(at))),
            // An `expires` that does not read is no licence to live for
            // ever: the file is the administrator's, but fail closed.
            None if record.expires.is_some() => Err(Rejected::Expired(record.expires.clone().unwrap_or_default())),
            _ => Ok(record.name.clone()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn issue_check_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let (token, record) = issue(&path, "alice", None).unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&token), "the token itself is never stored");
        let tokens = Tokens::new(path.clone());
        assert!(tokens.refresh().unwrap().is_some());
        assert_eq!(tokens.check(&token).unwrap(), "alice");
        // One character changed in the secret.
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(tokens.check(&forged), Err(Rejected::Unknown));
        assert_eq!(tokens.check("Bearer nonsense"), Err(Rejected::Malformed));
        // Rotation: a second live token, not a third.
        let (second, _) = issue(&path, "alice", Some(time::Duration::hours(1))).unwrap();
        assert!(issue(&path, "alice", None).is_err(), "two live tokens per operator at most");
        std::thread::sleep(std::time::Duration::from_millis(10));
        tokens.refresh().unwrap();
        assert_eq!(tokens.check(&second).unwrap(), "alice", "both work during the rotation");
        assert_eq!(tokens.check(&token).unwrap(), "alice");
        assert_eq!(revoke(&path, &record.id).unwrap(), 1);
        // The file changed: the running hub sees it on its next look.
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert!(tokens.refresh().unwrap().is_some());
        assert!(matches!(tokens.check(&token), Err(Rejected::Revoked(_))));
        assert_eq!(revoke(&path, "alice").unwrap(), 1, "the second one");
        assert!(revoke(&path, "alice").is_err(), "nothing left to revoke");
        assert!(issue(&path, "bad name", None).is_err());
    }

    #[test]
    fn tokens_expire_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let (token, record) = issue(&path, "bob", Some(time::Duration::hours(12))).unwrap();
        let expires = record.expires_at().unwrap();
        let left = expires - time::OffsetDateTime::now_utc();
        assert!(left > time::Duration::hours(11) && left <= time::Duration::hours(12), "{left}");
        // Move its expiry into the past, as time would.
        let mut file: TokenFile = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        file.tokens[0].expires = Some(rfc3339(time::OffsetDateTime::now_utc() - time::Duration::seconds(1)));
        write(&path, file.tokens).unwrap();
        let tokens = Tokens::new(path.clone());
        tokens.refresh().unwrap();
        let e = tokens.check(&token).unwrap_err();
        assert!(matches!(e, Rejected::Expired(_)), "{e:?}");
        assert!(e.to_string().contains("expired at"), "{e}");
        assert_eq!(tokens.check("tabadul-00000000-xyz"), Err(Rejected::Unknown), "unknown stays unknown");
        // An expired token is not live: a new one may be issued.
        issue(&path, "bob", None).unwrap();
        issue(&path, "bob", None).unwrap();
    }

    #[test]
    fn legacy_records_without_expiry_still_load_and_are_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let (token, _) = issue(&path, "carol", None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["tokens"][0].as_object_mut().unwrap().remove("expires");
        std::fs::write(&path, v.to_string()).unwrap();
        let tokens = Tokens::new(path.clone());
        tokens.refresh().unwrap();
        assert_eq!(tokens.check(&token).unwrap(), "carol");
        let listed = list(&path).unwrap();
        assert!(listed[0].is_legacy());
        assert!(listed[0].describe(time::OffsetDateTime::now_utc()).contains("legacy"));
    }

    #[test]
    fn lifetimes_parse_precisely() {
        assert_eq!(parse_lifetime("90d").unwrap(), time::Duration::days(90));
        assert_eq!(parse_lifetime("12h").unwrap(), time::Duration::hours(12));
        assert_eq!(parse_lifetime("30m").unwrap(), time::Duration::minutes(30));
        for bad in ["", "d", "0d", "12", "12w", "-1d", "401d", "1.5d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?} accepted");
        }
    }
}
