//! Loading, checking and rebuilding a segment's `.index` and `.timeindex`.
//!
//! The log is the truth; both indexes are accelerators. At open:
//! - the `.index` must pass [`index::parse`], else both indexes are rebuilt from
//!   the batch headers ([`index_segment`]);
//! - the `.timeindex` must pass [`timeindex::parse`] and carry the `.index`'s
//!   relative offsets. Its entries that do (a prefix) are kept; the rest, and the
//!   segment's largest timestamp, come from a header walk from the last kept entry
//!   to the end of the log ([`settle`]). That walk also checks that the remaining
//!   `.index` entries point to batch starts; when they do not, both are rebuilt.
//!
//! Rebuilding walks every batch header with [`Walk`], so damage in the middle of a
//! segment is stepped over (with a warning naming file, byte and offsets) and the
//! batches after it stay indexed, hence readable.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tracing::warn;

use crate::batch::BatchHeader;
use crate::error::Error;
use crate::index::{self, IndexEntry};
use crate::segment::Indexes;
use crate::timeindex::{self, TimeEntry};
use crate::walk::{Step, Walk};

/// A segment's log file as the rebuild functions see it.
pub(crate) struct LogFile<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    pub len: u64,
    pub base: u64,
    /// No batch of the segment reaches this offset (the next segment's base).
    pub upper: u64,
}

/// Indexes and largest timestamp of a segment.
pub(crate) struct Built {
    pub indexes: Indexes,
    pub max_timestamp_ms: i64,
    /// The latest append time of the batches walked (`i64::MIN`: none known).
    pub last_append_ms: i64,
}

/// Read and check a segment's `.index`; `Err` carries why it cannot be used.
pub(crate) fn load_index(
    path: &Path,
    log_len: u64,
) -> Result<Result<Vec<IndexEntry>, String>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(index::parse(&bytes, log_len)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Err("file is missing".into())),
        Err(e) => Err(Error::io("read index", path)(e)),
    }
}

/// Read and check a `.timeindex` (structure only); `Err` carries why it cannot be used.
fn load_timeindex(path: &Path) -> Result<Result<Vec<TimeEntry>, String>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(timeindex::parse(&bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Err("file is missing".into())),
        Err(e) => Err(Error::io("read time index", path)(e)),
    }
}

/// Replace the file at `path` with `bytes` (fsynced); returns it open for appending.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<File, Error> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(Error::io("create", path))?;
    f.write_all_at(bytes, 0)
        .and_then(|()| f.sync_all())
        .map_err(Error::io("write", path))?;
    Ok(f)
}

/// Write both index files of a segment.
pub(crate) fn write_indexes(
    index_path: &Path,
    timeindex_path: &Path,
    idx: &Indexes,
) -> Result<(), Error> {
    write_file(index_path, &index::encode_all(&idx.offsets))?;
    write_file(timeindex_path, &timeindex::encode_all(&idx.times))?;
    Ok(())
}

/// The index entries for a batch at `pos`, if the interval policy wants them and
/// they fit the 32-bit fields. `max` is the running maximum including this batch.
pub(crate) fn entries_for(
    last: Option<&IndexEntry>,
    pos: u64,
    h: &BatchHeader,
    base: u64,
    max: i64,
    interval_bytes: u32,
) -> Option<(IndexEntry, TimeEntry)> {
    if !index::wants_entry(last, pos, interval_bytes) {
        return None;
    }
    let relative_offset = u32::try_from(h.base_offset.checked_sub(base)?).ok()?;
    Some((
        IndexEntry {
            relative_offset,
            position: u32::try_from(pos).ok()?,
        },
        TimeEntry {
            max_timestamp_ms: max,
            relative_offset,
        },
    ))
}

fn warn_damage(log: &LogFile<'_>, pos: u64, first_offset: u64, reason: &str, resume: Option<u64>) {
    match resume {
        Some(next) => warn!(segment = %log.path.display(), position = pos,
            offsets = %format!("{first_offset}..{next}"), %reason,
            "damaged bytes in a segment; reads of these offsets fail, later batches stay readable"),
        None => {
            warn!(segment = %log.path.display(), position = pos, offset = first_offset, %reason,
            "damaged bytes up to the end of a segment; reads reaching them fail")
        }
    }
}

/// Build both indexes of a segment from its batch headers (no CRC checks except
/// while resyncing after damage).
pub(crate) fn index_segment(log: &LogFile<'_>, interval_bytes: u32) -> Result<Built, Error> {
    let mut idx = Indexes::default();
    let mut max = i64::MIN;
    let mut appended = i64::MIN;
    for step in Walk::new(log.file, log.path, log.len, 0, log.base, log.upper) {
        match step? {
            Step::Batch { pos, header } => {
                max = max.max(header.last_timestamp_ms);
                appended = appended.max(header.append_ms().unwrap_or(i64::MIN));
                let e = entries_for(
                    idx.offsets.last(),
                    pos,
                    &header,
                    log.base,
                    max,
                    interval_bytes,
                );
                if let Some((o, t)) = e {
                    idx.offsets.push(o);
                    idx.times.push(t);
                }
            }
            Step::Damaged {
                pos,
                first_offset,
                reason,
                resume,
            } => warn_damage(
                log,
                pos,
                first_offset,
                &reason,
                resume.map(|(_, h)| h.base_offset),
            ),
        }
    }
    Ok(Built {
        indexes: idx,
        max_timestamp_ms: max,
        last_append_ms: appended,
    })
}

/// The time index that goes with the checked `offsets`, and the segment's largest
/// timestamp; whether the `.timeindex` file must be rewritten. `None` when the
/// `offsets` do not point to batch starts (rebuild both).
pub(crate) fn settle(
    log: &LogFile<'_>,
    timeindex_path: &Path,
    offsets: Vec<IndexEntry>,
) -> Result<Option<(Built, bool)>, Error> {
    let mut rewrite = false;
    let mut times = match load_timeindex(timeindex_path)? {
        Ok(t) => t,
        Err(reason) => {
            if !offsets.is_empty() {
                warn!(index = %timeindex_path.display(), %reason, "rebuilding time index");
            }
            rewrite = true;
            Vec::new()
        }
    };
    let keep = timeindex::matching_prefix(&times, &offsets);
    if keep != times.len() {
        warn!(index = %timeindex_path.display(), kept = keep, dropped = times.len() - keep,
            "time index does not match the offset index; rebuilding its tail");
    } else if !rewrite && keep < offsets.len() {
        warn!(index = %timeindex_path.display(), kept = keep, missing = offsets.len() - keep,
            "time index lacks entries; rebuilding its tail");
    }
    rewrite |= keep != times.len() || keep != offsets.len();
    times.truncate(keep);
    let (pos, expected, mut max) = match keep.checked_sub(1) {
        Some(k) => (
            u64::from(offsets[k].position),
            log.base + u64::from(offsets[k].relative_offset),
            times[k].max_timestamp_ms,
        ),
        None => (0, log.base, i64::MIN),
    };
    let mut next = keep;
    let mut appended = i64::MIN;
    for step in Walk::new(log.file, log.path, log.len, pos, expected, log.upper) {
        match step? {
            Step::Batch { pos, header } => {
                max = max.max(header.last_timestamp_ms);
                appended = appended.max(header.append_ms().unwrap_or(i64::MIN));
                let Some(o) = offsets.get(next) else { continue };
                if u64::from(o.position) < pos {
                    return Ok(None);
                }
                if u64::from(o.position) == pos {
                    if log.base + u64::from(o.relative_offset) != header.base_offset {
                        return Ok(None);
                    }
                    times.push(TimeEntry {
                        max_timestamp_ms: max,
                        relative_offset: o.relative_offset,
                    });
                    next += 1;
                    rewrite = true;
                }
            }
            Step::Damaged {
                pos,
                first_offset,
                reason,
                resume,
            } => warn_damage(
                log,
                pos,
                first_offset,
                &reason,
                resume.map(|(_, h)| h.base_offset),
            ),
        }
    }
    if next != offsets.len() {
        return Ok(None);
    }
    Ok(Some((
        Built {
            indexes: Indexes { offsets, times },
            max_timestamp_ms: max,
            last_append_ms: appended,
        },
        rewrite,
    )))
}

/// Both indexes of a segment whose `.index` has been loaded (`Ok`) or refused
/// (`Err(reason)`): settled against the log, rebuilt when needed and written back
/// when changed.
pub(crate) fn open_indexes(
    log: &LogFile<'_>,
    index_path: &Path,
    timeindex_path: &Path,
    loaded: Result<Vec<IndexEntry>, String>,
    interval_bytes: u32,
) -> Result<Built, Error> {
    let settled = match loaded {
        Ok(offsets) => {
            let s = settle(log, timeindex_path, offsets)?;
            if s.is_none() {
                warn!(index = %index_path.display(),
                    "index entries do not point to batch starts; rebuilding the indexes");
            }
            s
        }
        Err(reason) => {
            warn!(index = %index_path.display(), %reason, "rebuilding segment index");
            None
        }
    };
    match settled {
        Some((built, rewrite)) => {
            if rewrite {
                write_file(timeindex_path, &timeindex::encode_all(&built.indexes.times))?;
            }
            Ok(built)
        }
        None => {
            let built = index_segment(log, interval_bytes)?;
            write_indexes(index_path, timeindex_path, &built.indexes)?;
            Ok(built)
        }
    }
}
