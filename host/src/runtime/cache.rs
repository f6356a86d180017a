//! On-disk compile cache: components precompiled once, keyed by content hash and engine
//! compatibility, and loaded again with `Component::deserialize_file` (mmap, no compilation).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Opens (creating if needed) a cache directory for this engine.
    pub fn open(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
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
        // Write to a private name and rename, so a concurrent reader never sees half a file:
        // private to this process and to this compile (two runtimes of one process, or a
        // quick start's compile behind and a `compile`, may write the same artifact at once).
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{hash}-{}.{}.{}.tmp",
            self.engine_key,
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let stored =
            std::fs::write(&tmp, &compiled).and_then(|()| std::fs::rename(&tmp, &artifact));
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

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &Path) -> wasmtime::Result<Component> {
    // SAFETY: artifacts in the cache directory are written only by `load_or_compile` above, from
    // `Engine::precompile_component`, and are named by the engine's compatibility hash, so the
    // engine loading them is one that produced them. wasmtime also checks the header and version.
    unsafe { Component::deserialize_file(engine, artifact) }
}
