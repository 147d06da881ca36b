//! The shape of the code, read from its sources: imports only go down.
//!
//! Surfaces (`api`, `web`, `phone`, `cli`, `app`, `bench`, `respond`, `listen`) call services; services
//! (`sync`, `forms`, `indicators`, `accounts`, `units`, `report`, `query`, `xlsform`, `backup`,
//! `auth`, `metrics`, `limits`, `export`, `attachments`, `objects`, `openrosa`) know no HTTP and no surface; the store knows only its
//! configuration; the API and the office pages never import each other; no module imports one
//! that imports it back, in the server or in `sync-protocol`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SURFACES: &[&str] = &[
    "api", "web", "phone", "cli", "app", "bench", "respond", "listen",
];
const SERVICES: &[&str] = &[
    "attachments",
    "objects",
    "openrosa",
    "sync",
    "forms",
    "indicators",
    "accounts",
    "units",
    "report",
    "query",
    "xlsform",
    "backup",
    "auth",
    "metrics",
    "limits",
    "export",
];

/// Module → the modules of the same crate it imports, by top-level name.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code a module runs: comments and its unit tests left out.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names that follow `crate::` in `text`, also inside `use crate::{a, b::c}`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let before = rest[..i].chars().last();
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` or `sync_protocol_crate::`, not this crate
        }
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn graph(src: &Path) -> (Graph, BTreeMap<String, String>) {
    let mut files = Vec::new();
    sources(src, &mut files);
    // A file's top-level module: `api` for `api/sync.rs`, `sync` for `sync.rs`.
    let top_of = |f: &PathBuf| {
        let first = f.strip_prefix(src).unwrap().components().next().unwrap();
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned()
    };
    let modules: BTreeSet<String> = files.iter().map(top_of).collect();
    let mut graph = Graph::new();
    let mut text_of: BTreeMap<String, String> = BTreeMap::new();
    for f in &files {
        let top = top_of(f);
        if top == "lib" || top == "main" {
            continue;
        }
        let text = code(&std::fs::read_to_string(f).unwrap());
        let refs = crate_refs(&text)
            .into_iter()
            .filter(|r| *r != top && modules.contains(r))
            .collect::<BTreeSet<_>>();
        graph.entry(top.clone()).or_default().extend(refs);
        text_of.entry(top).or_default().push_str(&text);
    }
    (graph, text_of)
}

/// A cycle in `graph`, as the modules along it, or `None`.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut found = path[i..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Every import that breaks the server's layering, as "from → to: why".
fn broken_layers(graph: &Graph, text_of: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in graph {
        for to in tos {
            let why = if SERVICES.contains(&from.as_str()) && SURFACES.contains(&to.as_str()) {
                Some("a service imports a surface")
            } else if SERVICES.contains(&from.as_str()) && to == "state" {
                Some("a service imports the surfaces' shared state")
            } else if from == "store" && to != "config" {
                Some("the store imports something other than its configuration")
            } else if (from == "api" && to == "web") || (from == "web" && to == "api") {
                Some("the API and the office pages import each other")
            } else {
                None
            };
            if let Some(why) = why {
                out.push(format!("{from} → {to}: {why}"));
            }
        }
    }
    for service in SERVICES {
        if text_of.get(*service).is_some_and(|t| t.contains("axum")) {
            out.push(format!("{service} uses axum: services know no HTTP"));
        }
    }
    out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn server_imports_only_go_down() {
    let (graph, text_of) = graph(&root().join("server/src"));
    assert!(
        graph.contains_key("api") && graph.contains_key("store"),
        "{graph:?}"
    );
    let broken = broken_layers(&graph, &text_of);
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
    assert_eq!(cycle(&graph), None, "modules that import each other");
}

#[test]
fn sync_protocol_has_no_import_cycle() {
    let (graph, _) = graph(&root().join("sync-protocol/src"));
    assert!(graph.contains_key("record") && graph.contains_key("wire"));
    assert_eq!(cycle(&graph), None, "modules that import each other");
}

#[test]
fn the_checks_catch_what_they_forbid() {
    let edges = |list: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in list {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    let g = edges(&[("record", "wire"), ("wire", "edit"), ("edit", "record")]);
    assert_eq!(
        cycle(&g),
        Some(vec![
            "edit".into(),
            "record".into(),
            "wire".into(),
            "edit".into()
        ])
    );
    assert_eq!(cycle(&edges(&[("a", "b"), ("b", "c")])), None);
    let none = BTreeMap::new();
    for bad in [
        ("web", "api"),
        ("api", "web"),
        ("sync", "web"),
        ("store", "indicators"),
    ] {
        assert_eq!(broken_layers(&edges(&[bad]), &none).len(), 1, "{bad:?}");
    }
    assert!(broken_layers(&edges(&[("web", "query"), ("store", "config")]), &none).is_empty());
    let axum = BTreeMap::from([("sync".to_owned(), "use axum::Json;".to_owned())]);
    assert_eq!(broken_layers(&Graph::new(), &axum).len(), 1);
    assert_eq!(
        crate_refs("use crate::{a, b::c};\nx = crate::d::e; $crate::f"),
        ["a", "b", "d"].iter().map(|s| s.to_string()).collect()
    );
}
