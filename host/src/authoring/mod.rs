//! Tools for plugin authors: project templates in Rust, JavaScript, Python and C (`wasmeca
//! new`), the declared build with a check that its toolchain is installed (`wasmeca build`),
//! turning a core module into a component (`wasmeca componentize`), the conformance check
//! of a built plugin (`wasmeca check`), and message specs (`wasmeca test`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::config::{Build, Config};

mod check;
pub mod spec;

pub use check::{CheckItem, CheckReport, check};

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
    /// `compile` has no compile cache to fill (`--no-cache`, or the folder cannot be made).
    #[error(
        "there is no compile cache to compile into: drop --no-cache, or set --cache-dir to a folder that can be written"
    )]
    NoCache,
    /// A plugin did not compile.
    #[error("{0}")]
    Compile(String),
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

/// The message spec every template ships (`{{name}}.spec.jsonic`, run by `wasmeca test`): the
/// templates answer the same messages, whatever the language.
const SPEC: &str = include_str!("../../templates/spec.jsonic");

/// The files of a new project: (relative path, content).
fn template(language: Language, name: &str, sdk: &Path) -> Vec<(String, String)> {
    let sdk = sdk.display().to_string();
    let fill = |text: &str| text.replace("{{name}}", name).replace("{{sdk}}", &sdk);
    let files: Vec<(&str, &str)> = match language {
        Language::Rust => vec![
            (
                "Cargo.toml",
                include_str!("../../templates/rust/Cargo.toml"),
            ),
            ("src/lib.rs", include_str!("../../templates/rust/lib.rs")),
            ("{{name}}.spec.jsonic", SPEC),
            (
                "wasmeca.toml",
                include_str!("../../templates/rust/wasmeca.toml"),
            ),
            (".gitignore", "/target\n/.wasmeca/\n"),
        ],
        Language::Js => vec![
            (
                "src/{{name}}.js",
                include_str!("../../templates/js/plugin.js"),
            ),
            ("{{name}}.spec.jsonic", SPEC),
            (
                "wasmeca.toml",
                include_str!("../../templates/js/wasmeca.toml"),
            ),
            (".gitignore", "/dist\n/.wasmeca/\n"),
        ],
        Language::Python => vec![
            (
                "{{name}}.py",
                include_str!("../../templates/python/plugin.py"),
            ),
            ("{{name}}.spec.jsonic", SPEC),
            (
                "wasmeca.toml",
                include_str!("../../templates/python/wasmeca.toml"),
            ),
            (".gitignore", "/dist\n/.wasmeca/\n__pycache__/\n"),
        ],
        Language::C => vec![
            ("{{name}}.c", include_str!("../../templates/c/plugin.c")),
            ("{{name}}.spec.jsonic", SPEC),
            (
                "wasmeca.toml",
                include_str!("../../templates/c/wasmeca.toml"),
            ),
            (".gitignore", "/dist\n/.wasmeca/\n"),
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
// compile
// ---------------------------------------------------------------------------------------------

/// Compiles every plugin `config` serves into its compile cache, so a host started later (a
/// container from an image, a `serve` after `build`) loads them without compiling: the cache
/// names each artifact by the file's blake3 hash and the engine, so a changed file or another
/// wasmtime is compiled afresh instead of trusted. Answers each file with how long it took
/// (wasmtime compiles a component's functions on every core already, so one at a time).
pub fn precompile(config: &Config) -> Result<Vec<(PathBuf, Duration)>, AuthoringError> {
    let cache = config.cache().ok_or(AuthoringError::NoCache)?;
    let runtime = crate::runtime::Runtime::new(Some(cache), config.limits.memory_bytes())
        .map_err(|e| AuthoringError::Compile(e.to_string()))?;
    if runtime.cache().is_none() {
        return Err(AuthoringError::NoCache);
    }
    let sources = config
        .plugin_sources()
        .map_err(|e| AuthoringError::Compile(e.to_string()))?;
    sources
        .iter()
        .map(|source| {
            let started = Instant::now();
            runtime
                .compile_file(&source.path)
                .map(|_| (source.path.clone(), started.elapsed()))
                .map_err(|e| AuthoringError::Compile(e.to_string()))
        })
        .collect()
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
            assert!(
                files.iter().any(|(p, _)| p == "greeter.spec.jsonic"),
                "{language}: a message spec"
            );
            // Every template shows the entity store, publishing and an observer.
            assert!(text.contains("greeter/greeting"), "{language}: an entity");
            assert!(text.contains("publish"), "{language}: publish");
            assert!(
                text.contains("observe(\"evt:greeter,cmd:greeted\"")
                    || text.contains("observe('evt:greeter,cmd:greeted'"),
                "{language}: an observer"
            );
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
}
