//! The unit that moves through the agent's pipeline: a run of complete records
//! from one source, already encoded as one record block. File and syslog inputs
//! make chunks; the batcher concatenates them.

use std::sync::Arc;

/// A run of complete records from one file, already encoded as one record block
/// (`tributary_common::record::BlockWriter`): the unit that moves through the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub topic: Arc<str>,
    /// Exactly one encoded block. Its header carries the records' identity (the
    /// file's lineage, see [`Lineage`](crate::checkpoint::Lineage)), which for a copy is not `source_id`.
    pub payload: Vec<u8>,
    pub records: u32,
    /// The file version's identity (device, inode, first-bytes fingerprint,
    /// generation): what its checkpoint is kept under.
    pub source_id: u64,
    /// The file's own path.
    pub path: Arc<str>,
    /// Byte offset in the file of the first record.
    pub start_offset: u64,
    /// Byte offset just past the last consumed byte (newline included).
    pub end_offset: u64,
    /// Hash of the bytes just before `end_offset` (see `fingerprint::end_hash_of`);
    /// 0 for sources without offsets.
    pub end_hash: u64,
    /// CRC32C of the bytes from `crc_base` to `end_offset` (see `anchor`).
    pub crc_base: u64,
    pub crc: u32,
    /// A journal cursor: the checkpoint of a `journald` input once acknowledged
    /// (`path` then names the input).
    pub cursor: Option<Arc<str>>,
    /// The source had nothing more to read when this chunk was made (the end of the
    /// file, an idle connection or journal): the batcher need not wait for more of it
    /// and sends the batch as soon as the output can take it, instead of at `linger`.
    pub at_end: bool,
}
