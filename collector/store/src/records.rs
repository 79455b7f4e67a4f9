//! What a read returns: records decoded from stored batch payloads, with their
//! offsets. Decoding is bounds-checked by `tributary_common::record`; a payload that
//! passed its CRC but does not decode is reported as corruption by the caller.

use std::sync::Arc;

use bytes::Bytes;

use tributary_common::record;

use crate::batch::BatchHeader;

/// What every record of one block shares: who sent it and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block {
    pub host: String,
    pub source: String,
    /// The identity the collector authenticated for the sender (mutual TLS), or empty.
    pub agent: String,
    pub source_id: u64,
    /// The block's static fields (JSON object bytes) or empty.
    pub fields: Vec<u8>,
}

impl Block {
    /// The shared part of a decoded block.
    pub fn of(h: &record::BlockHeader<'_>) -> Block {
        Block {
            host: h.host.to_owned(),
            source: h.source.to_owned(),
            agent: h.agent.to_owned(),
            source_id: h.source_id,
            fields: h.fields.to_vec(),
        }
    }

    /// Whether `h` decodes to this.
    pub fn is(&self, h: &record::BlockHeader<'_>) -> bool {
        self.host == h.host
            && self.source == h.source
            && self.agent == h.agent
            && self.source_id == h.source_id
            && self.fields == h.fields
    }
}

/// One stored record with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    /// Shared by the records of its block (one reference count per record, not
    /// one per string).
    pub block: Arc<Block>,
    pub source_offset: u64,
    /// `tributary_common::record::FLAG_*` bits.
    pub flags: u8,
    /// The record's own fields (JSON object bytes) or empty. Like `message`, a
    /// slice of the expanded batch it was read from (no copy per record).
    pub fields: Bytes,
    pub message: Bytes,
}

impl StoredRecord {
    /// A record a scan borrowed from its batch (see [`Partition::scan`](crate::Partition::scan)),
    /// copied out.
    pub fn copied(offset: u64, block: Arc<Block>, r: &record::RecordRef<'_>) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms: r.timestamp_ms,
            block,
            source_offset: r.source_offset,
            flags: r.flags,
            fields: Bytes::copy_from_slice(r.fields),
            message: Bytes::copy_from_slice(r.message),
        }
    }
}

/// The answer to [`Partition::read`](crate::Partition::read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadResult {
    /// Records in offset order, without gaps.
    pub records: Vec<StoredRecord>,
    /// The offset to read next: one past the last record returned, or the
    /// requested offset when nothing was returned.
    pub next_offset: u64,
}

/// Where decoding one batch stopped.
pub(crate) enum Collected {
    /// Every record of the batch at or after the start offset was taken.
    Done,
    /// A limit was reached; this offset was not taken.
    Full(u64),
}

/// Limits of one read and what was taken so far.
pub(crate) struct Take {
    pub records: Vec<StoredRecord>,
    pub bytes: usize,
    pub max_records: usize,
    pub max_bytes: usize,
}

impl Take {
    fn full_before(&self, size: usize) -> bool {
        self.records.len() >= self.max_records
            || (!self.records.is_empty() && self.bytes.saturating_add(size) > self.max_bytes)
    }
}

/// Decode the records of one batch with offset `>= from` into `take`. The error is
/// a description of how the payload disagrees with its header.
pub(crate) fn collect(
    payload: &Bytes,
    h: &BatchHeader,
    from: u64,
    take: &mut Take,
) -> Result<Collected, String> {
    let mut off = h.base_offset;
    for block in record::blocks(payload, false) {
        let block = block.map_err(|e| format!("payload does not decode: {e}"))?;
        let n = u64::from(block.header.record_count);
        let block_end = off
            .checked_add(n)
            .filter(|&end| end <= h.next_offset())
            .ok_or_else(|| {
                format!(
                    "blocks hold more than the {} records declared",
                    h.record_count
                )
            })?;
        if block_end <= from {
            off = block_end;
            continue;
        }
        let shared = Arc::new(Block::of(&block.header));
        for r in block.records() {
            let r = r.map_err(|e| format!("record does not decode: {e}"))?;
            if off >= from {
                let size = r.message.len() + r.fields.len();
                if take.full_before(size) {
                    return Ok(Collected::Full(off));
                }
                take.bytes += size;
                take.records.push(StoredRecord {
                    offset: off,
                    timestamp_ms: r.timestamp_ms,
                    block: shared.clone(),
                    source_offset: r.source_offset,
                    flags: r.flags,
                    fields: slice_of(payload, r.fields),
                    message: slice_of(payload, r.message),
                });
            }
            off += 1;
        }
        if off != block_end {
            return Err(format!(
                "block declares {n} records but holds {}",
                n - (block_end - off)
            ));
        }
    }
    if off != h.next_offset() {
        return Err(format!(
            "batch declares {} records but holds {}",
            h.record_count,
            off - h.base_offset
        ));
    }
    Ok(Collected::Done)
}

/// `part` (borrowed from `payload`) as a `Bytes` sharing `payload`'s memory.
fn slice_of(payload: &Bytes, part: &[u8]) -> Bytes {
    if part.is_empty() {
        Bytes::new()
    } else {
        payload.slice_ref(part)
    }
}

/// The offset and timestamp of the first record of a batch whose timestamp is
/// `>= target`, if any. The error describes how the payload disagrees with its header.
pub(crate) fn first_at_or_after(
    payload: &[u8],
    h: &BatchHeader,
    target: i64,
) -> Result<Option<(u64, i64)>, String> {
    let mut off = h.base_offset;
    for block in record::blocks(payload, false) {
        let block = block.map_err(|e| format!("payload does not decode: {e}"))?;
        for r in block.records() {
            let r = r.map_err(|e| format!("record does not decode: {e}"))?;
            if off >= h.next_offset() {
                return Err(format!(
                    "blocks hold more than the {} records declared",
                    h.record_count
                ));
            }
            if r.timestamp_ms >= target {
                return Ok(Some((off, r.timestamp_ms)));
            }
            off += 1;
        }
    }
    Ok(None)
}
