//! One segment: a `.log` file of batches plus its in-memory sparse indexes (offset
//! and time), its largest record timestamp and its size.
//!
//! A [`Segment`] is shared (`Arc`) between the writer, readers and retention. It
//! holds no descriptor: a read takes a handle from the store's cache
//! ([`Segment::reader`], see `handles.rs`) for its duration and uses positional
//! reads on it, never taking the partition's writer lock; it only reads batches it
//! knows are completely written (see `partition/`). The segment never decides
//! visibility itself. Retention unlinks the files of a deleted segment while reads
//! may still hold its handle: they go on from it, later ones are out of range.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::UNIX_EPOCH;

use bytes::Bytes;

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::batchcache::BatchKey;
use crate::error::Error;
use crate::handles::Handles;
use crate::index::{self, IndexEntry};
use crate::timeindex::{self, TimeEntry};
use crate::walk::Walk;

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

/// The `.timeindex` path of a segment.
pub(crate) fn timeindex_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{}.timeindex", stem(base_offset)))
}

/// The deduplication snapshot covering the offsets below `offset`.
pub(crate) fn sources_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{}.sources", stem(offset)))
}

/// Parse `<20 digits>.<ext>` into the number.
pub(crate) fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let digits = name.strip_suffix(ext)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parse a segment file name (`<20 digits>.log`) into its base offset.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    parse_name(name, "log")
}

/// fsync a directory so that entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// A segment's offset and time indexes: `times[k]` belongs to `offsets[k]`.
#[derive(Debug, Default)]
pub(crate) struct Indexes {
    pub offsets: Vec<IndexEntry>,
    pub times: Vec<TimeEntry>,
}

/// What is known about a segment when it is opened.
pub(crate) struct Loaded {
    pub indexes: Indexes,
    /// Largest record timestamp, `i64::MIN` when there is none.
    pub max_timestamp_ms: i64,
    /// Latest append time (batch format 2), `i64::MIN` when none is known.
    pub last_append_ms: i64,
    /// Bytes of the log.
    pub bytes: u64,
}

/// The active segment's files, open for appending (the writer's).
pub(crate) struct ActiveFiles {
    /// Shared with the read cache while it keeps it.
    pub log: Arc<File>,
    pub index: File,
    pub timeindex: File,
}

/// A segment of a partition.
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    pub(crate) log_path: PathBuf,
    pub(crate) index_path: PathBuf,
    pub(crate) timeindex_path: PathBuf,
    /// Identifies the segment's handle in the store's read cache.
    key: u64,
    handles: Arc<Handles>,
    /// Retention took it out of the partition (its files are unlinked or going).
    deleted: AtomicBool,
    indexes: RwLock<Indexes>,
    max_timestamp_ms: AtomicI64,
    /// See [`Segment::last_append_ms`].
    last_append_ms: AtomicI64,
    /// See [`Segment::first_append_ms`]: [`UNREAD`] until the first header is read.
    first_append_ms: AtomicI64,
    bytes: AtomicU64,
}

/// `first_append_ms` not looked up yet.
const UNREAD: i64 = i64::MIN + 1;

impl Segment {
    pub(crate) fn new(
        dir: &Path,
        base_offset: u64,
        handles: Arc<Handles>,
        loaded: Loaded,
    ) -> Segment {
        Segment {
            base_offset,
            log_path: log_path(dir, base_offset),
            index_path: index_path(dir, base_offset),
            timeindex_path: timeindex_path(dir, base_offset),
            key: handles.key(),
            handles,
            deleted: AtomicBool::new(false),
            indexes: RwLock::new(loaded.indexes),
            max_timestamp_ms: AtomicI64::new(loaded.max_timestamp_ms),
            last_append_ms: AtomicI64::new(loaded.last_append_ms),
            first_append_ms: AtomicI64::new(if loaded.bytes == 0 { i64::MIN } else { UNREAD }),
            bytes: AtomicU64::new(loaded.bytes),
        }
    }

    /// Create an empty segment at `base_offset` (`.log` must not exist yet) and its
    /// empty indexes, returned open for appending. The caller fsyncs the directory.
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        handles: Arc<Handles>,
    ) -> Result<(Segment, ActiveFiles), Error> {
        let lp = log_path(dir, base_offset);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&lp)
            .map_err(Error::io("create segment", &lp))?;
        let index = create_truncated(&index_path(dir, base_offset), "create index")?;
        let timeindex = create_truncated(&timeindex_path(dir, base_offset), "create time index")?;
        let loaded = Loaded {
            indexes: Indexes::default(),
            max_timestamp_ms: i64::MIN,
            last_append_ms: i64::MIN,
            bytes: 0,
        };
        let seg = Segment::new(dir, base_offset, handles, loaded);
        let log = seg.handles.share(seg.key, Arc::new(log));
        let files = ActiveFiles {
            log,
            index,
            timeindex,
        };
        Ok((seg, files))
    }

    /// Open the files of an existing segment for appending (the active segment
    /// after its files were closed, or after an open).
    pub(crate) fn open_files(&self) -> Result<ActiveFiles, Error> {
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.log_path)
            .map_err(Error::io("open segment", &self.log_path))?;
        let index = open_rw(&self.index_path, "open index")?;
        let timeindex = open_rw(&self.timeindex_path, "open time index")?;
        Ok(ActiveFiles {
            log: self.handles.share(self.key, Arc::new(log)),
            index,
            timeindex,
        })
    }

    /// A handle on the log for one read (see `handles.rs`).
    pub(crate) fn reader(&self) -> Result<SegmentReader<'_>, Error> {
        Ok(SegmentReader {
            seg: self,
            file: self.handles.read_file(self.key, &self.log_path)?,
        })
    }

    /// Retention took the segment out of its partition: let go of its handle.
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.handles.forget(self.key);
        self.handles.batches.forget_segment(self.key);
    }

    /// Whether retention deleted the segment.
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Byte position and base offset of the indexed batch holding `offset` or the
    /// closest indexed batch before it.
    pub(crate) fn position_for(&self, offset: u64) -> (u64, u64) {
        let rel = offset.saturating_sub(self.base_offset);
        let idx = self.indexes.read().unwrap_or_else(PoisonError::into_inner);
        index::lookup(&idx.offsets, rel).map_or((0, self.base_offset), |e| self.at(&e))
    }

    /// Where to start walking for the first batch whose largest timestamp is
    /// `>= target`: byte position and base offset of an indexed batch.
    pub(crate) fn time_start(&self, target: i64) -> (u64, u64) {
        let idx = self.indexes.read().unwrap_or_else(PoisonError::into_inner);
        timeindex::start_for(&idx.times, target)
            .and_then(|k| idx.offsets.get(k))
            .map_or((0, self.base_offset), |e| self.at(e))
    }

    fn at(&self, e: &IndexEntry) -> (u64, u64) {
        (
            u64::from(e.position),
            self.base_offset + u64::from(e.relative_offset),
        )
    }

    pub(crate) fn last_index_entry(&self) -> Option<IndexEntry> {
        let idx = self.indexes.read().unwrap_or_else(PoisonError::into_inner);
        idx.offsets.last().copied()
    }

    /// Add an offset index entry and its time index entry.
    pub(crate) fn push_entries(&self, offset: IndexEntry, time: TimeEntry) {
        let mut idx = self.indexes.write().unwrap_or_else(PoisonError::into_inner);
        idx.offsets.push(offset);
        idx.times.push(time);
    }

    /// Number of entries in each index.
    pub(crate) fn index_len(&self) -> usize {
        self.indexes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .offsets
            .len()
    }

    /// The largest timestamp of the first batch: the segment's age for rolling
    /// (Kafka's `segment.ms` rule). `None` for an empty segment.
    pub(crate) fn first_batch_timestamp(&self) -> Option<i64> {
        let idx = self.indexes.read().unwrap_or_else(PoisonError::into_inner);
        idx.times.first().map(|t| t.max_timestamp_ms)
    }

    /// The largest record timestamp in the segment (`i64::MIN` when empty).
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp_ms.load(Ordering::Acquire)
    }

    /// Bytes of the log.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// When the collector appended the segment's last batch (epoch ms), if its
    /// format records it.
    pub(crate) fn last_append_ms(&self) -> Option<i64> {
        let t = self.last_append_ms.load(Ordering::Acquire);
        (t != i64::MIN).then_some(t)
    }

    /// When the collector appended the segment's first batch, if its format records
    /// it: how old the segment is for rolling by age.
    pub(crate) fn first_append_ms(&self) -> Option<i64> {
        let t = self.first_append_ms.load(Ordering::Acquire);
        if t != UNREAD {
            return (t != i64::MIN).then_some(t);
        }
        let mut b = [0u8; HEADER_LEN];
        // Not remembered when the file cannot be read now (no descriptors left):
        // the next roll check tries again.
        let file = self.handles.read_file(self.key, &self.log_path).ok()?;
        let found = file
            .read_exact_at(&mut b, 0)
            .ok()
            .and_then(|()| BatchHeader::decode(&b).ok())
            .and_then(|h| h.append_ms());
        let _ = self.first_append_ms.compare_exchange(
            UNREAD,
            found.unwrap_or(i64::MIN),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        found
    }

    /// Account for a batch appended by the writer.
    pub(crate) fn appended(&self, h: &BatchHeader) {
        self.max_timestamp_ms
            .fetch_max(h.last_timestamp_ms, Ordering::AcqRel);
        if let Some(t) = h.append_ms() {
            self.last_append_ms.fetch_max(t, Ordering::AcqRel);
            let _ = self.first_append_ms.compare_exchange(
                i64::MIN,
                t,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        self.bytes.fetch_add(h.total_len(), Ordering::AcqRel);
    }

    /// The log's modification time in epoch milliseconds.
    pub(crate) fn modified_ms(&self) -> Result<i64, Error> {
        let t = std::fs::metadata(&self.log_path)
            .and_then(|m| m.modified())
            .map_err(Error::io("stat", &self.log_path))?;
        Ok(match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        })
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.handles.forget(self.key);
    }
}

/// A segment with an open handle on its log, for the duration of one read.
pub(crate) struct SegmentReader<'a> {
    seg: &'a Segment,
    file: Arc<File>,
}

impl SegmentReader<'_> {
    /// Walk batch headers from `position` (which must hold the batch with base
    /// offset `offset`), never reaching offset `upper`.
    pub(crate) fn walk(&self, position: u64, offset: u64, upper: u64) -> Result<Walk<'_>, Error> {
        let path = &self.seg.log_path;
        let len = self.file.metadata().map_err(Error::io("stat", path))?.len();
        Ok(Walk::new(&self.file, path, len, position, offset, upper))
    }

    /// Fill `buf` from `position`; running into the end of the file is corruption
    /// (the caller only reads batches it knows exist).
    fn read_at(&self, buf: &mut [u8], position: u64) -> Result<(), Error> {
        let path = &self.seg.log_path;
        self.file.read_exact_at(buf, position).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::corrupt(path, position, "batch runs past the end of the segment")
            } else {
                Error::Io {
                    op: "read",
                    path: path.clone(),
                    source: e,
                }
            }
        })
    }

    /// Read the rest of the batch whose header is `h` at `position` (at most its
    /// declared length), verify the CRC and return the payload's record blocks
    /// (decompressed when it is stored compressed).
    pub(crate) fn read_payload(&self, position: u64, h: &BatchHeader) -> Result<Vec<u8>, Error> {
        let mut payload = vec![0u8; h.payload_len()];
        self.read_at(&mut payload, position + HEADER_LEN as u64)?;
        self.check_crc(position, h, &payload)?;
        h.expand(payload)
            .map_err(|e| self.undecodable(position, h, e))
    }

    /// [`read_payload`](Self::read_payload) through the store's cache of expanded
    /// batches (see `batchcache.rs`): what a read hands out records of.
    pub(crate) fn read_expanded(&self, position: u64, h: &BatchHeader) -> Result<Bytes, Error> {
        let key = BatchKey {
            segment: self.seg.key,
            pos: position,
            crc: h.crc,
        };
        let cache = &self.seg.handles.batches;
        if let Some(b) = cache.get(&key) {
            return Ok(b);
        }
        let b = Bytes::from(self.read_payload(position, h)?);
        cache.insert(key, b.clone());
        Ok(b)
    }

    /// [`read_payload`](Self::read_payload) into `buf`, which a scan keeps from
    /// batch to batch, so reading a partition does not allocate (and zero) two
    /// buffers per batch.
    pub(crate) fn read_payload_into<'b>(
        &self,
        position: u64,
        h: &BatchHeader,
        buf: &'b mut PayloadBuf,
    ) -> Result<&'b [u8], Error> {
        let n = h.payload_len();
        if buf.stored.len() < n {
            buf.stored.resize(n, 0);
        }
        let stored = &mut buf.stored[..n];
        self.read_at(stored, position + HEADER_LEN as u64)?;
        self.check_crc(position, h, stored)?;
        h.expand_into(&buf.stored[..n], &mut buf.expanded, &mut buf.stamped)
            .map_err(|e| self.undecodable(position, h, e))
    }

    fn check_crc(&self, position: u64, h: &BatchHeader, stored: &[u8]) -> Result<(), Error> {
        if h.compute_crc(stored) == h.crc {
            return Ok(());
        }
        Err(Error::corrupt(
            &self.seg.log_path,
            position,
            format!(
                "CRC32C mismatch in the batch of offsets {}..{}",
                h.base_offset,
                h.next_offset()
            ),
        ))
    }

    fn undecodable(&self, position: u64, h: &BatchHeader, why: String) -> Error {
        Error::corrupt(
            &self.seg.log_path,
            position,
            format!(
                "the batch of offsets {}..{}: {why}",
                h.base_offset,
                h.next_offset()
            ),
        )
    }
}

/// The buffers a reader reuses from batch to batch: a batch's bytes as stored,
/// decompressed, and stamped with its identity (see
/// [`SegmentReader::read_payload_into`]). At most three batches' worth (64 MiB each
/// at most), dropped with the read.
#[derive(Default)]
pub(crate) struct PayloadBuf {
    stored: Vec<u8>,
    expanded: Vec<u8>,
    stamped: Vec<u8>,
}

/// Open (creating when missing) a file for reading and writing, keeping its bytes.
pub(crate) fn open_rw(path: &Path, op: &'static str) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(Error::io(op, path))
}

fn create_truncated(path: &Path, op: &'static str) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(Error::io(op, path))
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
        assert_eq!(parse_log_name("00000000000000000042log"), None);
        assert_eq!(
            parse_name("00000000000000000042.sources", "sources"),
            Some(42)
        );
        assert_eq!(
            parse_name("00000000000000000042.sources.tmp", "sources"),
            None
        );
        assert_eq!(parse_name("00000000000000000042.timeindex", "index"), None);
    }
}
