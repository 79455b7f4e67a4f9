//! Consumer groups: the offsets each group has committed per topic and partition,
//! kept by the collector so downstream consumers resume where they stopped.
//!
//! One file per group, `<data_dir>/groups/<group>.json`, rewritten atomically
//! (temp file, fsync, rename, fsync of the directory) before a commit is answered,
//! so a committed offset survives SIGTERM, SIGKILL and power loss. A file that does
//! not parse is set aside (`.json.unreadable`) with a warning and the group starts
//! empty, never a crash.
//!
//! The committed offset is the next offset to consume (Kafka's convention): a
//! consumer that printed offsets up to N commits N + 1. Lag = end offset −
//! committed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Why a commit or a load failed.
/// Default most consumer groups kept: each is a file and a map in memory, and any
/// client of the API may create one.
pub const DEFAULT_MAX_GROUPS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "invalid group name {0:?}: use 1-240 characters from [A-Za-z0-9._-], not \".\" or \"..\""
    )]
    InvalidName(String),
    #[error(
        "there are {0} consumer groups already, the most this collector keeps: commit with an existing group, or delete data_dir/groups/<group>.json of groups no longer used"
    )]
    TooMany(usize),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: u64,
    pub updated_ms: i64,
}

/// (topic, partition) → committed offset of one group.
pub type GroupOffsets = BTreeMap<(String, u32), Committed>;

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum File {
    #[serde(rename = "1")]
    V1 { offsets: Vec<FileEntry> },
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    topic: String,
    partition: u32,
    offset: u64,
    updated_ms: i64,
}

/// All groups of a collector.
#[derive(Debug)]
pub struct Groups {
    dir: PathBuf,
    groups: Mutex<HashMap<String, GroupOffsets>>,
    max_groups: std::sync::atomic::AtomicUsize,
}

/// Group names follow the topic name rules (they name files), up to 240
/// characters so that `<group>.json.tmp` stays within a file name's 255 bytes.
pub fn valid_group_name(name: &str) -> bool {
    name.len() <= 240 && tributary_common::names::valid_topic_name(name)
}

impl From<tributary_common::fs::WriteError> for GroupError {
    fn from(e: tributary_common::fs::WriteError) -> GroupError {
        GroupError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GroupError {
    let path = path.to_owned();
    move |source| GroupError::Io { op, path, source }
}

impl Groups {
    /// Load every group under `data_dir/groups` (created when missing).
    pub fn open(data_dir: &Path) -> Result<Groups, GroupError> {
        let dir = data_dir.join("groups");
        std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let mut groups = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
            let entry = entry.map_err(io("list", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(group) = name.strip_suffix(".json") else {
                continue;
            };
            if !valid_group_name(group) {
                continue;
            }
            let path = entry.path();
            let bytes = std::fs::read(&path).map_err(io("read", &path))?;
            match serde_json::from_slice::<File>(&bytes) {
                Ok(File::V1 { offsets }) => {
                    let map = offsets
                        .into_iter()
                        .map(|e| {
                            (
                                (e.topic, e.partition),
                                Committed {
                                    offset: e.offset,
                                    updated_ms: e.updated_ms,
                                },
                            )
                        })
                        .collect();
                    groups.insert(group.to_owned(), map);
                }
                Err(e) => {
                    let aside = path.with_extension("json.unreadable");
                    tracing::warn!(path = %path.display(), error = %e, moved_to = %aside.display(),
                        "consumer group offsets do not parse; the group starts without them");
                    std::fs::rename(&path, &aside).map_err(io("rename", &path))?;
                }
            }
        }
        Ok(Groups {
            dir,
            groups: Mutex::new(groups),
            max_groups: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_GROUPS),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, GroupOffsets>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The names of all groups, sorted.
    /// Most groups kept; a commit that would create one more is refused.
    pub fn set_max_groups(&self, n: usize) {
        self.max_groups
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// A group's offsets (empty for an unknown group).
    pub fn offsets(&self, group: &str) -> GroupOffsets {
        self.lock().get(group).cloned().unwrap_or_default()
    }

    /// Commit offsets of `group` and make them durable before returning. Blocking
    /// (fsync): call it from the blocking pool. Commits to one group are serialized.
    pub fn commit(
        &self,
        group: &str,
        commits: &[(String, u32, u64)],
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if !valid_group_name(group) {
            return Err(GroupError::InvalidName(group.to_owned()));
        }
        // Holding the lock across the write keeps the file and memory in step.
        let mut groups = self.lock();
        let max = self.max_groups.load(std::sync::atomic::Ordering::Relaxed);
        if !groups.contains_key(group) && groups.len() >= max {
            return Err(GroupError::TooMany(groups.len()));
        }
        let mut next = groups.get(group).cloned().unwrap_or_default();
        for (topic, partition, offset) in commits {
            next.insert(
                (topic.clone(), *partition),
                Committed {
                    offset: *offset,
                    updated_ms: now_ms,
                },
            );
        }
        self.write(group, &next)?;
        groups.insert(group.to_owned(), next);
        Ok(())
    }

    fn write(&self, group: &str, offsets: &GroupOffsets) -> Result<(), GroupError> {
        let file = File::V1 {
            offsets: offsets
                .iter()
                .map(|((topic, partition), c)| FileEntry {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: c.offset,
                    updated_ms: c.updated_ms,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        let path = self.dir.join(format!("{group}.json"));
        Ok(tributary_common::fs::write_atomic(&path, &bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_reopen_and_later_commits_win() {
        let dir = tempfile::tempdir().unwrap();
        let g = Groups::open(dir.path()).unwrap();
        assert!(g.names().is_empty());
        g.commit("billing", &[("app".into(), 0, 10), ("app".into(), 1, 5)], 1)
            .unwrap();
        g.commit("billing", &[("app".into(), 0, 42)], 2).unwrap();
        g.commit("audit", &[("syslog".into(), 3, 7)], 3).unwrap();
        assert!(!dir.path().join("groups/billing.json.tmp").exists());

        let g = Groups::open(dir.path()).unwrap();
        assert_eq!(g.names(), ["audit", "billing"]);
        let b = g.offsets("billing");
        assert_eq!(b[&("app".to_string(), 0)].offset, 42);
        assert_eq!(b[&("app".to_string(), 1)].offset, 5);
        assert!(g.offsets("nobody").is_empty());
    }

    #[test]
    fn bad_names_and_damaged_files_are_refused_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let g = Groups::open(dir.path()).unwrap();
        assert!(matches!(
            g.commit("../etc", &[("app".into(), 0, 1)], 0),
            Err(GroupError::InvalidName(_))
        ));
        std::fs::write(dir.path().join("groups/broken.json"), b"{nope").unwrap();
        std::fs::write(dir.path().join("groups/x.json.tmp"), b"half").unwrap();
        let g = Groups::open(dir.path()).unwrap();
        assert!(g.names().is_empty());
        assert!(dir.path().join("groups/broken.json.unreadable").exists());
        assert!(!dir.path().join("groups/x.json.tmp").exists());
    }
}
