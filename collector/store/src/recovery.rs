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
//! - The last segment is validated batch by batch from its last index entry (or
//!   from the start when that entry does not lead to a good batch): header sanity,
//!   offset continuity, CRC32C, and the payload's record count
//!   (`tributary_common::record::summarize`). At the first bad or torn batch the
//!   file is truncated there, fsynced, and a warning names the file, byte and offset.
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
use crate::index::{self, IndexEntry};
use crate::rebuild::{self, LogFile};
use crate::segment::{self, IndexFiles, Loaded, Segment};

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
    /// The last segment's `.index` and `.timeindex`, open for appending.
    pub files: IndexFiles,
    /// Offsets of the deduplication snapshots (`<offset>.sources`), sorted.
    pub snapshots: Vec<u64>,
}

/// Open (creating when needed) the partition directory `dir` and recover it.
pub(crate) fn recover(dir: &Path, interval_bytes: u32) -> Result<Recovered, Error> {
    fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let listing = list(dir)?;
    let bases = &listing.segments;
    let Some((&last, older)) = bases.split_last() else {
        let (seg, files) = Segment::create(dir, 0)?;
        segment::sync_dir(dir)?;
        return Ok(Recovered {
            segments: vec![Arc::new(seg)],
            next_offset: 0,
            active_size: 0,
            total_bytes: 0,
            files,
            snapshots: listing.snapshots,
        });
    };
    remove_leftovers(&listing, bases[0]);
    let mut segments = Vec::with_capacity(bases.len());
    let mut total_bytes = 0;
    for (i, &base) in older.iter().enumerate() {
        let seg = open_sealed(dir, base, bases[i + 1], interval_bytes)?;
        total_bytes += seg.bytes();
        segments.push(Arc::new(seg));
    }
    let active = open_active(dir, last, interval_bytes)?;
    total_bytes += active.size;
    segments.push(Arc::new(active.segment));
    segment::sync_dir(dir)?;
    Ok(Recovered {
        segments,
        next_offset: active.next_offset,
        active_size: active.size,
        total_bytes,
        files: active.files,
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
fn open_sealed(dir: &Path, base: u64, upper: u64, interval_bytes: u32) -> Result<Segment, Error> {
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
        bytes: len,
    };
    Ok(Segment::new(dir, base, file, loaded))
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
    files: IndexFiles,
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

/// Open the last segment: validate its tail, truncate a torn or corrupt end.
fn open_active(dir: &Path, base: u64, interval_bytes: u32) -> Result<Active, Error> {
    let lp = segment::log_path(dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lp)
        .map_err(Error::io("open segment", &lp))?;
    let len = file_len(&file, &lp)?;
    let ip = segment::index_path(dir, base);
    let tp = segment::timeindex_path(dir, base);

    let loaded = rebuild::load_index(&ip, len)?;
    let mut rewrite_index = loaded.is_err();
    let mut scan = None;
    let mut entries = Vec::new();
    match loaded {
        Ok(loaded) => {
            entries = loaded;
            let start = entries.last().map_or((0, base), |e| {
                (u64::from(e.position), base + u64::from(e.relative_offset))
            });
            let n = entries.len();
            let s = scan_active(&file, &lp, len, base, start, &mut entries, interval_bytes)?;
            rewrite_index = entries.len() != n;
            if s.bad.is_some() && s.end == start.0 && start.0 > 0 {
                // The last index entry does not lead to a good batch: the index is
                // not to be trusted, so validate the whole segment.
                warn!(index = %ip.display(), position = start.0,
                    "last index entry does not point to a good batch; rebuilding the index");
                entries.clear();
                rewrite_index = true;
            } else {
                scan = Some(s);
            }
        }
        Err(reason) => warn!(index = %ip.display(), %reason, "rebuilding segment index"),
    }
    let scan = match scan {
        Some(s) => s,
        None => scan_active(
            &file,
            &lp,
            len,
            base,
            (0, base),
            &mut entries,
            interval_bytes,
        )?,
    };

    if let Some(reason) = &scan.bad {
        warn!(segment = %lp.display(), position = scan.end, offset = scan.next_offset,
            bytes_dropped = len - scan.end, %reason,
            "truncating torn or corrupt segment tail");
        file.set_len(scan.end)
            .and_then(|()| file.sync_all())
            .map_err(Error::io("truncate segment", &lp))?;
        let kept = entries.len();
        entries.retain(|e| u64::from(e.position) < scan.end);
        rewrite_index |= entries.len() != kept;
    } else {
        // What is recovered is what readers may see: make it durable first.
        file.sync_data().map_err(Error::io("fsync segment", &lp))?;
    }

    if rewrite_index {
        rebuild::write_file(&ip, &index::encode_all(&entries))?;
    }
    let log = LogFile {
        file: &file,
        path: &lp,
        len: scan.end,
        base,
        upper: u64::MAX,
    };
    let built = rebuild::open_indexes(&log, &ip, &tp, Ok(entries), interval_bytes)?;
    let files = IndexFiles {
        index: open_rw(&ip, "open index")?,
        timeindex: open_rw(&tp, "open time index")?,
    };
    let loaded = Loaded {
        indexes: built.indexes,
        max_timestamp_ms: built.max_timestamp_ms,
        bytes: scan.end,
    };
    Ok(Active {
        segment: Segment::new(dir, base, file, loaded),
        next_offset: scan.next_offset,
        size: scan.end,
        files,
    })
}

fn open_rw(path: &Path, op: &'static str) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(Error::io(op, path))
}
