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
//! The file is written by programs, so its schema is versioned and tolerant: unknown
//! fields are ignored, and a file that does not parse is set aside with a warning
//! (the agent then re-reads from its `read_from` rule; the collector deduplicates).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::batch::Position;
use crate::input::file::{FileMark, Marks, ResumePoint};

const FILE_NAME: &str = "checkpoints.json";
/// Entries not advanced for this long are forgotten (their files are long gone, or
/// so quiet that re-reading them is cheap; the collector drops what it has).
const FORGET_AFTER_MS: i64 = 365 * 86_400_000;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
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
    pub updated_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum State {
    #[serde(rename = "1")]
    V1 { files: Vec<Entry> },
}

/// The agent's checkpoints, in memory, and where they are saved.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    entries: HashMap<u64, Entry>,
    dirty: bool,
}

impl Checkpoints {
    /// Load `data_dir/checkpoints.json` (creating `data_dir`); a missing file is an
    /// empty state.
    pub fn load(data_dir: &Path) -> Result<Checkpoints, CheckpointError> {
        std::fs::create_dir_all(data_dir).map_err(io_err("create directory", data_dir))?;
        let path = data_dir.join(FILE_NAME);
        let mut entries = HashMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(State::V1 { files }) => {
                    for e in files {
                        entries.insert(e.source_id, e);
                    }
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
            dirty: false,
        })
    }

    /// Where to continue each known file: the newest entry per device and inode.
    pub fn resume_points(&self) -> Vec<ResumePoint> {
        let mut newest: HashMap<(u64, u64), &Entry> = HashMap::new();
        for e in self.entries.values() {
            let k = (e.mark.dev, e.mark.ino);
            match newest.get(&k) {
                Some(old) if old.updated_ms >= e.updated_ms => {}
                _ => {
                    newest.insert(k, e);
                }
            }
        }
        newest
            .values()
            .map(|e| ResumePoint {
                mark: e.mark,
                offset: e.offset,
            })
            .collect()
    }

    pub fn get(&self, source_id: u64) -> Option<&Entry> {
        self.entries.get(&source_id)
    }

    /// Advance to acknowledged positions. Positions of unknown sources (no mark
    /// registered, e.g. syslog) are ignored.
    pub fn apply(&mut self, positions: &[Position], marks: &Marks, now_ms: i64) {
        for p in positions {
            if p.source_id == 0 {
                continue;
            }
            let Some(mark) = marks.get(p.source_id) else {
                continue;
            };
            let e = self.entries.entry(p.source_id).or_insert_with(|| Entry {
                source_id: p.source_id,
                path: p.path.to_string(),
                mark,
                offset: 0,
                updated_ms: now_ms,
            });
            if p.end_offset > e.offset {
                e.offset = p.end_offset;
                e.updated_ms = now_ms;
                self.dirty = true;
            }
        }
    }

    /// Write the state atomically if it changed since the last save.
    pub fn save(&mut self, now_ms: i64) -> Result<(), CheckpointError> {
        if !self.dirty {
            return Ok(());
        }
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.updated_ms) < FORGET_AFTER_MS);
        let mut files: Vec<Entry> = self.entries.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path).then(a.source_id.cmp(&b.source_id)));
        let bytes = serde_json::to_vec_pretty(&State::V1 { files }).unwrap_or_default();
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
            f.write_all(&bytes).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err("rename", &tmp))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync directory", dir))?;
        }
        self.dirty = false;
        Ok(())
    }
}

/// The checkpoint stage: apply acknowledged positions as they come, save at most
/// every `interval`, and save a last time when the shipper is gone.
pub async fn run(
    mut cp: Checkpoints,
    mut acked: mpsc::UnboundedReceiver<Vec<Position>>,
    marks: Arc<Marks>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            p = acked.recv() => match p {
                Some(p) => cp.apply(&p, &marks, tributary_common::timefmt::now_ms()),
                None => break,
            },
            _ = tick.tick() => save_blocking(&mut cp).await,
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
            dirty: false,
        },
    );
    let result = tokio::task::spawn_blocking(move || {
        let r = taken.save(tributary_common::timefmt::now_ms());
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
            fp_len: 10,
            fp_hash: 99,
            generation,
        }
    }

    fn pos(source_id: u64, end: u64) -> Position {
        Position {
            source_id,
            path: "/var/log/a.log".into(),
            end_offset: end,
        }
    }

    #[test]
    fn saves_atomically_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let marks = Marks::default();
        marks.insert(11, mark(5, 0));
        marks.insert(12, mark(5, 1));
        let mut cp = Checkpoints::load(dir.path()).unwrap();
        cp.apply(&[pos(11, 100), pos(0, 5), pos(999, 7)], &marks, 1000);
        cp.apply(&[pos(11, 50)], &marks, 1001);
        cp.apply(&[pos(12, 30)], &marks, 2000);
        cp.save(3000).unwrap();
        assert!(!dir.path().join("checkpoints.json.tmp").exists());

        let back = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(back.get(11).unwrap().offset, 100, "never moves back");
        assert!(
            back.get(999).is_none(),
            "unknown sources are not checkpointed"
        );
        // The newest version of inode 5 (generation 1) is where to resume.
        assert_eq!(
            back.resume_points(),
            vec![ResumePoint {
                mark: mark(5, 1),
                offset: 30
            }]
        );
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
    fn old_entries_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let marks = Marks::default();
        marks.insert(1, mark(1, 0));
        marks.insert(2, mark(2, 0));
        let mut cp = Checkpoints::load(dir.path()).unwrap();
        cp.apply(&[pos(1, 10)], &marks, 0);
        cp.apply(&[pos(2, 10)], &marks, FORGET_AFTER_MS);
        cp.save(FORGET_AFTER_MS + 1).unwrap();
        let back = Checkpoints::load(dir.path()).unwrap();
        assert!(back.get(1).is_none());
        assert!(back.get(2).is_some());
    }
}
