//! The active segment's files within the store's descriptor budget (see
//! `handles.rs`): opened at the first append that needs them, closed again when
//! the budget needs room or the partition has been idle, always after the data
//! written through them is durable (a writeback error must reach an fsync of the
//! descriptor that wrote; a later descriptor would not see it).

use std::sync::TryLockError;
use std::sync::atomic::Ordering;

use crate::error::Error;
use crate::segment::ActiveFiles;

use super::{Partition, Writer};

impl Partition {
    /// The active segment's files, opened (and counted in the budget) when closed.
    /// Opening may close the files of the least recently used partitions.
    pub(super) fn active_files<'w>(&self, w: &'w mut Writer) -> Result<&'w ActiveFiles, Error> {
        let files = match w.files.take() {
            Some(f) => f,
            None => {
                self.make_room();
                match w.active.open_files() {
                    Ok(files) => files,
                    Err(e) => {
                        self.handles.writer_closed(self.key);
                        return Err(e);
                    }
                }
            }
        };
        Ok(w.files.insert(files))
    }

    /// Count this partition's files in the budget and close those of the least
    /// recently used partitions beyond it.
    fn make_room(&self) {
        let me = self.me.get().cloned().unwrap_or_default();
        let lru = self.handles.writer_opened(self.key, me);
        let mut excess = self.handles.writers_over_budget();
        for other in lru {
            if excess == 0 {
                break;
            }
            if other.close_files_if_free() {
                excess -= 1;
            }
        }
    }

    /// Close the active segment's files if no one is writing now; make what was
    /// written durable first. Returns whether they are closed.
    pub(crate) fn close_files_if_free(&self) -> bool {
        let mut w = match self.writer.try_lock() {
            Ok(w) => w,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        self.close_files(&mut w)
    }

    /// Close the active segment's files (writer lock held). Returns false when
    /// they stay open because the data could not be made durable.
    pub(super) fn close_files(&self, w: &mut Writer) -> bool {
        let Some(files) = &w.files else {
            self.handles.writer_closed(self.key);
            return true;
        };
        if self.durable_end.load(Ordering::Acquire) < w.next_offset {
            if let Err(e) = files.log.sync_data() {
                // As in `sync_to`: the page cache's state is unknown now.
                self.failed.store(true, Ordering::Release);
                self.report(&Error::io("fsync segment", &w.active.log_path)(e));
                return false;
            }
            self.durable_end.fetch_max(w.next_offset, Ordering::AcqRel);
            if self.opts.publish_on_sync {
                self.visible_end.fetch_max(w.next_offset, Ordering::AcqRel);
            }
        }
        w.files = None;
        self.handles.writer_closed(self.key);
        true
    }

    /// When the latest append happened (epoch ms; `i64::MIN` before the first).
    pub(crate) fn last_used(&self) -> i64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Close the active segment's files when nothing was appended since
    /// `idle_before` (epoch ms) and no append runs now. Returns whether files
    /// were closed.
    pub fn release_idle(&self, idle_before: i64) -> bool {
        if self.last_used() >= idle_before {
            return false;
        }
        let mut w = match self.writer.try_lock() {
            Ok(w) => w,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        w.files.is_some() && self.close_files(&mut w)
    }
}
