//! Opening a partition directory after a clean stop or a crash.
//!
//! - Segments are listed by name (`<20-digit base offset>.log`) and sorted; other
//!   files are ignored.
//! - Every segment's `.index` is loaded and checked ([`index::parse`]); a missing or
//!   damaged index is rebuilt from the log with a warning.
//! - Older segments are trusted (they were fsynced before the next one was
//!   created); only their index is read. Damage found later in them surfaces as a
//!   read error, never as a silent skip.
//! - The last segment is validated batch by batch from its last index entry (or
//!   from the start when that entry does not lead to a good batch): header sanity,
//!   offset continuity, CRC32C, and the payload's record count
//!   (`tributary_common::record::summarize`). At the first bad or torn batch the
//!   file is truncated there, fsynced, and a warning names the file, byte and offset.
//!
//! Recovery never panics on file contents; only I/O failures are errors.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use tracing::warn;
use tributary_common::record;

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::error::Error;
use crate::index::{self, IndexEntry};
use crate::segment::{self, Segment};

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
    /// The last segment's `.index`, open for appending.
    pub index_file: File,
}

/// Open (creating when needed) the partition directory `dir` and recover it.
pub(crate) fn recover(dir: &Path, interval_bytes: u32) -> Result<Recovered, Error> {
    fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let bases = list_segments(dir)?;
    let Some((&last, older)) = bases.split_last() else {
        let (seg, index_file) = Segment::create(dir, 0)?;
        segment::sync_dir(dir)?;
        return Ok(Recovered {
            segments: vec![Arc::new(seg)],
            next_offset: 0,
            active_size: 0,
            total_bytes: 0,
            index_file,
        });
    };
    let mut segments = Vec::with_capacity(bases.len());
    let mut total_bytes = 0;
    for &base in older {
        let (seg, len) = open_sealed(dir, base, interval_bytes)?;
        total_bytes += len;
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
        index_file: active.index_file,
    })
}

/// Base offsets of the segments in `dir`, sorted.
fn list_segments(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("list directory", dir))? {
        let entry = entry.map_err(Error::io("list directory", dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(segment::parse_log_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn file_len(file: &File, path: &Path) -> Result<u64, Error> {
    Ok(file.metadata().map_err(Error::io("stat", path))?.len())
}

/// Read and check a segment's index; `Err` carries why it cannot be used.
fn load_index(path: &Path, log_len: u64) -> Result<Result<Vec<IndexEntry>, String>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(index::parse(&bytes, log_len)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Err("file is missing".into())),
        Err(e) => Err(Error::io("read index", path)(e)),
    }
}

/// Replace the index file with `entries`; returns it open for appending.
fn write_index(path: &Path, entries: &[IndexEntry]) -> Result<File, Error> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(Error::io("create index", path))?;
    f.write_all_at(&index::encode_all(entries), 0)
        .and_then(|()| f.sync_all())
        .map_err(Error::io("write index", path))?;
    Ok(f)
}

/// Open an older segment: trust its bytes, load (or rebuild) its index.
fn open_sealed(dir: &Path, base: u64, interval_bytes: u32) -> Result<(Segment, u64), Error> {
    let lp = segment::log_path(dir, base);
    let file = File::open(&lp).map_err(Error::io("open segment", &lp))?;
    let len = file_len(&file, &lp)?;
    let ip = segment::index_path(dir, base);
    let entries = match load_index(&ip, len)? {
        Ok(entries) => entries,
        Err(reason) => {
            warn!(index = %ip.display(), %reason, "rebuilding segment index");
            let entries = scan_headers(&file, &lp, len, base, interval_bytes)?;
            write_index(&ip, &entries)?;
            entries
        }
    };
    Ok((Segment::new(dir, base, file, entries), len))
}

/// Index a trusted segment from its batch headers (no CRC check). Stops, with a
/// warning, at the first header that does not fit; reads past it will fail.
fn scan_headers(
    file: &File,
    path: &Path,
    len: u64,
    base: u64,
    interval_bytes: u32,
) -> Result<Vec<IndexEntry>, Error> {
    let mut entries: Vec<IndexEntry> = Vec::new();
    let (mut pos, mut expected) = (0u64, base);
    while pos < len {
        let bad = match read_header(file, path, pos, len)? {
            Err(reason) => Some(reason),
            Ok(h) if h.base_offset != expected => Some(format!(
                "base offset {} where {expected} was expected",
                h.base_offset
            )),
            Ok(h) if pos + h.total_len() > len => {
                Some("batch runs past the end of the file".into())
            }
            Ok(h) => {
                if let Some(e) = entry_for(&entries, pos, &h, base, interval_bytes) {
                    entries.push(e);
                }
                pos += h.total_len();
                expected = h.next_offset();
                None
            }
        };
        if let Some(reason) = bad {
            warn!(segment = %path.display(), position = pos, offset = expected, %reason,
                "damaged batch in an older segment; reads reaching it will fail");
            break;
        }
    }
    Ok(entries)
}

/// The index entry for a batch at `pos`, if the interval policy wants one and it fits.
fn entry_for(
    entries: &[IndexEntry],
    pos: u64,
    h: &BatchHeader,
    base: u64,
    interval_bytes: u32,
) -> Option<IndexEntry> {
    if !index::wants_entry(entries.last(), pos, interval_bytes) {
        return None;
    }
    Some(IndexEntry {
        relative_offset: u32::try_from(h.base_offset.checked_sub(base)?).ok()?,
        position: u32::try_from(pos).ok()?,
    })
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
    index_file: File,
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

    let loaded = load_index(&ip, len)?;
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

    let index_file = if rewrite_index {
        write_index(&ip, &entries)?
    } else {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&ip)
            .map_err(Error::io("open index", &ip))?
    };
    Ok(Active {
        segment: Segment::new(dir, base, file, entries),
        next_offset: scan.next_offset,
        size: scan.end,
        index_file,
    })
}
