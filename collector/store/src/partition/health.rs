//! Faults heal without a restart, and are visible while they last.
//!
//! - A roll that cannot create the next segment (full disk, no descriptors or
//!   inodes left) removes what it created and leaves the active segment as it was:
//!   the append fails, the next one tries the roll again.
//! - A failed write is cut off the log again; if even that fails, or an fsync
//!   fails (the page cache's state is then unknown), the partition refuses writes
//!   until it heals: at the next append, at most once per [`HEAL_EVERY`], the
//!   partition is recovered from its files as at start-up (torn tail cut, indexes
//!   checked, deduplication reloaded) and the active segment fsynced.
//! - [`Partition::problem`] says why the partition cannot take writes now (for
//!   `/healthz`), until an append succeeds.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::dedup;
use crate::error::Error;
use crate::recovery;

use super::{Partition, Writer, lock};

/// A refusing partition tries to recover at most this often.
pub(crate) const HEAL_EVERY: Duration = Duration::from_secs(1);

impl Partition {
    /// Why the partition does not take writes now, if it does not.
    pub fn problem(&self) -> Option<String> {
        lock(&self.problem).clone()
    }

    /// Remember the reason appends fail (until one succeeds).
    pub(super) fn report(&self, e: &Error) {
        *lock(&self.problem) = Some(e.to_string());
    }

    pub(super) fn recovered(&self) {
        let mut p = lock(&self.problem);
        if p.is_some() {
            tracing::info!(partition = %self.dir.display(), "partition takes writes again");
            *p = None;
        }
    }

    /// Refuse with [`Error::Failed`] while the partition is fenced, unless it
    /// heals now.
    pub(super) fn ensure_writable(&self, w: &mut Writer) -> Result<(), Error> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        {
            let mut last = lock(&self.last_heal);
            if last.is_some_and(|t| t.elapsed() < HEAL_EVERY) {
                return Err(Error::Failed {
                    path: self.dir.clone(),
                });
            }
            *last = Some(Instant::now());
        }
        match self.heal(w) {
            Ok(()) => {
                tracing::warn!(partition = %self.dir.display(), next_offset = w.next_offset,
                    "partition recovered from its files after an earlier failure");
                self.failed.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(partition = %self.dir.display(), error = %e, "cannot heal yet");
                self.report(&e);
                Err(Error::Failed {
                    path: self.dir.clone(),
                })
            }
        }
    }

    /// Recover the partition from its files, as an open does, and make the result
    /// durable. Called with the writer lock held (`w`), so no append runs meanwhile;
    /// readers keep the segments they hold.
    fn heal(&self, w: &mut Writer) -> Result<(), Error> {
        let _sync = lock(&self.sync_lock);
        let r = recovery::recover(&self.dir, self.opts.index_interval_bytes, &self.handles)?;
        let active = r
            .segments
            .last()
            .cloned()
            .ok_or_else(|| Error::corrupt(&self.dir, 0, "recovery returned no segment"))?;
        let path = &active.log_path;
        std::fs::File::open(path)
            .and_then(|f| f.sync_data())
            .map_err(Error::io("fsync segment", path))?;
        let sources = dedup::load(&self.dir, &r.segments, &r.snapshots);
        // The old files close; the recovered active segment opens its own.
        self.handles.writer_closed(self.key);
        *w = Writer {
            active,
            files: None,
            size: r.active_size,
            next_offset: r.next_offset,
            sources,
        };
        *self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner) = r.segments;
        self.written_end.store(r.next_offset, Ordering::Release);
        self.durable_end.store(r.next_offset, Ordering::Release);
        self.visible_end.store(r.next_offset, Ordering::Release);
        self.size_bytes.store(r.total_bytes, Ordering::Relaxed);
        Ok(())
    }
}

/// Remove the files of a segment whose creation failed half-way.
pub(crate) fn remove_partial_segment(dir: &std::path::Path, base_offset: u64) {
    for p in [
        crate::segment::log_path(dir, base_offset),
        crate::segment::index_path(dir, base_offset),
        crate::segment::timeindex_path(dir, base_offset),
    ] {
        let _ = std::fs::remove_file(p);
    }
}
