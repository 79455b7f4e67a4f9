//! Checkpoints: for every file version, the offset up to which the collector has
//! acknowledged durable storage.
//!
//! The shipper reports acknowledged batches' [`Position`]s; nothing else moves a
//! checkpoint, so a checkpoint never runs ahead of what is stored. The state is saved
//! at most once per `interval` and at shutdown, atomically (temp file, fsync, rename,
//! fsync of the directory), in `data_dir/checkpoints.json`. After a crash the agent
//! resumes from the last save and re-sends what was acknowledged after it; the
//! collector drops those records as duplicates, so nothing is stored twice.
//!
//! Two more things reach the saved state:
//! - A new truncation generation (copytruncate) is saved at offset 0 before any of
//!   its records is sent ([`Registration`]), so a restart resumes the newest
//!   generation of a file instead of taking the new content for the old. The older
//!   generation's entry stays, marked superseded, for [`FORGET_GONE`]: its rotated
//!   copy may show up later and continue it.
//! - A file recognized as a copy of known content (a rotated copy, a compressed
//!   rotation) is saved with the lineage it continues and where, before it is read;
//!   a compressed file also with its decompressed size, so that once read it is
//!   skipped at start-up without decompressing it again.
//! - Entries of files that no scan has found and no reader has held for
//!   [`FORGET_GONE`] are forgotten (rotated away and deleted, or no longer matched);
//!   so are their marks. If such a file shows up again later it is read from 0 and
//!   the collector drops what it already has.
//!
//! The file is written by programs, so its schema is versioned and tolerant: unknown
//! fields are ignored, and a file that does not parse is set aside with a warning
//! (the agent then re-reads from its `read_from` rule; the collector deduplicates).
//!
//! The file inputs see checkpoints only through the [`registry`] ([`Marks`]): they
//! record the versions they read, ask it for copies and resume points, and register
//! new generations and copies, which [`run`] makes durable before their records
//! leave. [`identity`] holds the types both sides speak.

pub mod identity;
pub mod registry;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::mpsc;

pub use identity::{FileMark, Lineage, ResumePoint};
pub use registry::{CopyOf, Marks, Registration, RegistrationInfo};

use crate::batch::Position;
use crate::input::file::Anchor;

const FILE_NAME: &str = "checkpoints.json";
/// Entries of files not seen for this long are forgotten.
pub const FORGET_GONE: Duration = Duration::from_secs(3600);
/// How often gone files are looked for.
const FORGET_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<tributary_common::fs::WriteError> for CheckpointError {
    fn from(e: tributary_common::fs::WriteError) -> CheckpointError {
        CheckpointError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_owned();
    move |source| CheckpointError::Io { op, path, source }
}

/// One file version's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub source_id: u64,
    /// Path the file was read under (for people; identity is `mark`).
    pub path: String,
    pub mark: FileMark,
    /// Bytes of the file acknowledged by the collector.
    pub offset: u64,
    /// Hash of the bytes before `offset` (0: unknown).
    #[serde(default)]
    pub end_hash: u64,
    pub updated_ms: i64,
    /// The records' source id, when the file continues another one's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<u64>,
    /// The records' source path then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    /// Decompressed size of a compressed file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// When a newer generation of the same file was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_ms: Option<i64>,
    /// Where the CRC32C of the content up to `offset` starts, and its value (see
    /// `input::file::Anchor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc_base: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc: Option<u32>,
    /// Anchors at the last acknowledged offsets before `offset`: a rotated copy
    /// taken a moment before the last acknowledgements is still recognized after a
    /// restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<Anchor>,
    /// The anchor registered before the version's first records were sent (a
    /// truncation generation, a copy): until acknowledgements pass it, a restart
    /// checks the file still reproduces it, so a file rewritten meanwhile with the
    /// same first line is not taken for this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Anchor>,
}

/// How many earlier positions an entry keeps.
const RECENT: usize = 12;

impl Entry {
    fn lineage(&self) -> Option<Lineage> {
        Some(Lineage {
            sid: self.sid?,
            path: self.source_path.as_deref().unwrap_or(&self.path).into(),
        })
    }

    fn resume_point(&self) -> ResumePoint {
        ResumePoint {
            mark: self.mark,
            offset: self.offset,
            end_hash: self.end_hash,
            lineage: self.lineage(),
            total: self.total,
            crc: self.crc_base.zip(self.crc),
            proof: self.proof.filter(|p| p.offset > self.offset),
        }
    }

    /// The acknowledged offset as an anchor, when its CRC is known.
    fn anchor(&self) -> Option<Anchor> {
        Some(Anchor {
            offset: self.offset,
            end_hash: self.end_hash,
            base: self.crc_base?,
            crc: self.crc?,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum State {
    #[serde(rename = "1")]
    V1 {
        files: Vec<Entry>,
        /// Journal cursors acknowledged, by `journald` input.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        journals: BTreeMap<String, String>,
    },
}

/// The agent's checkpoints, in memory, and where they are saved.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    entries: HashMap<u64, Entry>,
    journals: BTreeMap<String, String>,
    dirty: bool,
}

impl Checkpoints {
    /// Load `data_dir/checkpoints.json` (creating `data_dir`); a missing file is an
    /// empty state.
    pub fn load(data_dir: &Path) -> Result<Checkpoints, CheckpointError> {
        std::fs::create_dir_all(data_dir).map_err(io_err("create directory", data_dir))?;
        let path = data_dir.join(FILE_NAME);
        let mut entries = HashMap::new();
        let mut journal_cursors = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(State::V1 { files, journals }) => {
                    for e in files {
                        entries.insert(e.source_id, e);
                    }
                    journal_cursors = journals;
                }
                Err(e) => {
                    let aside = path.with_extension("json.unreadable");
                    tracing::warn!(path = %path.display(), error = %e, moved_to = %aside.display(),
                        "checkpoints do not parse; starting without them (the collector drops re-sent records)");
                    std::fs::rename(&path, &aside).map_err(io_err("rename", &path))?;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read", &path)(e)),
        }
        Ok(Checkpoints {
            path,
            entries,
            journals: journal_cursors,
            dirty: false,
        })
    }

    /// Where to continue each known file: per device, inode and birth time, the
    /// entry of the latest generation (a truncation's acknowledgements can still
    /// arrive for the old one), the most recently advanced among equals.
    pub fn resume_points(&self) -> Vec<ResumePoint> {
        let mut newest: HashMap<(u64, u64, i64), &Entry> = HashMap::new();
        for e in self.entries.values() {
            let k = (e.mark.dev, e.mark.ino, e.mark.btime);
            let rank = |e: &Entry| (e.mark.generation, e.updated_ms);
            match newest.get(&k) {
                Some(old) if rank(old) >= rank(e) => {}
                _ => {
                    newest.insert(k, e);
                }
            }
        }
        newest.values().map(|e| e.resume_point()).collect()
    }

    /// Tell the file inputs' registry what the saved state holds: every entry is
    /// durable and in the content index, and each file's resume point is known.
    pub fn publish(&self, marks: &Marks) {
        for e in self.entries.values() {
            marks.set_durable(e.source_id);
            marks.add_checkpointed(
                e.source_id,
                &e.mark,
                &e.path,
                e.lineage(),
                e.offset,
                e.anchor(),
                e.superseded_ms.is_some(),
            );
            for a in e.recent.iter().chain(&e.proof) {
                marks.read_to(e.source_id, *a);
            }
        }
        for r in self.resume_points() {
            marks.set_latest(r);
        }
    }

    /// The acknowledged cursor of the `journald` input `key`.
    pub fn journal_cursor(&self, key: &str) -> Option<String> {
        self.journals.get(key).cloned()
    }

    pub fn get(&self, source_id: u64) -> Option<&Entry> {
        self.entries.get(&source_id)
    }

    /// Every saved `source_id`.
    pub fn source_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.keys().copied()
    }

    /// A version to make durable: a new generation of a file (at offset 0), or a
    /// copy (where it continues, with its lineage). Older generations of the same
    /// file are marked superseded: their content is gone from the file, but its
    /// rotated copy may still show up and continue it; they are forgotten later.
    /// An existing entry is never moved back.
    pub fn register(&mut self, r: &Registration, marks: &Marks, now_ms: i64) {
        let mark = r.mark;
        let same_file = |m: &FileMark| (m.dev, m.ino, m.btime) == (mark.dev, mark.ino, mark.btime);
        for (id, e) in self.entries.iter_mut() {
            if same_file(&e.mark)
                && e.mark.generation < mark.generation
                && e.superseded_ms.is_none()
            {
                e.superseded_ms = Some(now_ms);
                marks.supersede(*id);
                self.dirty = true;
            }
        }
        self.entries.entry(r.source_id).or_insert_with(|| {
            self.dirty = true;
            Entry {
                source_id: r.source_id,
                path: r.path.to_string(),
                mark,
                offset: r.offset,
                end_hash: r.end_hash,
                updated_ms: now_ms,
                sid: r.lineage.as_ref().map(|l| l.sid),
                source_path: r.lineage.as_ref().map(|l| l.path.to_string()),
                total: r.total,
                superseded_ms: None,
                crc_base: Some(r.offset),
                crc: Some(0),
                recent: Vec::new(),
                proof: None,
            }
        });
        if let Some(p) = r.proof
            && let Some(e) = self.entries.get_mut(&r.source_id)
            && e.proof.is_none_or(|old| !old.is_strong(mark.fp_len))
            && p.offset > e.offset
        {
            e.proof = Some(p);
            self.dirty = true;
        }
        if let Some(e) = self.entries.get(&r.source_id) {
            marks.add_checkpointed(
                e.source_id,
                &e.mark,
                &e.path,
                e.lineage(),
                e.offset,
                e.anchor(),
                false,
            );
            marks.set_latest(e.resume_point());
        }
    }

    /// Forget the entries of files not seen for [`FORGET_GONE`], and their marks.
    pub fn forget_gone(
        &mut self,
        marks: &Marks,
        started: std::time::Instant,
        now: std::time::Instant,
    ) {
        let before = self.entries.len();
        let now_ms = tributary_common::timefmt::now_ms();
        let started_ms = now_ms.saturating_sub(
            i64::try_from(now.saturating_duration_since(started).as_millis()).unwrap_or(i64::MAX),
        );
        self.entries.retain(|id, e| {
            let keep = match e.superseded_ms {
                // Its file holds newer content: kept for a copy that shows up late,
                // counted from this run's start at the earliest.
                Some(at) => {
                    now_ms.saturating_sub(at.max(started_ms))
                        < i64::try_from(FORGET_GONE.as_millis()).unwrap_or(i64::MAX)
                }
                None => marks.seen_recently(&e.mark, started, FORGET_GONE, now),
            };
            if !keep {
                marks.forget_durable(*id);
            }
            keep
        });
        if self.entries.len() != before {
            tracing::debug!(
                forgotten = before - self.entries.len(),
                "checkpoints of files gone for an hour forgotten"
            );
            self.dirty = true;
        }
        marks.prune(started, FORGET_GONE, now);
    }

    /// Advance to acknowledged positions. Positions of unknown sources (no mark
    /// registered, e.g. syslog) are ignored.
    pub fn apply(&mut self, positions: &[Position], marks: &Marks, now_ms: i64) {
        for p in positions {
            if let Some(c) = &p.cursor {
                if self.journals.get(&*p.path).map(String::as_str) != Some(&**c) {
                    self.journals.insert(p.path.to_string(), c.to_string());
                    self.dirty = true;
                }
                continue;
            }
            if p.source_id == 0 {
                continue;
            }
            let e = match self.entries.entry(p.source_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let Some(mark) = marks.get(p.source_id) else {
                        continue;
                    };
                    // The checkpoints carry the mark from now on.
                    marks.remove(p.source_id);
                    v.insert(Entry {
                        source_id: p.source_id,
                        path: p.path.to_string(),
                        mark,
                        offset: 0,
                        end_hash: 0,
                        updated_ms: now_ms,
                        sid: None,
                        source_path: None,
                        total: None,
                        superseded_ms: None,
                        crc_base: None,
                        crc: None,
                        recent: Vec::new(),
                        proof: None,
                    })
                }
            };
            if p.end_offset > e.offset {
                if let Some(a) = e.anchor().filter(|a| a.offset > 0 && a.end_hash != 0) {
                    if e.recent.len() == RECENT {
                        e.recent.remove(0);
                    }
                    e.recent.push(a);
                }
                e.offset = p.end_offset;
                e.end_hash = p.end_hash;
                e.crc_base = Some(p.crc_base);
                e.crc = Some(p.crc);
                marks.set_latest(e.resume_point());
                marks.acked(e.source_id, e.offset, e.anchor());
                e.updated_ms = now_ms;
                self.dirty = true;
            }
        }
    }

    /// Write the state atomically if it changed since the last save.
    pub fn save(&mut self) -> Result<(), CheckpointError> {
        if !self.dirty {
            return Ok(());
        }
        let mut files: Vec<Entry> = self.entries.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path).then(a.source_id.cmp(&b.source_id)));
        let bytes = serde_json::to_vec_pretty(&State::V1 {
            files,
            journals: self.journals.clone(),
        })
        .unwrap_or_default();
        tributary_common::fs::write_atomic(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

/// The checkpoint stage: apply acknowledged positions as they come, save at most
/// every `interval`, save at once when a new generation registers (then tell it),
/// forget files gone for [`FORGET_GONE`], and save a last time when the shipper is
/// gone.
pub async fn run(
    mut cp: Checkpoints,
    mut acked: mpsc::UnboundedReceiver<Vec<Position>>,
    mut registrations: mpsc::UnboundedReceiver<Registration>,
    marks: Arc<Marks>,
    interval: Duration,
) {
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut forget = tokio::time::interval(FORGET_EVERY);
    forget.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            p = acked.recv() => match p {
                Some(p) => cp.apply(&p, &marks, tributary_common::timefmt::now_ms()),
                None => break,
            },
            Some(r) = registrations.recv() => {
                let now = tributary_common::timefmt::now_ms();
                cp.register(&r, &marks, now);
                // Take every registration that is already waiting into the same save.
                let mut waiting = vec![r];
                while let Ok(r) = registrations.try_recv() {
                    cp.register(&r, &marks, now);
                    waiting.push(r);
                }
                save_blocking(&mut cp).await;
                for r in waiting {
                    if !cp.dirty {
                        marks.set_durable(r.source_id);
                        marks.remove(r.source_id);
                    }
                    let _ = r.done.send(());
                }
            }
            _ = tick.tick() => save_blocking(&mut cp).await,
            _ = forget.tick() => cp.forget_gone(&marks, started, std::time::Instant::now()),
        }
    }
    save_blocking(&mut cp).await;
}

async fn save_blocking(cp: &mut Checkpoints) {
    if !cp.dirty {
        return;
    }
    // fsync can take a while: do it on the blocking pool, then take the state back.
    let mut taken = std::mem::replace(
        cp,
        Checkpoints {
            path: cp.path.clone(),
            entries: HashMap::new(),
            journals: BTreeMap::new(),
            dirty: false,
        },
    );
    let result = tokio::task::spawn_blocking(move || {
        let r = taken.save();
        (taken, r)
    })
    .await;
    match result {
        Ok((back, r)) => {
            *cp = back;
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot save checkpoints; will retry");
            }
        }
        Err(e) => tracing::error!(error = %e, "checkpoint save task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(ino: u64, generation: u32) -> FileMark {
        FileMark {
            dev: 1,
            ino,
            btime: 0,
            fp_len: 10,
            fp_hash: 99,
            generation,
        }
    }

    fn reg(source_id: u64, mark: FileMark) -> Registration {
        Registration {
            source_id,
            mark,
            path: "/var/log/a.log".into(),
            offset: 0,
            end_hash: 0,
            lineage: None,
            total: None,
            proof: None,
            done: tokio::sync::oneshot::channel().0,
        }
    }

    fn rp(mark: FileMark, offset: u64, end_hash: u64) -> ResumePoint {
        ResumePoint {
            mark,
            offset,
            end_hash,
            lineage: None,
            total: None,
            crc: Some((0, 0)),
            proof: None,
        }
    }

    fn pos(source_id: u64, end: u64) -> Position {
        Position {
            source_id,
            path: "/var/log/a.log".into(),
            end_offset: end,
            end_hash: end,
            crc_base: 0,
            crc: 0,
            cursor: None,
        }
    }

    #[test]
    fn saves_atomically_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let marks = Marks::default();
        marks.insert(11, mark(5, 0), "/var/log/a.log".into(), None);
        marks.insert(12, mark(5, 1), "/var/log/a.log".into(), None);
        let mut cp = Checkpoints::load(dir.path()).unwrap();
        cp.apply(&[pos(11, 100), pos(0, 5), pos(999, 7)], &marks, 1000);
        cp.apply(&[pos(11, 50)], &marks, 1001);
        cp.apply(&[pos(12, 30)], &marks, 2000);
        cp.save().unwrap();
        assert!(!dir.path().join("checkpoints.json.tmp").exists());

        let back = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(back.get(11).unwrap().offset, 100, "never moves back");
        assert!(
            back.get(999).is_none(),
            "unknown sources are not checkpointed"
        );
        // The newest version of inode 5 (generation 1) is where to resume.
        assert_eq!(back.resume_points(), vec![rp(mark(5, 1), 30, 30)]);
    }

    #[test]
    fn unreadable_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let cp = Checkpoints::load(dir.path()).unwrap();
        assert!(cp.resume_points().is_empty());
        assert!(dir.path().join("checkpoints.json.unreadable").exists());
    }

    #[test]
    fn latest_generation_wins_even_when_the_old_one_advanced_later() {
        let dir = tempfile::tempdir().unwrap();
        let marks = Marks::default();
        marks.insert(1, mark(5, 0), "/var/log/a.log".into(), None);
        let mut cp = Checkpoints::load(dir.path()).unwrap();
        cp.apply(&[pos(1, 100)], &marks, 1000);
        // Truncated: generation 1 registered at offset 0, then a late ack of gen 0.
        cp.register(&reg(2, mark(5, 1)), &marks, 2000);
        cp.apply(&[pos(1, 150)], &marks, 3000);
        cp.save().unwrap();
        let back = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(back.resume_points(), vec![rp(mark(5, 1), 0, 0)]);
        // Generation 0 stays, superseded, for a copy that shows up late; its late
        // acknowledgement still counted.
        let old = back.get(1).unwrap();
        assert_eq!((old.superseded_ms, old.offset), (Some(2000), 150));
        // Registering again never moves an entry back.
        let mut cp = back;
        cp.apply(&[pos(2, 40)], &marks, 4000);
        cp.register(&reg(2, mark(5, 1)), &marks, 5000);
        assert_eq!(cp.get(2).unwrap().offset, 40);
    }

    #[test]
    fn marks_are_dropped_once_the_checkpoints_hold_them() {
        let dir = tempfile::tempdir().unwrap();
        let marks = Marks::default();
        marks.insert(1, mark(1, 0), "/var/log/a.log".into(), None);
        marks.insert(2, mark(2, 0), "/var/log/a.log".into(), None);
        let mut cp = Checkpoints::load(dir.path()).unwrap();
        cp.apply(&[pos(1, 10)], &marks, 0);
        assert_eq!(marks.len(), 1, "mark 1 moved into the checkpoints");
        cp.apply(&[pos(1, 20)], &marks, 1);
        assert_eq!(cp.get(1).unwrap().offset, 20);
    }

    #[test]
    fn files_gone_for_an_hour_are_forgotten() {
        use std::time::Instant;
        let dir = tempfile::tempdir().unwrap();
        let marks = Marks::default();
        marks.insert(1, mark(1, 0), "/var/log/a.log".into(), None);
        marks.insert(2, mark(2, 0), "/var/log/a.log".into(), None);
        marks.insert(3, mark(3, 0), "/var/log/a.log".into(), None);
        let mut cp = Checkpoints::load(dir.path()).unwrap();
        cp.apply(&[pos(1, 10), pos(2, 10)], &marks, 0);
        let started = Instant::now();
        let key = |ino| crate::input::file::FileKey {
            dev: 1,
            ino,
            btime: 0,
        };
        // An hour in, file 2 (and the unacknowledged file 3) were never seen again;
        // file 1 was seen a minute ago.
        let later = started + FORGET_GONE + Duration::from_secs(60);
        marks.saw([key(1)], later - Duration::from_secs(60));
        // Not before the agent ran for an hour: nothing is known to be gone yet.
        cp.forget_gone(&marks, started, started + Duration::from_secs(60));
        assert!(cp.get(2).is_some());
        assert_eq!(marks.len(), 1);
        cp.forget_gone(&marks, started, later);
        assert!(cp.get(1).is_some());
        assert!(cp.get(2).is_none());
        assert!(marks.is_empty(), "mark of file 3 forgotten too");
        cp.save().unwrap();
        let back = Checkpoints::load(dir.path()).unwrap();
        assert!(back.get(1).is_some() && back.get(2).is_none());
    }
}
