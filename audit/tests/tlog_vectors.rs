//! The transparency-dev/merkle proof vectors in `../shared/testdata/tlog/`
//! (provided beside the repository, for development and CI): every file
//! must be accepted or rejected exactly as its `wantErr` says. Where that
//! folder is absent these tests fail, saying so: a test that checks nothing
//! must not pass.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tabadul_audit::merkle::{verify_consistency, verify_inclusion};

fn vectors(kind: &str) -> Vec<PathBuf> {
    // Tests run in the package directory: audit/ -> repository -> shared/.
    let dir = Path::new("../../shared/testdata/tlog").join(kind);
    assert!(dir.is_dir(), "{} is absent: the transparency-dev vectors live in ../shared beside the repository", dir.display());
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn bytes(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap_or("")).unwrap()
}

fn list(v: &Value) -> Vec<Vec<u8>> {
    v.as_array().map(|a| a.iter().map(bytes).collect()).unwrap_or_default()
}

/// Runs `verify` on every vector of `kind`; each must fail exactly when it says.
fn check_all<E: std::fmt::Debug>(kind: &str, verify: impl Fn(&Value) -> Result<(), E>) {
    let files = vectors(kind);
    assert!(files.len() > 50, "only {} {kind} vectors found", files.len());
    for file in files {
        let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let result = verify(&v);
        let want_err = v["wantErr"].as_bool().unwrap();
        assert_eq!(result.is_err(), want_err, "{}: {result:?}", file.display());
    }
}

#[test]
fn inclusion_vectors() {
    check_all("inclusion", |v| {
        verify_inclusion(v["leafIdx"].as_u64().unwrap(), v["treeSize"].as_u64().unwrap(), &bytes(&v["leafHash"]), &list(&v["proof"]), &bytes(&v["root"]))
    });
}

#[test]
fn consistency_vectors() {
    check_all("consistency", |v| {
        verify_consistency(v["size1"].as_u64().unwrap(), v["size2"].as_u64().unwrap(), &bytes(&v["root1"]), &bytes(&v["root2"]), &list(&v["proof"]))
    });
}
