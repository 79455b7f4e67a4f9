//! Lookups by timestamp (Kafka's `ListOffsets` by time): the first offset whose
//! record timestamp is `>= t`, with non-monotone event times.
//!
//! The answer is in the first batch whose largest timestamp is `>= t` (the first
//! record in it that is that new), because every record before that batch is
//! older than `t`. Finding the batch: the first segment whose running maximum of
//! segment maxima reaches `t` (a binary search over those prefix maxima), then
//! that segment's time index (a binary search) gives an indexed batch to walk
//! batch headers from; the walk is bounded by the index interval. The batches
//! walked over are read and CRC-checked too (their headers' timestamps decide),
//! so damage on the way is [`Error::Corrupt`], never a wrong answer.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::error::Error;
use crate::records;
use crate::segment::Segment;
use crate::walk::Step;

use super::Partition;

/// The answer to [`Partition::offset_for_timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// The first offset whose record timestamp is at least the one asked for.
    pub offset: u64,
    /// That record's timestamp.
    pub timestamp_ms: i64,
}

impl Partition {
    /// The first visible offset whose record has a timestamp `>= timestamp_ms`, or
    /// `None` when no visible record is that new (a consumer would start at
    /// [`end_offset`](Self::end_offset)). Offsets deleted by retention are not
    /// considered. A damaged batch the search must look into is
    /// [`Error::Corrupt`].
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, Error> {
        let end = self.visible_end.load(Ordering::Acquire);
        let segs: Vec<Arc<Segment>> = self
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut running = i64::MIN;
        let prefix_max: Vec<i64> = segs
            .iter()
            .map(|s| {
                running = running.max(s.max_timestamp());
                running
            })
            .collect();
        let first = prefix_max.partition_point(|&m| m < timestamp_ms);
        for (i, seg) in segs.iter().enumerate().skip(first) {
            let upper = segs.get(i + 1).map_or(end, |s| s.base_offset.min(end));
            if seg.base_offset >= upper {
                break;
            }
            match lookup_in(seg, timestamp_ms, upper) {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                // Deleted by retention meanwhile: not considered.
                Err(_) if seg.is_deleted() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// The first record `>= target` in one segment, below offset `upper`.
fn lookup_in(seg: &Segment, target: i64, upper: u64) -> Result<Option<TimestampOffset>, Error> {
    let (pos, at) = seg.time_start(target);
    let reader = seg.reader()?;
    for step in reader.walk(pos, at, upper)? {
        match step? {
            Step::Batch { pos, header } => {
                // Checked even when skipped: the header's timestamps decide the
                // skip and only the CRC vouches for them. The walk is short.
                let payload = reader.read_payload(pos, &header)?;
                if header.last_timestamp_ms < target {
                    continue;
                }
                match records::first_at_or_after(&payload, &header, target) {
                    Ok(Some((offset, timestamp_ms))) => {
                        return Ok(Some(TimestampOffset {
                            offset,
                            timestamp_ms,
                        }));
                    }
                    // The header promised a record this new: trust the records.
                    Ok(None) => {}
                    Err(reason) => return Err(Error::corrupt(&seg.log_path, pos, reason)),
                }
            }
            Step::Damaged {
                pos,
                first_offset,
                reason,
                resume,
            } => {
                // The damaged batches may hold the answer: say so rather than guess.
                let resumes_at = resume.map_or(upper, |(_, h)| h.base_offset);
                return Err(Error::corrupt(
                    &seg.log_path,
                    pos,
                    format!("{reason}; offsets {first_offset}..{resumes_at} are unreadable"),
                ));
            }
        }
    }
    Ok(None)
}
