//! File input: tails the files matched by include globs and turns their lines into
//! record blocks ([`Chunk`]s) for the batcher.
//!
//! Brief overview:
//! - [`FileInput::run`] is the coordinator. It rescans the globs (`discover`) at
//!   start-up, every `rescan_interval` and when the watcher (`watch`) reports a
//!   relevant event, starts one reader task per new file, and tells readers whose file
//!   no longer matches any path that they are orphaned.
//! - A reader (`reader`) owns one open file and sends one encoded block per read of up
//!   to `chunk_bytes`. It waits on the bounded channel when it is full (backpressure:
//!   the file waits on disk) and sleeps until a watcher event or its poll tick when it
//!   has read everything.
//! - Files are tracked by device and inode (`fingerprint`), so an inode seen under a
//!   second path (a rename, a link) is not read twice; each record carries its file's
//!   `source_id` and byte offset. A chunk's `path` is the path the file was first
//!   seen under, kept after a rename so that one file stays one source.
//!
//! Checkpoints come in as [`ResumePoint`]s: a file whose device, inode and first
//! bytes match continues at its checkpointed offset. Truncation is detected by size
//! (the file shrank below the read position) and by the first bytes changing (a file
//! truncated and refilled past the position between two looks); either way the file
//! is read again from 0 as a new generation, which is a new source id.
//!
//! A file seen for the first time may hold content already known: a rotated copy
//! (`copytruncate`) or a compressed rotation. `marks` recognizes it by its first
//! line and the bytes before a known position, and the file continues that content
//! under its identity (see [`Lineage`]). Files ending in `.gz` are decompressed
//! (`gz`), read once to their end and never followed.

mod anchor;
mod discover;
mod fingerprint;
mod gz;
mod reader;
mod watch;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_copies;
#[cfg(test)]
mod tests_input;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use self::anchor::Anchor;
pub use self::discover::{Guard, Preview, preview};
use self::discover::{PathFilter, ScanOutcome, Scanner};
pub(crate) use self::fingerprint::FileKey;
use self::reader::{ExitReason, Follow, ReaderExit, TailConfig};
use self::watch::{Hub, Target, Watch, WatchSpec, watch_specs};
use crate::checkpoint::{CopyOf, FileMark, Lineage, Marks, RegistrationInfo, ResumePoint};
pub use crate::input::Chunk;

/// Event-triggered rescans are at most this frequent (a burst of events is one scan).
const MIN_RESCAN_GAP: Duration = Duration::from_millis(100);
/// Lower bound for the rescan and poll intervals, so a zero can never busy-loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Settings of one file input, already resolved from the config.
#[derive(Debug, Clone)]
pub struct FileInputSettings {
    pub topic: Arc<str>,
    pub host: Arc<str>,
    /// Glob patterns, absolute or relative to the current directory.
    pub include: Vec<String>,
    /// Glob patterns matched against the full path and against the file name (so
    /// `*.gz` excludes `/a/b.gz`). `*` does not cross `/`, `**` does.
    pub exclude: Vec<String>,
    /// For files seen at start-up: read them from 0 instead of from their end. Files
    /// that appear later are always read from 0.
    pub read_from_beginning: bool,
    /// Static fields, a JSON object, or empty.
    pub fields_json: Arc<[u8]>,
    /// Longer lines are split into pieces of this size marked `FLAG_PARTIAL`.
    pub max_line_bytes: usize,
    /// `parse: json`.
    pub json: Option<crate::input::json::JsonParse>,
    /// `format: cri | docker`.
    pub format: Option<crate::input::container::Format>,
    /// `multiline`.
    pub multiline: Option<crate::input::multiline::Multiline>,
    /// Periodic glob rescan, the fallback for missed watcher events.
    pub rescan_interval: Duration,
    /// How often an idle reader checks its file when no watcher event came.
    pub poll_interval: Duration,
    /// Bytes read per syscall (and so the input size of one chunk).
    pub chunk_bytes: usize,
    /// A file without new data for this long is closed until it changes.
    pub close_inactive: Duration,
    /// Where to continue files read by an earlier run (from the checkpoints).
    pub resume: Vec<ResumePoint>,
    /// Registry of the identity behind every `source_id` this input produces, for
    /// the checkpoints (shared by all file inputs of an agent).
    pub marks: Arc<Marks>,
    /// The agent's counters (files open).
    pub stats: Arc<crate::stats::AgentStats>,
    /// Symlinks and the agent's own files: what is not read whatever the globs say.
    pub guard: Guard,
}

/// Why a file input cannot start or stopped.
#[derive(Debug, Error)]
pub enum FileInputError {
    #[error("file input needs at least one include pattern")]
    NoInclude,
    #[error("invalid glob pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
    #[error("relative pattern {pattern:?} needs the current directory: {source}")]
    CurrentDir {
        pattern: String,
        #[source]
        source: std::io::Error,
    },
    #[error("file input {what} task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Tails the files of one `type: file` input.
#[derive(Debug)]
pub struct FileInput {
    filter: Arc<PathFilter>,
    specs: Vec<WatchSpec>,
    cfg: Arc<TailConfig>,
    read_from_beginning: bool,
    rescan_interval: Duration,
    poll_interval: Duration,
    close_inactive: Duration,
    resume: Vec<ResumePoint>,
    stats: Arc<crate::stats::AgentStats>,
}

/// A file with a running reader.
struct Tracked {
    wake: Arc<Notify>,
    orphaned: Arc<AtomicBool>,
}

/// The running readers of one input and the files they follow.
struct Readers {
    tracked: HashMap<FileKey, Tracked>,
    tasks: JoinSet<ReaderExit>,
    task_keys: HashMap<tokio::task::Id, FileKey>,
    tx: mpsc::Sender<Chunk>,
    shutdown: CancellationToken,
    poll_interval: Duration,
    close_inactive: Duration,
    stats: Arc<crate::stats::AgentStats>,
}

impl Readers {
    /// Start readers for newly opened files, flag the files that no longer match any
    /// path, and point watcher events at the current paths.
    fn apply_scan(&mut self, out: ScanOutcome, hub: &Hub) {
        for tail in out.opened {
            let key = tail.key();
            let t = Tracked {
                wake: Arc::new(Notify::new()),
                orphaned: Arc::new(AtomicBool::new(false)),
            };
            let follow = Follow {
                tx: self.tx.clone(),
                shutdown: self.shutdown.clone(),
                wake: t.wake.clone(),
                orphaned: t.orphaned.clone(),
                poll_interval: self.poll_interval,
                close_inactive: self.close_inactive,
                stats: self.stats.clone(),
            };
            self.stats.files_open.fetch_add(1, Ordering::Relaxed);
            let handle = self.tasks.spawn(reader::follow(tail, follow));
            self.task_keys.insert(handle.id(), key);
            self.tracked.insert(key, t);
        }
        let present: HashSet<FileKey> = out.found.iter().map(|f| f.key).collect();
        for (key, t) in &self.tracked {
            let gone = !present.contains(key);
            if t.orphaned.swap(gone, Ordering::Relaxed) != gone && gone {
                t.wake.notify_one();
            }
        }
        let mut targets: HashMap<PathBuf, Target> = out
            .unreadable
            .into_iter()
            .map(|p| (p, Target::Unreadable))
            .collect();
        for f in out.found {
            if let Some(t) = self.tracked.get(&f.key) {
                targets.insert(f.path, Target::Reader(t.wake.clone()));
            }
        }
        hub.set_targets(targets);
    }

    /// Forget a stopped reader. `None` when it was not a clean exit (panic).
    fn on_exit(
        &mut self,
        r: Result<(tokio::task::Id, ReaderExit), tokio::task::JoinError>,
    ) -> Option<ReaderExit> {
        match r {
            Ok((id, exit)) => {
                self.stats.files_open.fetch_sub(1, Ordering::Relaxed);
                self.task_keys.remove(&id);
                self.tracked.remove(&exit.key);
                Some(exit)
            }
            Err(e) => {
                self.stats.files_open.fetch_sub(1, Ordering::Relaxed);
                warn!(error = %e, "file reader task failed");
                if let Some(key) = self.task_keys.remove(&e.id()) {
                    self.tracked.remove(&key);
                }
                None
            }
        }
    }
}

impl FileInput {
    /// Compile the globs; a bad pattern is an error naming it.
    pub fn new(settings: FileInputSettings) -> Result<Self, FileInputError> {
        let filter = Arc::new(
            PathFilter::new(&settings.include, &settings.exclude)?
                .with_guard(settings.guard.clone()),
        );
        let specs = watch_specs(filter.include_patterns());
        Ok(FileInput {
            filter,
            specs,
            cfg: Arc::new(TailConfig {
                topic: settings.topic,
                host: settings.host,
                fields: settings.fields_json,
                chunk_bytes: settings.chunk_bytes.max(1),
                max_line_bytes: settings.max_line_bytes.clamp(1, u32::MAX as usize),
                json: settings.json.map(Arc::new),
                format: settings.format,
                multiline: settings.multiline.map(Arc::new),
                marks: settings.marks,
            }),
            resume: settings.resume,
            read_from_beginning: settings.read_from_beginning,
            rescan_interval: settings.rescan_interval.max(MIN_INTERVAL),
            poll_interval: settings.poll_interval.max(MIN_INTERVAL),
            close_inactive: settings.close_inactive.max(MIN_INTERVAL),
            stats: settings.stats,
        })
    }

    /// Tail until `shutdown` is cancelled (then return `Ok` promptly) or the receiver
    /// of `tx` is gone. Files that vanish or fail to read are logged and dropped.
    pub async fn run(
        self,
        tx: mpsc::Sender<Chunk>,
        shutdown: CancellationToken,
    ) -> Result<(), FileInputError> {
        let hub = Arc::new(Hub::new(self.filter.clone()));
        let watch = Watch::new(self.specs.clone(), hub.clone());
        let mut scanner = Some(Scanner::new(
            self.filter.clone(),
            watch,
            self.cfg.clone(),
            self.read_from_beginning,
        ));
        if let Some(sc) = scanner.as_mut() {
            for r in &self.resume {
                sc.resume(r.clone());
            }
        }
        let mut readers = Readers {
            tracked: HashMap::new(),
            tasks: JoinSet::new(),
            task_keys: HashMap::new(),
            tx,
            shutdown: shutdown.clone(),
            poll_interval: self.poll_interval,
            close_inactive: self.close_inactive,
            stats: self.stats.clone(),
        };
        let min_gap = self.rescan_interval.min(MIN_RESCAN_GAP);
        let mut last_scan = Instant::now();
        let mut scan_now = true;

        let result = loop {
            if scan_now {
                scan_now = false;
                let Some(mut sc) = scanner.take() else {
                    break Ok(());
                };
                let keys: HashSet<FileKey> = readers.tracked.keys().copied().collect();
                let dirs_changed = hub.take_dirs_changed();
                let job = tokio::task::spawn_blocking(move || {
                    let out = sc.rescan(&keys, dirs_changed);
                    (sc, out)
                });
                let (sc, out) = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break Ok(()),
                    r = job => match r {
                        Ok(v) => v,
                        Err(source) => break Err(FileInputError::Task { what: "scan", source }),
                    },
                };
                scanner = Some(sc);
                last_scan = Instant::now();
                let seen = out.found.iter().map(|f| f.key);
                let open = out.opened.iter().map(reader::Tail::key);
                let held = readers.tracked.keys().copied();
                self.cfg
                    .marks
                    .saw(seen.chain(open).chain(held), last_scan.into_std());
                readers.apply_scan(out, &hub);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                Some(r) = readers.tasks.join_next_with_id() => {
                    let Some(exit) = readers.on_exit(r) else { continue };
                    match exit.reason {
                        ExitReason::ChannelClosed => {
                            debug!("chunk receiver gone; file input stops");
                            break Ok(());
                        }
                        ExitReason::Shutdown => {}
                        ExitReason::Orphaned
                        | ExitReason::Failed
                        | ExitReason::Idle
                        | ExitReason::Finished => {
                            if let (Some(closed), Some(sc)) = (exit.closed, scanner.as_mut()) {
                                sc.remember(exit.key, closed);
                            }
                        }
                    }
                }
                _ = hub.rescan.notified() => {
                    let at = last_scan + min_gap;
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break Ok(()),
                        _ = tokio::time::sleep_until(at) => scan_now = true,
                    }
                }
                _ = tokio::time::sleep_until(last_scan + self.rescan_interval) => scan_now = true,
            }
        };
        let stopped = readers.tasks.len() as u64;
        // Readers stop by themselves on shutdown; those assembling a record send it
        // first (bounded), then whatever is left is aborted.
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while readers.tasks.join_next().await.is_some() {}
        })
        .await;
        readers.tasks.shutdown().await;
        self.stats.files_open.fetch_sub(stopped, Ordering::Relaxed);
        result
    }
}
