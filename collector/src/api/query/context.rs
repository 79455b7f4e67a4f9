//! A record in its context (`GET /v1/context`): the records of the same source
//! (host and source) just before and after it. A source's records live in one
//! partition in order, so this scans that partition outwards from the record,
//! borrowed (see [`PartitionReader::scan_blocking`]), a bounded number of records
//! on each side.

use std::ops::ControlFlow;
use std::sync::Arc;

use tributary_common::record::{BlockHeader, RecordRef};
use tributary_store::{Block, Error as StoreError, StoredRecord};

use crate::storage::PartitionReader;

/// Most records asked for on each side.
pub const MAX_AROUND: usize = 500;
/// Records looked at, at most, on each side (other sources interleave).
const MAX_SCAN: u64 = 1_000_000;
/// The first backwards window; each next one doubles.
const FIRST_WINDOW: u64 = 4096;

/// A record and its neighbours, in offset order.
#[derive(Debug)]
pub struct Context {
    pub record: StoredRecord,
    pub before: Vec<StoredRecord>,
    pub after: Vec<StoredRecord>,
    /// False when the scan limit stopped a side before it had its records (and
    /// the partition holds more).
    pub complete: bool,
}

fn owned(offset: u64, h: &BlockHeader<'_>, r: &RecordRef<'_>) -> StoredRecord {
    StoredRecord::copied(offset, Arc::new(Block::of(h)), r)
}

/// The record at `offset` of `p` with up to `before` and `after` records of its
/// source around it.
pub fn around(
    p: &PartitionReader,
    offset: u64,
    before: usize,
    after: usize,
) -> Result<Context, StoreError> {
    let mut record = None;
    p.scan_blocking(offset, offset + 1, |o, h, r| {
        record = Some(owned(o, h, r));
        ControlFlow::Break(())
    })?;
    let record = record.ok_or(StoreError::OffsetOutOfRange {
        offset,
        start: p.start_offset(),
        end: p.end_offset(),
    })?;
    let same = |h: &BlockHeader<'_>| h.host == record.block.host && h.source == record.block.source;
    let mut complete = true;

    // After: forwards until enough, the end, or the scan limit.
    let mut later = Vec::new();
    let end = p.end_offset();
    let limit = end.min(offset + 1 + MAX_SCAN);
    if after > 0 {
        p.scan_blocking(offset + 1, limit, |o, h, r| {
            if same(h) {
                later.push(owned(o, h, r));
                if later.len() >= after {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?;
        complete &= later.len() >= after || limit >= end;
    }

    // Before: windows backwards, doubling, each scanned forwards.
    let mut earlier: Vec<StoredRecord> = Vec::new();
    let start = p.start_offset();
    let mut hi = offset;
    let mut window = FIRST_WINDOW;
    let mut scanned = 0u64;
    while before > 0 && earlier.len() < before && hi > start && scanned < MAX_SCAN {
        let lo = hi.saturating_sub(window).max(start);
        let mut found = Vec::new();
        p.scan_blocking(lo, hi, |o, h, r| {
            if same(h) {
                found.push(owned(o, h, r));
            }
            ControlFlow::Continue(())
        })?;
        scanned += hi - lo;
        // Keep the newest of this window that still fit, in front of what is kept.
        let room = before - earlier.len();
        let take = found.len().saturating_sub(room);
        found.drain(..take);
        found.append(&mut earlier);
        earlier = found;
        hi = lo;
        window = window.saturating_mul(2);
    }
    complete &= before == 0 || earlier.len() >= before || hi <= start;
    Ok(Context {
        record,
        before: earlier,
        after: later,
        complete,
    })
}
