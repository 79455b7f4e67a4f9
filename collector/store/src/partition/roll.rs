//! Sealing the active segment and starting the next one.
//!
//! A batch rolls the active segment first when the segment is not empty and
//! - the batch would make it grow past `segment_bytes`, or
//! - the segment's first batch was appended at least `segment_age` before this one
//!   (the collector's clock: whatever the records' timestamps say, a partition
//!   rolls by age at most once per `segment_age`; segments written before append
//!   times were recorded go by the largest timestamp of their first batch), or
//! - its relative offsets would no longer fit the 32-bit index fields.
//!
//! Retention also rolls an active segment that is entirely expired, so that it can
//! be deleted; an idle partition never sees the age rule otherwise.
//!
//! A roll fsyncs the old segment and both its indexes, writes the deduplication
//! snapshot for the new base offset, creates the new segment and fsyncs the
//! directory, in that order: after a crash only the last segment can have a torn
//! tail, and a snapshot never describes records that are not durable. What a failed
//! roll leaves behind is in `health.rs`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::batch::BatchHeader;
use crate::dedup;
use crate::error::Error;
use crate::segment::{self, Segment};

use super::{Partition, Writer};

impl Partition {
    /// Whether appending `h` must first roll the active segment.
    pub(super) fn wants_roll(&self, w: &Writer, h: &BatchHeader) -> bool {
        if w.size == 0 {
            return false;
        }
        let rel_end = h.next_offset() - w.active.base_offset;
        let too_big = w.size + h.total_len() > self.opts.segment_bytes;
        let age = self.segment_age_ms.load(Ordering::Relaxed);
        let too_old = match (w.active.first_append_ms(), h.append_ms()) {
            (Some(first), Some(now)) => now.saturating_sub(first) >= age,
            _ => w
                .active
                .first_batch_timestamp()
                .is_some_and(|first| h.last_timestamp_ms.saturating_sub(first) >= age),
        };
        too_big || too_old || rel_end > u64::from(u32::MAX)
    }

    /// Seal the active segment and start a new one at the next offset. Called with
    /// the writer lock held. A failed fsync of the old segment fences the partition
    /// (see `health.rs`); a new segment that cannot be created (full disk, no
    /// descriptors) is removed again and the old one stays active: the next append
    /// tries the roll again.
    pub(super) fn roll(&self, w: &mut Writer) -> Result<(), Error> {
        if let Err(e) = self.seal(w) {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        if let Err(e) = self.start_next(w) {
            super::health::remove_partial_segment(&self.dir, w.next_offset);
            tracing::debug!(error = %e, "cannot start the next segment; the next append tries again");
            return Err(e);
        }
        Ok(())
    }

    /// fsync the active segment and its indexes, and write the deduplication
    /// snapshot for the next base offset.
    fn seal(&self, w: &mut Writer) -> Result<(), Error> {
        let old = w.active.clone();
        let files = self.active_files(w)?;
        files
            .log
            .sync_data()
            .map_err(Error::io("fsync segment", &old.log_path))?;
        files
            .index
            .sync_data()
            .map_err(Error::io("fsync index", &old.index_path))?;
        files
            .timeindex
            .sync_data()
            .map_err(Error::io("fsync time index", &old.timeindex_path))?;
        self.durable_end.fetch_max(w.next_offset, Ordering::AcqRel);
        if self.opts.publish_on_sync {
            self.visible_end.fetch_max(w.next_offset, Ordering::AcqRel);
        }
        if let Err(e) = dedup::write_snapshot(&self.dir, w.next_offset, &w.sources) {
            // Only an accelerator: the next open scans a little more.
            tracing::warn!(error = %e, "cannot write a deduplication snapshot");
        }
        Ok(())
    }

    /// Create the next segment and make it the active one.
    fn start_next(&self, w: &mut Writer) -> Result<(), Error> {
        // An empty leftover of an earlier attempt that could not be removed.
        let leftover = segment::log_path(&self.dir, w.next_offset);
        if std::fs::metadata(&leftover).is_ok_and(|m| m.len() == 0) {
            super::health::remove_partial_segment(&self.dir, w.next_offset);
        }
        let (seg, files) = Segment::create(&self.dir, w.next_offset, self.handles.clone())?;
        segment::sync_dir(&self.dir)?;
        let seg = Arc::new(seg);
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(seg.clone());
        tracing::debug!(segment = %seg.log_path.display(), "rolled to a new segment");
        w.active = seg;
        w.files = Some(files);
        w.size = 0;
        Ok(())
    }

    /// Roll `active` if it is still the active segment, holds data and `expired`
    /// still says so under the writer lock. Returns whether it rolled.
    pub(super) fn roll_if(
        &self,
        active: &Arc<Segment>,
        expired: impl Fn(&Segment) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let mut w = super::lock(&self.writer);
        if !Arc::ptr_eq(&w.active, active) || w.size == 0 || self.failed.load(Ordering::Acquire) {
            return Ok(false);
        }
        if !expired(&w.active)? {
            return Ok(false);
        }
        self.roll(&mut w)?;
        Ok(true)
    }
}
