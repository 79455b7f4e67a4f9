//! The store's error type. Every variant names the file (and byte position or
//! offset) it is about and keeps the underlying error as its `source`, so a log
//! line is enough to find the problem on disk. Nothing here is ever a panic.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Stored bytes fail a check (CRC32C, header sanity, offset continuity, record
    /// encoding). Returned by reads of damaged data; the tail of the active segment
    /// is repaired at open instead.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// `topic.json` could not be parsed.
    #[error("cannot parse topic metadata {path}: {source}")]
    TopicMeta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `topic.json` parsed but holds values this version does not accept.
    #[error("invalid topic metadata {path}: {reason}")]
    BadTopicMeta { path: PathBuf, reason: String },
    /// The name does not match `[A-Za-z0-9._-]{1,249}` or is `.`/`..`.
    #[error(
        "invalid topic name {name:?}: use 1-249 characters from [A-Za-z0-9._-], not \".\" or \"..\""
    )]
    InvalidTopicName { name: String },
    /// A [`TopicConfig`](crate::TopicConfig) value is out of range.
    #[error("invalid topic config for {topic:?}: {reason}")]
    InvalidConfig { topic: String, reason: String },
    /// The batch is larger than a batch may be on disk.
    #[error("batch of {bytes} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { bytes: usize, max: usize },
    /// The batch does not match its summary (no records, or a different count).
    #[error("invalid batch for {path}: {reason}")]
    InvalidBatch { path: PathBuf, reason: String },
    /// The offset is below the first stored offset (deleted by retention).
    #[error("offset {offset} is out of range: the partition holds offsets {start}..{end}")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    /// An earlier write or fsync of this partition failed, so its state on disk is
    /// unknown. It refuses writes until it recovers from its files, which the next
    /// append tries again (at most once per second); the cause is in `/healthz`.
    #[error(
        "partition {path} refuses writes after an earlier failure; it retries on the next append once the cause (see the log or /healthz) is fixed"
    )]
    Failed { path: PathBuf },
    /// Another store (this process or another one) has the data directory open.
    #[error("data directory lock {path} is held by another store")]
    Locked { path: PathBuf },
}

impl From<tributary_common::fs::WriteError> for Error {
    fn from(e: tributary_common::fs::WriteError) -> Error {
        Error::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

impl Error {
    /// Wrap an `io::Error` with the operation and the file it concerns.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }
}
