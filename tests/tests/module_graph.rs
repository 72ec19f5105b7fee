//! The modules of each library crate form a DAG: no two files depend on
//! each other, directly or round a longer circle (ARCHITECTURE.md). Read
//! from the sources: every `crate::` and `super::` path a file names is an
//! edge to the module that path lies in. A module and its own ancestors or
//! descendants may refer to each other (a parent re-exports, a child uses
//! its parent's types); siblings and cousins may not, both ways.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every library source file of a crate, by module path (the crate root is
/// `[]`; binaries, which are crates of their own, are left out).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(src).unwrap().to_owned();
            if path.is_dir() {
                if rel != Path::new("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || rel == Path::new("main.rs") {
                continue;
            }
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let last = parts.pop().unwrap();
            let stem = last.trim_end_matches(".rs");
            if !(stem == "mod" || (parts.is_empty() && stem == "lib")) {
                parts.push(stem.to_owned());
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The module paths a file's text names, absolute (`crate::a::b`,
/// `super::c`, and each item of `crate::{a, b::c}`).
fn references(text: &str, here: &Module) -> Vec<Module> {
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut out = Vec::new();
    for (start, root) in code.match_indices("crate::").map(|(i, _)| (i + 7, Vec::new())).chain(code.match_indices("super::").map(|(i, _)| {
        // `super::super::x` is counted once, from its first `super`.
        let mut parent = here.clone();
        parent.pop();
        (i + 7, parent)
    })) {
        // Skip the inner `super::` of `super::super::`, and `crate::` inside identifiers.
        if code[..start - 7].ends_with("super::") || code[..start - 7].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut base = root;
        let mut rest = &code[start..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for item in inner.split(',') {
                out.push(base.iter().cloned().chain(path_of(item.trim())).collect());
            }
        } else {
            out.push(base.into_iter().chain(path_of(rest)).collect());
        }
    }
    out
}

/// The leading `a::b::c` of some text.
fn path_of(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// Edges between modules that are neither ancestor nor descendant.
fn graph(files: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let nested = |a: &Module, b: &Module| a.starts_with(b) || b.starts_with(a);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (here, text) in files {
        for path in references(text, here) {
            // The longest prefix of the path that is a file of this crate.
            let Some(target) = (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| files.contains_key(m)) else { continue };
            if !nested(here, &target) {
                edges.entry(here.clone()).or_default().insert(target);
            }
        }
    }
    edges
}

/// Every strongly connected component of more than one module.
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    let nodes: BTreeSet<&Module> = edges.keys().chain(edges.values().flatten()).collect();
    let reach = |from: &Module| -> BTreeSet<Module> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Module, BTreeSet<Module>> = nodes.iter().map(|m| (*m, reach(m))).collect();
    let mut out: Vec<Vec<Module>> = Vec::new();
    for m in &nodes {
        let component: Vec<Module> = nodes.iter().filter(|o| reachable[*m].contains(**o) && reachable[**o].contains(*m)).map(|o| (*o).clone()).collect();
        if component.len() > 1 && !out.contains(&component) {
            out.push(component);
        }
    }
    out
}

#[test]
fn no_two_modules_of_a_crate_depend_on_each_other() {
    let root = tabadul_tests::repo_root();
    let mut found = Vec::new();
    let mut checked = 0;
    for krate in ["audit", "certs", "directory", "formats", "hub", "node", "policy", "proto", "telemetry", "tests"] {
        let src = root.join(krate).join("src");
        let files: BTreeMap<Module, String> = modules(&src).into_iter().map(|(m, p)| (m, std::fs::read_to_string(p).unwrap())).collect();
        checked += files.len();
        for circle in circles(&graph(&files)) {
            found.push(format!("{krate}: {}", circle.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(" ↔ ")));
        }
    }
    assert!(checked > 60, "only {checked} files read: is the tree where the test thinks?");
    assert!(found.is_empty(), "modules that depend on each other (give what they share a module of its own):\n{}", found.join("\n"));
}

/// The check finds a circle, through `crate::`, a `{…}` group and `super::`.
#[test]
fn the_check_finds_a_planted_circle() {
    let m = |s: &str| -> Module { if s.is_empty() { Vec::new() } else { s.split("::").map(String::from).collect() } };
    let files: BTreeMap<Module, String> = [
        (m(""), "mod a; mod b; pub use crate::a::A;".to_owned()),
        (m("a"), "use crate::{b::B, Error};\npub struct A;".to_owned()),
        (m("b"), "pub struct B(super::c::C);".to_owned()),
        (m("c"), "// crate::a::A is only a comment\npub struct C(crate::a::A);".to_owned()),
        (m("d"), "use crate::a::A; // a leaf: no circle".to_owned()),
    ]
    .into_iter()
    .collect();
    let found = circles(&graph(&files));
    assert_eq!(found, vec![vec![m("a"), m("b"), m("c")]]);
    // Without the last link, no circle.
    let mut fixed = files.clone();
    fixed.insert(m("c"), "pub struct C;".into());
    assert!(circles(&graph(&fixed)).is_empty());
}
