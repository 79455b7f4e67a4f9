//! Discovery: expand the include globs into the regular files to tail, drop excluded
//! paths, and open the files no reader follows yet.
//!
//! A scan never fails: an unreadable directory or file is reported once (warn) and
//! skipped, then retried on later scans (a file only once its `ctime` changed, e.g. by
//! a `chmod`). Discovery decides where a new file starts (its end at start-up unless
//! `read_from_beginning`, 0 later, or where an earlier reader of the same inode
//! stopped); it does not read lines.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use glob::{MatchOptions, Pattern};
use tracing::{debug, warn};

use super::FileInputError;
use super::fingerprint::FileKey;
use super::reader::{Closed, StartAt, Tail, TailConfig};
use super::watch::Watch;

/// How long the position of a closed file is remembered in case its inode shows up
/// again under a matching path (renamed back, or a scan that raced a rename).
const CLOSED_TTL: Duration = Duration::from_secs(300);

/// `*` and `?` stay inside one path component; `**` crosses directories.
const PATH_MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Compiled include and exclude patterns, and what is never read whatever they
/// match.
#[derive(Debug)]
pub(crate) struct PathFilter {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
    guard: Guard,
}

/// What a file input refuses to read even when its globs match: symlinks to files
/// the globs do not match (unless `follow_symlinks`), and the agent's own files.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Read a symlink whatever its target.
    pub follow_symlinks: bool,
    /// Never read these files (the config, TLS keys and certificates).
    pub files: Vec<PathBuf>,
    /// Never read a file directly in these directories (`data_dir`, its spool).
    pub dirs: Vec<PathBuf>,
}

/// Identity of a file or directory for the guard's comparisons.
fn dev_ino(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Where a symlink finally points, resolved without following the directories on
/// the way (so that a link beside its target stays in the watched directory);
/// `None` for a dangling link or a loop.
pub(crate) fn resolve_link(path: &Path) -> Option<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..16 {
        let meta = fs::symlink_metadata(&p).ok()?;
        if !meta.file_type().is_symlink() {
            return Some(p);
        }
        let target = fs::read_link(&p).ok()?;
        let joined = p
            .parent()
            .map_or_else(|| target.clone(), |d| d.join(&target));
        p = normalize(&joined);
    }
    None
}

/// `.` and `..` removed lexically.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl PathFilter {
    /// Compile the patterns. Relative include patterns (and relative exclude patterns
    /// naming directories) are taken relative to the current directory.
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Self, FileInputError> {
        if include.is_empty() {
            return Err(FileInputError::NoInclude);
        }
        let mut cwd = None;
        let mut compile = |pattern: &String, absolutize: bool| {
            let text = if absolutize && !Path::new(pattern).is_absolute() {
                if cwd.is_none() {
                    let dir =
                        std::env::current_dir().map_err(|source| FileInputError::CurrentDir {
                            pattern: pattern.clone(),
                            source,
                        })?;
                    cwd = Some(Pattern::escape(&dir.to_string_lossy()));
                }
                let base = cwd.as_deref().unwrap_or_default().trim_end_matches('/');
                let rel = pattern.trim_start_matches("./");
                format!("{base}/{rel}")
            } else {
                pattern.clone()
            };
            Pattern::new(&text).map_err(|source| FileInputError::Pattern {
                pattern: pattern.clone(),
                source,
            })
        };
        let include = include
            .iter()
            .map(|p| compile(p, true))
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = exclude
            .iter()
            .map(|p| compile(p, p.contains('/')))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PathFilter {
            include,
            exclude,
            guard: Guard::default(),
        })
    }

    /// The same patterns with `guard` applied.
    pub(crate) fn with_guard(self, guard: Guard) -> Self {
        PathFilter { guard, ..self }
    }

    /// The absolute include patterns.
    pub(crate) fn include_patterns(&self) -> impl Iterator<Item = &str> {
        self.include.iter().map(Pattern::as_str)
    }

    /// Excluded by its full path or by its file name.
    pub(crate) fn is_excluded(&self, path: &Path) -> bool {
        let name = path.file_name().map(|n| n.to_string_lossy());
        self.exclude.iter().any(|p| {
            p.matches_path_with(path, PATH_MATCH)
                || name
                    .as_deref()
                    .is_some_and(|n| p.matches_with(n, PATH_MATCH))
        })
    }

    /// Matched by an include pattern and not excluded.
    pub(crate) fn matches(&self, path: &Path) -> bool {
        self.include
            .iter()
            .any(|p| p.matches_path_with(path, PATH_MATCH))
            && !self.is_excluded(path)
    }
}

/// A regular file found by a scan.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub path: PathBuf,
    pub key: FileKey,
    pub ctime: (i64, i64),
    pub size: u64,
}

/// What one rescan produced.
pub(crate) struct ScanOutcome {
    /// Every matching regular file, one entry per path (an inode may appear twice).
    pub found: Vec<Found>,
    /// Newly opened files, ready for a reader.
    pub opened: Vec<Tail>,
    /// Matching paths that cannot be opened.
    pub unreadable: Vec<PathBuf>,
}

/// Discovery state carried from scan to scan; lives on the blocking pool while a
/// scan runs.
pub(crate) struct Scanner {
    filter: Arc<PathFilter>,
    watch: Watch,
    cfg: Arc<TailConfig>,
    read_from_beginning: bool,
    first: bool,
    warned: HashSet<PathBuf>,
    unreadable: HashMap<FileKey, (i64, i64)>,
    closed: HashMap<FileKey, Closed>,
    /// Where each file was found last (kept for idle-closed files that vanished from
    /// the globs, to look for them beside it).
    last_path: HashMap<FileKey, PathBuf>,
    /// When "out of file descriptors" was last logged.
    fd_warned: Option<std::time::Instant>,
    /// (device, inode) of the guard's files and directories, this scan.
    protected_files: HashSet<(u64, u64)>,
    protected_dirs: HashSet<(u64, u64)>,
}

impl Scanner {
    pub(crate) fn new(
        filter: Arc<PathFilter>,
        watch: Watch,
        cfg: Arc<TailConfig>,
        read_from_beginning: bool,
    ) -> Self {
        Scanner {
            filter,
            watch,
            cfg,
            read_from_beginning,
            first: true,
            warned: HashSet::new(),
            unreadable: HashMap::new(),
            closed: HashMap::new(),
            last_path: HashMap::new(),
            fd_warned: None,
            protected_files: HashSet::new(),
            protected_dirs: HashSet::new(),
        }
    }

    /// Continue a file read by an earlier run (checkpoint), if it shows up with the
    /// same identity.
    pub(crate) fn resume(&mut self, r: super::ResumePoint) {
        self.closed.insert(r.mark.key(), closed_of(r));
    }

    /// Remember where a stopped reader left its file.
    pub(crate) fn remember(&mut self, key: FileKey, closed: Closed) {
        self.closed.insert(key, closed);
    }

    /// Refresh the directory watches, expand the globs, and open every matching file
    /// whose inode is not in `tracked`.
    pub(crate) fn rescan(&mut self, tracked: &HashSet<FileKey>, dirs_changed: bool) -> ScanOutcome {
        self.watch.refresh(dirs_changed);
        let found = self.discover();
        let present: HashSet<FileKey> = found.iter().map(|f| f.key).collect();
        self.unreadable.retain(|k, _| present.contains(k));
        let mut opened: Vec<Tail> = self.follow_renamed(&present, tracked);
        // Files closed for inactivity are remembered as long as they are there.
        // Checkpoint resume points (no ctime) stay until their file shows up.
        // So are compressed files read to their end.
        self.closed.retain(|k, c| {
            c.ctime == (0, 0)
                || ((c.idle || c.done) && present.contains(k))
                || c.at.elapsed() < CLOSED_TTL
        });

        let mut unreadable = Vec::new();
        let mut handled = HashSet::new();
        for f in &found {
            if tracked.contains(&f.key) || !handled.insert(f.key) {
                continue;
            }
            if self.unreadable.get(&f.key) == Some(&f.ctime) {
                unreadable.push(f.path.clone());
                continue;
            }
            let prev = self.closed.get(&f.key).cloned();
            let start = match prev {
                Some(c) if c.failed && c.ctime == f.ctime => continue,
                // A compressed file read to its end, unchanged since.
                Some(c) if c.done && c.ctime == f.ctime => continue,
                // Closed for inactivity and unchanged since: leave it closed. (A
                // write right before the close can share its ctime; the size tells.)
                Some(c) if c.idle && c.ctime == f.ctime && c.read_pos == f.size => continue,
                Some(c) => StartAt::Resume(c),
                // Gone from this run's memory (it vanished for a while) but
                // checkpointed: continue from the checkpoint if it is the same content,
                // else read it as the next generation, never as a new file.
                None => match self.cfg.marks.latest(f.key) {
                    Some(r) => StartAt::Resume(closed_of(r)),
                    None if self.first && !self.read_from_beginning => StartAt::End,
                    None => StartAt::Beginning,
                },
            };
            match Tail::open(self.cfg.clone(), &f.path, f.key, start) {
                Ok(Some(tail)) => {
                    self.closed.remove(&f.key);
                    self.unreadable.remove(&f.key);
                    opened.push(tail);
                }
                Ok(None) => {
                    debug!(path = %f.path.display(), "file replaced while opening it; next scan");
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // A copy still being written: the next scan looks again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    debug!(path = %f.path.display(), error = %e, "not opening it yet");
                }
                // EMFILE/ENFILE: not this file's fault; try again at the next scan
                // (idle files are being closed meanwhile).
                Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                    if self
                        .fd_warned
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                    {
                        warn!(error = %e, "out of file descriptors: more files match than can be open; \
                            idle files are closed after close_inactive and the rest are opened then");
                        self.fd_warned = Some(std::time::Instant::now());
                    }
                    break;
                }
                Err(e) => {
                    self.warn_once(
                        &f.path,
                        &e,
                        "cannot open file; skipping it until it changes",
                    );
                    self.unreadable.insert(f.key, f.ctime);
                    unreadable.push(f.path.clone());
                }
            }
        }
        for f in &found {
            self.last_path
                .entry(f.key)
                .or_insert_with(|| f.path.clone());
        }
        self.first = false;
        ScanOutcome {
            found,
            opened,
            unreadable,
        }
    }

    /// Idle-closed files that are no longer found under a matching path were renamed
    /// or deleted. A rename out of the globs usually stays in the directory (rotation:
    /// `app.log` → `app.log.1`), so look for the inode beside its last path; when it
    /// is there and changed since it was closed, open it to be read to its end (it is
    /// not in `found`, so its reader is orphaned from the start). Looked for once.
    fn follow_renamed(
        &mut self,
        present: &HashSet<FileKey>,
        tracked: &HashSet<FileKey>,
    ) -> Vec<Tail> {
        let mut paths: HashMap<FileKey, PathBuf> = HashMap::new();
        let mut vanished = Vec::new();
        for (k, c) in &self.closed {
            if c.idle && !present.contains(k) && !tracked.contains(k) {
                vanished.push(*k);
            }
        }
        let mut opened = Vec::new();
        for key in vanished {
            let Some(c) = self.closed.get_mut(&key) else {
                continue;
            };
            // From now on an ordinary closed file: forgotten after CLOSED_TTL.
            c.idle = false;
            let c = c.clone();
            let Some(last) = self.last_path.remove(&key) else {
                continue;
            };
            let Some((path, ctime)) = find_beside(&last, key) else {
                continue;
            };
            if ctime == c.ctime {
                continue;
            }
            match Tail::open(self.cfg.clone(), &path, key, StartAt::Resume(c)) {
                Ok(Some(tail)) => {
                    debug!(from = %last.display(), to = %path.display(), "idle file renamed out of the globs with new lines; reading it to its end");
                    self.closed.remove(&key);
                    opened.push(tail);
                }
                Ok(None) => {}
                Err(e) => {
                    debug!(path = %path.display(), error = %e, "cannot open renamed idle file")
                }
            }
        }
        for (k, p) in self.last_path.drain() {
            if self.closed.get(&k).is_some_and(|c| c.idle) {
                paths.insert(k, p);
            }
        }
        self.last_path = paths;
        opened
    }

    /// Expand the include globs into matching regular files. At the first scan, a
    /// pattern that matches nothing is worth a warning (a typo, or logs elsewhere).
    fn discover(&mut self) -> Vec<Found> {
        let mut found = Vec::new();
        let filter = self.filter.clone();
        // Identities of the agent's own files, taken afresh each scan (a renewed
        // certificate is a new inode).
        self.protected_files = filter
            .guard
            .files
            .iter()
            .filter_map(|p| dev_ino(p))
            .collect();
        self.protected_dirs = filter
            .guard
            .dirs
            .iter()
            .filter_map(|p| dev_ino(p))
            .collect();
        for pattern in filter.include_patterns() {
            let before = found.len();
            self.expand(pattern, &filter, &mut found);
            if self.first && found.len() == before {
                warn!(
                    pattern,
                    "include pattern matches no file yet; files that appear later are read"
                );
            }
        }
        found
    }

    fn expand(&mut self, pattern: &str, filter: &PathFilter, found: &mut Vec<Found>) {
        let paths = match glob::glob_with(pattern, MatchOptions::new()) {
            Ok(paths) => paths,
            Err(e) => {
                // Compiled in `PathFilter::new` already, so this does not happen.
                debug!(pattern, error = %e, "bad glob pattern");
                return;
            }
        };
        for entry in paths {
            let path = match entry {
                Ok(path) => path,
                Err(e) => {
                    let path = e.path().to_path_buf();
                    self.warn_once(&path, e.error(), "cannot read directory; skipping it");
                    continue;
                }
            };
            if filter.is_excluded(&path) {
                continue;
            }
            // A symlink is read only when its target is a file the globs match too
            // (or follow_symlinks is on): a link planted in a watched directory does
            // not reach outside it.
            let mut real = None;
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                match resolve_link(&path) {
                    Some(target) if filter.guard.follow_symlinks || filter.matches(&target) => {
                        real = Some(target);
                    }
                    _ => {
                        self.note_once(
                            &path,
                            "symlink to a file the input's globs do not match; not read (set follow_symlinks: true to read it)",
                        );
                        continue;
                    }
                }
            }
            match fs::metadata(&path) {
                Ok(meta)
                    if meta.is_file()
                        && self.is_protected(&meta, real.as_deref().unwrap_or(&path)) =>
                {
                    self.note_once(
                        &path,
                        "the agent's own file (its config, a TLS key or certificate, or data_dir); never read",
                    );
                }
                Ok(meta) if meta.is_file() => found.push(Found {
                    key: FileKey::of(&meta),
                    ctime: (meta.ctime(), meta.ctime_nsec()),
                    size: meta.len(),
                    path,
                }),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.warn_once(&path, &e, "cannot stat file; skipping it"),
            }
        }
    }

    /// Whether the file `meta` (found at `real`, symlinks resolved) is one of the
    /// agent's own.
    fn is_protected(&self, meta: &fs::Metadata, real: &Path) -> bool {
        if self.protected_files.contains(&(meta.dev(), meta.ino())) {
            return true;
        }
        !self.protected_dirs.is_empty()
            && real
                .parent()
                .and_then(dev_ino)
                .is_some_and(|d| self.protected_dirs.contains(&d))
    }

    fn note_once(&mut self, path: &Path, what: &str) {
        if self.warned.insert(path.to_path_buf()) {
            warn!(path = %path.display(), "{what}");
        } else {
            debug!(path = %path.display(), "{what}");
        }
    }

    fn warn_once(&mut self, path: &Path, error: &io::Error, what: &str) {
        if self.warned.insert(path.to_path_buf()) {
            warn!(path = %path.display(), error = %error, "{what}");
        } else {
            debug!(path = %path.display(), error = %error, "{what}");
        }
    }
}

/// What the globs of one input match right now: for `--check-config`.
#[derive(Debug, Default)]
pub struct Preview {
    /// Matching regular files that can be opened for reading.
    pub readable: Vec<PathBuf>,
    /// Matching paths that cannot be read, with why.
    pub unreadable: Vec<(PathBuf, io::Error)>,
    /// Directories the globs cannot list.
    pub unlistable: Vec<(PathBuf, io::Error)>,
    /// Include patterns (as written) that match no regular file now.
    pub empty_patterns: Vec<String>,
}

/// Expand `include` minus `exclude` as the input would, and try to open each match.
pub fn preview(include: &[String], exclude: &[String]) -> Result<Preview, FileInputError> {
    let filter = PathFilter::new(include, exclude)?;
    let mut out = Preview::default();
    let mut seen = HashSet::new();
    for (written, pattern) in include.iter().zip(filter.include_patterns()) {
        let Ok(paths) = glob::glob_with(pattern, MatchOptions::new()) else {
            continue;
        };
        let mut matched = false;
        for entry in paths {
            let path = match entry {
                Ok(path) => path,
                Err(e) => {
                    let path = e.path().to_path_buf();
                    out.unlistable.push((path, e.into()));
                    continue;
                }
            };
            if filter.is_excluded(&path) {
                continue;
            }
            let meta = fs::metadata(&path);
            matched |= meta.as_ref().is_ok_and(|m| m.is_file());
            if !seen.insert(path.clone()) {
                continue;
            }
            match meta {
                Ok(meta) if meta.is_file() => match fs::File::open(&path) {
                    Ok(_) => out.readable.push(path),
                    Err(e) => out.unreadable.push((path, e)),
                },
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => out.unreadable.push((path, e)),
            }
        }
        if !matched {
            out.empty_patterns.push(written.clone());
        }
    }
    Ok(out)
}

/// What to remember of a checkpointed file until it shows up.
fn closed_of(r: super::ResumePoint) -> Closed {
    use super::fingerprint::Fingerprint;
    Closed {
        fp: Some(Fingerprint {
            len: r.mark.fp_len,
            hash: r.mark.fp_hash,
        }),
        lineage: r.lineage,
        done: r.total.is_some_and(|t| r.offset >= t),
        total: r.total,
        offset: r.offset,
        end_hash: r.end_hash,
        crc: r.crc,
        proof: r.proof,
        read_pos: r.offset,
        generation: r.mark.generation,
        failed: false,
        idle: false,
        ctime: (0, 0),
        at: std::time::Instant::now(),
    }
}

/// The file `key` in the directory of `last`, under any name: its path and `ctime`.
fn find_beside(last: &Path, key: FileKey) -> Option<(PathBuf, (i64, i64))> {
    use std::os::unix::fs::DirEntryExt;
    let dir = last.parent()?;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        if entry.ino() != key.ino {
            continue;
        }
        let path = entry.path();
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && FileKey::of(&meta) == key => {
                return Some((path, (meta.ctime(), meta.ctime_nsec())));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> PathFilter {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PathFilter::new(&s(include), &s(exclude)).unwrap()
    }

    #[test]
    fn exclude_by_full_path_and_by_name() {
        let f = filter(&["/var/log/**/*"], &["*.gz", "/var/log/private/*"]);
        assert!(f.matches(Path::new("/var/log/a.log")));
        assert!(f.matches(Path::new("/var/log/x/y/a.log")));
        assert!(!f.matches(Path::new("/var/log/x/a.gz")));
        assert!(!f.matches(Path::new("/var/log/private/a.log")));
        assert!(f.matches(Path::new("/var/log/private/sub/a.log")));
        assert!(!f.matches(Path::new("/srv/a.log")));
    }

    #[test]
    fn star_stays_in_one_directory() {
        let f = filter(&["/var/log/*.log"], &[]);
        assert!(f.matches(Path::new("/var/log/a.log")));
        assert!(!f.matches(Path::new("/var/log/sub/a.log")));
    }

    #[test]
    fn relative_patterns_are_taken_from_the_current_directory() {
        let f = filter(&["logs/*.log", "./other.log"], &[]);
        let cwd = std::env::current_dir().unwrap();
        assert!(f.matches(&cwd.join("logs/a.log")));
        assert!(f.matches(&cwd.join("other.log")));
        assert!(f.include_patterns().all(|p| p.starts_with('/')));
    }

    #[test]
    fn bad_pattern_names_the_pattern() {
        let err = PathFilter::new(&["/var/log/[.log".to_string()], &[]).unwrap_err();
        assert!(err.to_string().contains("/var/log/[.log"), "{err}");
        let err = PathFilter::new(&["/a/*.log".to_string()], &["***".to_string()]).unwrap_err();
        assert!(err.to_string().contains("***"), "{err}");
        assert!(matches!(
            PathFilter::new(&[], &[]),
            Err(FileInputError::NoInclude)
        ));
    }
}
