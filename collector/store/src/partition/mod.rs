//! One partition: an ordered list of segments, the single writer, group commit,
//! lock-free-I/O reads (`read.rs`), lookups by timestamp (`lookup.rs`), segment
//! rolls (`roll.rs`) and retention (`retention.rs`).
//!
//! Locks and what they guard, in lock order (a lock is only taken while holding
//! none or some of those listed before it):
//! - `retention_lock` (mutex): one retention pass at a time.
//! - `sync_lock` (mutex): one group-commit fsync at a time; late arrivals find their
//!   offset already durable and return without a syscall.
//! - `writer` (mutex): the active segment, its open files, the next offset and the
//!   deduplication table. Held for an append's `write(2)` calls and for a roll
//!   (which fsyncs the old segment). Never held by readers, never held during a
//!   group-commit fsync. Another partition closing this one's files to stay
//!   within the descriptor budget only ever `try_lock`s it (see `handles.rs`).
//! - `segments` (rwlock): the segment list, read-locked only to clone `Arc`s. A roll
//!   pushes to its end; retention removes from its front.
//!
//! Three watermarks, all monotonic within one run: `written_end` (appended and in
//! the OS), `durable_end` (fsynced) and `visible_end` (what readers may see: equal
//! to `written_end`, or to `durable_end` with `publish_on_sync`). A batch below
//! `visible_end` is completely written, so a reader may read it without a lock.

mod files;
mod health;
mod lookup;
mod read;
mod retention;
mod roll;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use tributary_common::codec::Compression;
use tributary_common::record::{self, PayloadSummary};

use crate::batch::{self, BatchHeader, HEADER_LEN, MAX_PAYLOAD_LEN};
use crate::dedup::{self, Filtered, Sources};
use crate::error::Error;
use crate::handles::Handles;
use crate::index::{self, IndexEntry};
use crate::recovery;
use crate::segment::{ActiveFiles, Segment};
use crate::timeindex::{self, TimeEntry};

pub use lookup::TimestampOffset;
pub use retention::{Deleted, RetentionPolicy};

/// How a partition behaves; fixed for its lifetime.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartitionOptions {
    pub segment_bytes: u64,
    pub index_interval_bytes: u32,
    pub publish_on_sync: bool,
}

/// A payload as it goes to disk, made by [`Partition::prepare`] without any lock,
/// so that compressing it overlaps other work (other connections' appends, the
/// same connection's previous batch).
pub struct Prepared {
    /// The batch header's attributes: the codec actually used (none when
    /// compressing did not shrink it), maybe [`batch::ATTR_AGENT`].
    attributes: u8,
    bytes: Vec<u8>,
    /// Length of the payload it was made from.
    payload_len: usize,
}

impl Prepared {
    fn of(codec: Compression, payload: &[u8]) -> Prepared {
        let mut bytes = Vec::new();
        let codec = batch::store_payload(codec, payload, &mut bytes);
        Prepared {
            attributes: codec.code(),
            bytes,
            payload_len: payload.len(),
        }
    }
}

/// A payload's bytes as its sender compressed them (the agent protocol's BATCH):
/// `bytes` decompress with `codec` to `len` bytes of record blocks, which are the
/// payload once stamped with `agent` (the identity the collector authenticated;
/// empty when it stamps none). Stored as they are when they fit the partition.
#[derive(Debug, Clone, Copy)]
pub struct Sent<'a> {
    pub codec: Compression,
    pub bytes: &'a [u8],
    pub len: usize,
    pub agent: &'a str,
}

/// The offsets an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset of the batch's first appended record.
    pub base_offset: u64,
    /// One past the batch's last record (when every record was a duplicate: the
    /// partition's written end, which covers the earlier copies).
    pub next_offset: u64,
    /// Records appended.
    pub appended: u32,
    /// Records dropped because the partition already holds them (see `dedup`).
    pub duplicates: u32,
}

struct Writer {
    active: Arc<Segment>,
    /// The active segment's files while open (see `handles.rs`).
    files: Option<ActiveFiles>,
    /// Bytes in the active segment.
    size: u64,
    next_offset: u64,
    /// Highest stored offset per file source, for deduplication.
    sources: Sources,
}

/// One partition of a topic. All methods take `&self`; see the module docs for
/// the locking rules.
pub struct Partition {
    id: u32,
    dir: PathBuf,
    opts: PartitionOptions,
    retention_lock: Mutex<()>,
    writer: Mutex<Writer>,
    sync_lock: Mutex<()>,
    segments: RwLock<Vec<Arc<Segment>>>,
    written_end: AtomicU64,
    durable_end: AtomicU64,
    visible_end: AtomicU64,
    size_bytes: AtomicU64,
    /// See [`Partition::set_segment_age`].
    segment_age_ms: AtomicI64,
    /// See [`Partition::set_compression`] (a codec's wire code).
    compression: AtomicU8,
    failed: AtomicBool,
    /// Why appends fail now (see `health.rs`).
    problem: Mutex<Option<String>>,
    last_heal: Mutex<Option<std::time::Instant>>,
    /// The store's descriptor budget, and this partition's key in it.
    handles: Arc<Handles>,
    key: u64,
    /// This partition, for the budget to close its files (set once it is shared).
    me: OnceLock<Weak<Partition>>,
    /// Append time of the latest append, for closing the least recently used files.
    last_used: AtomicI64,
    /// Keeps the data directory lock alive as long as the partition is.
    _dir_lock: Arc<File>,
}

/// The wall clock in epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Partition {
    /// Open and recover the partition stored in `dir` (created when missing). Its
    /// files stay closed until the first append.
    pub(crate) fn open(
        dir: PathBuf,
        id: u32,
        opts: PartitionOptions,
        handles: Arc<Handles>,
        dir_lock: Arc<File>,
    ) -> Result<Arc<Partition>, Error> {
        let r = recovery::recover(&dir, opts.index_interval_bytes, &handles)?;
        let sources = dedup::load(&dir, &r.segments, &r.snapshots);
        let active = r
            .segments
            .last()
            .cloned()
            .ok_or_else(|| Error::corrupt(&dir, 0, "recovery returned no segment"))?;
        let p = Arc::new(Partition {
            id,
            opts,
            retention_lock: Mutex::new(()),
            writer: Mutex::new(Writer {
                active,
                files: None,
                size: r.active_size,
                next_offset: r.next_offset,
                sources,
            }),
            sync_lock: Mutex::new(()),
            segments: RwLock::new(r.segments),
            written_end: AtomicU64::new(r.next_offset),
            durable_end: AtomicU64::new(r.next_offset),
            visible_end: AtomicU64::new(r.next_offset),
            size_bytes: AtomicU64::new(r.total_bytes),
            segment_age_ms: AtomicI64::new(duration_ms(crate::DEFAULT_SEGMENT_AGE)),
            compression: AtomicU8::new(crate::DEFAULT_COMPRESSION.code()),
            failed: AtomicBool::new(false),
            problem: Mutex::new(None),
            last_heal: Mutex::new(None),
            key: handles.key(),
            handles,
            me: OnceLock::new(),
            last_used: AtomicI64::new(i64::MIN),
            _dir_lock: dir_lock,
            dir,
        });
        let _ = p.me.set(Arc::downgrade(&p));
        Ok(p)
    }

    /// The partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first offset still stored.
    pub fn start_offset(&self) -> u64 {
        let segs = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        segs.first().map_or(0, |s| s.base_offset)
    }

    /// The next offset to be written that readers will see: everything below it
    /// is readable. With `publish_on_sync` only durable offsets count.
    pub fn end_offset(&self) -> u64 {
        self.visible_end.load(Ordering::Acquire)
    }

    /// The next offset an append will get (written but maybe not yet visible).
    pub fn written_end_offset(&self) -> u64 {
        self.written_end.load(Ordering::Acquire)
    }

    /// Everything below this offset is fsynced.
    pub fn durable_end_offset(&self) -> u64 {
        self.durable_end.load(Ordering::Acquire)
    }

    /// Roll the active segment when a batch's newest record is at least `age`
    /// newer than the newest record of the segment's first batch (Kafka's
    /// `segment.ms`, on event time; see `roll.rs`). Takes effect with the next
    /// append. A zero age rolls before every batch.
    pub fn set_segment_age(&self, age: Duration) {
        self.segment_age_ms
            .store(duration_ms(age), Ordering::Relaxed);
    }

    /// Store the batches appended from now on compressed with `codec` (each batch
    /// records its codec, so a partition may hold several; reads handle them all).
    pub fn set_compression(&self, codec: Compression) {
        self.compression.store(codec.code(), Ordering::Relaxed);
    }

    /// The codec appends use.
    pub fn compression(&self) -> Compression {
        Compression::from_code(self.compression.load(Ordering::Relaxed))
            .unwrap_or(crate::DEFAULT_COMPRESSION)
    }

    /// Bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    fn check_failed(&self) -> Result<(), Error> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Failed {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Append one batch. `payload` is validated record blocks and `summary` its
    /// [`record::summarize`]; the record count must match the blocks' declared
    /// counts. Rolls to a new segment first when the active one would grow past
    /// `segment_bytes` or the batch is `segment_age` newer than the active segment's
    /// first batch (see `roll.rs`; fsyncing the old segment and its indexes). When this
    /// returns, the bytes were handed to the OS with `pwrite(2)`; they are durable
    /// only after [`sync_to`](Self::sync_to). On a failed write the partial batch is
    /// cut off again; if even that fails the partition refuses further writes.
    pub fn append(&self, payload: &[u8], summary: &PayloadSummary) -> Result<AppendResult, Error> {
        self.append_at(payload, summary, now_ms())
    }

    /// [`append`](Self::append) at the append time `now_ms` (epoch milliseconds),
    /// which the batch header records and rolls and retention by age go by.
    pub fn append_at(
        &self,
        payload: &[u8],
        summary: &PayloadSummary,
        now_ms: i64,
    ) -> Result<AppendResult, Error> {
        self.append_sent(payload, summary, now_ms, None)
    }

    /// [`append_at`](Self::append_at) of a payload that arrived compressed:
    /// `sent` is its codec and those bytes, which must decompress to exactly
    /// `payload`. When the codec is the partition's and no record is a duplicate,
    /// they are stored as they came instead of compressing `payload` again.
    pub fn append_sent(
        &self,
        payload: &[u8],
        summary: &PayloadSummary,
        now_ms: i64,
        sent: Option<Sent<'_>>,
    ) -> Result<AppendResult, Error> {
        let prepared = self.prepare(payload, summary, sent)?;
        self.append_prepared(payload, summary, now_ms, &prepared)
    }

    /// The first half of [`append_sent`](Self::append_sent), which takes no lock:
    /// check `payload` and `summary` and compress the payload with the partition's
    /// codec (or take `sent`'s bytes). Compressing outside the writer lock lets
    /// appends to one partition from several connections compress in parallel, and
    /// a connection prepare its next batch while its previous one is written; only
    /// a payload the deduplication rebuilds is compressed again under the lock.
    pub fn prepare(
        &self,
        payload: &[u8],
        summary: &PayloadSummary,
        sent: Option<Sent<'_>>,
    ) -> Result<Prepared, Error> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::BatchTooLarge {
                bytes: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        self.check_summary(payload, summary)?;
        let codec = self.compression();
        Ok(match sent {
            Some(s)
                if s.codec == codec
                    && codec != Compression::None
                    && s.bytes.len() + batch::STORED_LEN_PREFIX < payload.len()
                    && s.agent.len() <= usize::from(u16::MAX) =>
            {
                let flag = if s.agent.is_empty() {
                    0
                } else {
                    batch::ATTR_AGENT
                };
                Prepared {
                    attributes: codec.code() | flag,
                    bytes: batch::store_compressed_as(s.agent, s.len, s.bytes),
                    payload_len: payload.len(),
                }
            }
            _ => Prepared::of(codec, payload),
        })
    }

    /// The second half of [`append_sent`](Self::append_sent): append `payload`
    /// (with its `summary`) as `prepared`, which [`prepare`](Self::prepare) made
    /// from this payload.
    pub fn append_prepared(
        &self,
        payload: &[u8],
        summary: &PayloadSummary,
        now_ms: i64,
        prepared: &Prepared,
    ) -> Result<AppendResult, Error> {
        if prepared.payload_len != payload.len() {
            return Err(Error::InvalidBatch {
                path: self.dir.clone(),
                reason: format!(
                    "prepared from a payload of {} bytes, appended with one of {}",
                    prepared.payload_len,
                    payload.len()
                ),
            });
        }
        let mut w = lock(&self.writer);
        self.ensure_writable(&mut w)?;
        let result = self.append_locked(&mut w, payload, summary, prepared, now_ms);
        match &result {
            Ok(_) => self.recovered(),
            Err(e) => self.report(e),
        }
        result
    }

    fn append_locked(
        &self,
        w: &mut Writer,
        payload: &[u8],
        summary: &PayloadSummary,
        stored: &Prepared,
        now_ms: i64,
    ) -> Result<AppendResult, Error> {
        // Deduplicate under the writer lock, so that two connections resending the
        // same records cannot both pass the check.
        let invalid = |e: record::DecodeError| Error::InvalidBatch {
            path: self.dir.clone(),
            reason: format!("payload does not decode: {e}"),
        };
        let filtered = w.sources.filter(payload).map_err(invalid)?;
        let (payload, summary, duplicates) = match &filtered {
            Filtered::All => (payload, summary, 0),
            Filtered::Some {
                payload,
                summary,
                dropped,
            } => (payload.as_slice(), summary, *dropped),
            Filtered::None { dropped } => {
                return Ok(AppendResult {
                    base_offset: w.next_offset,
                    next_offset: w.next_offset,
                    appended: 0,
                    duplicates: *dropped,
                });
            }
        };
        let rebuilt;
        let stored = if matches!(filtered, Filtered::All) {
            stored
        } else {
            rebuilt = Prepared::of(self.compression(), payload);
            &rebuilt
        };
        let count = u64::from(summary.records);
        self.last_used.fetch_max(now_ms, Ordering::Relaxed);
        let header = BatchHeader::with_attributes(
            w.next_offset,
            stored.attributes,
            &stored.bytes,
            summary.records,
            now_ms,
            summary.max_timestamp_ms,
        );
        let total = header.total_len();
        if self.wants_roll(w, &header) {
            self.roll(w)?;
        }
        let pos = w.size;
        let seg = w.active.clone();
        let files = self.active_files(w)?;
        let written = files
            .log
            .write_all_at(&header.encode(), pos)
            .and_then(|()| {
                files
                    .log
                    .write_all_at(&stored.bytes, pos + HEADER_LEN as u64)
            });
        if let Err(e) = written {
            self.undo(files, &seg, pos);
            return Err(Error::io("write", &seg.log_path)(e));
        }
        if let Err(e) = self.index_batch(files, &seg, pos, &header) {
            self.undo(files, &seg, pos);
            return Err(e);
        }
        seg.appended(&header);
        // Cannot fail: the payload decoded in `filter` above.
        let _ = w.sources.observe(payload, header.base_offset);
        let base_offset = w.next_offset;
        w.next_offset += count;
        w.size += total;
        self.size_bytes.fetch_add(total, Ordering::Relaxed);
        self.written_end.store(w.next_offset, Ordering::Release);
        if !self.opts.publish_on_sync {
            self.visible_end.store(w.next_offset, Ordering::Release);
        }
        Ok(AppendResult {
            base_offset,
            next_offset: w.next_offset,
            appended: summary.records,
            duplicates,
        })
    }

    /// Write the index entries for the batch just written at `pos` when the interval
    /// policy wants them: to the files first, then to memory.
    fn index_batch(
        &self,
        files: &ActiveFiles,
        seg: &Segment,
        pos: u64,
        h: &BatchHeader,
    ) -> Result<(), Error> {
        let last = seg.last_index_entry();
        if !index::wants_entry(last.as_ref(), pos, self.opts.index_interval_bytes) {
            return Ok(());
        }
        // Both fit: a roll keeps positions and relative offsets below 2^32.
        let relative_offset = (h.base_offset - seg.base_offset) as u32;
        let offset_entry = IndexEntry {
            relative_offset,
            position: pos as u32,
        };
        let time_entry = TimeEntry {
            max_timestamp_ms: seg.max_timestamp().max(h.last_timestamp_ms),
            relative_offset,
        };
        let n = seg.index_len() as u64;
        files
            .index
            .write_all_at(&offset_entry.encode(), n * index::ENTRY_LEN as u64)
            .map_err(Error::io("write", &seg.index_path))?;
        files
            .timeindex
            .write_all_at(&time_entry.encode(), n * timeindex::ENTRY_LEN as u64)
            .map_err(Error::io("write", &seg.timeindex_path))?;
        seg.push_entries(offset_entry, time_entry);
        Ok(())
    }

    /// Number of file sources this partition tracks for deduplication.
    pub fn tracked_sources(&self) -> usize {
        lock(&self.writer).sources.len()
    }

    /// Cheap structural check: the blocks' declared counts add up to the summary.
    fn check_summary(&self, payload: &[u8], summary: &PayloadSummary) -> Result<(), Error> {
        let invalid = |reason: String| Error::InvalidBatch {
            path: self.dir.clone(),
            reason,
        };
        if summary.records == 0 {
            return Err(invalid("the batch holds no records".into()));
        }
        let mut declared = 0u64;
        for block in record::blocks(payload, false) {
            let block = block.map_err(|e| invalid(format!("payload does not decode: {e}")))?;
            declared += u64::from(block.header.record_count);
        }
        if declared != u64::from(summary.records) {
            return Err(invalid(format!(
                "summary counts {} records, blocks declare {declared}",
                summary.records
            )));
        }
        Ok(())
    }

    /// Cut a failed append off the log; refuse further writes if that fails too.
    fn undo(&self, files: &ActiveFiles, seg: &Segment, pos: u64) {
        if let Err(e) = files.log.set_len(pos) {
            tracing::error!(segment = %seg.log_path.display(), position = pos, error = %e,
                "cannot cut off a failed append; the partition refuses writes until reopened");
            self.failed.store(true, Ordering::Release);
        }
    }

    /// Group commit: make every offset below `offset` durable (offsets beyond what
    /// was written are clamped). Returns at once if an earlier fsync covered it;
    /// concurrent callers share one `fdatasync`, which runs without the writer lock.
    pub fn sync_to(&self, offset: u64) -> Result<(), Error> {
        if self.durable_end.load(Ordering::Acquire) >= offset {
            return Ok(());
        }
        let _sync = lock(&self.sync_lock);
        if self.durable_end.load(Ordering::Acquire) >= offset {
            return Ok(());
        }
        self.check_failed()?;
        let (file, active, end) = {
            let w = lock(&self.writer);
            (
                w.files.as_ref().map(|f| f.log.clone()),
                w.active.clone(),
                w.next_offset,
            )
        };
        if end <= self.durable_end.load(Ordering::Acquire) {
            return Ok(());
        }
        // Files are closed only once durable (see `close_files`); should they be
        // closed anyway, any handle on the log syncs it.
        let path = &active.log_path;
        let file = match file {
            Some(f) => f,
            None => File::open(path)
                .map(Arc::new)
                .map_err(Error::io("open segment", path))?,
        };
        if let Err(e) = file.sync_data() {
            // After a failed fsync the page cache state is unknown: stop writing.
            self.failed.store(true, Ordering::Release);
            return Err(Error::io("fsync segment", path)(e));
        }
        self.durable_end.fetch_max(end, Ordering::AcqRel);
        if self.opts.publish_on_sync {
            self.visible_end.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Make everything written so far durable.
    pub fn sync(&self) -> Result<(), Error> {
        self.sync_to(self.written_end.load(Ordering::Acquire))
    }
}
