//! One segment: a `.log` file of batches plus its in-memory sparse index.
//!
//! A [`Segment`] is shared (`Arc`) between the writer and readers. Readers use
//! positional reads on the shared file handle and never take the partition's writer
//! lock; they only read batches they know are completely written (see
//! `partition.rs`). The segment never decides visibility itself.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::error::Error;
use crate::index::{self, IndexEntry};

/// File name stem of the segment starting at `base_offset`: 20 digits.
pub(crate) fn stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

/// The `.log` path of a segment.
pub(crate) fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{}.log", stem(base_offset)))
}

/// The `.index` path of a segment.
pub(crate) fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{}.index", stem(base_offset)))
}

/// Parse a segment file name (`<20 digits>.log`) into its base offset.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// fsync a directory so that entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// A segment of a partition.
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    pub(crate) log_path: PathBuf,
    pub(crate) index_path: PathBuf,
    pub(crate) file: Arc<File>,
    index: RwLock<Vec<IndexEntry>>,
}

impl Segment {
    pub(crate) fn new(
        dir: &Path,
        base_offset: u64,
        file: File,
        entries: Vec<IndexEntry>,
    ) -> Segment {
        Segment {
            base_offset,
            log_path: log_path(dir, base_offset),
            index_path: index_path(dir, base_offset),
            file: Arc::new(file),
            index: RwLock::new(entries),
        }
    }

    /// Create an empty segment at `base_offset` (`.log` must not exist yet) and its
    /// empty `.index`, returned open for appending. The caller fsyncs the directory.
    pub(crate) fn create(dir: &Path, base_offset: u64) -> Result<(Segment, File), Error> {
        let lp = log_path(dir, base_offset);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&lp)
            .map_err(Error::io("create segment", &lp))?;
        let ip = index_path(dir, base_offset);
        let index = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&ip)
            .map_err(Error::io("create index", &ip))?;
        Ok((Segment::new(dir, base_offset, log, Vec::new()), index))
    }

    /// Byte position of the batch holding `offset` or the closest batch before it.
    pub(crate) fn position_for(&self, offset: u64) -> u64 {
        let rel = offset.saturating_sub(self.base_offset);
        let idx = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index::lookup(&idx, rel).map_or(0, |e| u64::from(e.position))
    }

    pub(crate) fn last_index_entry(&self) -> Option<IndexEntry> {
        let idx = self.index.read().unwrap_or_else(PoisonError::into_inner);
        idx.last().copied()
    }

    pub(crate) fn push_index(&self, e: IndexEntry) {
        let mut idx = self.index.write().unwrap_or_else(PoisonError::into_inner);
        idx.push(e);
    }

    pub(crate) fn index_len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Fill `buf` from `position`; running into the end of the file is corruption
    /// (the caller only reads batches it knows exist).
    fn read_at(&self, buf: &mut [u8], position: u64) -> Result<(), Error> {
        self.file.read_exact_at(buf, position).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::corrupt(
                    &self.log_path,
                    position,
                    "batch runs past the end of the segment",
                )
            } else {
                Error::Io {
                    op: "read",
                    path: self.log_path.clone(),
                    source: e,
                }
            }
        })
    }

    /// Read and sanity-check the batch header at `position`.
    pub(crate) fn read_header(&self, position: u64) -> Result<BatchHeader, Error> {
        let mut b = [0u8; HEADER_LEN];
        self.read_at(&mut b, position)?;
        BatchHeader::decode(&b).map_err(|reason| Error::corrupt(&self.log_path, position, reason))
    }

    /// Read the rest of the batch whose header is `h` at `position` (at most its
    /// declared length), verify the CRC and return the payload.
    pub(crate) fn read_payload(&self, position: u64, h: &BatchHeader) -> Result<Vec<u8>, Error> {
        let mut payload = vec![0u8; h.payload_len()];
        self.read_at(&mut payload, position + HEADER_LEN as u64)?;
        if h.compute_crc(&payload) != h.crc {
            return Err(Error::corrupt(
                &self.log_path,
                position,
                format!("CRC32C mismatch in batch at offset {}", h.base_offset),
            ));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(stem(0), "00000000000000000000");
        assert_eq!(stem(u64::MAX), "18446744073709551615");
        assert_eq!(parse_log_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_name("18446744073709551615.log"), Some(u64::MAX));
        assert_eq!(parse_log_name("99999999999999999999.log"), None);
        assert_eq!(parse_log_name("0000000000000000042.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
        assert_eq!(parse_log_name("0000000000000000004x.log"), None);
        assert_eq!(parse_log_name("+0000000000000000042.log"), None);
    }
}
