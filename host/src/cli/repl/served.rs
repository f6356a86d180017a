//! What a host serves, as `wasmeca repl` shows it: the plugins of a `/plugins` listing, and
//! their patterns in the order patrun prefers them, each with who serves it. Pure, no I/O.

use semver::Version;
use serde_json::Value;
use wasmeca::pattern::{Glob, Patrun, Pattern};

/// One plugin, for `.plugins`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plugin {
    /// `name@version`.
    key: String,
    /// Its file, or `(native)` for the host's own actions.
    file: String,
    /// How many patterns it serves.
    patterns: usize,
    /// One of the host's own (Seneca's built-ins, the stores), not a file's.
    native: bool,
}

/// The versions of one plugin name serving a pattern.
#[derive(Debug, Clone)]
struct Group {
    /// The plugin name.
    name: String,
    /// Its versions there, highest first (the highest answers unless `$version` says).
    versions: Vec<Version>,
}

/// What a host serves.
#[derive(Debug, Clone, Default)]
pub(crate) struct Served {
    /// Plugins first, then the host's native actions, each in load order.
    plugins: Vec<Plugin>,
    /// Every pattern in precedence order, with who serves it, the one answering first.
    patterns: Vec<(Pattern, Vec<String>)>,
}

impl Served {
    /// Reads a `/plugins` listing (`plugins` and `native`, each with `name`, `version`, `file`
    /// and `patterns`); what does not parse is left out.
    pub fn from_listing(listing: &Value) -> Self {
        let list = |key: &str| listing[key].as_array().cloned().unwrap_or_default();
        let (plugins, native) = (list("plugins"), list("native"));
        let mut trie: Patrun<Vec<Group>> = Patrun::new();
        let mut shown: Vec<Plugin> = Vec::new();
        // The host installs its native actions before any plugin: the same order here keeps
        // globs of one key in the order the host tried them.
        for (plugin, is_native) in native
            .iter()
            .map(|p| (p, true))
            .chain(plugins.iter().map(|p| (p, false)))
        {
            let name = plugin["name"].as_str().unwrap_or("?");
            let version = plugin["version"].as_str().unwrap_or("0.0.0");
            let patterns: Vec<Pattern> = plugin["patterns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str()?.parse().ok())
                .collect();
            let file = match plugin["file"].as_str() {
                Some(file) => file.to_owned(),
                None if is_native => "(native)".to_owned(),
                None => "?".to_owned(),
            };
            shown.push(Plugin {
                key: format!("{name}@{version}"),
                file,
                patterns: patterns.len(),
                native: is_native,
            });
            let version = Version::parse(version).unwrap_or(Version::new(0, 0, 0));
            for pattern in &patterns {
                add(
                    trie.slot(pattern).get_or_insert_with(Vec::new),
                    name,
                    &version,
                );
            }
        }
        // Plugins before natives in `.plugins`: they are what the user brought.
        shown.sort_by_key(|p| p.native);
        let patterns = trie
            .precedence()
            .into_iter()
            .map(|(pattern, groups)| {
                let owners = groups
                    .iter()
                    .rev()
                    .flat_map(|g| g.versions.iter().map(|v| format!("{}@{v}", g.name)))
                    .collect();
                (pattern, owners)
            })
            .collect();
        Self {
            plugins: shown,
            patterns,
        }
    }

    /// How many plugins (not counting the host's own actions) and patterns are served.
    pub fn counts(&self) -> (usize, usize) {
        let plugins = self.plugins.iter().filter(|p| !p.native).count();
        (plugins, self.patterns.len())
    }

    /// `.plugins`: one line per plugin.
    pub fn plugin_lines(&self) -> Vec<String> {
        let width = self.plugins.iter().map(|p| p.key.len()).max().unwrap_or(0);
        self.plugins
            .iter()
            .map(|p| {
                let s = if p.patterns == 1 { "" } else { "s" };
                format!("{:width$}  {}  {} pattern{s}", p.key, p.file, p.patterns)
            })
            .collect()
    }

    /// `.patterns [GLOB]`: one line per pattern, in precedence order, with who serves it;
    /// with a glob, the patterns whose text, or one of whose `key:value` pairs, it matches.
    pub fn pattern_lines(&self, glob: Option<&str>) -> Vec<String> {
        let glob = glob.map(Glob::new);
        let shown: Vec<&(Pattern, Vec<String>)> = self
            .patterns
            .iter()
            .filter(|(pattern, _)| glob.as_ref().is_none_or(|g| matches(g, pattern)))
            .collect();
        let text = |p: &Pattern| {
            if p.is_empty() {
                "{}".to_owned()
            } else {
                p.to_string()
            }
        };
        let width = shown
            .iter()
            .map(|(p, _)| text(p).chars().count())
            .max()
            .unwrap_or(0);
        shown
            .into_iter()
            .map(|(pattern, owners)| format!("{:width$}  {}", text(pattern), owners.join(" ")))
            .collect()
    }

    /// Every pattern served, in precedence order (for completion).
    pub fn patterns(&self) -> impl Iterator<Item = &Pattern> {
        self.patterns.iter().map(|(p, _)| p)
    }
}

/// Adds `name@version` to the serving groups of one pattern as the host's snapshot does: the
/// name's group moves last (the last plugin added wins), its versions stay highest first.
fn add(groups: &mut Vec<Group>, name: &str, version: &Version) {
    let mut group = match groups.iter().position(|g| g.name == name) {
        Some(i) => groups.remove(i),
        None => Group {
            name: name.to_owned(),
            versions: Vec::new(),
        },
    };
    if !group.versions.contains(version) {
        let at = group.versions.partition_point(|v| v > version);
        group.versions.insert(at, version.clone());
    }
    groups.push(group);
}

/// True when `glob` matches the pattern's text or one of its `key:value` pairs.
fn matches(glob: &Glob, pattern: &Pattern) -> bool {
    glob.matches(&pattern.to_string())
        || pattern
            .pairs()
            .iter()
            .any(|(k, v)| glob.matches(&format!("{k}:{v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listing() -> Value {
        json!({
            "plugins": [
                {"name": "salute", "version": "1.0.0", "file": "/p/salute.wasm",
                 "patterns": ["cmd:salute"]},
                {"name": "math", "version": "1.0.0", "file": "/p/math.wasm",
                 "patterns": ["cmd:sum,role:math", "cmd:product,role:math"]},
                {"name": "salute", "version": "2.0.0", "file": "/p/salute_v2.wasm",
                 "patterns": ["cmd:salute"]},
                {"name": "any", "version": "0.1.0", "file": "/p/any.wasm",
                 "patterns": ["cmd:*,role:math", "role:math"]},
            ],
            "native": [
                {"name": "seneca", "version": "3.38.0", "file": null,
                 "patterns": ["cmd:ping,role:seneca"]},
            ],
        })
    }

    #[test]
    fn plugins_list_files_and_pattern_counts_natives_last() {
        assert_eq!(
            Served::from_listing(&listing()).plugin_lines(),
            [
                "salute@1.0.0   /p/salute.wasm  1 pattern",
                "math@1.0.0     /p/math.wasm  2 patterns",
                "salute@2.0.0   /p/salute_v2.wasm  1 pattern",
                "any@0.1.0      /p/any.wasm  2 patterns",
                "seneca@3.38.0  (native)  1 pattern",
            ]
        );
    }

    #[test]
    fn patterns_come_in_precedence_order_with_the_answering_version_first() {
        let served = Served::from_listing(&listing());
        assert_eq!(
            served.pattern_lines(None),
            [
                "cmd:ping,role:seneca   seneca@3.38.0",
                "cmd:product,role:math  math@1.0.0",
                "cmd:salute             salute@2.0.0 salute@1.0.0",
                "cmd:sum,role:math      math@1.0.0",
                "cmd:*,role:math        any@0.1.0",
                "role:math              any@0.1.0",
            ],
            "keys alphabetically; exact values before globs before the key's absence"
        );
        assert_eq!(
            served.pattern_lines(Some("role:math")),
            [
                "cmd:product,role:math  math@1.0.0",
                "cmd:sum,role:math      math@1.0.0",
                "cmd:*,role:math        any@0.1.0",
                "role:math              any@0.1.0",
            ],
            "a glob matches one pair"
        );
        assert_eq!(
            served.pattern_lines(Some("*sal*")),
            ["cmd:salute  salute@2.0.0 salute@1.0.0"],
            "or the whole text"
        );
        assert!(served.pattern_lines(Some("nope")).is_empty());
    }

    #[test]
    fn the_last_plugin_name_added_answers_first() {
        let mut groups = Vec::new();
        let v = |s: &str| Version::parse(s).expect("a version");
        add(&mut groups, "a", &v("2.0.0"));
        add(&mut groups, "b", &v("1.0.0"));
        add(&mut groups, "a", &v("1.0.0"));
        add(&mut groups, "a", &v("3.0.0"));
        let order: Vec<String> = groups
            .iter()
            .rev()
            .flat_map(|g| g.versions.iter().map(|v| format!("{}@{v}", g.name)))
            .collect();
        assert_eq!(order, ["a@3.0.0", "a@2.0.0", "a@1.0.0", "b@1.0.0"]);
    }
}
