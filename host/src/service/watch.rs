//! Follows the plugins folder: loads what is there at start, then every new, changed or removed
//! component (or signature) without a restart.
//!
//! A file is loaded only once its [`Stamp`] (size, modification and change times, inode) has
//! stayed the same for [`SETTLE`], so a writer that copies a file in place is normally seen once,
//! complete. Writers should still copy to another name and rename into the folder: a rename is
//! atomic. A file caught half-written anyway fails validation like any bad component, the
//! previous version keeps serving, and it is loaded again as soon as it changes. Loading
//! (reading, verifying, compiling, linking, `metadata()`) happens on this task, never on the
//! request path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::engine::DoctorEngine;
use crate::loader::{self, LoadError, LoadOptions};
use crate::service::registry::{Outcome, Registry};
use crate::service::trust::SIGNATURE_SUFFIX;

/// How long a file's [`Stamp`] must stay unchanged before it is loaded.
pub const SETTLE: Duration = Duration::from_millis(300);

/// How often pending files are looked at again.
const POLL: Duration = Duration::from_millis(100);

/// How often the whole folder is compared with what was loaded, in case an event was lost
/// (inotify drops events when its queue overflows).
const RESCAN: Duration = Duration::from_secs(2);

/// What a component file and its signature looked like when last loaded; a different stamp
/// means load it again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    component: FileStamp,
    signature: Option<FileStamp>,
}

/// What identifies one version of a file without reading it.
///
/// Size and modification time alone miss a replacement that keeps both (`cp -p`, `rsync -t`,
/// `tar x`, reproducible builds all restore the modification time, and a rebuild often has the
/// same size). The change time cannot be set by a writer, it moves on every write and on every
/// `utimes`, and a file renamed into place has a new inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    /// `(device, inode, ctime seconds, ctime nanoseconds)`.
    #[cfg(unix)]
    identity: (u64, u64, i64, i64),
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        FileStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            identity: (
                metadata.dev(),
                metadata.ino(),
                metadata.ctime(),
                metadata.ctime_nsec(),
            ),
        }
    }
}

/// The folder watcher; dropping it stops watching.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads everything in `dir` into `registry`, then keeps following the folder.
///
/// Returns once the first load is done, so the service never answers from an empty set while
/// the checks that were already there are still compiling.
pub async fn start(
    engine: Arc<DoctorEngine>,
    dir: PathBuf,
    options: LoadOptions,
    registry: Arc<Registry>,
) -> anyhow::Result<FolderWatch> {
    let (events, mut receiver) = mpsc::unbounded_channel::<String>();
    // Watching starts before the first scan so that nothing written during it is missed.
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) => {
                for name in event.paths.iter().filter_map(|path| component_name(path)) {
                    let _ = events.send(name);
                }
            }
            // Lost or overflowed events are covered by the periodic rescan.
            Err(err) => warn!(error = %err, "plugins folder watch error; relying on the rescan"),
        }
    })
    .context("cannot watch the plugins folder")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch the plugins folder `{}`", dir.display()))?;

    let mut follower = Follower {
        engine,
        dir,
        options,
        registry,
        loaded: HashMap::new(),
        pending: HashMap::new(),
    };
    for path in loader::component_files(&follower.dir)? {
        if let Some(name) = component_name(&path) {
            follower.load(&name).await;
        }
    }

    let task = tokio::spawn(async move {
        let mut poll = tokio::time::interval(POLL);
        let mut rescan = tokio::time::interval(RESCAN);
        loop {
            tokio::select! {
                Some(name) = receiver.recv() => follower.mark(name),
                _ = rescan.tick() => follower.rescan(),
                _ = poll.tick() => follower.load_settled().await,
            }
        }
    });
    Ok(FolderWatch {
        _watcher: watcher,
        task,
    })
}

/// The state of the watching task.
struct Follower {
    engine: Arc<DoctorEngine>,
    dir: PathBuf,
    options: LoadOptions,
    registry: Arc<Registry>,
    /// The stamp of each file when it was last loaded (successfully or not).
    loaded: HashMap<String, Stamp>,
    /// Files that changed, with their last seen stamp and since when it has not changed.
    pending: HashMap<String, (Option<Stamp>, Instant)>,
}

impl Follower {
    /// Notes that `name` changed; its settle time starts again.
    fn mark(&mut self, name: String) {
        let stamp = stamp(&self.dir.join(&name));
        self.pending.insert(name, (stamp, Instant::now()));
    }

    /// Marks every file whose stamp differs from the one last loaded, and every file gone.
    fn rescan(&mut self) {
        let present: Vec<String> = loader::component_files(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|path| component_name(path))
            .collect();
        let known: Vec<String> = self.registry.snapshot().files.keys().cloned().collect();
        for name in present.into_iter().chain(known) {
            if self.pending.contains_key(&name) {
                continue;
            }
            let now = stamp(&self.dir.join(&name));
            if now.as_ref() != self.loaded.get(&name) {
                debug!(component = %name, "rescan found a change");
                self.mark(name);
            }
        }
    }

    /// Loads the pending files whose stamp has not changed for [`SETTLE`]: removals first, then
    /// the rest by name.
    ///
    /// A rename settles both names in the same round; taking the removal first lets the new
    /// name take over the check id at once instead of being refused as a duplicate, and the
    /// fixed order makes the outcome the same whatever order the events came in.
    async fn load_settled(&mut self) {
        let mut settled = Vec::new();
        for (name, (last, since)) in &mut self.pending {
            let now = stamp(&self.dir.join(name.as_str()));
            if now != *last {
                *last = now;
                *since = Instant::now();
            } else if since.elapsed() >= SETTLE {
                settled.push((now.is_some(), name.clone()));
            }
        }
        settled.sort();
        for (_, name) in settled {
            self.pending.remove(&name);
            self.load(&name).await;
        }
    }

    /// Loads (or removes) one file and hands the outcome to the registry.
    async fn load(&mut self, name: &str) {
        let path = self.dir.join(name);
        // Taken before reading: if the file changes while it loads, the next look sees a
        // different stamp and loads it again.
        let Some(before) = stamp(&path) else {
            self.loaded.remove(name);
            self.registry.apply(name, Outcome::Removed);
            return;
        };
        if self.loaded.get(name) == Some(&before) {
            return;
        }

        debug!(component = %name, "loading component");
        let inspection = loader::inspect_with(&self.engine, &path, &self.options).await;
        // The digest of the bytes that were validated, not of the file as it is now: a writer
        // may have changed it since, and the rejection must name what was actually refused.
        let digest = inspection.digest.clone();
        let outcome = match loader::into_loaded(inspection, &path) {
            Ok(check) => Outcome::Loaded(Box::new(check)),
            Err(error) => Outcome::Failed {
                error: LoadError {
                    file: name.to_string(),
                    error,
                },
                digest,
            },
        };
        self.loaded.insert(name.to_string(), before);
        self.registry.apply(name, outcome);
    }
}

/// The component file an event path concerns: `x.wasm` for `x.wasm` and `x.wasm.sig`.
fn component_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let component = name.strip_suffix(SIGNATURE_SUFFIX).unwrap_or(name);
    (component.ends_with(".wasm") && !component.starts_with('.')).then(|| component.to_string())
}

/// The stamps of the component and its signature; `None` when the component is not a regular
/// file (gone, or a directory).
fn stamp(path: &Path) -> Option<Stamp> {
    let of = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| FileStamp::of(&m))
    };
    Some(Stamp {
        component: of(path)?,
        signature: of(&crate::service::trust::signature_path(path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_the_component_they_concern() {
        assert_eq!(
            component_name(Path::new("/p/check.wasm")).as_deref(),
            Some("check.wasm")
        );
        assert_eq!(
            component_name(Path::new("/p/check.wasm.sig")).as_deref(),
            Some("check.wasm")
        );
        assert_eq!(component_name(Path::new("/p/check.wasm.tmp")), None);
        assert_eq!(component_name(Path::new("/p/.check.wasm")), None);
        assert_eq!(component_name(Path::new("/p/notes.txt")), None);
    }
}
