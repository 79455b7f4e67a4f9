//! The registry the file inputs share with the checkpointer: the identity of every
//! file version read, which versions are in saved checkpoints, and the content index
//! that recognizes a copy.
//!
//! Two identities travel with a file's records:
//! - the **version** id (`source_id` of a [`Chunk`](crate::input::Chunk) and of a
//!   checkpoint entry): one file on disk in one truncation generation, what a
//!   checkpoint is kept for;
//! - the **lineage** ([`Lineage`]): the source id and path the records carry, which
//!   the collector deduplicates on. It is the version's own unless the file continues
//!   another version's content: a rotated copy (`copytruncate`) or a compressed
//!   rotation (`compress`) holds the same bytes at the same offsets as the file it
//!   came from, so its records carry that file's lineage, and whatever both files
//!   send is stored once.
//!
//! The content index ([`Marks::find_copy`]) holds, per version, its first-line
//! fingerprint, its acknowledged offset and [`Anchor`]s (positions with the CRC of
//! the bytes before them). A newly seen file in the same directory, named after the
//! version's file (`web.log` → `web.log.1`, `web.log-20261204`, `web.log.2.gz`), with
//! the same fingerprint and reproducing one of those anchors, is that content: it
//! continues at the version's acknowledged offset (or that anchor, whichever is
//! lower) under its lineage.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{FileMark, Lineage, ResumePoint};
use crate::input::file::{Anchor, FileKey};

/// A file version to make durable in the saved checkpoints before its records are
/// sent: a new truncation generation (at offset 0), or a file recognized as a copy
/// (at the offset it continues from, with the lineage it continues).
#[derive(Debug)]
pub struct Registration {
    pub source_id: u64,
    pub mark: FileMark,
    pub path: Arc<str>,
    /// Where the version starts being read, and the hash of the bytes before it.
    pub offset: u64,
    pub end_hash: u64,
    /// Set when the records carry another version's identity.
    pub lineage: Option<Lineage>,
    /// Decompressed size of a compressed file (read once, never followed).
    pub total: Option<u64>,
    /// Where reading stands when its records are about to leave (see
    /// `Tail::registration`).
    pub proof: Option<Anchor>,
    /// Answered once the checkpoints holding it are saved.
    pub done: tokio::sync::oneshot::Sender<()>,
}

/// How many positions a version keeps for recognizing its copies. They are
/// thinned to be dense near the newest and sparse further back (see
/// [`push_position`]): a copy taken a moment ago is recognized close to its end,
/// one taken long ago still at some position it holds.
const POSITIONS: usize = 24;

/// What the content index knows of one version.
#[derive(Debug, Clone)]
struct Version {
    fp: (u16, u64),
    /// The version's own path (directory of its copies).
    path: Arc<str>,
    lineage: Lineage,
    /// Offset acknowledged by the collector (0: nothing yet).
    acked: u64,
    /// Known anchors, ascending by offset.
    positions: VecDeque<Anchor>,
    /// A newer generation of its file exists: kept for a while for copies that
    /// show up late, then forgotten.
    superseded: Option<std::time::Instant>,
    /// A checkpoint entry holds it: it lives as long as the entry.
    checkpointed: bool,
}

/// A version a new file was found to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOf {
    /// Where the new file continues: at most the version's acknowledged offset, so
    /// nothing unacknowledged is skipped; what it sends again is deduplicated.
    pub offset: u64,
    pub lineage: Lineage,
}

/// Shared by the file inputs and the checkpointer of an agent:
/// - `source_id` → [`FileMark`] of the file versions read whose checkpoint entry
///   does not exist yet (the checkpointer takes them over on the first
///   acknowledgement);
/// - when each file was last seen by a scan or held by a reader, so that the
///   checkpoints of files that are gone can be forgotten;
/// - the truncation generations and copies already in saved checkpoints, and the
///   channel to register new ones (see [`Marks::make_durable`]);
/// - the content index of every version (see the module docs).
#[derive(Debug, Default)]
pub struct Marks {
    inner: std::sync::Mutex<MarksInner>,
    register: Option<mpsc::UnboundedSender<Registration>>,
}

#[derive(Debug, Default)]
struct MarksInner {
    marks: HashMap<u64, FileMark>,
    /// Per file, the newest checkpointed state (latest generation): where a file
    /// that shows up again without in-run state continues.
    latest: HashMap<FileKey, ResumePoint>,
    durable: HashSet<u64>,
    seen: HashMap<FileKey, std::time::Instant>,
    versions: HashMap<u64, Version>,
}

impl Marks {
    /// A registry whose new generations go to the checkpointer through `register`.
    pub fn with_checkpointer(register: mpsc::UnboundedSender<Registration>) -> Self {
        Marks {
            inner: Default::default(),
            register: Some(register),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MarksInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A version read in this run, not acknowledged yet: its mark (for its first
    /// checkpoint entry) and its place in the content index.
    pub fn insert(&self, source_id: u64, mark: FileMark, path: Arc<str>, lineage: Option<Lineage>) {
        let mut inner = self.lock();
        inner.marks.insert(source_id, mark);
        let lineage = lineage.unwrap_or_else(|| Lineage {
            sid: source_id,
            path: path.clone(),
        });
        inner.versions.entry(source_id).or_insert(Version {
            fp: (mark.fp_len, mark.fp_hash),
            path,
            lineage,
            acked: 0,
            positions: VecDeque::new(),
            superseded: None,
            checkpointed: false,
        });
    }

    /// A version known from the saved checkpoints (or just registered there).
    #[allow(clippy::too_many_arguments)]
    pub fn add_checkpointed(
        &self,
        source_id: u64,
        mark: &FileMark,
        path: &str,
        lineage: Option<Lineage>,
        offset: u64,
        anchor: Option<Anchor>,
        superseded: bool,
    ) {
        let mut inner = self.lock();
        let path: Arc<str> = path.into();
        let v = inner.versions.entry(source_id).or_insert_with(|| Version {
            fp: (mark.fp_len, mark.fp_hash),
            path: path.clone(),
            lineage: lineage.clone().unwrap_or(Lineage {
                sid: source_id,
                path,
            }),
            acked: 0,
            positions: VecDeque::new(),
            superseded: None,
            checkpointed: true,
        });
        v.checkpointed = true;
        if let Some(l) = lineage {
            v.lineage = l;
        }
        if superseded && v.superseded.is_none() {
            v.superseded = Some(std::time::Instant::now());
        }
        if offset >= v.acked {
            v.acked = offset;
        }
        if let Some(a) = anchor {
            push_position(&mut v.positions, a);
        }
    }

    pub fn get(&self, source_id: u64) -> Option<FileMark> {
        self.lock().marks.get(&source_id).copied()
    }

    /// The checkpoints hold `source_id` now; its mark is no longer needed here.
    pub fn remove(&self, source_id: u64) {
        self.lock().marks.remove(&source_id);
    }

    /// Marks waiting for a first acknowledgement (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Versions in the content index (for tests: it stays bounded).
    pub fn versions(&self) -> usize {
        self.lock().versions.len()
    }

    /// The version was read (or acknowledged, in an earlier run) up to `a.offset`.
    pub fn read_to(&self, source_id: u64, a: Anchor) {
        if let Some(v) = self.lock().versions.get_mut(&source_id) {
            push_position(&mut v.positions, a);
        }
    }

    /// The collector acknowledged the version up to `offset` (its checkpoint entry
    /// holds it from now on).
    pub fn acked(&self, source_id: u64, offset: u64, anchor: Option<Anchor>) {
        if let Some(v) = self.lock().versions.get_mut(&source_id) {
            v.checkpointed = true;
            if offset > v.acked {
                v.acked = offset;
                if let Some(a) = anchor {
                    push_position(&mut v.positions, a);
                }
            }
        }
    }

    /// A newer generation of this version's file exists.
    pub fn supersede(&self, source_id: u64) {
        if let Some(v) = self.lock().versions.get_mut(&source_id)
            && v.superseded.is_none()
        {
            v.superseded = Some(std::time::Instant::now());
        }
    }

    /// Forget a version entirely (its checkpoint entry was forgotten).
    pub fn forget_version(&self, source_id: u64) {
        let mut inner = self.lock();
        inner.versions.remove(&source_id);
        inner.durable.remove(&source_id);
    }

    /// The anchors a file at `path` whose first line fingerprints to `fp` and which
    /// holds `size` bytes may reproduce, to be checked in one pass over it (see
    /// `Verifier` (see `input::file::anchor`)). Candidates are versions in the same
    /// directory whose file name starts like the new one's and whose records are not
    /// attributed to this very path (a file created under the old name by a
    /// rename-and-create rotation is new content, whatever it starts with).
    pub fn copy_anchors(&self, path: &str, fp: (u16, u64), size: u64) -> Vec<Anchor> {
        let inner = self.lock();
        let mut out: Vec<Anchor> = inner
            .versions
            .values()
            .filter(|v| v.fp == fp && related(path, &v.path, &v.lineage.path))
            .flat_map(|v| v.positions.iter().copied())
            .filter(|a| a.is_strong(fp.0) && a.offset <= size)
            .collect();
        out.sort_unstable_by_key(|a| (a.offset, a.base, a.crc, a.end_hash));
        out.dedup();
        out
    }

    /// Whether some known version could have a copy at `path` with this fingerprint
    /// (whatever its size): a young file that reproduces none of its anchors yet
    /// may be that copy, still being written.
    pub fn has_related(&self, path: &str, fp: (u16, u64)) -> bool {
        self.lock()
            .versions
            .values()
            .any(|v| v.fp == fp && related(path, &v.path, &v.lineage.path))
    }

    /// Which known version the file at `path` continues, given which of its
    /// [`copy_anchors`](Self::copy_anchors) it reproduces (`verified`, in their
    /// order). The version with the furthest reproduced anchor wins.
    pub fn find_copy(
        &self,
        path: &str,
        fp: (u16, u64),
        anchors: &[Anchor],
        verified: &[bool],
    ) -> Option<CopyOf> {
        let good: Vec<Anchor> = anchors
            .iter()
            .zip(verified)
            .filter_map(|(a, ok)| ok.then_some(*a))
            .collect();
        if good.is_empty() {
            return None;
        }
        let inner = self.lock();
        let mut best: Option<(u64, CopyOf)> = None;
        for v in inner.versions.values() {
            if v.fp != fp || !related(path, &v.path, &v.lineage.path) {
                continue;
            }
            let Some(o) = v
                .positions
                .iter()
                .filter(|a| good.contains(a))
                .map(|a| a.offset)
                .max()
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(bo, _)| o > *bo) {
                let offset = if v.acked == 0 { 0 } else { o.min(v.acked) };
                best = Some((
                    o,
                    CopyOf {
                        offset,
                        lineage: v.lineage.clone(),
                    },
                ));
            }
        }
        best.map(|(_, c)| c)
    }

    /// Generations known to be in saved checkpoints (loaded ones included).
    pub fn set_durable(&self, source_id: u64) {
        self.lock().durable.insert(source_id);
    }

    /// The checkpoints hold `r` for its file; keep it if it is the latest generation.
    pub fn set_latest(&self, r: ResumePoint) {
        let mut inner = self.lock();
        let e = inner
            .latest
            .entry(r.mark.key())
            .or_insert_with(|| r.clone());
        if (r.mark.generation, r.offset) >= (e.mark.generation, e.offset) {
            *e = r;
        }
    }

    /// The newest checkpointed state of the file `key`.
    pub(crate) fn latest(&self, key: FileKey) -> Option<ResumePoint> {
        self.lock().latest.get(&key).cloned()
    }

    /// `source_id`'s checkpoint entry was forgotten.
    pub fn forget_durable(&self, source_id: u64) {
        self.forget_version(source_id);
    }

    pub fn is_durable(&self, source_id: u64) -> bool {
        self.lock().durable.contains(&source_id)
    }

    /// Record that these files exist (found by a scan or held open) at `now`.
    pub(crate) fn saw(&self, keys: impl IntoIterator<Item = FileKey>, now: std::time::Instant) {
        let mut inner = self.lock();
        for k in keys {
            inner.seen.insert(k, now);
        }
    }

    /// Whether the file of `mark` was seen within `within` of `now`. Files not seen
    /// at all in this run count as seen at `started`.
    pub fn seen_recently(
        &self,
        mark: &FileMark,
        started: std::time::Instant,
        within: Duration,
        now: std::time::Instant,
    ) -> bool {
        let last = self
            .lock()
            .seen
            .get(&mark.key())
            .copied()
            .unwrap_or(started);
        now.saturating_duration_since(last) < within
    }

    /// Forget the files not seen within `within`, their marks, and the versions
    /// nothing holds any more: unacknowledged versions of files gone, and
    /// superseded ones older than `within` that no checkpoint keeps.
    pub fn prune(&self, started: std::time::Instant, within: Duration, now: std::time::Instant) {
        let mut inner = self.lock();
        inner
            .seen
            .retain(|_, t| now.saturating_duration_since(*t) < within);
        let MarksInner {
            marks,
            seen,
            latest,
            versions,
            durable,
        } = &mut *inner;
        if now.saturating_duration_since(started) >= within {
            marks.retain(|_, m| seen.contains_key(&m.key()));
            latest.retain(|k, _| seen.contains_key(k));
        }
        versions.retain(|id, v| {
            if v.checkpointed || durable.contains(id) {
                return true;
            }
            let in_run = marks.contains_key(id);
            let fresh = v
                .superseded
                .is_none_or(|t| now.saturating_duration_since(t) < within);
            in_run && fresh
        });
    }

    /// Make a version durable: return once the saved checkpoints hold it (see
    /// [`Registration`]), so that a restart continues this generation, or this copy
    /// under its lineage, rather than taking the content for something else. Without
    /// a checkpointer (tests) or once it is gone (shutdown) this returns at once.
    pub async fn make_durable(&self, r: RegistrationInfo) {
        let Some(tx) = &self.register else {
            self.set_durable(r.source_id);
            return;
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        let r = Registration {
            source_id: r.source_id,
            mark: r.mark,
            path: r.path,
            offset: r.offset,
            end_hash: r.end_hash,
            lineage: r.lineage,
            total: r.total,
            proof: r.proof,
            done,
        };
        if tx.send(r).is_ok() {
            let _ = wait.await;
        }
    }
}

/// What a reader registers (a [`Registration`] without its answer channel).
#[derive(Debug, Clone)]
pub struct RegistrationInfo {
    pub source_id: u64,
    pub mark: FileMark,
    pub path: Arc<str>,
    pub offset: u64,
    pub end_hash: u64,
    pub lineage: Option<Lineage>,
    pub total: Option<u64>,
    pub proof: Option<Anchor>,
}

/// Keep `a` among the known anchors (ascending by offset). When there are too
/// many, the one whose neighbours are closest relative to its distance from the
/// newest goes, so spacing grows roughly geometrically backwards; the oldest and
/// the newest always stay.
fn push_position(positions: &mut VecDeque<Anchor>, a: Anchor) {
    if a.offset == 0 || a.end_hash == 0 {
        return;
    }
    let at = positions.partition_point(|p| p.offset < a.offset);
    if positions.get(at).is_some_and(|p| p.offset == a.offset) {
        return;
    }
    positions.insert(at, a);
    if positions.len() <= POSITIONS {
        return;
    }
    let newest = positions.back().map_or(0, |p| p.offset);
    let cost = |i: usize| {
        let gap = positions[i + 1].offset - positions[i - 1].offset;
        gap as f64 / (newest - positions[i].offset + 1) as f64
    };
    let drop = (1..positions.len() - 1)
        .min_by(|&x, &y| cost(x).total_cmp(&cost(y)))
        .unwrap_or(0);
    positions.remove(drop);
}

/// Whether a file at `new` may be a copy of the version read at `own` whose records
/// are attributed to `origin`: same directory as `own`, not `origin` itself, and
/// named like `origin` (its name starts with `origin`'s name up to the first dot).
pub(crate) fn related(new: &str, own: &str, origin: &str) -> bool {
    let (new, own, origin) = (Path::new(new), Path::new(own), Path::new(origin));
    if new == origin || new == own || new.parent() != own.parent() {
        return false;
    }
    let (Some(name), Some(origin_name)) = (
        new.file_name().and_then(|n| n.to_str()),
        origin.file_name().and_then(|n| n.to_str()),
    ) else {
        return false;
    };
    let stem = match origin_name.strip_prefix('.') {
        Some(rest) => &origin_name[..1 + rest.find('.').unwrap_or(rest.len())],
        None => &origin_name[..origin_name.find('.').unwrap_or(origin_name.len())],
    };
    !stem.is_empty() && name.starts_with(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_named_after_their_origin_in_its_directory() {
        let o = "/var/log/app/web.log";
        for copy in [
            "/var/log/app/web.log.1",
            "/var/log/app/web.log-20261204",
            "/var/log/app/web-20261204.log",
            "/var/log/app/web.log.2.gz",
        ] {
            assert!(related(copy, o, o), "{copy}");
        }
        for not in [
            "/var/log/app/web.log",
            "/var/log/other/web.log.1",
            "/var/log/app/db.log.1",
        ] {
            assert!(!related(not, o, o), "{not}");
        }
        // A copy of a copy: beside the copy, named after the origin.
        assert!(related(
            "/var/log/app/web.log.2.gz",
            "/var/log/app/web.log.1",
            o
        ));
        assert!(related(
            "/d/.hidden.log.1",
            "/d/.hidden.log",
            "/d/.hidden.log"
        ));
    }

    fn mark(ino: u64) -> FileMark {
        FileMark {
            dev: 1,
            ino,
            btime: 0,
            fp_len: 4,
            fp_hash: 77,
            generation: 0,
        }
    }

    fn a(offset: u64) -> Anchor {
        Anchor {
            offset,
            end_hash: offset + 1,
            base: 0,
            crc: offset as u32,
        }
    }

    /// What a file reproducing the anchors at `good` offsets would be taken for.
    fn check(m: &Marks, path: &str, fp: (u16, u64), size: u64, good: &[u64]) -> Option<CopyOf> {
        let anchors = m.copy_anchors(path, fp, size);
        let ok: Vec<bool> = anchors.iter().map(|x| good.contains(&x.offset)).collect();
        m.find_copy(path, fp, &anchors, &ok)
    }

    #[test]
    fn a_copy_continues_at_the_acknowledged_offset_under_the_lineage() {
        let m = Marks::default();
        m.insert(10, mark(1), "/d/web.log".into(), None);
        for o in [100, 200, 300] {
            m.read_to(10, a(o));
        }
        m.acked(10, 200, Some(a(200)));
        let all = [100, 200, 300];
        // Longer than what was read: continues at the acknowledged offset.
        let c = check(&m, "/d/web.log.1", (4, 77), 400, &all).unwrap();
        assert_eq!((c.offset, c.lineage.sid), (200, 10));
        assert_eq!(&*c.lineage.path, "/d/web.log");
        // Shorter than the acknowledged offset: at the last anchor it holds (all of
        // it was delivered; what it sends again is dropped as duplicates).
        let c = check(&m, "/d/web.log.1", (4, 77), 150, &all).unwrap();
        assert_eq!((c.offset, c.lineage.sid), (100, 10));
        // Other bytes, another fingerprint, another place, or the origin's own
        // name: not a copy.
        assert_eq!(check(&m, "/d/web.log.1", (4, 77), 400, &[]), None);
        assert_eq!(check(&m, "/d/web.log.1", (4, 78), 400, &all), None);
        assert_eq!(check(&m, "/e/web.log.1", (4, 77), 400, &all), None);
        assert_eq!(check(&m, "/d/web.log", (4, 77), 400, &all), None);
        // Shorter than any anchor: nothing proves it is the same content.
        assert_eq!(check(&m, "/d/web.log.1", (4, 77), 50, &all), None);
        // Anchors inside the first line, or with a short window, prove nothing.
        let db = FileMark {
            fp_len: 200,
            ..mark(2)
        };
        m.insert(20, db, "/d/db.log".into(), None);
        m.read_to(20, a(150));
        m.read_to(
            20,
            Anchor {
                base: 220,
                ..a(250)
            },
        );
        assert!(m.copy_anchors("/d/db.log.1", (200, 77), 400).is_empty());
        m.read_to(20, a(300));
        assert_eq!(m.copy_anchors("/d/db.log.1", (200, 77), 400).len(), 1);
    }

    #[test]
    fn positions_stay_few_dense_near_the_newest_and_reach_back() {
        let mut p = VecDeque::new();
        for o in 1..=100_000u64 {
            push_position(&mut p, a(o * 100));
        }
        assert_eq!(p.len(), POSITIONS);
        let offsets: Vec<u64> = p.iter().map(|x| x.offset).collect();
        assert_eq!(offsets[0], 100, "the oldest stays");
        assert_eq!(*offsets.last().unwrap(), 10_000_000, "the newest stays");
        // Something within the last 1 % and within the last 0.1 %.
        let near = |lo: u64| offsets.iter().any(|&o| (lo..10_000_000).contains(&o));
        assert!(near(9_900_000) && near(9_990_000), "{offsets:?}");
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn nothing_acknowledged_yet_means_from_the_start_under_the_lineage() {
        let m = Marks::default();
        m.insert(10, mark(1), "/d/web.log".into(), None);
        m.read_to(10, a(100));
        let c = check(&m, "/d/web.log.1", (4, 77), 100, &[100]).unwrap();
        assert_eq!((c.offset, c.lineage.sid), (0, 10));
    }

    #[test]
    fn superseded_versions_are_pruned_after_a_while_unless_checkpointed() {
        let m = Marks::default();
        let start = std::time::Instant::now();
        m.insert(10, mark(1), "/d/a.log".into(), None);
        m.insert(11, mark(2), "/d/b.log".into(), None);
        m.set_durable(11);
        m.supersede(10);
        m.supersede(11);
        m.prune(start, Duration::from_secs(60), start);
        assert_eq!(m.versions(), 2);
        m.prune(
            start,
            Duration::from_secs(60),
            start + Duration::from_secs(120),
        );
        assert_eq!(
            m.versions(),
            1,
            "the checkpointed one stays until forgotten"
        );
    }
}
