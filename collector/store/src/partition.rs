//! One partition: an ordered list of segments, the single writer, group commit and
//! lock-free-I/O reads.
//!
//! Locks and what they guard:
//! - `writer` (mutex): the active segment, its index file and the next offset.
//!   Held for an append's `write(2)` calls and for a roll (which fsyncs the old
//!   segment). Never held by readers, never held during a group-commit fsync.
//! - `sync_lock` (mutex): one group-commit fsync at a time; late arrivals find their
//!   offset already durable and return without a syscall.
//! - `segments` (rwlock): the segment list, read-locked only to clone `Arc`s.
//!
//! Three watermarks, all monotonic within one run: `written_end` (appended and in
//! the OS), `durable_end` (fsynced) and `visible_end` (what readers may see: equal
//! to `written_end`, or to `durable_end` with `publish_on_sync`). A batch below
//! `visible_end` is completely written, so a reader may read it without a lock.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use tributary_common::record::{self, PayloadSummary};

use crate::batch::{BatchHeader, HEADER_LEN, MAX_PAYLOAD_LEN};
use crate::dedup::{Filtered, Sources};
use crate::error::Error;
use crate::index::{self, ENTRY_LEN, IndexEntry};
use crate::records::{self, Collected, ReadResult, Take};
use crate::recovery;
use crate::segment::{self, Segment};

/// How a partition behaves; fixed for its lifetime.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartitionOptions {
    pub segment_bytes: u64,
    pub index_interval_bytes: u32,
    pub publish_on_sync: bool,
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
    index_file: File,
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
    writer: Mutex<Writer>,
    sync_lock: Mutex<()>,
    segments: RwLock<Vec<Arc<Segment>>>,
    written_end: AtomicU64,
    durable_end: AtomicU64,
    visible_end: AtomicU64,
    size_bytes: AtomicU64,
    failed: AtomicBool,
    /// Keeps the data directory lock alive as long as the partition is.
    _dir_lock: Arc<File>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Partition {
    /// Open and recover the partition stored in `dir` (created when missing).
    pub(crate) fn open(
        dir: PathBuf,
        id: u32,
        opts: PartitionOptions,
        dir_lock: Arc<File>,
    ) -> Result<Partition, Error> {
        let r = recovery::recover(&dir, opts.index_interval_bytes)?;
        let sources = scan_sources(&r.segments);
        let active = r
            .segments
            .last()
            .cloned()
            .ok_or_else(|| Error::corrupt(&dir, 0, "recovery returned no segment"))?;
        Ok(Partition {
            id,
            opts,
            writer: Mutex::new(Writer {
                active,
                index_file: r.index_file,
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
            failed: AtomicBool::new(false),
            _dir_lock: dir_lock,
            dir,
        })
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
    /// `segment_bytes` (fsyncing the old segment and its index). When this
    /// returns, the bytes were handed to the OS with `pwrite(2)`; they are durable
    /// only after [`sync_to`](Self::sync_to). On a failed write the partial batch is
    /// cut off again; if even that fails the partition refuses further writes.
    pub fn append(&self, payload: &[u8], summary: &PayloadSummary) -> Result<AppendResult, Error> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::BatchTooLarge {
                bytes: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        self.check_summary(payload, summary)?;
        let mut w = lock(&self.writer);
        self.check_failed()?;
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
        let count = u64::from(summary.records);
        let header = BatchHeader::for_payload(
            w.next_offset,
            payload,
            summary.records,
            summary.min_timestamp_ms,
            summary.max_timestamp_ms,
        );
        let total = header.total_len();
        let rel_end = w.next_offset - w.active.base_offset + count;
        if w.size > 0 && (w.size + total > self.opts.segment_bytes || rel_end > u64::from(u32::MAX))
        {
            self.roll(&mut w)?;
        }
        let pos = w.size;
        let seg = w.active.clone();
        let written = seg
            .file
            .write_all_at(&header.encode(), pos)
            .and_then(|()| seg.file.write_all_at(payload, pos + HEADER_LEN as u64));
        if let Err(e) = written {
            self.undo(&seg, pos);
            return Err(Error::io("write", &seg.log_path)(e));
        }
        let last = seg.last_index_entry();
        if index::wants_entry(last.as_ref(), pos, self.opts.index_interval_bytes) {
            let entry = IndexEntry {
                relative_offset: (w.next_offset - seg.base_offset) as u32,
                position: pos as u32,
            };
            let at = (seg.index_len() * ENTRY_LEN) as u64;
            if let Err(e) = w.index_file.write_all_at(&entry.encode(), at) {
                self.undo(&seg, pos);
                return Err(Error::io("write", &seg.index_path)(e));
            }
            seg.push_index(entry);
        }
        // Cannot fail: the payload decoded in `filter` above.
        let _ = w.sources.observe(payload);
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
    fn undo(&self, seg: &Segment, pos: u64) {
        if let Err(e) = seg.file.set_len(pos) {
            tracing::error!(segment = %seg.log_path.display(), position = pos, error = %e,
                "cannot cut off a failed append; the partition refuses writes until reopened");
            self.failed.store(true, Ordering::Release);
        }
    }

    /// Seal the active segment (fsync log and index) and start a new one at the
    /// next offset. Called with the writer lock held.
    fn roll(&self, w: &mut Writer) -> Result<(), Error> {
        let rolled = self.try_roll(w);
        if rolled.is_err() {
            // Half a roll (an unsynced segment, a stray new file) is repaired by
            // recovery, not here.
            self.failed.store(true, Ordering::Release);
        }
        rolled
    }

    fn try_roll(&self, w: &mut Writer) -> Result<(), Error> {
        let old = w.active.clone();
        old.file
            .sync_data()
            .map_err(Error::io("fsync segment", &old.log_path))?;
        w.index_file
            .sync_data()
            .map_err(Error::io("fsync index", &old.index_path))?;
        self.durable_end.fetch_max(w.next_offset, Ordering::AcqRel);
        if self.opts.publish_on_sync {
            self.visible_end.fetch_max(w.next_offset, Ordering::AcqRel);
        }
        let (seg, index_file) = Segment::create(&self.dir, w.next_offset)?;
        segment::sync_dir(&self.dir)?;
        let seg = Arc::new(seg);
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(seg.clone());
        tracing::debug!(segment = %seg.log_path.display(), "rolled to a new segment");
        w.active = seg;
        w.index_file = index_file;
        w.size = 0;
        Ok(())
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
        let (file, path, end) = {
            let w = lock(&self.writer);
            (
                w.active.file.clone(),
                w.active.log_path.clone(),
                w.next_offset,
            )
        };
        if end <= self.durable_end.load(Ordering::Acquire) {
            return Ok(());
        }
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

    /// Read records with offset `>= offset`: at most `max_records`, and about
    /// `max_bytes` of message and field bytes (always at least one record when one
    /// is visible), never past [`end_offset`](Self::end_offset). An offset at or past
    /// the end returns no records and `next_offset == offset`; one below
    /// [`start_offset`](Self::start_offset) is [`Error::OffsetOutOfRange`]. Damaged
    /// data on the way is [`Error::Corrupt`] naming the file and byte.
    pub fn read(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadResult, Error> {
        // Load the end before the segment list: every segment holding offsets below
        // it is then in the list.
        let end = self.visible_end.load(Ordering::Acquire);
        let segs: Vec<Arc<Segment>> = {
            let all = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            let first = all
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1);
            all[first..].to_vec()
        };
        let start = segs.first().map_or(0, |s| s.base_offset);
        if offset < start {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        let mut take = Take {
            records: Vec::new(),
            bytes: 0,
            max_records,
            max_bytes,
        };
        if offset >= end || max_records == 0 {
            return Ok(ReadResult {
                records: take.records,
                next_offset: offset,
            });
        }
        let mut i = 0;
        let mut pos = segs[0].position_for(offset);
        let mut next = offset;
        // Invariant: next < end, and the batch at (segs[i], pos) has base <= next.
        loop {
            if segs.get(i + 1).is_some_and(|s| next >= s.base_offset) {
                i += 1;
                pos = segs[i].position_for(next);
                continue;
            }
            let seg = &segs[i];
            let h = seg.read_header(pos)?;
            if h.base_offset > next {
                return Err(Error::corrupt(
                    &seg.log_path,
                    pos,
                    format!(
                        "batch has base offset {} where offset {next} was expected",
                        h.base_offset
                    ),
                ));
            }
            if h.next_offset() <= next {
                // Before the wanted offset: skip (the next batch exists, as next < end).
                pos += h.total_len();
                continue;
            }
            let payload = seg.read_payload(pos, &h)?;
            match records::collect(&payload, &h, next, &mut take) {
                Ok(Collected::Done) => {}
                Ok(Collected::Full(at)) => {
                    next = at;
                    break;
                }
                Err(reason) => return Err(Error::corrupt(&seg.log_path, pos, reason)),
            }
            next = h.next_offset();
            pos += h.total_len();
            if next >= end || take.records.len() >= max_records {
                break;
            }
        }
        Ok(ReadResult {
            records: take.records,
            next_offset: next,
        })
    }
}

/// Rebuild the deduplication table from the log. A damaged batch in an old segment
/// ends the scan of that segment with a warning (reads of that range report the
/// damage); the table then only misses what cannot be read anyway.
fn scan_sources(segments: &[Arc<Segment>]) -> Sources {
    let mut sources = Sources::default();
    for seg in segments {
        let len = match seg.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                tracing::warn!(segment = %seg.log_path.display(), error = %e, "cannot stat segment for deduplication");
                continue;
            }
        };
        let mut pos = 0u64;
        while pos < len {
            let step = seg
                .read_header(pos)
                .and_then(|h| seg.read_payload(pos, &h).map(|p| (h, p)));
            match step {
                Ok((h, payload)) => {
                    if let Err(e) = sources.observe(&payload) {
                        tracing::warn!(segment = %seg.log_path.display(), position = pos, error = %e, "undecodable batch skipped while rebuilding deduplication state");
                    }
                    pos += h.total_len();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stopped rebuilding deduplication state for this segment");
                    break;
                }
            }
        }
    }
    sources
}
