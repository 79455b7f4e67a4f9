//! The on-disk batch header: a pure codec, no I/O.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset          offset of the batch's first record
//!      8     4  length               bytes after this field, to the end of the payload
//!     12     4  crc32c               of every byte after this field (header rest + payload)
//!     16     1  format_version       = 2 (1 is still read)
//!     17     1  attributes           bits 0-3: codec of the payload: 0 none, 1 gzip,
//!                                    2 lz4 (the agent protocol's codes); bit 4
//!                                    (ATTR_AGENT): the payload starts with the
//!                                    sender's identity; other values refused
//!     18     4  record_count         > 0
//!     22     8  append_ms            v2: when the collector appended the batch
//!                                    (epoch ms); v1: the smallest record timestamp
//!     30     8  last_timestamp_ms    largest record timestamp in the batch
//!     38     …  payload              [ATTR_AGENT: u16 length, identity], then
//!                                    codec 0: record blocks (tributary_common::record);
//!                                    otherwise u32 uncompressed length, then the
//!                                    blocks compressed (lz4 block format or gzip)
//! ```
//! With `ATTR_AGENT` the blocks are stored as the agent sent them, without the
//! identity the collector authenticated, and readers stamp it on every block
//! ([`BatchHeader::expand`]): so the agent's compressed bytes are stored as they
//! came instead of being expanded, stamped and compressed again.
//! All integers are little-endian. [`BatchHeader::decode`] checks everything that
//! can be checked without the payload; the CRC is checked by whoever reads it and
//! covers the bytes as stored (compressed). A compressed payload expands to at most
//! [`MAX_PAYLOAD_LEN`] and exactly its stated length, or it is corruption
//! ([`BatchHeader::expand`]). Segments written before compression existed hold
//! codec 0 batches, and one segment may hold batches of several codecs (the topic's
//! setting changed), so every batch says its own.
//!
//! Records carry their event time (the sender's clock); the append time is the
//! collector's, and retention and segment rolls by age go by it, so a sender's
//! wrong clock can neither delete data early nor keep it forever. Version 1
//! batches (written before the append time existed) have none; readers fall back
//! to the segment file's modification time for them.

use tributary_common::codec::{self, Compression};
use tributary_common::record;

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
/// Bytes in front of a compressed payload: its uncompressed length.
pub const STORED_LEN_PREFIX: usize = 4;
/// Attribute bit: the payload starts with `u16 length | identity`, to be stamped on
/// every block by readers.
pub const ATTR_AGENT: u8 = 0x10;
/// Attribute bits that hold the codec.
const CODEC_MASK: u8 = 0x0f;

/// Write `payload` (record blocks) as stored with `codec` into `out` (cleared
/// first) and return the codec actually used: a payload that does not shrink is
/// stored as it is (codec none), so a stored batch is never larger than its records.
pub fn store_payload(codec: Compression, payload: &[u8], out: &mut Vec<u8>) -> Compression {
    out.clear();
    if codec != Compression::None && payload.len() > 64 {
        let mut scratch = Vec::new();
        let body = codec::compress(codec, payload, &mut scratch);
        if body.len() + STORED_LEN_PREFIX < payload.len() {
            out.reserve_exact(STORED_LEN_PREFIX + body.len());
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
            return codec;
        }
    }
    out.extend_from_slice(payload);
    Compression::None
}

/// Stored bytes for `payload` from bytes the sender already compressed with
/// `codec` (as the agent protocol carries them): the length prefix, then them.
pub fn store_compressed(payload_len: usize, compressed: &[u8]) -> Vec<u8> {
    store_compressed_as("", payload_len, compressed)
}

/// [`store_compressed`] of blocks that readers stamp with `agent` (none when
/// empty; see [`ATTR_AGENT`]): `payload_len` is their length before stamping.
pub fn store_compressed_as(agent: &str, payload_len: usize, compressed: &[u8]) -> Vec<u8> {
    let prefix = if agent.is_empty() { 0 } else { 2 + agent.len() };
    let mut out = Vec::with_capacity(prefix + STORED_LEN_PREFIX + compressed.len());
    if !agent.is_empty() {
        out.extend_from_slice(&(agent.len() as u16).to_le_bytes());
        out.extend_from_slice(agent.as_bytes());
    }
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(compressed);
    out
}

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
    /// The header for an uncompressed `payload` at `base_offset`, CRC included.
    /// The caller checks `payload.len() <= MAX_PAYLOAD_LEN`.
    pub fn for_payload(
        base_offset: u64,
        payload: &[u8],
        record_count: u32,
        append_ms: i64,
        last_timestamp_ms: i64,
    ) -> BatchHeader {
        Self::for_stored(
            base_offset,
            Compression::None,
            payload,
            record_count,
            append_ms,
            last_timestamp_ms,
        )
    }

    /// The header for `stored` bytes written with `codec` (see [`store_payload`]).
    /// The caller checks `stored.len() <= MAX_PAYLOAD_LEN`.
    pub fn for_stored(
        base_offset: u64,
        codec: Compression,
        stored: &[u8],
        record_count: u32,
        append_ms: i64,
        last_timestamp_ms: i64,
    ) -> BatchHeader {
        Self::with_attributes(
            base_offset,
            codec.code(),
            stored,
            record_count,
            append_ms,
            last_timestamp_ms,
        )
    }

    /// [`for_stored`](Self::for_stored) with the attribute byte given whole (a
    /// codec, maybe with [`ATTR_AGENT`]).
    pub fn with_attributes(
        base_offset: u64,
        attributes: u8,
        stored: &[u8],
        record_count: u32,
        append_ms: i64,
        last_timestamp_ms: i64,
    ) -> BatchHeader {
        let mut h = BatchHeader {
            base_offset,
            length: MIN_LENGTH + stored.len() as u32,
            crc: 0,
            format_version: FORMAT_VERSION,
            attributes,
            record_count,
            word22: append_ms,
            last_timestamp_ms,
        };
        h.crc = h.compute_crc(stored);
        h
    }

    /// The codec of the stored payload (checked by [`BatchHeader::decode`]).
    pub fn codec(&self) -> Compression {
        Compression::from_code(self.attributes & CODEC_MASK).unwrap_or(Compression::None)
    }

    /// The identity readers stamp on the blocks ([`ATTR_AGENT`]) and the rest of
    /// `stored`; no identity and `stored` itself without the bit.
    fn split_agent<'a>(&self, stored: &'a [u8]) -> Result<(&'a str, &'a [u8]), String> {
        if self.attributes & ATTR_AGENT == 0 {
            return Ok(("", stored));
        }
        let Some((len, rest)) = stored.split_first_chunk::<2>() else {
            return Err("payload too short for its identity".into());
        };
        let len = u16::from_le_bytes(*len) as usize;
        if len == 0 || rest.len() < len {
            return Err(format!("identity of {len} bytes does not fit the payload"));
        }
        let (agent, rest) = rest.split_at(len);
        let agent = std::str::from_utf8(agent).map_err(|_| "identity is not UTF-8")?;
        Ok((agent, rest))
    }

    /// The record blocks of a stored payload whose CRC checked out: itself when it
    /// is uncompressed, else decompressed (at most [`MAX_PAYLOAD_LEN`] bytes, and
    /// exactly the stated length), stamped with the identity it carries. The
    /// error says how it disagrees.
    pub fn expand(&self, stored: Vec<u8>) -> Result<Vec<u8>, String> {
        if self.attributes == Compression::None.code() {
            return Ok(stored);
        }
        let codec = self.codec();
        let (agent, body) = self.split_agent(&stored)?;
        if codec == Compression::None {
            // Only the identity to stamp.
            let mut stamped = Vec::new();
            self.stamp(body, agent, &mut stamped)?;
            return Ok(stamped);
        }
        let (declared, body) = self.compressed(body)?;
        // Into a fresh buffer the decoder does not have to zero first.
        let blocks = codec::decompress(codec, body, declared, MAX_PAYLOAD_LEN)
            .map_err(|e| format!("stored payload does not decompress: {e}"))?;
        if agent.is_empty() {
            return Ok(blocks);
        }
        let mut stamped = Vec::new();
        self.stamp(&blocks, agent, &mut stamped)?;
        Ok(stamped)
    }

    /// The uncompressed length a compressed payload declares, and its compressed bytes.
    fn compressed<'a>(&self, stored: &'a [u8]) -> Result<(usize, &'a [u8]), String> {
        let Some((len, body)) = stored.split_first_chunk::<STORED_LEN_PREFIX>() else {
            return Err(format!(
                "{} payload of {} bytes has no length",
                self.codec().name(),
                stored.len()
            ));
        };
        Ok((u32::from_le_bytes(*len) as usize, body))
    }

    /// `blocks` with `agent` stamped on each, into `stamped` (cleared first).
    fn stamp<'a>(
        &self,
        blocks: &[u8],
        agent: &str,
        stamped: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], String> {
        stamped.clear();
        record::stamp_agent(blocks, agent, stamped)
            .map_err(|e| format!("stored blocks do not take their identity: {e}"))?;
        if stamped.len() > MAX_PAYLOAD_LEN {
            return Err(format!(
                "stamped payload of {} bytes over the limit of {MAX_PAYLOAD_LEN}",
                stamped.len()
            ));
        }
        Ok(stamped)
    }

    /// [`expand`](Self::expand) into buffers kept from batch to batch by a reader
    /// (`out` for the decompressed blocks, `stamped` for them with the identity):
    /// the record blocks are `stored` itself or the start of one of them.
    pub fn expand_into<'a>(
        &self,
        stored: &'a [u8],
        out: &'a mut Vec<u8>,
        stamped: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], String> {
        let codec = self.codec();
        let (agent, stored) = self.split_agent(stored)?;
        let blocks = if codec == Compression::None {
            stored
        } else {
            let (declared, body) = self.compressed(stored)?;
            codec::decompress_into(codec, body, declared, MAX_PAYLOAD_LEN, out)
                .map_err(|e| format!("stored payload does not decompress: {e}"))?
        };
        if agent.is_empty() {
            return Ok(blocks);
        }
        self.stamp(blocks, agent, stamped)
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
        if Compression::from_code(h.attributes & !ATTR_AGENT).is_none() {
            return Err(format!(
                "unsupported batch attributes {:#04x} (codecs: 0 none, 1 gzip, 2 lz4; 0x10 identity)",
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
    fn stored_payloads_expand_to_their_blocks() {
        let payload: Vec<u8> = b"GET /index.html 200 "
            .iter()
            .cycle()
            .take(4000)
            .copied()
            .collect();
        for codec in [Compression::Lz4, Compression::Gzip, Compression::None] {
            let mut stored = Vec::new();
            let used = store_payload(codec, &payload, &mut stored);
            assert_eq!(used, codec);
            if codec != Compression::None {
                assert!(
                    stored.len() < payload.len() / 4,
                    "{codec:?}: {}",
                    stored.len()
                );
            }
            let h = BatchHeader::for_stored(0, used, &stored, 1, 0, 0);
            let decoded = BatchHeader::decode(&h.encode()).unwrap();
            assert_eq!(decoded.codec(), codec);
            assert_eq!(
                h.compute_crc(&stored),
                h.crc,
                "the CRC covers the stored bytes"
            );
            assert_eq!(decoded.expand(stored.clone()).unwrap(), payload);
            if codec != Compression::None {
                // A wrong stated length, a cut body and a length over the limit are
                // refused, never expanded beyond the limit.
                let mut wrong = stored.clone();
                wrong[0] ^= 1;
                assert!(decoded.expand(wrong).is_err());
                assert!(decoded.expand(stored[..stored.len() / 2].to_vec()).is_err());
                let mut huge = stored.clone();
                huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
                assert!(decoded.expand(huge).unwrap_err().contains("limit"));
                assert!(decoded.expand(vec![1, 2]).is_err());
            }
        }
        // Bytes that do not shrink are stored as they are.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let mut stored = Vec::new();
        assert_eq!(
            store_payload(Compression::Lz4, &noise, &mut stored),
            Compression::None
        );
        assert_eq!(stored, noise);
    }

    #[test]
    fn an_identity_beside_the_blocks_is_stamped_on_them_when_read() {
        let mut raw = Vec::new();
        for (source, id) in [("/var/log/a.log", 1), ("/var/log/b.log", 2)] {
            let mut w = record::BlockWriter::begin(&mut raw, "web-01", source, id, b"");
            for i in 0..300u64 {
                w.push(
                    &mut raw,
                    0,
                    5,
                    i,
                    b"",
                    format!("GET /item/{i} 200").as_bytes(),
                );
            }
            w.finish(&mut raw);
        }
        let mut want = Vec::new();
        record::stamp_agent(&raw, "web-01.example", &mut want).unwrap();
        for codec in [Compression::Lz4, Compression::Gzip] {
            let mut scratch = Vec::new();
            let compressed = codec::compress(codec, &raw, &mut scratch).to_vec();
            let stored = store_compressed_as("web-01.example", raw.len(), &compressed);
            let h = BatchHeader::with_attributes(0, codec.code() | ATTR_AGENT, &stored, 600, 0, 5);
            let h = BatchHeader::decode(&h.encode()).unwrap();
            assert_eq!(h.codec(), codec);
            assert_eq!(h.expand(stored.clone()).unwrap(), want);
            let (mut out, mut stamped) = (vec![7u8; 3], Vec::new());
            assert_eq!(
                h.expand_into(&stored, &mut out, &mut stamped).unwrap(),
                want
            );
            // Cut or overlong identities, and blocks that already name one, are
            // corruption.
            assert!(h.expand(stored[..1].to_vec()).is_err());
            let mut long = stored.clone();
            long[..2].copy_from_slice(&u16::MAX.to_le_bytes());
            assert!(h.expand(long).is_err());
            let mut empty = stored.clone();
            empty[..2].copy_from_slice(&0u16.to_le_bytes());
            assert!(h.expand(empty).is_err());
            let twice = store_compressed_as(
                "web-01.example",
                want.len(),
                codec::compress(codec, &want, &mut scratch),
            );
            assert!(h.expand(twice).unwrap_err().contains("identity"));
        }
        // Uncompressed blocks with an identity.
        let mut stored = (14u16).to_le_bytes().to_vec();
        stored.extend_from_slice(b"web-01.example");
        stored.extend_from_slice(&raw);
        let h = BatchHeader::with_attributes(0, ATTR_AGENT, &stored, 600, 0, 5);
        assert_eq!(h.expand(stored).unwrap(), want);
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
        assert!(with(&|b| b[17] = 1).is_ok(), "gzip");
        assert!(with(&|b| b[17] = 2).is_ok(), "lz4");
        assert!(with(&|b| b[17] = 3).is_err());
        assert!(with(&|b| b[17] = 0x80).is_err());
        assert!(
            with(&|b| b[17] = ATTR_AGENT | 2).is_ok(),
            "lz4 with an identity"
        );
        assert!(
            with(&|b| b[17] = ATTR_AGENT).is_ok(),
            "plain with an identity"
        );
        assert!(with(&|b| b[17] = ATTR_AGENT | 3).is_err());
        assert!(with(&|b| b[17] = 0x20 | 2).is_err());
        assert!(with(&|b| b[18..22].copy_from_slice(&0u32.to_le_bytes())).is_err());
        assert!(with(&|b| b[0..8].copy_from_slice(&u64::MAX.to_le_bytes())).is_err());
        assert!(BatchHeader::decode(&[0u8; HEADER_LEN]).is_err());
        assert!(BatchHeader::decode(&[0xffu8; HEADER_LEN]).is_err());
    }
}
