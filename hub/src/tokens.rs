//! Operator tokens for the HTTP front door: issued and revoked by the hub's
//! administrator (`tabadul-hub token`), stored hashed, checked by the
//! running hub, which re-reads the file whenever it changes.
//!
//! A token is `tabadul-<id>-<secret>`: the id finds the record, the
//! SHA-256 of the whole token must match the stored hash (compared in
//! constant time). The secret has 256 bits from the OS CSPRNG, so a fast
//! hash is enough: there is nothing to brute-force. The file holds no
//! secret and is written atomically with mode 0600.

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

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Issues a token for `name`; returns the token (shown once, never stored)
/// and its record.
pub fn issue(path: &Path, name: &str) -> Result<(String, TokenRecord), Error> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
        return Err(bad(Path::new("--name"), format!("{name:?}: 1 to 64 letters, digits, '-', '_', '.' or '@'")));
    }
    let mut tokens = read(path)?;
    if tokens.iter().any(|t| t.name == name && t.revoked.is_none()) {
        return Err(bad(path, format!("{name} already has a live token; revoke it first (tabadul-hub token revoke --name {name})")));
    }
    let rng = ring::rand::SystemRandom::new();
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    rng.fill(&mut id).and_then(|()| rng.fill(&mut secret)).map_err(|_| bad(path, "the OS random generator failed"))?;
    let id = hex::encode(id);
    let token = format!("tabadul-{id}-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let record = TokenRecord { id, name: name.to_owned(), sha256: sha256_hex(&token), created: now(), revoked: None };
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
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Malformed => f.write_str("the bearer token is not a Tabadul operator token (tabadul-<id>-<secret>)"),
            Rejected::Unknown => f.write_str("the bearer token is not one this hub issued"),
            Rejected::Revoked(at) => write!(f, "the bearer token was revoked at {at}"),
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
        match &record.revoked {
            Some(at) => Err(Rejected::Revoked(at.clone())),
            None => Ok(record.name.clone()),
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
        let (token, record) = issue(&path, "alice").unwrap();
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
        assert!(issue(&path, "alice").is_err(), "one live token per operator");
        assert_eq!(revoke(&path, &record.id).unwrap(), 1);
        // The file changed: the running hub sees it on its next look.
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert!(tokens.refresh().unwrap().is_some());
        assert!(matches!(tokens.check(&token), Err(Rejected::Revoked(_))));
        assert!(revoke(&path, "alice").is_err(), "nothing left to revoke");
        assert!(issue(&path, "bad name").is_err());
    }
}
