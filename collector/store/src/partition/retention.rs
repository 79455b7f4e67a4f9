//! Retention: deleting whole segments from the front of a partition, never the
//! active one.
//!
//! - By age: a segment has expired when its last batch was appended more than
//!   `max_age` ago (the collector's clock, recorded in the batch header: records
//!   stamped in the past or the future by a wrong clock are kept `max_age` after
//!   they arrived). Segments written before append times were recorded go by their
//!   newest record timestamp or the log file's modification time, whichever is
//!   earlier. Only a prefix of expired segments
//!   goes. When every sealed segment has expired and the active one has too, the
//!   active one is rolled first and goes as well (an idle partition's data must
//!   not outlive `max_age` by the age of its active segment).
//! - By size: while the partition's log bytes exceed `max_bytes`, the oldest sealed
//!   segment goes (per partition, like Kafka's `retention.bytes`).
//!
//! A deleted segment leaves the segment list under its write lock, so the start
//! offset moves on at once, and the deduplication table forgets the sources whose
//! records all went with it; then its files are unlinked (indexes and snapshot
//! first, the `.log` last, so an interrupted pass leaves at worst a segment that
//! recovery re-indexes and the next pass deletes again). Reads that opened the
//! segment before go on through their handle; later reads of those offsets are
//! [`Error::OffsetOutOfRange`].

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crate::error::Error;
use crate::segment::{self, Segment};

use super::{Partition, lock};

/// What a partition may keep; `None` keeps everything on that count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete segments whose newest record is older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest segments while the partition holds more log bytes than this.
    pub max_bytes: Option<u64>,
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Segments deleted.
    pub segments: usize,
    /// Log bytes deleted.
    pub bytes: u64,
    /// The first offset stored before the pass; offsets from it up to
    /// `start_offset` were deleted.
    pub previous_start: u64,
    /// The first offset stored after the pass.
    pub start_offset: u64,
    /// The active segment had expired and was rolled so that it could be deleted.
    pub rolled: bool,
}

impl Partition {
    /// Delete the segments `policy` no longer keeps, as of `now_ms` (epoch
    /// milliseconds). One pass at a time; safe alongside appends and reads.
    pub fn enforce_retention(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<Deleted, Error> {
        let _one = lock(&self.retention_lock);
        let segs: Vec<Arc<Segment>> = self
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some((active, sealed)) = segs.split_last() else {
            return Ok(Deleted::default());
        };
        let previous_start = segs[0].base_offset;
        let cutoff = policy
            .max_age
            .map(|age| now_ms.saturating_sub(super::duration_ms(age)));
        let expired = |s: &Segment| -> Result<bool, Error> {
            match cutoff {
                Some(c) => Ok(match s.last_append_ms() {
                    Some(t) => t < c,
                    None => s.max_timestamp().min(s.modified_ms()?) < c,
                }),
                None => Ok(false),
            }
        };
        let mut by_age = 0;
        while by_age < sealed.len() && expired(&sealed[by_age])? {
            by_age += 1;
        }
        let mut by_bytes = 0;
        if let Some(max) = policy.max_bytes {
            let mut total = self.size_bytes();
            while by_bytes < sealed.len() && total > max {
                total = total.saturating_sub(sealed[by_bytes].bytes());
                by_bytes += 1;
            }
        }
        let mut doomed = by_age.max(by_bytes);
        let mut rolled = false;
        if cutoff.is_some() && by_age == sealed.len() && self.roll_if(active, expired)? {
            rolled = true;
            doomed = segs.len();
        }
        if doomed == 0 {
            return Ok(Deleted {
                previous_start,
                start_offset: previous_start,
                ..Deleted::default()
            });
        }
        let removed: Vec<Arc<Segment>> = {
            let mut list = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            // Only retention removes segments, one pass at a time: the list still
            // starts with `segs[..doomed]`. Check anyway; never remove the last one.
            let n = list
                .iter()
                .zip(&segs[..doomed])
                .take_while(|(a, b)| Arc::ptr_eq(a, b))
                .count()
                .min(list.len() - 1);
            list.drain(..n).collect()
        };
        let start_offset = self.start_offset();
        // Forget the sources whose records are all gone, as a scan at open would.
        lock(&self.writer).sources.prune(start_offset);
        let mut bytes = 0;
        let mut unlinking = true;
        for seg in &removed {
            seg.mark_deleted();
            bytes += seg.bytes();
            // After a `.log` that cannot go, keep the later ones: the files left
            // must stay contiguous for the next start-up, which deletes them again.
            unlinking = unlinking && delete_files(&self.dir, seg);
        }
        self.size_bytes.fetch_sub(bytes, Ordering::Relaxed);
        if let Err(e) = segment::sync_dir(&self.dir) {
            tracing::warn!(error = %e, "cannot fsync the partition directory after retention");
        }
        tracing::info!(partition = %self.dir.display(), segments = removed.len(), bytes,
            offsets = %format!("{previous_start}..{start_offset}"), rolled_active = rolled,
            by_age, by_bytes, "retention deleted old segments");
        Ok(Deleted {
            segments: removed.len(),
            bytes,
            previous_start,
            start_offset,
            rolled,
        })
    }
}

/// Unlink a segment's files: indexes and snapshot first, the log last. Returns
/// whether the log is gone.
fn delete_files(dir: &Path, seg: &Segment) -> bool {
    let paths = [
        seg.index_path.clone(),
        seg.timeindex_path.clone(),
        segment::sources_path(dir, seg.base_offset),
        seg.log_path.clone(),
    ];
    let mut gone = true;
    for path in paths {
        gone = match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "deleted");
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "retention cannot delete a file; the next start-up deletes it");
                false
            }
        };
    }
    gone
}
