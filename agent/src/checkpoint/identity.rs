//! What identifies a file version and where it continues: the types the file
//! inputs and the checkpoints share.

use std::sync::Arc;

use crate::input::file::{Anchor, FileKey};

/// The identity records carry: the collector's deduplication key (with the host)
/// and the path shown as their `source`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lineage {
    pub sid: u64,
    pub path: Arc<str>,
}

/// What identifies a file version across restarts: device, inode, birth time,
/// first-bytes fingerprint and truncation generation. A checkpoint stores it with the
/// offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileMark {
    pub dev: u64,
    pub ino: u64,
    /// Birth time in nanoseconds since the epoch; 0 when the filesystem has none.
    #[serde(default)]
    pub btime: i64,
    pub fp_len: u16,
    pub fp_hash: u64,
    pub generation: u32,
}

impl FileMark {
    pub(crate) fn key(&self) -> FileKey {
        FileKey {
            dev: self.dev,
            ino: self.ino,
            btime: self.btime,
        }
    }
}

/// A file to continue at `offset`, if it still has the identity `mark` and the bytes
/// before `offset` still hash to `end_hash` (0: not known, not checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub mark: FileMark,
    pub offset: u64,
    pub end_hash: u64,
    /// The identity its records carry when it continues another file's content.
    pub lineage: Option<Lineage>,
    /// Decompressed size of a compressed file (read to its end once `offset` is there).
    pub total: Option<u64>,
    /// (base, CRC32C of the bytes from base to `offset`), when known.
    pub crc: Option<(u64, u32)>,
    /// The anchor registered past `offset` (see `checkpoint::Entry::proof`).
    pub proof: Option<Anchor>,
}
