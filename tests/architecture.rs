//! `host/src` held to lib.rs's `# Layout`: imports go down the layers only, and no circles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module of `host/src` with its layer, written once: 1 ground, 2 engine, 3 core,
/// 4 settings, 5 adapters (`main` and `cli` are the binary), 6 the crate root (`lib`, lib.rs:
/// it declares every module, so it may name any of them, and no module may import from it).
const LAYERS: &[(&str, u8)] = &[
    ("error", 1),
    ("principal", 1),
    ("pattern", 1),
    ("message", 1),
    ("metrics", 1),
    ("shutdown", 1),
    ("telemetry", 1),
    ("tls", 1),
    ("runtime", 2),
    ("plugins", 3),
    ("remote", 3),
    ("registry", 3),
    ("router", 3),
    ("ingress", 3),
    ("events", 3),
    ("builtins", 3),
    ("readiness", 3),
    ("config", 4),
    ("server", 5),
    ("gateway", 5),
    ("transport", 5),
    ("discovery", 5),
    ("data", 5),
    ("reload", 5),
    ("authoring", 5),
    ("host", 5),
    ("cli", 5),
    ("main", 5),
    ("lib", 6),
];

/// The names of the layers; lib.rs's `# Layout` list names the first five.
const LAYER_NAMES: [&str; 6] = [
    "ground",
    "engine",
    "core",
    "settings",
    "adapters",
    "crate root",
];

/// How many `use` re-exports the resolver follows for one path before it gives up (a guard
/// against a name that re-exports itself).
const MAX_HOPS: usize = 16;

/// The keywords that define an item under the name that follows them.
const ITEM_KEYWORDS: [&str; 8] = [
    "fn", "struct", "enum", "trait", "type", "const", "static", "union",
];

/// A module's path: its crate's root (`lib` for lib.rs, `main` for the binary's main.rs), then
/// the modules down from it (`transport/amqp/mod.rs` is `["lib", "transport", "amqp"]`).
type ModPath = Vec<String>;

/// A token of code (an identifier, `::`, or one other character) and the line it is on.
struct Token {
    /// The token.
    text: String,
    /// Its line, from 1.
    line: usize,
}

/// One path as a file writes it, before it is resolved: a leaf of a `use` tree
/// (`use crate::{a::{B, c::D}}` has two) or a path in the code (`crate::message::new_id`).
struct Written {
    /// The module it is written in (an inline `mod tests { … }` included).
    module: ModPath,
    /// Its segments, groups flattened: `["crate", "a", "c", "D"]`.
    path: Vec<String>,
    /// The name `as` gives it.
    alias: Option<String>,
    /// The line of its last segment.
    line: usize,
    /// Whether a `use` declaration brings it into scope (and so may re-export it).
    in_use: bool,
    /// Whether the code calls it (`wasmeca::router(…)`: a function, even where a module has
    /// the same name).
    call: bool,
}

/// What one file's code declares and names, read without resolving anything.
#[derive(Default)]
struct Scan {
    /// Every path it writes.
    written: Vec<Written>,
    /// The `mod x { … }` blocks in it.
    inline_modules: Vec<ModPath>,
    /// The names of its `mod x;` declarations (files of their own).
    declared: Vec<String>,
    /// The items it defines, with the module each is in.
    defined: Vec<(ModPath, String)>,
}

/// Where a path leads: it ends on a module, or names an item of one.
enum Target {
    /// The path names this module itself.
    Module(ModPath),
    /// The path names an item defined in (or brought from another crate by) this module.
    Item(ModPath),
}

/// One path of a file, resolved to the file that defines what it names.
struct Import {
    /// The file that writes it, under `src`.
    file: String,
    /// Its line there.
    line: usize,
    /// The path, groups flattened (`crate::a::c::D`; `crate::{a::{self}}` is `crate::a`).
    text: String,
    /// The module of the file that writes it.
    from: ModPath,
    /// The module of the file it leads to.
    to: ModPath,
    /// That file, under `src`.
    to_file: String,
}

/// The sources of `host/src` as the resolver sees them: files, modules, and what each module
/// brings into scope with `use`.
#[derive(Default)]
struct Sources {
    /// The module of each file → the file, under `src`.
    files: BTreeMap<ModPath, String>,
    /// Every module, inline ones included.
    modules: BTreeSet<ModPath>,
    /// Module → the names its `use` declarations bring in (`*` for a glob), with their paths.
    uses: BTreeMap<ModPath, Vec<(String, Vec<String>)>>,
    /// Module → the names of the items it defines.
    defined: BTreeMap<ModPath, BTreeSet<String>>,
    /// Every path written, with its file and the file's module.
    written: Vec<(String, ModPath, Written)>,
}

/// The sources under test: the package's `src` (`host/src`).
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

/// The module a file is (`a/b.rs` and `a/b/mod.rs` are `a::b`), in the binary's crate if
/// main.rs declares its first component (`binary`), else in the library's.
fn file_module(file: &str, binary: &BTreeSet<String>) -> ModPath {
    let mut parts: ModPath = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        return parts;
    }
    let root = if binary.contains(&parts[0]) {
        "main"
    } else {
        "lib"
    };
    std::iter::once(root.to_owned()).chain(parts).collect()
}

/// The code of a Rust file without comments, strings and char literals, so only real paths
/// are left; the line breaks of what it drops are kept, so lines keep their numbers.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        match (chars[i], chars.get(i + 1).copied()) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => i = block_comment_end(&chars, i),
            ('"', _) => i = string_end(&chars, i),
            ('r', _) if let Some(end) = raw_string_end(&chars, i) => i = end,
            ('\'', Some('\\')) => {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            ('\'', Some(_)) if chars.get(i + 2) == Some(&'\'') => i += 3,
            (c, _) => {
                out.push(c);
                i += 1;
                continue;
            }
        }
        if matches!(chars[start], '"' | 'r') {
            out.push_str("\"\"");
        }
        let dropped = &chars[start..i.min(chars.len())];
        out.extend(dropped.iter().filter(|c| **c == '\n'));
    }
    out
}

/// Where the block comment at `i` (`/*`) ends, nested comments included.
fn block_comment_end(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1).copied()) {
            ('/', Some('*')) => {
                depth += 1;
                i += 2;
            }
            ('*', Some('/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    i
}

/// Where the string literal at `i` (`"`) ends, escapes skipped.
fn string_end(chars: &[char], mut i: usize) -> usize {
    i += 1;
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Where the raw string literal at `i` (`r"…"`, `r#"…"#`, after an optional `b`/`c`) ends;
/// `None` if none starts there.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let ident = |c: &char| c.is_alphanumeric() || *c == '_';
    let before = i.checked_sub(1).map(|b| chars[b]);
    let prefixed = matches!(before, Some('b' | 'c'))
        && !i
            .checked_sub(2)
            .map(|b| chars[b])
            .is_some_and(|c| ident(&c));
    if before.is_some_and(|c| ident(&c)) && !prefixed {
        return None;
    }
    let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
    let open = i + 1 + hashes;
    if chars.get(open) != Some(&'"') {
        return None;
    }
    let close: String = std::iter::once('"')
        .chain("#".repeat(hashes).chars())
        .collect();
    let rest: String = chars[open + 1..].iter().collect();
    let end = rest.find(&close).map_or(rest.len(), |at| at + close.len());
    Some(open + 1 + rest[..end].chars().count())
}

/// The tokens of code (from [`code_only`]): identifiers, `::`, and every other character
/// alone, so `crate :: gateway` and `crate::\n gateway` read the same.
fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_alphanumeric() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            i += 1;
            if c == '\n' {
                line += 1;
            }
            if c.is_whitespace() {
                continue;
            }
        }
        let text = chars[start..i].iter().collect();
        out.push(Token { text, line });
    }
    out
}

/// Whether a token is an identifier (a keyword included).
fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The `use` tree (or plain path) starting at token `i`, its leaves appended to `out` as
/// (path, alias, line) after `prefix`; returns the index after it. Groups nest to any depth.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    mut path: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>, usize)>,
) -> usize {
    let text = |i: usize| tokens.get(i).map_or("", |t| t.text.as_str());
    loop {
        match text(i) {
            "{" => {
                i += 1;
                while !matches!(text(i), "}" | "") {
                    let before = i;
                    i = use_tree(tokens, i, path.clone(), out);
                    if text(i) == "," || i == before {
                        i += 1;
                    }
                }
                return i + 1;
            }
            "*" => {
                path.push("*".to_owned());
                out.push((path, None, tokens[i].line));
                return i + 1;
            }
            segment if is_ident(segment) => {
                path.push(segment.to_owned());
                let line = tokens[i].line;
                i += 1;
                let after = text(i + 1);
                if text(i) == "::" && (is_ident(after) || matches!(after, "{" | "*")) {
                    i += 1;
                    continue;
                }
                let alias = (text(i) == "as" && is_ident(text(i + 1))).then(|| {
                    i += 2;
                    text(i - 1).to_owned()
                });
                out.push((path, alias, line));
                return i;
            }
            _ => return i,
        }
    }
}

/// Whether the identifier at token `i`, followed by `::`, begins a path rather than
/// continuing one (`a::b`, `x.b::<T>`) or naming a visibility (`pub(in crate::a)`).
fn starts_a_path(tokens: &[Token], i: usize) -> bool {
    let text = |i: Option<usize>| {
        i.and_then(|i| tokens.get(i))
            .map_or("", |t| t.text.as_str())
    };
    let before = text(i.checked_sub(1));
    let visibility = before == "in" && text(i.checked_sub(2)) == "(";
    !matches!(before, "::" | ".") && !visibility
}

/// Reads a file's code (from [`code_only`]), the file being `module`: every path it writes
/// (`use` trees and paths in code), its modules, and the items it defines.
fn scan(module: &[String], code: &str) -> Scan {
    let tokens = tokens(code);
    let text = |i: usize| tokens.get(i).map_or("", |t| t.text.as_str());
    let mut scan = Scan::default();
    let mut here: ModPath = module.to_vec();
    let mut inline_depths: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let (token, next) = (text(i), text(i + 1));
        let in_use = token == "use";
        match token {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline_depths.last() == Some(&depth) {
                    inline_depths.pop();
                    here.pop();
                }
            }
            "mod" if is_ident(next) && text(i + 2) == "{" => {
                inline_depths.push(depth);
                here.push(next.to_owned());
                scan.inline_modules.push(here.clone());
                i += 2;
                continue;
            }
            "mod" if is_ident(next) && text(i + 2) == ";" && inline_depths.is_empty() => {
                scan.declared.push(next.to_owned());
            }
            keyword if ITEM_KEYWORDS.contains(&keyword) && is_ident(next) => {
                scan.defined.push((here.clone(), next.to_owned()));
            }
            _ if in_use || (is_ident(token) && next == "::" && starts_a_path(&tokens, i)) => {
                i = read_paths(&tokens, i, &here, &mut scan.written);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// The paths written from token `i` on (a `use` declaration's tree, or one path in code),
/// appended to `out` as written in module `here`; returns the index after them.
fn read_paths(tokens: &[Token], i: usize, here: &[String], out: &mut Vec<Written>) -> usize {
    let text = |i: usize| tokens.get(i).map_or("", |t| t.text.as_str());
    let in_use = text(i) == "use";
    let start = match (in_use, text(i + 1)) {
        (false, _) => i,
        (true, "::") => i + 2,
        (true, _) => i + 1,
    };
    let mut leaves = Vec::new();
    let end = use_tree(tokens, start, Vec::new(), &mut leaves).max(i + 1);
    let call = !in_use && text(end) == "(";
    for (path, alias, line) in leaves {
        let module = here.to_vec();
        out.push(Written {
            module,
            path,
            alias,
            line,
            in_use,
            call,
        });
    }
    end
}

/// The name a `use` leaf brings into scope: its alias, else its last segment (`a::{self}` is
/// `a`); `*` for a glob; `None` for `as _`.
fn local_name(written: &Written) -> Option<String> {
    let name = match (&written.alias, written.path.as_slice()) {
        (Some(alias), _) => alias.as_str(),
        (None, [.., before, last]) if last == "self" => before.as_str(),
        (None, [.., last]) => last.as_str(),
        (None, []) => return None,
    };
    (name != "_").then(|| name.to_owned())
}

/// `module::name`.
fn child(module: &[String], name: &str) -> ModPath {
    let mut child = module.to_vec();
    child.push(name.to_owned());
    child
}

impl Sources {
    /// The sources of `host/src`.
    fn read() -> Self {
        let root = src();
        let mut paths = Vec::new();
        files(&root, &mut paths);
        paths.sort();
        let texts: Vec<(String, String)> = paths
            .iter()
            .map(|path| {
                let relative = path.strip_prefix(&root).expect("under src");
                let parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let text = std::fs::read_to_string(path).expect("readable");
                (parts.join("/"), text)
            })
            .collect();
        Self::new(&texts)
    }

    /// The sources made of these files (path under `src`, text).
    fn new(texts: &[(String, String)]) -> Self {
        let main = vec!["main".to_owned()];
        let binary: BTreeSet<String> = texts
            .iter()
            .find(|(file, _)| file == "main.rs")
            .map(|(_, text)| scan(&main, &code_only(text)).declared)
            .into_iter()
            .flatten()
            .collect();
        let mut sources = Self::default();
        for (file, text) in texts {
            let module = file_module(file, &binary);
            let scan = scan(&module, &code_only(text));
            sources.files.insert(module.clone(), file.clone());
            sources.modules.insert(module.clone());
            sources.modules.extend(scan.inline_modules);
            for (owner, name) in scan.defined {
                sources.defined.entry(owner).or_default().insert(name);
            }
            for written in scan.written {
                if written.in_use
                    && let Some(name) = local_name(&written)
                {
                    let entry = sources.uses.entry(written.module.clone()).or_default();
                    entry.push((name, written.path.clone()));
                }
                sources
                    .written
                    .push((file.clone(), module.clone(), written));
            }
        }
        sources
    }

    /// The path `module`'s `use` declarations give `name`, if any.
    fn use_of(&self, module: &[String], name: &str) -> Option<&[String]> {
        let uses = self.uses.get(module)?;
        let (_, path) = uses.iter().find(|(used, _)| used == name)?;
        Some(path)
    }

    /// Where `path`, written in module `from`, leads: `crate::`, `super::`, `self::`,
    /// `wasmeca::` (the library, from the binary), a child module of `from`, or a module
    /// `from` imported; `None` for a path into another crate (`std::`, `tokio::`).
    fn resolve(&self, from: &[String], path: &[String], hops: usize) -> Option<Target> {
        let (first, rest) = path.split_first()?;
        match first.as_str() {
            "crate" => self.walk(from[..1].to_vec(), rest, hops),
            "wasmeca" => self.walk(vec!["lib".to_owned()], rest, hops),
            "super" | "self" => self.walk(from.to_vec(), path, hops),
            name if self.modules.contains(&child(from, name)) => {
                self.walk(child(from, name), rest, hops)
            }
            name if hops < MAX_HOPS => {
                match self.resolve(from, self.use_of(from, name)?, hops + 1)? {
                    Target::Module(module) => self.walk(module, rest, hops),
                    Target::Item(_) => None,
                }
            }
            _ => None,
        }
    }

    /// Where a written path leads; a call names an item of the module before its last segment.
    fn target_of(&self, written: &Written) -> Option<Target> {
        match written.path.split_last() {
            Some((name, parent)) if written.call && !parent.is_empty() => {
                match self.resolve(&written.module, parent, 0)? {
                    Target::Module(module) => Some(self.lookup(&module, name, 0)),
                    item => Some(item),
                }
            }
            _ => self.resolve(&written.module, &written.path, 0),
        }
    }

    /// Follows `rest` down from module `at`: `super` goes up, a child module down, and the
    /// first other name is an item, looked up where `at` gets it from.
    fn walk(&self, mut at: ModPath, rest: &[String], hops: usize) -> Option<Target> {
        for segment in rest {
            match segment.as_str() {
                "self" | "*" => {}
                "super" if at.len() > 1 => {
                    at.pop();
                }
                "super" => return None,
                name if self.modules.contains(&child(&at, name)) => at.push(name.to_owned()),
                name => match self.lookup(&at, name, hops) {
                    Target::Module(module) => at = module,
                    item => return Some(item),
                },
            }
        }
        Some(Target::Module(at))
    }

    /// Where `name`, an item of `module`, really lives: followed through `module`'s `use`
    /// declarations (re-exports, and globs whose module has it); a name `module` defines, or
    /// brings in from another crate, is `module`'s own.
    fn lookup(&self, module: &ModPath, name: &str, hops: usize) -> Target {
        let own = || Target::Item(module.clone());
        if hops >= MAX_HOPS {
            return own();
        }
        if let Some(path) = self.use_of(module, name) {
            return self.resolve(module, path, hops + 1).unwrap_or_else(own);
        }
        let globs = self.uses.get(module).into_iter().flatten();
        for (_, glob) in globs.filter(|(used, _)| used == "*") {
            if let Some(Target::Module(source)) = self.resolve(module, glob, hops + 1)
                && source != *module
                && (self.defined.get(&source).is_some_and(|d| d.contains(name))
                    || self.use_of(&source, name).is_some())
            {
                return self.lookup(&source, name, hops + 1);
            }
        }
        own()
    }

    /// The module of the file that holds `module` (itself, or the file of an inline module).
    fn file_of(&self, module: &[String]) -> ModPath {
        (1..=module.len())
            .rev()
            .map(|n| module[..n].to_vec())
            .find(|m| self.files.contains_key(m))
            .unwrap_or_else(|| module.to_vec())
    }

    /// Every path of every file that leads to another file of the crates, resolved.
    fn imports(&self) -> Vec<Import> {
        let mut imports = Vec::new();
        for (file, from, written) in &self.written {
            let Some(Target::Module(target) | Target::Item(target)) = self.target_of(written)
            else {
                continue;
            };
            let to = self.file_of(&target);
            if to == *from {
                continue;
            }
            let mut text = written.path.join("::");
            if let Some(module) = text.strip_suffix("::self") {
                text = module.to_owned(); // `a::{self}` names `a`
            }
            if let Some(alias) = &written.alias {
                text = format!("{text} as {alias}");
            }
            let to_file = self.files.get(&to).cloned().unwrap_or_else(|| to.join("/"));
            let (file, line, from) = (file.clone(), written.line, from.clone());
            imports.push(Import {
                file,
                line,
                text,
                from,
                to,
                to_file,
            });
        }
        imports
    }

    /// How a file-level circle names a child module: its file, or `folder/` for a folder.
    fn label(&self, module: &[String]) -> String {
        match self.files.get(module) {
            Some(file) => file.strip_suffix("mod.rs").unwrap_or(file).to_owned(),
            None => format!("{}/", module[1..].join("/")),
        }
    }
}

/// The node of the module graph a module belongs to: its top-level module, or `lib`/`main`
/// for a crate root.
fn node(module: &[String]) -> &str {
    module.get(1).unwrap_or(&module[0])
}

/// The module-level edge an import makes, if any. A crate root naming its own modules is
/// not one (it declares them), nor is the binary naming lib.rs's own items (`wasmeca::serve`,
/// the library's public entry points, are what the binary is for).
fn module_edge(import: &Import) -> Option<(&str, &str)> {
    let (from, to) = (node(&import.from), node(&import.to));
    let root_naming_its_own = import.from.len() == 1 && import.to[0] == import.from[0];
    let binary_using_the_library = import.from[0] == "main" && import.to == ["lib"];
    (from != to && !root_naming_its_own && !binary_using_the_library).then_some((from, to))
}

/// Module → the modules it imports (itself excluded), every module of `host/src` a key.
fn graph(sources: &Sources) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = (sources.files.keys())
        .map(|module| (node(module).to_owned(), BTreeSet::new()))
        .collect();
    for import in sources.imports() {
        if let Some((from, to)) = module_edge(&import) {
            graph
                .entry(from.to_owned())
                .or_default()
                .insert(to.to_owned());
        }
    }
    graph
}

/// Every import from a higher layer, as `file:line: `path` → file: why`.
fn upward_imports(sources: &Sources) -> Vec<String> {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let name = |layer: u8| LAYER_NAMES[usize::from(layer) - 1];
    let mut upward = Vec::new();
    for import in sources.imports() {
        let Some((from, to)) = module_edge(&import) else {
            continue;
        };
        let (Some(&own), Some(&theirs)) = (layers.get(from), layers.get(to)) else {
            continue; // every_module_has_a_layer reports it
        };
        if theirs > own {
            upward.push(format!(
                "{}:{}: `{}` → {}: {from} ({}) imports {to} ({}); a module imports only from its \
                 own layer and below",
                import.file,
                import.line,
                import.text,
                import.to_file,
                name(own),
                name(theirs)
            ));
        }
    }
    upward
}

/// The circles of a graph: each largest set of nodes that all reach one another.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |start: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(node) = todo.pop() {
            for next in graph.get(node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let mut found: Vec<Vec<String>> = Vec::new();
    for node in graph.keys() {
        if found.iter().flatten().any(|n| n == node) {
            continue;
        }
        let circle: Vec<String> = (reach(node).into_iter())
            .filter(|other| reach(other).contains(node))
            .collect();
        if circle.len() > 1 {
            found.push(circle);
        }
    }
    found
}

/// Each circle of `edges` (`(from, to)` → an import making it) as one message: its members,
/// then the imports that close it, each with its file and line.
fn report_circles(edges: &BTreeMap<(String, String), &Import>, rule: &str) -> Vec<String> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from.clone()).or_default().insert(to.clone());
    }
    let report = |circle: Vec<String>| {
        let within = |node: &String| circle.contains(node);
        let through: Vec<String> = (edges.iter())
            .filter(|((from, to), _)| within(from) && within(to))
            .map(|((from, to), i)| format!("{from} → {to} ({}:{} `{}`)", i.file, i.line, i.text))
            .collect();
        format!("{}: {rule}: {}", circle.join(", "), through.join("; "))
    };
    circles(&graph).into_iter().map(report).collect()
}

/// Every circle of modules importing each other.
fn module_circles(sources: &Sources) -> Vec<String> {
    let imports = sources.imports();
    let mut edges: BTreeMap<(String, String), &Import> = BTreeMap::new();
    for import in &imports {
        if let Some((from, to)) = module_edge(import) {
            edges
                .entry((from.to_owned(), to.to_owned()))
                .or_insert(import);
        }
    }
    let rule = "modules import each other in a circle, and no two modules may";
    report_circles(&edges, rule)
}

/// The file-level edge an import makes inside a module folder, if any: (the folder's module,
/// the child the import is written in, the child it leads to), a child being a file or a
/// sub-folder. The folder's root (`mod.rs`) is its children's parent: a child may import from
/// it, and its `mod child;`, `pub use child::X;` and other uses of its children are no edge.
fn file_edge(import: &Import) -> Option<(ModPath, ModPath, ModPath)> {
    let (from, to) = (&import.from, &import.to);
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    let siblings = common >= 2 && common < from.len() && common < to.len();
    siblings.then(|| {
        (
            from[..common].to_vec(),
            from[..=common].to_vec(),
            to[..=common].to_vec(),
        )
    })
}

/// Every circle of files (or sub-folders) of one module importing each other.
fn file_circles(sources: &Sources) -> Vec<String> {
    let imports = sources.imports();
    let mut folders: BTreeMap<ModPath, BTreeMap<(String, String), &Import>> = BTreeMap::new();
    for import in &imports {
        if let Some((folder, from, to)) = file_edge(import) {
            let edge = (sources.label(&from), sources.label(&to));
            folders
                .entry(folder)
                .or_default()
                .entry(edge)
                .or_insert(import);
        }
    }
    let rule = "files of one module import each other in a circle, and no two files may";
    (folders.values())
        .flat_map(|edges| report_circles(edges, rule))
        .collect()
}

/// Every module found in `host/src` (and lib.rs, main.rs) has a layer in [`LAYERS`].
#[test]
fn every_module_has_a_layer() {
    let layers: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let found: BTreeSet<String> = graph(&Sources::read()).into_keys().collect();
    let missing: Vec<&String> = found
        .iter()
        .filter(|m| !layers.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "modules with no layer in tests/architecture.rs: {missing:?}"
    );
}

/// No file imports from a module of a higher layer.
#[test]
fn modules_import_only_from_their_layer_and_below() {
    let upward = upward_imports(&Sources::read());
    assert!(
        upward.is_empty(),
        "imports from a higher layer: {upward:#?}"
    );
}

/// No two modules import each other, directly or through others.
#[test]
fn no_modules_import_each_other_in_a_circle() {
    let circles = module_circles(&Sources::read());
    assert!(circles.is_empty(), "modules in a circle: {circles:#?}");
}

/// No two files (or sub-folders) of one module import each other, directly or through others.
#[test]
fn no_files_of_a_module_import_each_other_in_a_circle() {
    let circles = file_circles(&Sources::read());
    assert!(circles.is_empty(), "files in a circle: {circles:#?}");
}

/// lib.rs's `# Layout` lists the modules of each of the five layers as [`LAYERS`] does.
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
        .filter(|(m, _)| !matches!(*m, "main" | "cli" | "lib"))
        .map(|(m, l)| ((*m).to_owned(), *l))
        .collect();
    assert_eq!(described, expected, "lib.rs's # Layout and LAYERS disagree");
}

/// Sources made of inline files (path under `src`, text), for testing the resolver itself.
fn sources_of(files: &[(&str, &str)]) -> Sources {
    let texts: Vec<(String, String)> = (files.iter())
        .map(|(file, text)| ((*file).to_owned(), (*text).to_owned()))
        .collect();
    Sources::new(&texts)
}

/// The files `file`'s imports lead to.
fn targets(sources: &Sources, file: &str) -> BTreeSet<String> {
    (sources.imports().into_iter())
        .filter(|import| import.file == file)
        .map(|import| import.to_file)
        .collect()
}

/// Paths in comments, strings and char literals are not imports.
#[test]
fn the_import_scanner_sees_real_paths_only() {
    let code = r##"use crate::{router::Router, pattern};
// crate::gateway
let s = "crate::config";
let c = '"'; crate::message::new_id(); not_crate::x; /* crate::reload */
let r = r#"crate::gateway "quoted""#; /* a /* nested */ crate::reload */ let e = '\'';"##;
    let sources = sources_of(&[
        ("lib.rs", ""),
        ("config.rs", ""),
        ("gateway/mod.rs", ""),
        ("message.rs", ""),
        ("pattern/mod.rs", ""),
        ("reload.rs", ""),
        ("router.rs", ""),
        ("ingress.rs", code),
    ]);
    let graph = graph(&sources);
    let found: Vec<&String> = graph["ingress"].iter().collect();
    assert_eq!(found, ["message", "pattern", "router"]);
    assert_eq!(code_only(code).lines().count(), code.lines().count());
}

/// Each way of writing an import resolves to the file it names (review issue 19, item 1):
/// root re-exports, nested groups, `super` chains, spaced `::`, lib.rs's own items, file
/// circles, and the binary.
#[test]
fn every_shape_of_import_is_resolved() {
    let sources = sources_of(&[
        // 5: lib.rs is the node `lib`; it defines `Host` and re-exports the rest.
        (
            "lib.rs",
            "pub mod config; pub mod gateway; pub mod metrics; pub mod pattern; pub mod router;
             pub mod runtime; pub mod shutdown; pub mod transport;
             pub use config::{Config, Limits as L};
             pub use router::Router;
             pub use shutdown::CancellationToken;
             use tokio::task::JoinHandle;
             pub struct Host;",
        ),
        ("config.rs", ""),
        ("gateway.rs", "use crate::router::Router;"),
        ("pattern/mod.rs", "mod glob;\npub use glob::*;"),
        ("pattern/glob.rs", "pub struct Glob;"),
        // 1: re-exports of the crate root and of a module root.
        (
            "metrics.rs",
            "use crate::Router;
             fn f(_: crate::Config, _: crate::L, _: crate::CancellationToken, _: crate::pattern::Glob) {}
             fn g() { crate::transport::amqp::binding_key(); }",
        ),
        // 2: nested groups over lines, and `self as`.
        (
            "router.rs",
            "use crate::{
                 pattern::{Pattern, glob::Glob},
                 gateway::{self, X},
             };
             use crate::{self as c, config};",
        ),
        // 3: `super` chains, `self::`, and `super` inside an inline module.
        (
            "transport/amqp/listener.rs",
            "use super::super::http::Client;
             use super::super::super::gateway::Y;
             use self::inner::Z;
             mod inner { use super::super::wire::W; }",
        ),
        // 4: spaces and line breaks around `::`.
        (
            "shutdown.rs",
            "pub use tokio_util::sync::CancellationToken;
             fn f() { crate :: gateway :: serve(); crate::
                 router::act(); }",
        ),
        // 5 again: an item of lib.rs itself, and one lib.rs brings from another crate.
        (
            "runtime/mod.rs",
            "mod host; mod instance;
             pub use host::Host;
             pub use instance::State;
             pub struct Runtime;
             fn f(_: crate::Host, _: crate::JoinHandle) {}",
        ),
        // 6: files of one module in a circle, through a re-export of their root; and a file
        // in a circle with a sub-folder.
        ("runtime/host.rs", "use super::{Runtime, State};"),
        ("runtime/instance.rs", "use super::host::Host;"),
        ("transport/mod.rs", "pub mod amqp; pub mod http;"),
        ("transport/http.rs", "use super::amqp::binding_key;"),
        (
            "transport/amqp/mod.rs",
            "mod listener; pub mod wire; pub use wire::binding_key;",
        ),
        ("transport/amqp/wire.rs", "pub fn binding_key() {}"),
        // The binary: `crate::` is main.rs; `wasmeca::` is the library, whose own items
        // (`wasmeca::router(…)`, a function beside the module `router`) are its public API.
        ("main.rs", "mod cli;\nstruct Args;\nfn main() { wasmeca::serve(); cli::run(); }"),
        (
            "cli/mod.rs",
            "use crate::Args;\nuse wasmeca::Config;\nfn run() { wasmeca::router(); }",
        ),
    ]);
    let files =
        |list: &[&str]| -> BTreeSet<String> { list.iter().map(|f| (*f).to_owned()).collect() };
    let metrics = ["router.rs", "config.rs", "shutdown.rs", "pattern/glob.rs"];
    let metrics = [&metrics[..], &["transport/amqp/wire.rs"]].concat();
    assert_eq!(targets(&sources, "metrics.rs"), files(&metrics));
    let router = [
        "pattern/mod.rs",
        "pattern/glob.rs",
        "gateway.rs",
        "lib.rs",
        "config.rs",
    ];
    assert_eq!(targets(&sources, "router.rs"), files(&router));
    let listener = ["transport/http.rs", "gateway.rs", "transport/amqp/wire.rs"];
    let listener_targets = targets(&sources, "transport/amqp/listener.rs");
    assert_eq!(listener_targets, files(&listener));
    assert_eq!(
        targets(&sources, "shutdown.rs"),
        files(&["gateway.rs", "router.rs"])
    );
    let runtime = ["lib.rs", "runtime/host.rs", "runtime/instance.rs"];
    assert_eq!(targets(&sources, "runtime/mod.rs"), files(&runtime));

    let upward: Vec<String> = upward_imports(&sources)
        .iter()
        .map(|m| m.split(" → ").next().unwrap_or_default().to_owned())
        .collect();
    let expected = [
        "metrics.rs:1: `crate::Router`",
        "metrics.rs:2: `crate::Config`",
        "metrics.rs:2: `crate::L`",
        "metrics.rs:3: `crate::transport::amqp::binding_key`",
        "router.rs:3: `crate::gateway`",
        "router.rs:3: `crate::gateway::X`",
        "router.rs:5: `crate as c`",
        "router.rs:5: `crate::config`",
        "shutdown.rs:2: `crate::gateway::serve`",
        "shutdown.rs:3: `crate::router::act`",
        "runtime/mod.rs:5: `crate::Host`",
        "runtime/mod.rs:5: `crate::JoinHandle`",
    ];
    assert_eq!(upward, expected);

    let starts = |messages: Vec<String>| -> Vec<String> {
        messages
            .iter()
            .map(|m| m.split(": ").next().unwrap_or_default().to_owned())
            .collect()
    };
    let file_circles = starts(file_circles(&sources));
    let expected = [
        "runtime/host.rs, runtime/instance.rs",
        "transport/amqp/, transport/http.rs",
    ];
    assert_eq!(file_circles, expected);
    assert_eq!(starts(module_circles(&sources)), ["gateway, router"]);
    let graph = graph(&sources);
    assert_eq!(graph["main"], BTreeSet::new());
    assert_eq!(graph["cli"], files(&["config", "main"]));
}
