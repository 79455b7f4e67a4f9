//! Reads by offset. Lock-free I/O: a read loads the visible end, clones the `Arc`s
//! of the segments it needs and reads them with positional reads, one batch at a
//! time (a header, then the payload of a batch holding wanted offsets), so memory
//! is bounded by the expanded batches its records come from (the read's limits
//! plus one batch), never by a segment. Records are slices of those batches, which
//! the store's cache keeps for the next read (`batchcache.rs`). A segment
//! deleted by retention meanwhile stays readable through the handle its read
//! holds; one deleted before its read opened it is out of range.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use tributary_common::record::{self, BlockHeader, RecordRef};

use crate::error::Error;
use crate::records::{self, Collected, ReadResult, Take};
use crate::segment::{PayloadBuf, Segment};
use crate::walk::Step;

use super::Partition;

impl Partition {
    /// Read records with offset `>= offset`: at most `max_records`, and about
    /// `max_bytes` of message and field bytes (always at least one record when one
    /// is visible), never past [`end_offset`](Self::end_offset). An offset at or past
    /// the end returns no records and `next_offset == offset`; one below
    /// [`start_offset`](Self::start_offset) is [`Error::OffsetOutOfRange`]. Damaged
    /// data on the way is [`Error::Corrupt`] naming the file and byte; offsets after
    /// a damaged range stay readable.
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
            // Room for what the limits let through, up to a point (records of
            // 32 bytes and more), so that it does not grow by copying.
            records: Vec::with_capacity(max_records.min(max_bytes / 32 + 1).min(1 << 16)),
            bytes: 0,
            max_records,
            max_bytes,
        };
        let mut next = offset;
        for (i, seg) in segs.iter().enumerate() {
            if next >= end || take.records.len() >= max_records {
                break;
            }
            let upper = segs.get(i + 1).map_or(end, |s| s.base_offset.min(end));
            if next >= upper {
                continue;
            }
            match read_segment(seg, next, upper, &mut take) {
                Ok(Collected::Done) => next = upper,
                Ok(Collected::Full(at)) => {
                    next = at;
                    break;
                }
                // Retention deleted it before this read opened it.
                Err(_) if seg.is_deleted() && take.records.is_empty() => {
                    return Err(Error::OffsetOutOfRange {
                        offset,
                        start: self.start_offset(),
                        end,
                    });
                }
                Err(_) if seg.is_deleted() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(ReadResult {
            records: take.records,
            next_offset: next,
        })
    }
}

impl Partition {
    /// Visit the records with offsets in `from..to` (clamped to what is stored and
    /// visible) in offset order, borrowed from each batch's payload: nothing is
    /// copied per record, so counting and filtering engines (histograms) read at
    /// the speed of the disk cache. `visit` returns `Break` to stop. Returns the
    /// offset after the last record visited (where to continue). Damaged data is
    /// [`Error::Corrupt`].
    pub fn scan(
        &self,
        from: u64,
        to: u64,
        mut visit: impl FnMut(u64, &BlockHeader<'_>, &RecordRef<'_>) -> ControlFlow<()>,
    ) -> Result<u64, Error> {
        let end = self.visible_end.load(Ordering::Acquire);
        let to = to.min(end);
        let segs: Vec<Arc<Segment>> = {
            let all = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            let first = all
                .partition_point(|s| s.base_offset <= from)
                .saturating_sub(1);
            all[first..].to_vec()
        };
        let mut next = from.max(segs.first().map_or(0, |s| s.base_offset));
        let mut buf = PayloadBuf::default();
        for (i, seg) in segs.iter().enumerate() {
            // The segment's own bound (what its batches are checked against), and
            // where this scan stops in it.
            let bound = segs.get(i + 1).map_or(end, |s| s.base_offset.min(end));
            let upper = bound.min(to);
            if next >= to {
                break;
            }
            if next >= upper {
                continue;
            }
            let (pos, at) = seg.position_for(next);
            let reader = match seg.reader() {
                Ok(r) => r,
                // Deleted by retention since the list was taken: its offsets are gone.
                Err(_) if seg.is_deleted() => {
                    next = upper;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for step in reader.walk(pos, at, bound)? {
                let h = match step? {
                    Step::Batch { pos, header } => (pos, header),
                    Step::Damaged { pos, reason, .. } => {
                        return Err(Error::corrupt(&seg.log_path, pos, reason));
                    }
                };
                let (pos, h) = h;
                if h.next_offset() <= next {
                    continue;
                }
                let payload = reader.read_payload_into(pos, &h, &mut buf)?;
                let mut off = h.base_offset;
                for block in record::blocks(payload, false) {
                    let block = block.map_err(|e| {
                        Error::corrupt(&seg.log_path, pos, format!("payload does not decode: {e}"))
                    })?;
                    let n = u64::from(block.header.record_count);
                    if off + n <= next {
                        off += n;
                        continue;
                    }
                    for r in block.records() {
                        let r = r.map_err(|e| {
                            Error::corrupt(
                                &seg.log_path,
                                pos,
                                format!("record does not decode: {e}"),
                            )
                        })?;
                        if off >= to {
                            return Ok(off);
                        }
                        if off >= next {
                            if visit(off, &block.header, &r).is_break() {
                                return Ok(off + 1);
                            }
                            next = off + 1;
                        }
                        off += 1;
                    }
                }
                next = next.max(h.next_offset().min(upper));
                if next >= upper {
                    break;
                }
            }
            next = next.max(upper);
        }
        Ok(next.min(to))
    }
}

/// Collect records from `from` up to (not including) `upper` out of one segment.
/// `Full(at)` when a limit stopped the read before offset `at`.
fn read_segment(seg: &Segment, from: u64, upper: u64, take: &mut Take) -> Result<Collected, Error> {
    let mut next = from;
    let (pos, at) = seg.position_for(next);
    let reader = seg.reader()?;
    for step in reader.walk(pos, at, upper)? {
        match step? {
            Step::Batch { pos, header: h } => {
                if h.next_offset() <= next {
                    // Before the wanted offset: only its header was read.
                    continue;
                }
                let payload = reader.read_expanded(pos, &h)?;
                match records::collect(&payload, &h, next, take) {
                    Ok(Collected::Done) => next = h.next_offset(),
                    Ok(Collected::Full(at)) => return Ok(Collected::Full(at)),
                    Err(reason) => return Err(Error::corrupt(&seg.log_path, pos, reason)),
                }
                if take.records.len() >= take.max_records {
                    return Ok(Collected::Full(next));
                }
            }
            Step::Damaged {
                pos,
                first_offset,
                reason,
                resume,
            } => {
                let resumes_at = resume.map_or(upper, |(_, h)| h.base_offset);
                // A read may step over damage only while it is still looking for
                // its first offset and that offset lies after the damage.
                if !take.records.is_empty() || next < resumes_at {
                    return Err(Error::corrupt(
                        &seg.log_path,
                        pos,
                        format!("{reason}; offsets {first_offset}..{resumes_at} are unreadable"),
                    ));
                }
            }
        }
    }
    if next < upper {
        return Err(Error::corrupt(
            &seg.log_path,
            seg.bytes(),
            format!("segment ends before offset {next}, the next segment starts at {upper}"),
        ));
    }
    Ok(Collected::Done)
}
