//! The on-disk batch header: a pure codec, no I/O.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset          offset of the batch's first record
//!      8     4  length               bytes after this field, to the end of the payload
//!     12     4  crc32c               of every byte after this field (header rest + payload)
//!     16     1  format_version       = 2 (1 is still read)
//!     17     1  attributes           = 0 (codec bits reserved; stored uncompressed)
//!     18     4  record_count         > 0
//!     22     8  append_ms            v2: when the collector appended the batch
//!                                    (epoch ms); v1: the smallest record timestamp
//!     30     8  last_timestamp_ms    largest record timestamp in the batch
//!     38     …  payload              record blocks (tributary_common::record)
//! ```
//! All integers are little-endian. [`BatchHeader::decode`] checks everything that
//! can be checked without the payload; the CRC is checked by whoever reads it.
//!
//! Records carry their event time (the sender's clock); the append time is the
//! collector's, and retention and segment rolls by age go by it, so a sender's
//! wrong clock can neither delete data early nor keep it forever. Version 1
//! batches (written before the append time existed) have none; readers fall back
//! to the segment file's modification time for them.

/// Size of the fixed header in front of every payload.
pub const HEADER_LEN: usize = 38;
/// Bytes up to and including the `length` field.
pub const LENGTH_PREFIX_LEN: usize = 12;
/// Where the CRC-covered bytes start.
pub const CRC_START: usize = 16;
/// Smallest valid `length`: the header fields after `length` with an empty payload.
pub const MIN_LENGTH: u32 = (HEADER_LEN - LENGTH_PREFIX_LEN) as u32;
/// Largest valid `length` (64 MiB): anything bigger is corruption.
pub const MAX_LENGTH: u32 = 64 << 20;
/// Largest payload a batch can carry.
pub const MAX_PAYLOAD_LEN: usize = (MAX_LENGTH - MIN_LENGTH) as usize;
/// The format version written.
pub const FORMAT_VERSION: u8 = 2;
/// The oldest format version read.
pub const MIN_FORMAT_VERSION: u8 = 1;

/// A decoded batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub length: u32,
    pub crc: u32,
    pub format_version: u8,
    pub attributes: u8,
    pub record_count: u32,
    /// Version 2: the append time (see [`BatchHeader::append_ms`]); version 1: the
    /// smallest record timestamp, which nothing uses.
    pub word22: i64,
    pub last_timestamp_ms: i64,
}

impl BatchHeader {
    /// The header for `payload` at `base_offset`, CRC included. The caller checks
    /// `payload.len() <= MAX_PAYLOAD_LEN`.
    pub fn for_payload(
        base_offset: u64,
        payload: &[u8],
        record_count: u32,
        append_ms: i64,
        last_timestamp_ms: i64,
    ) -> BatchHeader {
        let mut h = BatchHeader {
            base_offset,
            length: MIN_LENGTH + payload.len() as u32,
            crc: 0,
            format_version: FORMAT_VERSION,
            attributes: 0,
            record_count,
            word22: append_ms,
            last_timestamp_ms,
        };
        h.crc = h.compute_crc(payload);
        h
    }

    /// When the collector appended the batch (epoch ms); `None` for version 1.
    pub fn append_ms(&self) -> Option<i64> {
        (self.format_version >= 2).then_some(self.word22)
    }

    /// CRC32C of the header bytes after the CRC field followed by `payload`.
    pub fn compute_crc(&self, payload: &[u8]) -> u32 {
        let bytes = self.encode();
        crc32c::crc32c_append(crc32c::crc32c(&bytes[CRC_START..]), payload)
    }

    /// Encode into the fixed 38-byte layout.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.base_offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.length.to_le_bytes());
        b[12..16].copy_from_slice(&self.crc.to_le_bytes());
        b[16] = self.format_version;
        b[17] = self.attributes;
        b[18..22].copy_from_slice(&self.record_count.to_le_bytes());
        b[22..30].copy_from_slice(&self.word22.to_le_bytes());
        b[30..38].copy_from_slice(&self.last_timestamp_ms.to_le_bytes());
        b
    }

    /// Decode and sanity-check a header: length within bounds, known version and
    /// attributes, at least one record. Returns the reason when it is not sane.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<BatchHeader, String> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let h = BatchHeader {
            base_offset: u64_at(0),
            length: u32_at(8),
            crc: u32_at(12),
            format_version: b[16],
            attributes: b[17],
            record_count: u32_at(18),
            word22: u64_at(22) as i64,
            last_timestamp_ms: u64_at(30) as i64,
        };
        if h.length < MIN_LENGTH || h.length > MAX_LENGTH {
            return Err(format!(
                "batch length {} outside {MIN_LENGTH}..={MAX_LENGTH}",
                h.length
            ));
        }
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&h.format_version) {
            return Err(format!("unknown batch format version {}", h.format_version));
        }
        if h.attributes != 0 {
            return Err(format!(
                "unsupported batch attributes {:#04x}",
                h.attributes
            ));
        }
        if h.record_count == 0 {
            return Err("batch declares no records".into());
        }
        if h.base_offset
            .checked_add(u64::from(h.record_count))
            .is_none()
        {
            return Err("batch offsets overflow".into());
        }
        Ok(h)
    }

    /// Bytes the whole batch occupies in the segment.
    pub fn total_len(&self) -> u64 {
        LENGTH_PREFIX_LEN as u64 + u64::from(self.length)
    }

    /// Bytes of payload after the fixed header.
    pub fn payload_len(&self) -> usize {
        (self.length - MIN_LENGTH) as usize
    }

    /// The offset after this batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BatchHeader {
        BatchHeader::for_payload(42, b"payload bytes", 3, -5, 1_700_000_000_000)
    }

    #[test]
    fn roundtrip() {
        let h = sample();
        let b = h.encode();
        assert_eq!(BatchHeader::decode(&b).unwrap(), h);
        assert_eq!(h.length, MIN_LENGTH + 13);
        assert_eq!(h.total_len(), HEADER_LEN as u64 + 13);
        assert_eq!(h.payload_len(), 13);
        assert_eq!(h.next_offset(), 45);
        assert_eq!(h.append_ms(), Some(-5));
        let mut v1 = b;
        v1[16] = 1;
        let old = BatchHeader::decode(&v1).unwrap();
        assert_eq!(old.append_ms(), None, "version 1 has no append time");
    }

    #[test]
    fn layout_is_pinned() {
        let b = sample().encode();
        assert_eq!(&b[0..8], &42u64.to_le_bytes());
        assert_eq!(&b[8..12], &(26u32 + 13).to_le_bytes());
        assert_eq!(b[16], 2);
        assert_eq!(b[17], 0);
        assert_eq!(&b[18..22], &3u32.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[16..]), b"payload bytes");
        assert_eq!(&b[12..16], &crc.to_le_bytes());
    }

    #[test]
    fn crc_covers_header_and_payload() {
        let h = sample();
        assert_eq!(h.compute_crc(b"payload bytes"), h.crc);
        assert_ne!(h.compute_crc(b"payload bytez"), h.crc);
        let mut h2 = h;
        h2.record_count = 4;
        assert_ne!(h2.compute_crc(b"payload bytes"), h.crc);
    }

    #[test]
    fn insane_headers_are_refused() {
        let good = sample().encode();
        let with = |f: &dyn Fn(&mut [u8; HEADER_LEN])| {
            let mut b = good;
            f(&mut b);
            BatchHeader::decode(&b)
        };
        assert!(with(&|b| b[8..12].copy_from_slice(&(MIN_LENGTH - 1).to_le_bytes())).is_err());
        assert!(with(&|b| b[8..12].copy_from_slice(&(MAX_LENGTH + 1).to_le_bytes())).is_err());
        assert!(with(&|b| b[8..12].copy_from_slice(&MAX_LENGTH.to_le_bytes())).is_ok());
        assert!(with(&|b| b[8..12].copy_from_slice(&MIN_LENGTH.to_le_bytes())).is_ok());
        assert!(with(&|b| b[16] = 3).is_err());
        assert!(with(&|b| b[16] = 0).is_err());
        assert!(with(&|b| b[17] = 1).is_err());
        assert!(with(&|b| b[18..22].copy_from_slice(&0u32.to_le_bytes())).is_err());
        assert!(with(&|b| b[0..8].copy_from_slice(&u64::MAX.to_le_bytes())).is_err());
        assert!(BatchHeader::decode(&[0u8; HEADER_LEN]).is_err());
        assert!(BatchHeader::decode(&[0xffu8; HEADER_LEN]).is_err());
    }
}
