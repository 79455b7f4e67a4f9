//! The sparse time index of one segment: pure logic, no I/O.
//!
//! A `.timeindex` file is a flat array of 12-byte entries `(i64 max_timestamp_ms,
//! u32 relative_offset)` (little-endian), one for every `.index` entry and with the
//! same relative offsets: entry `k` says that the batches of the segment up to and
//! including the one at `.index` entry `k` hold no timestamp above
//! `max_timestamp_ms` (the largest timestamp seen so far in the segment, so the
//! column never decreases, like Kafka's time index). Record timestamps are event
//! times and need not be monotone; the running maximum is.
//!
//! The first batch whose largest timestamp is `>= t` is therefore after the batch
//! of the last entry whose timestamp is `< t` (or anywhere from the segment start
//! when there is none), and at or before the batch of the next entry.
//! [`start_for`] finds that entry; the caller walks batch headers from there.
//!
//! Like the `.index`, the time index is an accelerator rebuilt from the log when it
//! does not check out.

use crate::index::IndexEntry;

/// Size of one entry on disk.
pub const ENTRY_LEN: usize = 12;

/// One time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// The largest record timestamp in the segment up to and including this batch.
    pub max_timestamp_ms: i64,
    /// Batch base offset minus the segment's base offset (as in the `.index`).
    pub relative_offset: u32,
}

impl TimeEntry {
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
        b[8..12].copy_from_slice(&self.relative_offset.to_le_bytes());
        b
    }
}

/// Encode a whole time index.
pub fn encode_all(entries: &[TimeEntry]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.encode()).collect()
}

/// Parse a time index file's bytes. Refuses (with the reason) a length that is not
/// a multiple of 12, timestamps that decrease and relative offsets that do not
/// strictly increase. Whether the entries match the `.index` is [`matching_prefix`]'s
/// business.
pub fn parse(bytes: &[u8]) -> Result<Vec<TimeEntry>, String> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) {
        return Err(format!(
            "length {} is not a multiple of {ENTRY_LEN}",
            bytes.len()
        ));
    }
    let mut out: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    for (i, c) in bytes.chunks_exact(ENTRY_LEN).enumerate() {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&c[0..8]);
        let e = TimeEntry {
            max_timestamp_ms: i64::from_le_bytes(ts),
            relative_offset: u32::from_le_bytes([c[8], c[9], c[10], c[11]]),
        };
        if let Some(p) = out.last()
            && (e.max_timestamp_ms < p.max_timestamp_ms || e.relative_offset <= p.relative_offset)
        {
            return Err(format!("entry {i} {e:?} does not follow {p:?}"));
        }
        out.push(e);
    }
    Ok(out)
}

/// How many leading entries of `times` belong to the `.index` entries `offsets`
/// (same relative offsets, in the same order).
pub fn matching_prefix(times: &[TimeEntry], offsets: &[IndexEntry]) -> usize {
    times
        .iter()
        .zip(offsets)
        .take_while(|(t, o)| t.relative_offset == o.relative_offset)
        .count()
}

/// The index of the last entry whose timestamp is `< target`: the batch wanted by a
/// lookup for `target` comes after that entry's batch. `None`: start at the segment
/// start.
pub fn start_for(entries: &[TimeEntry], target: i64) -> Option<usize> {
    entries
        .partition_point(|e| e.max_timestamp_ms < target)
        .checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(max_timestamp_ms: i64, relative_offset: u32) -> TimeEntry {
        TimeEntry {
            max_timestamp_ms,
            relative_offset,
        }
    }

    #[test]
    fn roundtrip_and_refusals() {
        let idx = vec![t(-5, 0), t(100, 7), t(100, 9), t(i64::MAX, 40)];
        let bytes = encode_all(&idx);
        assert_eq!(bytes.len(), 48);
        assert_eq!(&bytes[0..8], &(-5i64).to_le_bytes());
        assert_eq!(&bytes[8..12], &0u32.to_le_bytes());
        assert_eq!(parse(&bytes).unwrap(), idx);
        assert!(parse(&[]).unwrap().is_empty());
        assert!(parse(&bytes[..47]).is_err(), "partial entry");
        assert!(
            parse(&encode_all(&[t(5, 0), t(4, 1)])).is_err(),
            "time goes back"
        );
        assert!(
            parse(&encode_all(&[t(5, 1), t(6, 1)])).is_err(),
            "offset repeats"
        );
        assert!(
            parse(&encode_all(&[t(5, 2), t(6, 1)])).is_err(),
            "offset goes back"
        );
    }

    #[test]
    fn prefix_against_the_offset_index() {
        let o = |r| IndexEntry {
            relative_offset: r,
            position: r * 10,
        };
        let offsets = [o(0), o(4), o(9)];
        assert_eq!(matching_prefix(&[t(1, 0), t(2, 4), t(3, 9)], &offsets), 3);
        assert_eq!(matching_prefix(&[t(1, 0), t(2, 4)], &offsets), 2);
        assert_eq!(matching_prefix(&[t(1, 0), t(2, 5), t(3, 9)], &offsets), 1);
        assert_eq!(
            matching_prefix(&[t(1, 0), t(2, 4), t(3, 9), t(4, 12)], &offsets),
            3
        );
        assert_eq!(matching_prefix(&[], &offsets), 0);
    }

    #[test]
    fn start_entries() {
        assert_eq!(start_for(&[], 5), None);
        let idx = [t(10, 0), t(20, 5), t(20, 8), t(30, 12)];
        assert_eq!(start_for(&idx, i64::MIN), None);
        assert_eq!(start_for(&idx, 10), None);
        assert_eq!(start_for(&idx, 11), Some(0));
        assert_eq!(start_for(&idx, 20), Some(0));
        assert_eq!(start_for(&idx, 21), Some(2));
        assert_eq!(start_for(&idx, 30), Some(2));
        assert_eq!(start_for(&idx, 31), Some(3));
        assert_eq!(start_for(&idx, i64::MAX), Some(3));
    }
}
