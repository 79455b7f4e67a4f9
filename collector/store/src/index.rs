//! The sparse offset index of one segment: pure logic, no I/O.
//!
//! A `.index` file is a flat array of 8-byte entries `(u32 relative_offset,
//! u32 position)` (little-endian): the batch whose base offset is
//! `segment base + relative_offset` starts at byte `position` of the `.log`. An
//! entry is added for a segment's first batch and then whenever at least
//! `index_interval_bytes` of log were written since the previous entry. Lookups
//! binary-search for the last entry at or before an offset; the caller then scans
//! batch headers forward from that position.
//!
//! The index is only an accelerator: the log is the truth. An index that fails
//! [`parse`] is rebuilt from the log, never trusted.

/// Size of one entry on disk.
pub const ENTRY_LEN: usize = 8;

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Batch base offset minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch start in the `.log`.
    pub position: u32,
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        b[4..8].copy_from_slice(&self.position.to_le_bytes());
        b
    }
}

/// Encode a whole index.
pub fn encode_all(entries: &[IndexEntry]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.encode()).collect()
}

/// Parse an index file's bytes for a log of `log_len` bytes. Refuses (with the
/// reason) a length that is not a multiple of 8, entries that do not strictly
/// increase in both fields, and positions at or past the end of the log. The first
/// entry is normally `(0, 0)`; an index rebuilt over a damaged first batch starts at
/// the first batch after the damage, and lookups below it start at byte 0.
pub fn parse(bytes: &[u8], log_len: u64) -> Result<Vec<IndexEntry>, String> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) {
        return Err(format!(
            "length {} is not a multiple of {ENTRY_LEN}",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    for (i, c) in bytes.chunks_exact(ENTRY_LEN).enumerate() {
        let e = IndexEntry {
            relative_offset: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            position: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        };
        if u64::from(e.position) >= log_len {
            return Err(format!(
                "entry {i} points to byte {} past the log end {log_len}",
                e.position
            ));
        }
        match out.last() {
            Some(p) if !is_after(p, &e) => {
                return Err(format!("entry {i} {e:?} does not follow {p:?}"));
            }
            _ => {}
        }
        out.push(e);
    }
    if out.is_empty() && log_len > 0 {
        return Err("empty index for a non-empty log".into());
    }
    Ok(out)
}

fn is_after(prev: &IndexEntry, e: &IndexEntry) -> bool {
    e.relative_offset > prev.relative_offset && e.position > prev.position
}

/// The last entry whose relative offset is `<= relative_offset`.
pub fn lookup(entries: &[IndexEntry], relative_offset: u64) -> Option<IndexEntry> {
    let i = entries.partition_point(|e| u64::from(e.relative_offset) <= relative_offset);
    i.checked_sub(1).map(|i| entries[i])
}

/// Whether a batch starting at `position` gets an entry, given the last entry.
pub fn wants_entry(last: Option<&IndexEntry>, position: u64, interval_bytes: u32) -> bool {
    match last {
        None => true,
        // Strictly after the last entry, whatever the interval (0 included): two
        // entries for one batch would not pass `parse`.
        Some(l) => {
            position > u64::from(l.position)
                && position - u64::from(l.position) >= u64::from(interval_bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(relative_offset: u32, position: u32) -> IndexEntry {
        IndexEntry {
            relative_offset,
            position,
        }
    }

    #[test]
    fn lookup_edges() {
        assert_eq!(lookup(&[], 0), None);
        assert_eq!(lookup(&[], 99), None);
        let idx = [e(0, 0), e(10, 4096), e(25, 9000)];
        assert_eq!(lookup(&idx, 0), Some(e(0, 0)));
        assert_eq!(lookup(&idx, 9), Some(e(0, 0)));
        assert_eq!(lookup(&idx, 10), Some(e(10, 4096)));
        assert_eq!(lookup(&idx, 24), Some(e(10, 4096)));
        assert_eq!(lookup(&idx, 25), Some(e(25, 9000)));
        assert_eq!(lookup(&idx, u64::MAX), Some(e(25, 9000)));
        let one = [e(0, 0)];
        assert_eq!(lookup(&one, 0), Some(e(0, 0)));
        assert_eq!(lookup(&one, 1 << 40), Some(e(0, 0)));
        // An index not starting at 0 (never produced, but lookups stay total).
        assert_eq!(lookup(&[e(5, 100)], 4), None);
    }

    #[test]
    fn parse_roundtrip_and_refusals() {
        let idx = vec![e(0, 0), e(10, 4096), e(25, 9000)];
        let bytes = encode_all(&idx);
        assert_eq!(bytes.len(), 24);
        assert_eq!(parse(&bytes, 9001).unwrap(), idx);
        assert!(parse(&bytes, 9000).is_err(), "entry at the log end");
        assert!(parse(&bytes[..23], 10_000).is_err(), "partial entry");
        assert!(parse(&[], 0).unwrap().is_empty());
        assert!(parse(&[], 10).is_err(), "missing entries for data");
        // Rebuilt over a damaged first batch: starts at the next good one.
        assert_eq!(parse(&encode_all(&[e(1, 101)]), 200).unwrap(), [e(1, 101)]);
        assert!(parse(&encode_all(&[e(0, 0), e(0, 50)]), 100).is_err());
        assert!(parse(&encode_all(&[e(0, 0), e(5, 0)]), 100).is_err());
        assert!(parse(&encode_all(&[e(0, 0), e(5, 60), e(4, 70)]), 100).is_err());
        assert!(parse(&[0u8; 16], 100).is_err(), "zero-filled hole");
    }

    #[test]
    fn interval_policy() {
        assert!(wants_entry(None, 0, 4096));
        let last = e(0, 100);
        assert!(!wants_entry(Some(&last), 100 + 4095, 4096));
        assert!(wants_entry(Some(&last), 100 + 4096, 4096));
        assert!(wants_entry(Some(&last), 101, 0));
        assert!(
            !wants_entry(Some(&last), 100, 0),
            "never twice for one batch"
        );
    }
}
