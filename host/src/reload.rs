//! Hot reload: watches the plugin folders and loads, replaces or unloads plugins as files land,
//! change or go. A file is read once its writer closes it (or it is renamed into place), so a
//! file still being written is never loaded; it is compiled and initialised off the request
//! path from that private copy, and the whole plugin set is swapped at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PluginEntry};
use crate::plugins::PluginSource;
use crate::registry::Registry;

/// How long after the last event for a file it is acted on (several events come per write).
const SETTLE: Duration = Duration::from_millis(20);

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    /// The folder.
    path: PathBuf,
    /// What notify said.
    source: notify::Error,
}

/// A watched folder and how plugins landing in it are run.
#[derive(Debug, Clone)]
struct Folder {
    /// The folder.
    dir: PathBuf,
    /// Only this file name, for a `[[plugin]]` entry that names a file.
    only: Option<std::ffi::OsString>,
    /// The `[[plugin]]` entry: how plugins landing here are run (options, instances).
    entry: PluginEntry,
}

impl Folder {
    fn source(&self, path: &Path) -> Option<PluginSource> {
        let name = path.file_name()?;
        let wasm = path.extension().is_some_and(|e| e == "wasm");
        let mine = path.parent() == Some(self.dir.as_path())
            && self.only.as_ref().is_none_or(|only| only == name);
        (wasm && mine).then(|| self.entry.source(path.to_owned()))
    }
}

/// What to do with a file once it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Load it (new, or replacing what it provided before).
    Load,
    /// Stop serving what it provided.
    Unload,
}

/// The changes an event means, by path.
fn classify(event: &Event) -> Vec<(PathBuf, Change)> {
    match event.kind {
        // The writer closed it: it is whole.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => event
            .paths
            .iter()
            .map(|p| (p.clone(), Change::Load))
            .collect(),
        // Renamed into place (the atomic way to deploy), or away.
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event
            .paths
            .iter()
            .map(|p| (p.clone(), Change::Load))
            .collect(),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => event
            .paths
            .iter()
            .map(|p| (p.clone(), Change::Unload))
            .collect(),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match event.paths.as_slice() {
            [from, to] => vec![(from.clone(), Change::Unload), (to.clone(), Change::Load)],
            _ => Vec::new(),
        },
        EventKind::Remove(_) => event
            .paths
            .iter()
            .map(|p| (p.clone(), Change::Unload))
            .collect(),
        _ => Vec::new(),
    }
}

/// The folders to watch for a configuration.
fn folders(config: &Config) -> Vec<Folder> {
    config
        .plugin
        .iter()
        .filter_map(|entry| {
            let path = config.plugin_path(&entry.path);
            if path.is_dir() {
                Some(Folder {
                    dir: path,
                    only: None,
                    entry: entry.clone(),
                })
            } else {
                let dir = path.parent()?.to_owned();
                Some(Folder {
                    dir,
                    only: path.file_name().map(ToOwned::to_owned),
                    entry: entry.clone(),
                })
            }
        })
        .collect()
}

/// Watches the configuration's plugin folders until `shutdown`, keeping the registry's plugin
/// set in step with the files. Returns once watching has started; the work runs in a task.
pub fn start(
    registry: Registry,
    config: &Config,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, WatchError> {
    let folders = folders(config);
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<Event>| match event {
            Ok(event) => {
                let _ = tx.send(event);
            }
            Err(e) => tracing::warn!("plugin folder watcher: {e}"),
        })
        .map_err(|source| WatchError {
            path: PathBuf::new(),
            source,
        })?;
    let mut dirs: Vec<&PathBuf> = folders.iter().map(|f| &f.dir).collect();
    dirs.dedup();
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                path: dir.clone(),
                source,
            })?;
        tracing::info!("watching {} for plugins", dir.display());
    }
    Ok(tokio::spawn(async move {
        // Keep the watcher alive as long as the task.
        let _watcher = watcher;
        let mut due: HashMap<PathBuf, (Instant, Change)> = HashMap::new();
        loop {
            let next = due.values().map(|(at, _)| *at).min();
            tokio::select! {
                () = shutdown.cancelled() => break,
                event = rx.recv() => match event {
                    Some(event) => {
                        for (path, change) in classify(&event) {
                            if folders.iter().any(|f| f.source(&path).is_some()) {
                                due.insert(path, (Instant::now() + SETTLE, change));
                            }
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<(PathBuf, Change)> =
                        due.iter().filter(|(_, (at, _))| *at <= now).map(|(p, (_, c))| (p.clone(), *c)).collect();
                    for (path, change) in ready {
                        due.remove(&path);
                        let source = folders.iter().find_map(|f| f.source(&path));
                        if let Some(source) = source {
                            apply(&registry, &source, change).await;
                        }
                    }
                }
            }
        }
    }))
}

/// Loads or unloads one file.
async fn apply(registry: &Registry, source: &PluginSource, change: Change) {
    let path = &source.path;
    let bytes = match change {
        Change::Load => match tokio::fs::read(path).await {
            Ok(bytes) => Some(bytes),
            // Gone again before it settled: what it provided goes too.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::error!("plugin file {}: {e}; nothing changed", path.display());
                return;
            }
        },
        Change::Unload => None,
    };
    let Some(bytes) = bytes else {
        let before: Vec<String> = registry
            .snapshot()
            .plugins()
            .iter()
            .filter(|p| p.is_from(path))
            .map(|p| p.key())
            .collect();
        if !before.is_empty() && registry.swap_file(path, None).is_ok() {
            registry.clear_load_error(path);
            tracing::info!(file = %path.display(), "unloaded {}", before.join(", "));
        }
        return;
    };
    let started = std::time::Instant::now();
    match registry.load_from(source, Some(&bytes)).await {
        Ok(plugin) => {
            let replaced: Vec<String> = registry
                .snapshot()
                .plugins()
                .iter()
                .filter(|p| p.is_from(path) || p.key() == plugin.key())
                .map(|p| p.key())
                .collect();
            match registry.swap_file(path, Some(plugin.clone())) {
                Ok(()) => tracing::info!(
                    file = %path.display(),
                    "{} {} in {:?}",
                    if replaced.is_empty() { "loaded" } else { "replaced" },
                    plugin.key(),
                    started.elapsed()
                ),
                Err(refused) => {
                    let reason = format!("plugin file {}: refused: {refused}", path.display());
                    registry.record_load_error(path, &reason);
                    tracing::error!("{reason}; nothing changed");
                }
            }
        }
        Err(e) => tracing::error!("{e}; refused, nothing changed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind};

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn only_closed_or_renamed_files_load() {
        let load = |p: &str| vec![(PathBuf::from(p), Change::Load)];
        assert_eq!(
            classify(&event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/p/a.wasm"]
            )),
            load("/p/a.wasm")
        );
        assert_eq!(
            classify(&event(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &["/p/a.wasm"]
            )),
            load("/p/a.wasm")
        );
        assert_eq!(
            classify(&event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/p/a.tmp", "/p/a.wasm"]
            )),
            [
                (PathBuf::from("/p/a.tmp"), Change::Unload),
                (PathBuf::from("/p/a.wasm"), Change::Load)
            ]
        );
        assert_eq!(
            classify(&event(EventKind::Remove(RemoveKind::File), &["/p/a.wasm"]))[0].1,
            Change::Unload
        );
        // Half-written files: created or modified, not closed yet.
        assert!(classify(&event(EventKind::Create(CreateKind::File), &["/p/a.wasm"])).is_empty());
        assert!(
            classify(&event(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &["/p/a.wasm"]
            ))
            .is_empty()
        );
    }

    #[test]
    fn folders_take_wasm_files_and_file_entries_only_their_file() {
        let entry = |instances| PluginEntry {
            path: "/p".into(),
            instances,
            options: None,
            data: None,
            replace_after_growth_mib: None,
        };
        let all = Folder {
            dir: "/p".into(),
            only: None,
            entry: entry(None),
        };
        assert!(all.source(Path::new("/p/x.wasm")).is_some());
        assert!(all.source(Path::new("/p/x.txt")).is_none());
        assert!(all.source(Path::new("/q/x.wasm")).is_none());
        let one = Folder {
            dir: "/p".into(),
            only: Some("a.wasm".into()),
            entry: entry(Some(2)),
        };
        assert_eq!(
            one.source(Path::new("/p/a.wasm")).map(|s| s.instances),
            Some(2)
        );
        assert!(one.source(Path::new("/p/b.wasm")).is_none());
    }
}
