//! The layers of `host/src` (lib.rs's `# Layout`), held against the code: a module imports only
//! from its own layer and the layers below, no two modules import each other in a circle, and
//! the layout lib.rs describes is this one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module of `host/src` with its layer, written once: 1 ground, 2 engine, 3 core,
/// 4 settings, 5 adapters (`main` and `cli` are the binary).
const LAYERS: &[(&str, u8)] = &[
    ("error", 1),
    ("pattern", 1),
    ("message", 1),
    ("metrics", 1),
    ("shutdown", 1),
    ("runtime", 2),
    ("plugins", 3),
    ("remote", 3),
    ("registry", 3),
    ("router", 3),
    ("ingress", 3),
    ("events", 3),
    ("builtins", 3),
    ("config", 4),
    ("gateway", 5),
    ("transport", 5),
    ("discovery", 5),
    ("data", 5),
    ("reload", 5),
    ("authoring", 5),
    ("cli", 5),
    ("main", 5),
];

/// The names lib.rs gives the layers in its `# Layout` list.
const LAYER_NAMES: [&str; 5] = ["ground", "engine", "core", "settings", "adapters"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("host/src is readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to: its first component under `src` (`gateway/table.rs` →
/// `gateway`, `main.rs` → `main`); `None` for lib.rs, which assembles everything.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).expect("under src");
    let first = relative.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_owned();
    (name != "lib").then_some(name)
}

/// The code of a Rust file without comments, strings and char literals, so only real paths
/// are left.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1).copied()) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            ('"', _) => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            ('\'', Some('\\')) => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            ('\'', Some(_)) if chars.get(i + 2) == Some(&'\'') => i += 3,
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The top-level modules a file's code names: `crate::x` (and `wasmeca::x` in the binary),
/// including grouped imports `use crate::{x, y::z}`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for root in ["crate::", "wasmeca::"] {
        let mut rest = code;
        while let Some(at) = rest.find(root) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + root.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// Module → the modules it imports (itself excluded), from every file of `host/src`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in all {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("readable");
        let names = imports(&code_only(&text));
        let entry = graph.entry(module.clone()).or_default();
        for name in names {
            // Only the crate's own modules: `crate::Config` (a re-export) is not a module.
            if name != module && layers.contains_key(name.as_str()) {
                entry.insert(name);
            }
        }
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    let layers: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let found: BTreeSet<String> = graph().into_keys().collect();
    let missing: Vec<&String> = found
        .iter()
        .filter(|m| !layers.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "modules with no layer in tests/architecture.rs: {missing:?}"
    );
}

#[test]
fn modules_import_only_from_their_layer_and_below() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut upward = Vec::new();
    for (module, imported) in graph() {
        let own = layers[module.as_str()];
        for name in imported {
            let theirs = layers[name.as_str()];
            if theirs > own {
                upward.push(format!(
                    "{module} ({}) imports {name} ({})",
                    LAYER_NAMES[usize::from(own) - 1],
                    LAYER_NAMES[usize::from(theirs) - 1]
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a higher layer: {upward:#?}"
    );
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let graph = graph();
    // Depth-first search for a back edge; the path to it is the circle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(circle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("modules import each other: {}", circle.join(" → "));
        }
    }
}

#[test]
fn lib_rs_describes_these_layers() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let mut described: BTreeMap<String, u8> = BTreeMap::new();
    let mut layer = None;
    for line in lib.lines().map(|l| l.trim_start_matches("//!").trim()) {
        if let Some((number, rest)) = line.split_once(". ")
            && let Ok(n) = number.parse::<u8>()
            && LAYER_NAMES.iter().any(|name| rest.starts_with(name))
        {
            layer = Some(n);
        } else if line.starts_with('#') || line.is_empty() {
            layer = None;
        }
        let Some(n) = layer else { continue };
        let mut rest = line;
        while let Some(at) = rest.find("[`") {
            rest = &rest[at + 2..];
            let end = rest.find('`').unwrap_or(0);
            described.insert(rest[..end].to_owned(), n);
        }
    }
    let expected: BTreeMap<String, u8> = LAYERS
        .iter()
        .filter(|(m, _)| !matches!(*m, "main" | "cli"))
        .map(|(m, l)| ((*m).to_owned(), *l))
        .collect();
    assert_eq!(described, expected, "lib.rs's # Layout and LAYERS disagree");
}

#[test]
fn the_import_scanner_sees_real_paths_only() {
    let code = code_only(
        "use crate::{router::Router, pattern};\n// crate::gateway\nlet s = \"crate::config\";\nlet c = '\"'; crate::message::new_id(); not_crate::x; /* crate::reload */",
    );
    let found: Vec<String> = imports(&code).into_iter().collect();
    assert_eq!(found, ["message", "pattern", "router"]);
}
