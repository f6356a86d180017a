//! Tools for plugin authors: project templates in Rust, JavaScript, Python and C (`wasmeca
//! new`), the declared build with a check that its toolchain is installed (`wasmeca build`),
//! turning a core module into a component (`wasmeca componentize`), and the conformance check
//! of a built plugin (`wasmeca check`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::config::{Build, Config};
use crate::gateway;
use crate::message::Message;
use crate::pattern::Pattern;
use crate::plugins::PluginSource;
use crate::router::Router;
use crate::runtime::{LoadError, Runtime};

/// Why an authoring command failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `new` would overwrite something.
    #[error("{0} already exists; pick another name or folder")]
    Exists(PathBuf),
    /// A plugin name Seneca would not accept.
    #[error("`{0}` is not a plugin name: use letters, digits, `-` and `_`, starting with a letter")]
    Name(String),
    /// The configuration has no `[build]`.
    #[error("{0} declares no [build] command")]
    NoBuild(PathBuf),
    /// A toolchain the build needs is missing.
    #[error("{what} is missing; install it with: {install}")]
    Missing {
        /// What is missing.
        what: String,
        /// The command that installs it.
        install: String,
    },
    /// The build command failed.
    #[error("the build command failed ({status}): {command}")]
    BuildFailed {
        /// The command.
        command: String,
        /// How it ended.
        status: String,
    },
    /// A core module could not be made a component.
    #[error("cannot make a component of {path}: {reason}")]
    Componentize {
        /// The core module.
        path: PathBuf,
        /// wit-component's reason.
        reason: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuthoringError + '_ {
    move |source| AuthoringError::Io {
        path: path.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// new
// ---------------------------------------------------------------------------------------------

/// The languages `wasmeca new` has a template for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Rust with `wasmeca-sdk`.
    Rust,
    /// JavaScript with `sdk/js` (componentize-js, StarlingMonkey).
    Js,
    /// Python with `sdk/python` (componentize-py).
    Python,
    /// C with `sdk/c` (Zig's clang and `wasmeca componentize`).
    C,
}

impl std::str::FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rust" | "rs" => Ok(Self::Rust),
            "js" | "javascript" => Ok(Self::Js),
            "python" | "py" => Ok(Self::Python),
            "c" => Ok(Self::C),
            other => Err(format!(
                "no template for `{other}`: choose rust, js, python or c"
            )),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rust => "rust",
            Self::Js => "js",
            Self::Python => "python",
            Self::C => "c",
        })
    }
}

/// Where the SDKs are when nothing else says: this source tree's `sdk/`.
pub fn default_sdk() -> PathBuf {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sdk");
    std::fs::canonicalize(&built_from).unwrap_or(built_from)
}

/// The files of a new project: (relative path, content).
fn template(language: Language, name: &str, sdk: &Path) -> Vec<(String, String)> {
    let sdk = sdk.display().to_string();
    let fill = |text: &str| text.replace("{{name}}", name).replace("{{sdk}}", &sdk);
    let files: Vec<(&str, &str)> = match language {
        Language::Rust => vec![
            ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("../templates/rust/lib.rs")),
            (
                "wasmeca.toml",
                include_str!("../templates/rust/wasmeca.toml"),
            ),
            (".gitignore", "/target\n"),
        ],
        Language::Js => vec![
            ("src/{{name}}.js", include_str!("../templates/js/plugin.js")),
            ("wasmeca.toml", include_str!("../templates/js/wasmeca.toml")),
            (".gitignore", "/dist\n"),
        ],
        Language::Python => vec![
            ("{{name}}.py", include_str!("../templates/python/plugin.py")),
            (
                "wasmeca.toml",
                include_str!("../templates/python/wasmeca.toml"),
            ),
            (".gitignore", "/dist\n__pycache__/\n"),
        ],
        Language::C => vec![
            ("{{name}}.c", include_str!("../templates/c/plugin.c")),
            ("wasmeca.toml", include_str!("../templates/c/wasmeca.toml")),
            (".gitignore", "/dist\n"),
        ],
    };
    files
        .into_iter()
        .map(|(path, text)| (fill(path), fill(text)))
        .collect()
}

/// Creates a plugin project `dir` (named after its last path segment) from the template of
/// `language`; returns the files written.
pub fn new_project(
    language: Language,
    dir: &Path,
    sdk: &Path,
) -> Result<Vec<PathBuf>, AuthoringError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(AuthoringError::Name(name));
    }
    if dir.exists() {
        return Err(AuthoringError::Exists(dir.to_owned()));
    }
    // Rust crate names use `_` where plugin names may use `-`.
    let mut written = Vec::new();
    for (relative, text) in template(language, &name, sdk) {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

// ---------------------------------------------------------------------------------------------
// build
// ---------------------------------------------------------------------------------------------

/// The toolchain a build command needs, from `[build] toolchain` or the command itself.
fn toolchain(build: &Build) -> Option<Language> {
    if let Some(declared) = &build.toolchain {
        return declared.parse().ok();
    }
    let c = &build.command;
    if c.contains("cargo ") {
        Some(Language::Rust)
    } else if c.contains("js/build.mjs") {
        Some(Language::Js)
    } else if c.contains("python/build.sh") {
        Some(Language::Python)
    } else if c.contains("c/build.sh") {
        Some(Language::C)
    } else {
        None
    }
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Checks that the toolchain `language` needs is installed, naming what is missing and the
/// command that installs it.
pub fn check_toolchain(language: Language, sdk: &Path) -> Result<(), AuthoringError> {
    let missing = |what: &str, install: String| {
        Err(AuthoringError::Missing {
            what: what.to_owned(),
            install,
        })
    };
    let tools = sdk.join("..").join("target").join("tools");
    let installer = format!("{}/toolchains.sh", sdk.display());
    match language {
        Language::Rust => {
            if !on_path("cargo") {
                return missing(
                    "cargo",
                    "https://rustup.rs (then: rustup target add wasm32-wasip2)".into(),
                );
            }
            let sysroot = Command::new("rustc")
                .args(["--print", "sysroot"])
                .output()
                .ok();
            let sysroot = sysroot
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            let installed = || {
                Path::new(&sysroot)
                    .join("lib/rustlib/wasm32-wasip2")
                    .exists()
            };
            // rustup installs the target in seconds: do it rather than stop the build.
            if !installed() && on_path("rustup") {
                tracing::info!(
                    "installing the wasm32-wasip2 target: rustup target add wasm32-wasip2"
                );
                let _ = Command::new("rustup")
                    .args(["target", "add", "wasm32-wasip2"])
                    .status();
            }
            if !installed() {
                return missing(
                    "the wasm32-wasip2 target",
                    "rustup target add wasm32-wasip2".into(),
                );
            }
        }
        Language::Js => {
            if !on_path("node") {
                return missing(
                    "Node.js",
                    "your system's package manager (apt install nodejs npm)".into(),
                );
            }
            if !sdk
                .join("js/node_modules/@bytecodealliance/componentize-js")
                .exists()
            {
                return missing("componentize-js", format!("{installer} js"));
            }
        }
        Language::Python => {
            let local = tools.join("venv/bin/componentize-py");
            if !local.exists() && !on_path("componentize-py") {
                return missing("componentize-py", format!("{installer} python"));
            }
        }
        Language::C => {
            if !tools.join("venv/bin/python").exists() && std::env::var_os("WASMECA_CC").is_none() {
                return missing(
                    "Zig (the C compiler for wasm32-wasi)",
                    format!("{installer} c"),
                );
            }
        }
    }
    Ok(())
}

/// Runs the configuration's `[build]` command in its folder, after checking its toolchain.
pub fn build(config: &Config, sdk: &Path) -> Result<(), AuthoringError> {
    let origin = config
        .origin
        .clone()
        .unwrap_or_else(|| PathBuf::from("the configuration"));
    let Some(build) = &config.build else {
        return Err(AuthoringError::NoBuild(origin));
    };
    if let Some(language) = toolchain(build) {
        check_toolchain(language, sdk)?;
    }
    let dir = if config.base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        config.base.as_path()
    };
    tracing::info!("building in {}: {}", dir.display(), build.command);
    // `-e`: a multi-line command stops at its first failing line, as a Makefile recipe would.
    let status = Command::new("sh")
        .args(["-e", "-c"])
        .arg(&build.command)
        .current_dir(dir)
        .env("WASMECA_SDK", sdk)
        .env(
            "WASMECA",
            std::env::current_exe().unwrap_or_else(|_| "wasmeca".into()),
        )
        .status()
        .map_err(io(dir))?;
    if !status.success() {
        return Err(AuthoringError::BuildFailed {
            command: build.command.clone(),
            status: status.to_string(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// componentize
// ---------------------------------------------------------------------------------------------

/// Makes a component of a core module built against the `plugin` world (as `wit-bindgen c`
/// leaves it), adapting WASI preview 1 imports with the reactor adapter of this wasmtime.
pub fn componentize(path: &Path, core: &[u8]) -> Result<Vec<u8>, AuthoringError> {
    // wit-component reports with anyhow; its message, causes included, is what is kept.
    let fail = |e: &dyn fmt::Display| AuthoringError::Componentize {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    };
    let uses_wasi = core.windows(22).any(|w| w == b"wasi_snapshot_preview1");
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder.module(core).map_err(|e| fail(&e))?;
    if uses_wasi {
        encoder
            .adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
            .map_err(|e| fail(&e))?;
    }
    encoder.validate(true).encode().map_err(|e| fail(&e))
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

/// One line of a conformance report.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckItem {
    /// True if it passed.
    pub ok: bool,
    /// What was checked, and what was found.
    pub text: String,
}

/// The outcome of `wasmeca check`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    /// Every check, in order.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    fn pass(&mut self, text: impl Into<String>) {
        self.items.push(CheckItem {
            ok: true,
            text: text.into(),
        });
    }

    fn fail(&mut self, text: impl Into<String>) {
        self.items.push(CheckItem {
            ok: false,
            text: text.into(),
        });
    }

    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.ok)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            writeln!(
                f,
                "  {} {}",
                if item.ok { "ok  " } else { "FAIL" },
                item.text
            )?;
        }
        write!(f, "{}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// A message that a pattern matches: its own pairs, a glob value replaced by a word it matches.
fn sample(pattern: &Pattern) -> Value {
    let pairs = pattern.pairs().iter().map(|(k, v)| {
        let value = if crate::pattern::Glob::is_glob(v) {
            v.replace("**", "*")
                .replace("*?", "?")
                .replace('*', "check")
                .replace('?', "x")
        } else {
            v.clone()
        };
        (k.clone(), Value::String(value))
    });
    Value::Object(pairs.collect())
}

/// Loads `path` alone and checks it against the contract: it is a component, `init` answers a
/// valid manifest (Seneca name, semver version, patterns that parse, routes well formed), and
/// every action answers its example (or a message made from its pattern) without trapping.
pub async fn check(path: &Path, runtime: Runtime, limits: crate::config::Limits) -> CheckReport {
    let mut report = CheckReport::default();
    let router = Router::new(runtime, limits);
    let plugin = match router.load(&PluginSource::new(path)).await {
        Ok(plugin) => plugin,
        Err(e) => {
            let what = match &e {
                LoadError::Io { .. }
                | LoadError::NotWasm { .. }
                | LoadError::CoreModule { .. }
                | LoadError::Compile { .. } => "it loads as a component",
                LoadError::Contract { .. } => "it implements wasmeca:plugin@0.1.0",
                LoadError::Init { .. } | LoadError::Trap { .. } => "init answers a manifest",
                LoadError::Manifest { .. } => "its manifest is valid",
            };
            report.fail(format!("{what}: {e}"));
            return report;
        }
    };
    report.pass(format!(
        "loads as a component and implements wasmeca:plugin@0.1.0 ({})",
        plugin.key()
    ));
    report.pass(format!(
        "init answers a manifest: name `{}`, semver version {}",
        plugin.name, plugin.version
    ));
    if plugin.actions.is_empty() {
        report.fail("it declares no action");
    } else {
        report.pass(format!(
            "{} action(s), every pattern parses",
            plugin.actions.len()
        ));
    }
    for (i, action) in plugin.actions.iter().enumerate() {
        // A null value drops its key (`cmd:null`, or `x:undefined` matching a missing key):
        // the pattern is wider than it reads.
        let source = crate::pattern::parse_jsonic_pairs(&action.source).unwrap_or_default();
        if source.iter().any(|(k, v)| v.is_null() && !k.ends_with('$'))
            || action.pattern.pairs().iter().any(|(_, v)| v == "undefined")
        {
            report.fail(format!(
                "action {i} `{}`: a null or `undefined` value drops or inverts its key, so the pattern matches far more than it reads (`{}`)",
                action.source, action.pattern
            ));
        }
    }
    for (i, set) in plugin.routes.iter().enumerate() {
        let (routes, warnings) = gateway::compile(set, &plugin.name);
        if warnings.is_empty() {
            let listed: Vec<String> = routes
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            report.pass(format!(
                "route set {i} is well formed: {}",
                listed.join(", ")
            ));
        } else {
            report.fail(format!("route set {i}: {}", warnings.join("; ")));
        }
    }
    router.install(plugin.clone());
    for action in &plugin.actions {
        let (message, from) = match &action.example {
            Some(example) => (Value::Object(example.clone()), "its example"),
            None => (sample(&action.pattern), "a message made from its pattern"),
        };
        let mut msg = message.as_object().cloned().unwrap_or_default();
        msg.insert("timeout$".into(), json!(5000));
        match router.act(Message::new(msg)).await {
            Ok(reply) => report.pass(format!(
                "`{}` answers {from} {message}: {}",
                action.source,
                clip(reply.as_str())
            )),
            Err(e)
                if e.code == crate::message::codes::PLUGIN_TRAP
                    || e.code == crate::message::codes::ACTION_TIMEOUT
                    || e.code == crate::message::codes::RESULT_NOT_OBJARR
                    || e.code == crate::message::codes::ACT_NOT_FOUND =>
            {
                report.fail(format!("`{}` with {from} {message}: {}", action.source, e));
            }
            // Its own error is an answer (the sample may lack what the action needs).
            Err(e) => report.pass(format!(
                "`{}` answers {from} {message} with its error {}: {}",
                action.source, e.code, e.message
            )),
        }
    }
    report
}

fn clip(text: &str) -> String {
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_and_toolchains() {
        assert_eq!("py".parse::<Language>(), Ok(Language::Python));
        assert!(
            "cobol"
                .parse::<Language>()
                .unwrap_err()
                .contains("rust, js, python or c")
        );
        let build = |command: &str| Build {
            command: command.into(),
            toolchain: None,
        };
        assert_eq!(
            toolchain(&build("cargo build --release --target wasm32-wasip2")),
            Some(Language::Rust)
        );
        assert_eq!(
            toolchain(&build("node ../sdk/js/build.mjs src/a.js -o dist/a.wasm")),
            Some(Language::Js)
        );
        assert_eq!(
            toolchain(&build("sh /x/sdk/python/build.sh a dist/a.wasm")),
            Some(Language::Python)
        );
        assert_eq!(
            toolchain(&build("/x/sdk/c/build.sh -o dist/a.wasm a.c")),
            Some(Language::C)
        );
        assert_eq!(toolchain(&build("make")), None);
        assert_eq!(
            toolchain(&Build {
                command: "make".into(),
                toolchain: Some("c".into())
            }),
            Some(Language::C)
        );
    }

    #[test]
    fn templates_are_filled() {
        for language in [Language::Rust, Language::Js, Language::Python, Language::C] {
            let files = template(language, "greeter", Path::new("/opt/sdk"));
            let text: String = files.iter().map(|(p, t)| format!("{p}\n{t}")).collect();
            assert!(!text.contains("{{"), "{language}: {text}");
            assert!(text.contains("greeter"), "{language}");
            let config = files
                .iter()
                .find(|(p, _)| p == "wasmeca.toml")
                .map(|(_, t)| t.as_str())
                .unwrap_or("");
            let parsed = Config::from_toml(config).unwrap_or_else(|e| panic!("{language}: {e}"));
            assert!(
                parsed.build.is_some() && parsed.plugin.len() == 1,
                "{language}"
            );
        }
    }

    #[test]
    fn samples_match_their_patterns() {
        let p = Pattern::parse("role:user,cmd:*,x:a?c").unwrap();
        let s = sample(&p);
        assert_eq!(s, json!({"role": "user", "cmd": "check", "x": "axc"}));
        let mut trie = crate::pattern::Patrun::new();
        trie.add(&p, ());
        assert!(trie.find(s.as_object().unwrap()).is_some());
    }
}
