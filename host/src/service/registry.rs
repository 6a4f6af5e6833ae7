//! The live set of checks: an immutable [`Snapshot`] that runs take, and the one place that
//! replaces it when a component file is added, changed or removed.
//!
//! A run clones the `Arc` of the snapshot it starts with and the [`LoadedCheck`]s it selects
//! (each holding its own pre-linked component), so a swap never touches a run in flight: it
//! finishes on the version it started with, and its results name that version's digest.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tracing::{info, warn};

use crate::loader::{LoadError, LoadedCheck};
use crate::service::metrics::Metrics;

/// What loading one component file produced.
pub enum Outcome {
    /// The file loaded.
    Loaded(Box<LoadedCheck>),
    /// The file did not load; `digest` is the SHA-256 of what was read, when it could be read.
    Failed {
        /// Why it did not load.
        error: LoadError,
        /// The digest of the refused bytes.
        digest: Option<String>,
    },
    /// The file is gone.
    Removed,
}

/// The serving version of one component file.
#[derive(Clone)]
pub struct Active {
    /// The check, ready to run.
    pub check: LoadedCheck,
    /// Counts the versions of this file that have served, starting at 1.
    pub revision: u64,
    /// When this version started serving.
    pub since: SystemTime,
}

/// The last failed attempt to load a file.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The SHA-256 of the refused bytes, when they could be read.
    pub digest: Option<String>,
    /// Why they were refused.
    pub error: String,
    /// When.
    pub at: SystemTime,
}

/// What the service knows about one component file.
#[derive(Clone, Default)]
pub struct FileState {
    /// The version serving now, if any.
    pub active: Option<Active>,
    /// The newest content of the file did not load; `None` once a later version loads.
    pub rejected: Option<Rejection>,
    /// The newest content, valid but refused because another file serves its check id. It is
    /// kept ready so that it serves as soon as that id is free, without the file changing again
    /// (a rename `a.wasm` → `b.wasm` is seen as `b.wasm` added and `a.wasm` removed, in either
    /// order).
    pub waiting: Option<LoadedCheck>,
}

/// One consistent view of every component file; never changed once published.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Bumped on every published change.
    pub generation: u64,
    /// Every file the service has seen, by file name.
    pub files: BTreeMap<String, FileState>,
}

impl Snapshot {
    /// The serving checks, ordered by file name (the order the CLI loads them in).
    pub fn checks(&self) -> Vec<LoadedCheck> {
        self.files
            .values()
            .filter_map(|state| state.active.as_ref().map(|active| active.check.clone()))
            .collect()
    }

    /// Files whose newest content did not load, whether or not an older version still serves.
    pub fn errors(&self) -> Vec<LoadError> {
        self.files
            .iter()
            .filter_map(|(file, state)| {
                state.rejected.as_ref().map(|rejection| LoadError {
                    file: file.clone(),
                    error: rejection.error.clone(),
                })
            })
            .collect()
    }

    /// Files with no serving version because they failed to load.
    pub fn failed_count(&self) -> usize {
        self.files
            .values()
            .filter(|state| state.active.is_none() && state.rejected.is_some())
            .count()
    }
}

/// The published snapshot and the lock that orders updates.
#[derive(Default)]
pub struct Registry {
    published: RwLock<Arc<Snapshot>>,
    /// Held while an update computes the next snapshot, so two updates never race.
    updating: Mutex<()>,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// An empty registry counting its swaps in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Registry {
            metrics,
            ..Registry::default()
        }
    }

    /// The snapshot serving now. Cheap: an `Arc` clone under a read lock held for no longer.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies what loading `file` produced and publishes the result atomically.
    ///
    /// A check id freed by this change (its file removed, or changed to declare another id) is
    /// taken over in the same snapshot by the first file, by name, that was waiting for it.
    pub fn apply(&self, file: &str, outcome: Outcome) {
        let _updating = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (*self.snapshot()).clone();
        next.generation += 1;

        let mut changed = match outcome {
            Outcome::Loaded(check) => match conflicting_file(&next, file, &check.metadata.id) {
                Some(other) => {
                    let error = format!(
                        "declares check id `{}`, which `{other}` already provides; remove one of the two files",
                        check.metadata.id
                    );
                    self.reject(&mut next, file, Some(check.digest.clone()), error);
                    next.files.entry(file.to_string()).or_default().waiting = Some(*check);
                    true
                }
                None => self.accept(&mut next, file, *check),
            },
            Outcome::Failed { error, digest } => self.reject(&mut next, file, digest, error.error),
            Outcome::Removed => {
                let removed = next.files.remove(file);
                if let Some(active) = removed.as_ref().and_then(|state| state.active.as_ref()) {
                    self.metrics.swaps_removed.fetch_add(1, Ordering::Relaxed);
                    info!(component = %file, check = %active.check.metadata.id, "component removed; its check no longer runs");
                }
                removed.is_some()
            }
        };
        changed |= self.promote_waiting(&mut next);

        if changed {
            *self.published.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        }
    }

    /// Serves every waiting version whose check id no other file serves any more.
    ///
    /// Promoting one can free another id (a file whose waiting version declares a new id gives
    /// up its old one), so this repeats until nothing changes; each round consumes a waiting
    /// version, so it ends after at most one round per file. Files are taken in name order,
    /// the order a start loads them in, so the outcome does not depend on event order.
    fn promote_waiting(&self, next: &mut Snapshot) -> bool {
        let mut promoted = false;
        loop {
            let free = next.files.iter().find_map(|(file, state)| {
                let waiting = state.waiting.as_ref()?;
                conflicting_file(next, file, &waiting.metadata.id)
                    .is_none()
                    .then(|| file.clone())
            });
            let Some(file) = free else {
                return promoted;
            };
            let Some(check) = next
                .files
                .get_mut(&file)
                .and_then(|state| state.waiting.take())
            else {
                return promoted;
            };
            info!(component = %file, check = %check.metadata.id, "no other file provides this check id any more; this file now serves it");
            self.accept(next, &file, check);
            promoted = true;
        }
    }

    fn accept(&self, next: &mut Snapshot, file: &str, check: LoadedCheck) -> bool {
        let state = next.files.entry(file.to_string()).or_default();
        state.waiting = None;
        let had_rejection = state.rejected.take().is_some();
        let revision = match &state.active {
            // The same bytes again (a touch, or a bad update reverted): nothing to swap.
            Some(active) if active.check.digest == check.digest => return had_rejection,
            Some(active) => {
                self.metrics.swaps_replaced.fetch_add(1, Ordering::Relaxed);
                info!(component = %file, check = %check.metadata.id, from = %active.check.digest, to = %check.digest, "new version swapped in");
                active.revision + 1
            }
            None => {
                self.metrics.swaps_added.fetch_add(1, Ordering::Relaxed);
                info!(component = %file, check = %check.metadata.id, digest = %check.digest, "check loaded");
                1
            }
        };
        state.active = Some(Active {
            check,
            revision,
            since: SystemTime::now(),
        });
        true
    }

    fn reject(
        &self,
        next: &mut Snapshot,
        file: &str,
        digest: Option<String>,
        error: String,
    ) -> bool {
        let state = next.files.entry(file.to_string()).or_default();
        // Whatever was waiting is older than the content just refused.
        state.waiting = None;
        self.metrics.load_errors.fetch_add(1, Ordering::Relaxed);
        match &state.active {
            Some(active) => {
                self.metrics
                    .rejected_updates
                    .fetch_add(1, Ordering::Relaxed);
                warn!(component = %file, check = %active.check.metadata.id, serving = %active.check.digest, rejected = digest.as_deref().unwrap_or("unreadable"), %error, "update rejected; the previous version keeps serving");
            }
            None => {
                warn!(component = %file, digest = digest.as_deref().unwrap_or("unreadable"), %error, "component did not load");
            }
        }
        state.rejected = Some(Rejection {
            digest,
            error,
            at: SystemTime::now(),
        });
        true
    }
}

/// Another file whose serving check has the id `id` (compared ignoring case, as selection does).
fn conflicting_file(snapshot: &Snapshot, file: &str, id: &str) -> Option<String> {
    snapshot.files.iter().find_map(|(other, state)| {
        let active = state.active.as_ref()?;
        (other != file && active.check.metadata.id.eq_ignore_ascii_case(id)).then(|| other.clone())
    })
}
