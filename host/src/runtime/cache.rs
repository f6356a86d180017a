//! On-disk compile cache: components precompiled once, keyed by content hash and engine
//! compatibility, compiled here or by a compiler process (`wasmeca compile-behind`), and loaded
//! again with `Component::deserialize_file` (mmap, no compilation).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components (`<blake3>-<engine>.cwasm`).
#[derive(Debug, Clone)]
pub struct CompileCache {
    /// The cache directory; created on open.
    dir: PathBuf,
    /// Hex digest of the engine's compatibility hash: artifacts from another wasmtime version or
    /// configuration get another name and are never loaded by this engine.
    engine_key: String,
}

impl CompileCache {
    /// Opens (creating if needed) a cache directory for this engine, removing what writes cut
    /// short long ago left in it ([`sweep`]).
    pub fn open(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        sweep(&dir, ABANDONED);
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    /// The default location: `$WASMECA_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmeca`, else
    /// `~/.cache/wasmeca`, else a folder in the system temp dir.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("WASMECA_CACHE_DIR") {
            return dir.into();
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Path::new(&dir).join("wasmeca");
        }
        if let Some(home) = std::env::var_os("HOME") {
            return Path::new(&home).join(".cache").join("wasmeca");
        }
        std::env::temp_dir().join("wasmeca-cache")
    }

    /// Where the artifact for a file with this content hash lives.
    pub fn artifact(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}.cwasm", self.engine_key))
    }

    /// The folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Puts a file written at `private` (in this folder) in place as `hash`'s artifact: a
    /// rename, so a reader sees it whole or not at all.
    pub(crate) fn keep(&self, private: &Path, hash: &str) -> std::io::Result<()> {
        std::fs::rename(private, self.artifact(hash))
    }

    /// Loads the precompiled artifact for `hash`, compiling and storing it first when absent
    /// or unreadable.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
    ) -> Result<Component, String> {
        let artifact = self.artifact(hash);
        if artifact.exists() {
            match deserialize(engine, &artifact) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(artifact = %artifact.display(), "recompiling a cached artifact that does not load: {e:#}")
                }
            }
        }
        let compiled = engine.precompile_component(bytes);
        super::give_back_compile_memory();
        let compiled = compiled.map_err(|e| format!("{e:#}"))?;
        // Write to a private name and rename, so a concurrent reader never sees half a file.
        let tmp = private_file(&self.dir, hash);
        let stored = std::fs::write(&tmp, &compiled).and_then(|()| self.keep(&tmp, hash));
        match stored {
            Ok(()) => deserialize(engine, &artifact).map_err(|e| format!("{e:#}")),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(dir = %self.dir.display(), "compile cache not writable ({e}); loading from memory");
                #[allow(unsafe_code)]
                // SAFETY: `compiled` was produced by `precompile_component` on this very engine.
                unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| format!("{e:#}"))
            }
        }
    }
}

/// How old a private file ([`private_file`]) must be for [`sweep`] to take it for abandoned: far
/// longer than any compile takes, so a write in progress in another host sharing the folder
/// (whose process this host cannot see) is never taken for one.
const ABANDONED: Duration = Duration::from_secs(3600);

/// Removes from `dir` the private files ([`private_file`]) last written more than `age` ago:
/// left by a process stopped during a write, or by a compiler process whose host was stopped
/// before it could load the file. Best effort: what cannot be read or removed stays.
fn sweep(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = || {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|elapsed| elapsed > age))
        };
        if is_private(&entry.file_name().to_string_lossy()) && old() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// True for a name [`private_file`] makes (`.<hash>.<pid>.<n>.tmp`, the hash a BLAKE3 digest in
/// hex), and no other: the cache folder may be one other programs write in too
/// (`WASMECA_CACHE_DIR=/tmp`).
fn is_private(name: &str) -> bool {
    let Some(parts) = name
        .strip_prefix('.')
        .and_then(|name| name.strip_suffix(".tmp"))
    else {
        return false;
    };
    let parts: Vec<&str> = parts.split('.').collect();
    let all = |s: &str, of: fn(&u8) -> bool| !s.is_empty() && s.bytes().all(|b| of(&b));
    let number = |s: &str| all(s, u8::is_ascii_digit);
    matches!(parts[..], [hash, pid, n]
        if hash.len() == 64 && all(hash, u8::is_ascii_hexdigit) && number(pid) && number(n))
}

/// A file name in `dir` for a write of `hash`'s compiled code in progress: private to this
/// process and to this write (two runtimes of one process, a compile behind and a `wasmeca
/// compile`, or two hosts sharing the folder may write the same artifact at once).
pub(crate) fn private_file(dir: &Path, hash: &str) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(
        ".{hash}.{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Has `program compile-behind` (the host's own binary) compile the component `bytes` (Winch's
/// code with `baseline`, else Cranelift's) into the file `out`, in a process of its own, and
/// waits for it: what the compiler allocates leaves with that process. The process leads a
/// process group of its own, so a terminal's Ctrl-C, meant for the host, does not cut its
/// compile short (and have the host take it for a compiler that cannot run).
pub(crate) fn compile_by(
    program: &Path,
    bytes: &[u8],
    baseline: bool,
    out: &Path,
) -> Result<(), Elsewhere> {
    let mut child = Command::new(program);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    child.arg("compile-behind");
    if baseline {
        child.arg("--baseline");
    }
    // It writes no logs: its stderr is what it says when it fails.
    let mut child = child
        .arg({
            let mut arg = std::ffi::OsString::from("--out=");
            arg.push(out);
            arg
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Elsewhere::NotRun(e.to_string()))?;
    // Dropped once written: the child reads to the end of its input before it writes anything.
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(bytes),
        None => Ok(()),
    };
    let output = child
        .wait_with_output()
        .map_err(|e| Elsewhere::NotRun(e.to_string()))?;
    let said = String::from_utf8_lossy(&output.stderr);
    let said = said.trim();
    let not_run = |why: String| {
        Elsewhere::NotRun(if said.is_empty() {
            why
        } else {
            format!("{why}: {said}")
        })
    };
    match (written, output.status.code()) {
        (Ok(()), Some(0)) => Ok(()),
        // A child that did not get the whole component cannot have judged it.
        (Err(e), _) => Err(not_run(format!("writing the component to it: {e}"))),
        // `compile-behind` answers a component that does not compile with 1, anything else
        // that stops it with 2.
        (Ok(()), Some(1)) => Err(Elsewhere::Failed(
            said.strip_prefix("error: ").unwrap_or(said).to_owned(),
        )),
        (Ok(()), Some(code)) => Err(not_run(format!("exit {code}"))),
        (Ok(()), None) => Err(not_run("killed".to_owned())),
    }
}

/// Why [`compile_by`] left no compiled code.
#[derive(Debug)]
pub(crate) enum Elsewhere {
    /// The component does not compile: what the compiler said.
    Failed(String),
    /// The compiler process did not run or did not finish (not found, killed, out of
    /// memory...): the host compiles in its own process instead.
    NotRun(String),
}

#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &Engine, artifact: &Path) -> wasmtime::Result<Component> {
    // SAFETY: artifacts in the cache directory are written only by `load_or_compile` above and
    // by `wasmeca compile-behind` (`compile_by`, the host's own binary), both from
    // `Engine::precompile_component`, and the cache's are named by the engine's compatibility
    // hash, so the engine loading them is one that produced them. wasmtime also checks the
    // header, its version and the engine's compatibility.
    unsafe { Component::deserialize_file(engine, artifact) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_only_private_files_older_than_its_age() {
        let dir = std::env::temp_dir().join(format!("wasmeca-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the folder");
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        let written_long_ago = |path: PathBuf| {
            std::fs::File::create(&path)
                .and_then(|f| f.set_modified(long_ago))
                .expect("a file written long ago");
            path
        };
        let hash = "0123456789abcdef".repeat(4);
        let abandoned = written_long_ago(private_file(&dir, &hash));
        let in_progress = private_file(&dir, &hash);
        std::fs::write(&in_progress, b"").expect("a write in progress");
        let artifact = written_long_ago(dir.join(format!("{hash}-0123.cwasm")));
        let not_ours = [
            ".notes.tmp",
            ".a.b.c.tmp",
            ".abc.1.2.tmp",
            &format!(".{hash}.1.tmp"),
        ]
        .map(|name| written_long_ago(dir.join(name)));
        sweep(&dir, ABANDONED);
        assert!(!abandoned.exists(), "an abandoned write is removed");
        assert!(in_progress.exists(), "a recent write is kept");
        assert!(artifact.exists(), "an artifact is kept");
        for file in not_ours {
            assert!(file.exists(), "{} is not ours: kept", file.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
