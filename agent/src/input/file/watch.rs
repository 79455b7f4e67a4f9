//! Watching: filesystem events (inotify on Linux, through `notify`) wake the reader of
//! a file that changed and ask the coordinator for a rescan when a matching file
//! appears, moves or goes away.
//!
//! Each include pattern is watched at its static prefix, the directory before its first
//! wildcard; when a directory component holds a wildcard or `**`, every directory below
//! it is watched too. Directories are watched one by one (not with `notify`'s recursive
//! mode) so that an unreadable subdirectory only loses its own events; new directories
//! are picked up at the next rescan after a directory event. A prefix that does not
//! exist yet is no error: it is watched once it appears.
//!
//! Events are only hints. Periodic rescans and the readers' poll tick catch whatever
//! the watcher misses (network filesystems, exhausted inotify limits, event queue
//! overflow), so nothing here may be needed for correctness.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use notify::event::{AccessKind, CreateKind, ModifyKind, RemoveKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::discover::PathFilter;

/// Directory levels watched below a recursive prefix.
const MAX_DEPTH: usize = 32;

/// A directory to watch for one or more include patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WatchSpec {
    pub dir: PathBuf,
    /// Watch every directory below `dir` too.
    pub recursive: bool,
}

/// The directories to watch for absolute glob `patterns`, without overlaps.
pub(crate) fn watch_specs<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Vec<WatchSpec> {
    let mut specs: Vec<WatchSpec> = Vec::new();
    for pattern in patterns {
        let comps: Vec<&str> = pattern.split('/').collect();
        let wild = comps.iter().position(|c| c.contains(['*', '?', '[']));
        let (dir, recursive) = match wild {
            Some(i) => (comps[..i].join("/"), i + 1 < comps.len()),
            None => (comps[..comps.len().saturating_sub(1)].join("/"), false),
        };
        let dir = if dir.is_empty() {
            PathBuf::from("/")
        } else {
            PathBuf::from(dir)
        };
        match specs.iter_mut().find(|s| s.dir == dir) {
            Some(s) => s.recursive |= recursive,
            None => specs.push(WatchSpec { dir, recursive }),
        }
    }
    let covered = |s: &WatchSpec, all: &[WatchSpec]| {
        all.iter()
            .any(|o| o.recursive && o.dir != s.dir && s.dir.starts_with(&o.dir))
    };
    let keep: Vec<bool> = specs.iter().map(|s| !covered(s, &specs)).collect();
    let mut keep = keep.into_iter();
    specs.retain(|_| keep.next().unwrap_or(true));
    specs.sort_by(|a, b| a.dir.cmp(&b.dir));
    specs
}

/// What a watcher event for a path wakes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The reader of a tailed file.
    Reader(Arc<Notify>),
    /// A matching file that cannot be opened: only a change of its attributes matters.
    Unreadable,
}

/// Shared between the watcher's callback thread and the coordinator.
#[derive(Debug)]
pub(crate) struct Hub {
    targets: Mutex<HashMap<PathBuf, Target>>,
    /// Wakes the coordinator for a rescan.
    pub rescan: Notify,
    dirs_changed: AtomicBool,
    filter: Arc<PathFilter>,
}

impl Hub {
    pub(crate) fn new(filter: Arc<PathFilter>) -> Self {
        Hub {
            targets: Mutex::new(HashMap::new()),
            rescan: Notify::new(),
            dirs_changed: AtomicBool::new(false),
            filter,
        }
    }

    /// Replace the path → target map (after every scan).
    pub(crate) fn set_targets(&self, targets: HashMap<PathBuf, Target>) {
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = targets;
    }

    /// Whether directories appeared, moved or vanished since the last call.
    pub(crate) fn take_dirs_changed(&self) -> bool {
        self.dirs_changed.swap(false, Ordering::Relaxed)
    }

    fn on_event(&self, event: notify::Result<Event>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                debug!(error = %e, "file watcher error; rescanning");
                self.rescan.notify_one();
                return;
            }
        };
        let kind = event.kind;
        if matches!(kind, EventKind::Access(AccessKind::Open(_))) {
            return;
        }
        let structural = matches!(
            kind,
            EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        let dirs = event.need_rescan()
            || matches!(
                kind,
                EventKind::Create(CreateKind::Folder | CreateKind::Any | CreateKind::Other)
                    | EventKind::Remove(RemoveKind::Folder | RemoveKind::Any | RemoveKind::Other)
                    | EventKind::Modify(ModifyKind::Name(_))
            );
        let mut rescan = dirs;
        {
            let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
            for path in &event.paths {
                match targets.get(path) {
                    Some(Target::Reader(wake)) => {
                        wake.notify_one();
                        rescan |= structural;
                    }
                    Some(Target::Unreadable) => {
                        rescan |= structural
                            || matches!(kind, EventKind::Modify(ModifyKind::Metadata(_)));
                    }
                    None => rescan = rescan || self.filter.matches(path),
                }
            }
        }
        if dirs {
            self.dirs_changed.store(true, Ordering::Relaxed);
        }
        if rescan {
            self.rescan.notify_one();
        }
    }
}

/// The watcher and the directories it watches. Used from the blocking pool.
pub(crate) struct Watch {
    watcher: Option<RecommendedWatcher>,
    specs: Vec<WatchSpec>,
    watched: HashSet<PathBuf>,
    limit_warned: bool,
}

impl Watch {
    /// Create the watcher. Without one (no inotify instance left, say) the input
    /// still works from rescans and polling, so that is a warning, not an error.
    pub(crate) fn new(specs: Vec<WatchSpec>, hub: Arc<Hub>) -> Self {
        let watcher = match notify::recommended_watcher(move |ev| hub.on_event(ev)) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "file watcher unavailable; relying on periodic rescans and polling");
                None
            }
        };
        Watch {
            watcher,
            specs,
            watched: HashSet::new(),
            limit_warned: false,
        }
    }

    /// Watch prefix directories that appeared since the last call. With `walk`
    /// (directories changed), also re-list the trees below recursive prefixes and drop
    /// watches of directories that are gone.
    pub(crate) fn refresh(&mut self, walk: bool) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for spec in &self.specs {
            if walk || !self.watched.contains(&spec.dir) {
                let mut dirs = Vec::new();
                if spec.recursive {
                    walk_dirs(&spec.dir, &mut dirs);
                } else if spec.dir.is_dir() {
                    dirs.push(spec.dir.clone());
                }
                if walk {
                    let live: HashSet<&Path> = dirs.iter().map(PathBuf::as_path).collect();
                    self.watched.retain(|d| {
                        let stale = d.starts_with(&spec.dir)
                            && (spec.recursive || d == &spec.dir)
                            && !live.contains(d.as_path());
                        if stale {
                            let _ = watcher.unwatch(d);
                        }
                        !stale
                    });
                }
                for dir in dirs {
                    if self.watched.contains(&dir) {
                        continue;
                    }
                    match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                        Ok(()) => {
                            self.watched.insert(dir);
                        }
                        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                            if !self.limit_warned {
                                self.limit_warned = true;
                                warn!(dir = %dir.display(), "inotify watch limit reached; relying on periodic rescans and polling for the rest");
                            }
                            return;
                        }
                        Err(e) => {
                            debug!(dir = %dir.display(), error = %e, "cannot watch directory")
                        }
                    }
                }
            }
        }
    }
}

/// `root` and the directories below it (symlinks not followed), depth-limited.
fn walk_dirs(root: &Path, out: &mut Vec<PathBuf>) {
    if !root.is_dir() {
        return;
    }
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if depth < MAX_DEPTH
            && let Ok(entries) = std::fs::read_dir(&dir)
        {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        out.push(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &str, recursive: bool) -> WatchSpec {
        WatchSpec {
            dir: PathBuf::from(dir),
            recursive,
        }
    }

    #[test]
    fn static_prefix_and_recursion() {
        assert_eq!(
            watch_specs(["/var/log/app/*.log"]),
            vec![spec("/var/log/app", false)]
        );
        assert_eq!(
            watch_specs(["/var/log/**/*.log"]),
            vec![spec("/var/log", true)]
        );
        assert_eq!(watch_specs(["/srv/*/logs/*.log"]), vec![spec("/srv", true)]);
        assert_eq!(
            watch_specs(["/var/log/syslog"]),
            vec![spec("/var/log", false)]
        );
        assert_eq!(watch_specs(["/*.log"]), vec![spec("/", false)]);
    }

    #[test]
    fn overlapping_prefixes_are_merged() {
        assert_eq!(
            watch_specs([
                "/var/log/app/*.log",
                "/var/log/**/*.txt",
                "/srv/a/*.log",
                "/srv/a/b"
            ]),
            vec![spec("/srv/a", false), spec("/var/log", true)]
        );
        assert_eq!(
            watch_specs(["/a/*.log", "/a/*/x.log"]),
            vec![spec("/a", true)]
        );
    }
}
