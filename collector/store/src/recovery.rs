//! Opening a partition directory after a clean stop or a crash.
//!
//! - Segments are listed by name (`<20-digit base offset>.log`) and sorted; other
//!   files are ignored, except leftovers of an interrupted retention pass or
//!   snapshot write (indexes and snapshots below the first segment, `*.tmp`), which
//!   are removed.
//! - Every segment's `.index` and `.timeindex` are loaded and checked (see
//!   `rebuild.rs`); missing or damaged ones are rebuilt from the log with a warning.
//! - Older segments are trusted (they were fsynced before the next one was
//!   created); only their indexes are read, plus the headers after the last index
//!   entry (for the segment's largest timestamp). Damage found later in them
//!   surfaces as a read error, never as a silent skip.
//! - The last segment is validated batch by batch from its last index entry: header
//!   sanity, offset continuity, CRC32C, and the payload's record count
//!   (`tributary_common::record::summarize`). At the first bad or torn batch the
//!   file is truncated there, fsynced, and a warning names the file, byte and offset.
//!   It is validated from its start instead when the index is missing or damaged,
//!   when its last entry does not lead to a good batch (wrong position or wrong
//!   offset, at byte 0 too), and when its entries do not point to batch starts and
//!   the index rebuilt from the headers would not lead, batch by batch, to the end
//!   validated from that entry.
//! - Opening is idempotent: the next open of the unchanged directory validates from
//!   the last entry of the index written here, and so ends where this open cut the
//!   log, with the same indexes (see `open_active`).
//!
//! Recovery never panics on file contents; only I/O failures are errors.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;
use tributary_common::record;

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::error::Error;
use crate::handles::Handles;
use crate::index::{self, IndexEntry};
use crate::rebuild::{self, Built, LogFile};
use crate::segment::{self, Loaded, Segment};
use crate::timeindex;

/// A partition's state after recovery.
pub(crate) struct Recovered {
    /// All segments, oldest first; never empty.
    pub segments: Vec<Arc<Segment>>,
    /// The offset the next append gets.
    pub next_offset: u64,
    /// Bytes in the last (active) segment.
    pub active_size: u64,
    /// Bytes in all segments.
    pub total_bytes: u64,
    /// Offsets of the deduplication snapshots (`<offset>.sources`), sorted.
    pub snapshots: Vec<u64>,
}

/// Open (creating when needed) the partition directory `dir` and recover it. Files
/// are open only while they are looked at (see `handles.rs`).
pub(crate) fn recover(
    dir: &Path,
    interval_bytes: u32,
    handles: &Arc<Handles>,
) -> Result<Recovered, Error> {
    fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let listing = list(dir)?;
    let bases = &listing.segments;
    let Some((&last, older)) = bases.split_last() else {
        // Left by a creation that stopped half-way: an index without its log.
        remove_leftovers(&listing, u64::MAX);
        let (seg, _files) = Segment::create(dir, 0, handles.clone())?;
        segment::sync_dir(dir)?;
        return Ok(Recovered {
            segments: vec![Arc::new(seg)],
            next_offset: 0,
            active_size: 0,
            total_bytes: 0,
            snapshots: Vec::new(),
        });
    };
    remove_leftovers(&listing, bases[0]);
    let mut segments = Vec::with_capacity(bases.len());
    let mut total_bytes = 0;
    for (i, &base) in older.iter().enumerate() {
        let seg = open_sealed(dir, base, bases[i + 1], interval_bytes, handles)?;
        total_bytes += seg.bytes();
        segments.push(Arc::new(seg));
    }
    let active = open_active(dir, last, interval_bytes, handles)?;
    total_bytes += active.size;
    segments.push(Arc::new(active.segment));
    segment::sync_dir(dir)?;
    Ok(Recovered {
        segments,
        next_offset: active.next_offset,
        active_size: active.size,
        total_bytes,
        snapshots: listing.snapshots,
    })
}

/// What a partition directory holds.
struct Listing {
    /// Segment base offsets, sorted.
    segments: Vec<u64>,
    /// Deduplication snapshot offsets, sorted.
    snapshots: Vec<u64>,
    /// Index files and snapshots by the number in their name, and temp files.
    others: Vec<(PathBuf, Option<u64>)>,
}

fn list(dir: &Path) -> Result<Listing, Error> {
    let mut l = Listing {
        segments: Vec::new(),
        snapshots: Vec::new(),
        others: Vec::new(),
    };
    for entry in fs::read_dir(dir).map_err(Error::io("list directory", dir))? {
        let entry = entry.map_err(Error::io("list directory", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(base) = segment::parse_log_name(&name) {
            l.segments.push(base);
        } else if let Some(o) = segment::parse_name(&name, "sources") {
            l.snapshots.push(o);
            l.others.push((entry.path(), Some(o)));
        } else if name.ends_with(".tmp") {
            l.others.push((entry.path(), None));
        } else if let Some(o) =
            segment::parse_name(&name, "index").or_else(|| segment::parse_name(&name, "timeindex"))
        {
            l.others.push((entry.path(), Some(o)));
        }
    }
    l.segments.sort_unstable();
    l.snapshots.sort_unstable();
    Ok(l)
}

/// Remove temp files and the indexes and snapshots of segments below `first` (left
/// by a retention pass that was interrupted after deleting the logs).
fn remove_leftovers(listing: &Listing, first: u64) {
    for (path, number) in &listing.others {
        if number.is_some_and(|n| n >= first) {
            continue;
        }
        match fs::remove_file(path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a leftover file"),
            Err(e) => warn!(path = %path.display(), error = %e, "cannot remove a leftover file"),
        }
    }
}

fn file_len(file: &File, path: &Path) -> Result<u64, Error> {
    Ok(file.metadata().map_err(Error::io("stat", path))?.len())
}

/// Open an older segment: trust its bytes, load (or rebuild) its indexes.
fn open_sealed(
    dir: &Path,
    base: u64,
    upper: u64,
    interval_bytes: u32,
    handles: &Arc<Handles>,
) -> Result<Segment, Error> {
    let lp = segment::log_path(dir, base);
    let file = File::open(&lp).map_err(Error::io("open segment", &lp))?;
    let len = file_len(&file, &lp)?;
    let ip = segment::index_path(dir, base);
    let tp = segment::timeindex_path(dir, base);
    let log = LogFile {
        file: &file,
        path: &lp,
        len,
        base,
        upper,
    };
    let loaded = rebuild::load_index(&ip, len)?;
    let built = rebuild::open_indexes(&log, &ip, &tp, loaded, interval_bytes)?;
    let loaded = Loaded {
        indexes: built.indexes,
        max_timestamp_ms: built.max_timestamp_ms,
        last_append_ms: built.last_append_ms,
        bytes: len,
    };
    Ok(Segment::new(dir, base, handles.clone(), loaded))
}

/// The `.index` entry for a batch at `pos`, if the interval policy wants one.
fn entry_for(
    entries: &[IndexEntry],
    pos: u64,
    h: &BatchHeader,
    base: u64,
    interval_bytes: u32,
) -> Option<IndexEntry> {
    rebuild::entries_for(entries.last(), pos, h, base, 0, interval_bytes).map(|(e, _)| e)
}

/// Read the header at `pos`: `Ok(Err(reason))` when it is torn or not sane.
fn read_header(
    file: &File,
    path: &Path,
    pos: u64,
    len: u64,
) -> Result<Result<BatchHeader, String>, Error> {
    if len - pos < HEADER_LEN as u64 {
        return Ok(Err(format!("torn batch header ({} bytes)", len - pos)));
    }
    let mut b = [0u8; HEADER_LEN];
    file.read_exact_at(&mut b, pos)
        .map_err(Error::io("read", path))?;
    Ok(BatchHeader::decode(&b))
}

/// Fully check the batch at `pos` of the active segment.
fn check_batch(
    file: &File,
    path: &Path,
    pos: u64,
    len: u64,
    expected: u64,
    base: u64,
) -> Result<Result<BatchHeader, String>, Error> {
    let h = match read_header(file, path, pos, len)? {
        Ok(h) => h,
        Err(reason) => return Ok(Err(reason)),
    };
    if h.base_offset != expected {
        return Ok(Err(format!(
            "base offset {} where {expected} was expected",
            h.base_offset
        )));
    }
    if h.next_offset() - base > u64::from(u32::MAX) || pos > u64::from(u32::MAX) {
        return Ok(Err("batch does not fit the segment's 32-bit index".into()));
    }
    if pos + h.total_len() > len {
        return Ok(Err(format!(
            "torn batch: {} bytes declared, {} on disk",
            h.total_len(),
            len - pos
        )));
    }
    let mut payload = vec![0u8; h.payload_len()];
    file.read_exact_at(&mut payload, pos + HEADER_LEN as u64)
        .map_err(Error::io("read", path))?;
    if h.compute_crc(&payload) != h.crc {
        return Ok(Err("CRC32C mismatch".into()));
    }
    let payload = match h.expand(payload) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    match record::summarize(&payload) {
        Ok(s) if s.records == h.record_count => Ok(Ok(h)),
        Ok(s) => Ok(Err(format!(
            "header declares {} records, payload holds {}",
            h.record_count, s.records
        ))),
        Err(e) => Ok(Err(format!("payload does not decode: {e}"))),
    }
}

struct Active {
    segment: Segment,
    next_offset: u64,
    size: u64,
}

/// Where a validation scan of the active segment ended.
struct Scan {
    end: u64,
    next_offset: u64,
    bad: Option<String>,
}

fn scan_active(
    file: &File,
    path: &Path,
    len: u64,
    base: u64,
    start: (u64, u64),
    entries: &mut Vec<IndexEntry>,
    interval_bytes: u32,
) -> Result<Scan, Error> {
    let (mut pos, mut expected) = start;
    while pos < len {
        match check_batch(file, path, pos, len, expected, base)? {
            Ok(h) => {
                if let Some(e) = entry_for(entries, pos, &h, base, interval_bytes) {
                    entries.push(e);
                }
                pos += h.total_len();
                expected = h.next_offset();
            }
            Err(reason) => {
                return Ok(Scan {
                    end: pos,
                    next_offset: expected,
                    bad: Some(reason),
                });
            }
        }
    }
    Ok(Scan {
        end: pos,
        next_offset: expected,
        bad: None,
    })
}

/// How the active segment is recovered: where its validated log ends and its
/// indexes, with what must be written back.
struct Decided {
    scan: Scan,
    built: Built,
    write_index: bool,
    write_timeindex: bool,
}

/// Open the last segment: validate its tail, truncate a torn or corrupt end.
///
/// Opening must be idempotent: a second open of the unchanged directory has to
/// keep the same bytes and offsets as this one (else offsets readers saw could be
/// reused, or records could appear). That open validates from the last entry of the
/// `.index` written here, so this one guarantees that the chain of good batches
/// starting at that entry ends exactly where the log is cut. Everything decided here
/// holds the same at the next open: a loaded index that checks out is kept
/// unchanged, and an index built here checks out at the next open.
fn open_active(
    dir: &Path,
    base: u64,
    interval_bytes: u32,
    handles: &Arc<Handles>,
) -> Result<Active, Error> {
    let lp = segment::log_path(dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lp)
        .map_err(Error::io("open segment", &lp))?;
    let len = file_len(&file, &lp)?;
    let ip = segment::index_path(dir, base);
    let tp = segment::timeindex_path(dir, base);
    let seg = SegmentFiles {
        file: &file,
        log: &lp,
        index: &ip,
        timeindex: &tp,
        base,
        interval_bytes,
    };

    let decided = match rebuild::load_index(&ip, len)? {
        Ok(entries) => seg.recover_with_index(len, entries)?,
        Err(reason) => {
            warn!(index = %ip.display(), %reason, "rebuilding segment index");
            None
        }
    };
    let d = match decided {
        Some(d) => d,
        None => seg.recover_from_start(len)?,
    };

    if let Some(reason) = &d.scan.bad {
        warn!(segment = %lp.display(), position = d.scan.end, offset = d.scan.next_offset,
            bytes_dropped = len - d.scan.end, %reason,
            "truncating torn or corrupt segment tail");
        file.set_len(d.scan.end)
            .and_then(|()| file.sync_all())
            .map_err(Error::io("truncate segment", &lp))?;
    } else {
        // What is recovered is what readers may see: make it durable first.
        file.sync_data().map_err(Error::io("fsync segment", &lp))?;
    }
    if d.write_index {
        rebuild::write_file(&ip, &index::encode_all(&d.built.indexes.offsets))?;
    }
    if d.write_timeindex {
        rebuild::write_file(&tp, &timeindex::encode_all(&d.built.indexes.times))?;
    }
    let loaded = Loaded {
        indexes: d.built.indexes,
        max_timestamp_ms: d.built.max_timestamp_ms,
        last_append_ms: d.built.last_append_ms,
        bytes: d.scan.end,
    };
    Ok(Active {
        segment: Segment::new(dir, base, handles.clone(), loaded),
        next_offset: d.scan.next_offset,
        size: d.scan.end,
    })
}

/// The active segment's files, for the recovery steps.
struct SegmentFiles<'a> {
    file: &'a File,
    log: &'a Path,
    index: &'a Path,
    timeindex: &'a Path,
    base: u64,
    interval_bytes: u32,
}

impl SegmentFiles<'_> {
    /// The log as the first `end` bytes of the file.
    fn log_file(&self, end: u64) -> LogFile<'_> {
        LogFile {
            file: self.file,
            path: self.log,
            len: end,
            base: self.base,
            upper: u64::MAX,
        }
    }

    /// Recover with the loaded `.index` `entries` (of a log of `len` bytes): validate
    /// from their last entry. `None` when they cannot be trusted, or the indexes they
    /// lead to would make the next open validate to another end: then the whole
    /// segment must be validated.
    fn recover_with_index(
        &self,
        len: u64,
        mut entries: Vec<IndexEntry>,
    ) -> Result<Option<Decided>, Error> {
        let base = self.base;
        let start = entries.last().map_or((0, base), |e| {
            (u64::from(e.position), base + u64::from(e.relative_offset))
        });
        let n = entries.len();
        let scan = scan_active(
            self.file,
            self.log,
            len,
            base,
            start,
            &mut entries,
            self.interval_bytes,
        )?;
        if scan.bad.is_some() && scan.end == start.0 && start != (0, base) {
            // The last index entry does not lead to a good batch (wrong position or
            // wrong offset, at byte 0 too): the index is not to be trusted.
            warn!(index = %self.index.display(), position = start.0, offset = start.1,
                "last index entry does not point to a good batch; validating the whole segment");
            return Ok(None);
        }
        let mut write_index = entries.len() != n;
        let validated = entries.len();
        entries.retain(|e| u64::from(e.position) < scan.end);
        write_index |= entries.len() != validated;
        let log = self.log_file(scan.end);
        if let Some((built, write_timeindex)) = rebuild::settle(&log, self.timeindex, entries)? {
            // The last entry is the one validated from, or one added by that
            // validation: the next open validates from it to the same end.
            return Ok(Some(Decided {
                scan,
                built,
                write_index,
                write_timeindex,
            }));
        }
        warn!(index = %self.index.display(),
            "index entries do not point to batch starts; rebuilding the indexes");
        let built = rebuild::index_segment(&log, self.interval_bytes)?;
        // The header walk that rebuilt them may have taken another path than the
        // validation (it steps over damage, and does not check CRCs): its last entry
        // must still lead, batch by batch, to the end kept here.
        if !self.leads_to(&built.indexes.offsets, scan.end)? {
            warn!(index = %self.index.display(), position = scan.end,
                "the rebuilt index does not lead to the end of the validated batches; validating the whole segment");
            return Ok(None);
        }
        Ok(Some(Decided {
            scan,
            built,
            write_index: true,
            write_timeindex: true,
        }))
    }

    /// Whether validating from the last of `entries`, as the next open will, ends
    /// exactly at byte `end` without a bad batch nor a new index entry.
    fn leads_to(&self, entries: &[IndexEntry], end: u64) -> Result<bool, Error> {
        let Some(&last) = entries.last() else {
            return Ok(end == 0);
        };
        let mut probe = vec![last];
        let start = (
            u64::from(last.position),
            self.base + u64::from(last.relative_offset),
        );
        let s = scan_active(
            self.file,
            self.log,
            end,
            self.base,
            start,
            &mut probe,
            self.interval_bytes,
        )?;
        Ok(s.bad.is_none() && s.end == end && probe.len() == 1)
    }

    /// Recover without an index: validate the whole segment (of `len` bytes) from
    /// its start and index the good batches.
    fn recover_from_start(&self, len: u64) -> Result<Decided, Error> {
        let mut entries = Vec::new();
        let scan = scan_active(
            self.file,
            self.log,
            len,
            self.base,
            (0, self.base),
            &mut entries,
            self.interval_bytes,
        )?;
        let log = self.log_file(scan.end);
        // The entries are those of the validated batches, which a header walk from
        // the start follows exactly: they check out (now and at the next open).
        let (built, write_timeindex) = match rebuild::settle(&log, self.timeindex, entries)? {
            Some(settled) => settled,
            None => {
                warn!(index = %self.index.display(),
                    "index of the validated batches does not check out; rebuilding the indexes");
                (rebuild::index_segment(&log, self.interval_bytes)?, true)
            }
        };
        Ok(Decided {
            scan,
            built,
            write_index: true,
            write_timeindex,
        })
    }
}
