//! The record model and its binary encoding, shared by the wire protocol and the
//! collector's log.
//!
//! Records travel and rest in **blocks**: a block holds the records of one source
//! (one file on one host, or one syslog peer) and carries the per-source metadata
//! once, so a batch of 10,000 lines from one file pays for the host, path and
//! static fields a single time. A batch payload is a sequence of blocks. The same
//! bytes are sent by the agent, checked by the collector and stored in a segment,
//! so nothing is re-encoded on the hot path.
//!
//! ```text
//! payload := block*
//! block   := u32 block_len                 bytes that follow in this block; bit 31
//!                                          (BLOCK_HAS_AGENT) is a flag, not length
//!            u16 host_len   host           UTF-8
//!            u16 source_len source         UTF-8 (file path or syslog+udp://IP)
//!            [u16 agent_len agent]         only with BLOCK_HAS_AGENT: UTF-8
//!            u64 source_id                 identity of the source (0 = none)
//!            u32 fields_len fields         JSON object, or empty
//!            u32 record_count
//!            record*
//! record  := u32 message_len
//!            u8  flags                     PARTIAL | TRUNCATED | HAS_FIELDS
//!            i64 timestamp_ms              Unix epoch milliseconds
//!            u64 source_offset             byte offset of the record in its source
//!            [u32 fields_len fields]       only when HAS_FIELDS: JSON object
//!            message                       raw bytes, not necessarily UTF-8
//! ```
//! All integers are little-endian. Decoding never trusts a length: every field is
//! bounds-checked and a malformed payload is an error, never a panic.
//!
//! `agent` is the identity the collector authenticated (the sender's certificate
//! name): agents never send it; the collector stamps it on every block it stores
//! from a mutual-TLS connection ([`stamp_agent`]). Payloads are at most 64 MiB, so
//! bit 31 of a block length was never set before the flag existed: blocks stored
//! earlier decode unchanged, with no agent.

use bytes::BufMut;
use thiserror::Error;

/// The record is one piece of a line longer than `max_line_bytes`; more pieces follow.
pub const FLAG_PARTIAL: u8 = 0x01;
/// The record was cut at a size limit and the rest was discarded (syslog).
pub const FLAG_TRUNCATED: u8 = 0x02;
/// The record carries its own fields (JSON object) in addition to the block's.
pub const FLAG_HAS_FIELDS: u8 = 0x04;
const KNOWN_FLAGS: u8 = FLAG_PARTIAL | FLAG_TRUNCATED | FLAG_HAS_FIELDS;

/// Fixed size of a record header without optional fields.
pub const RECORD_HEADER_LEN: usize = 4 + 1 + 8 + 8;
/// Fixed part of a block header (without host, source and fields bytes).
pub const BLOCK_HEADER_FIXED_LEN: usize = 4 + 2 + 2 + 8 + 4 + 4;
/// Bit of a block's length word: the block carries the sender's authenticated identity.
pub const BLOCK_HAS_AGENT: u32 = 1 << 31;

/// Why a payload could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("payload truncated at byte {at}: needed {needed} more bytes for {what}")]
    Truncated {
        at: usize,
        needed: usize,
        what: &'static str,
    },
    #[error("block at byte {at}: {what} is not valid UTF-8")]
    NotUtf8 { at: usize, what: &'static str },
    #[error("block at byte {at}: declared {declared} records but holds {found}")]
    CountMismatch {
        at: usize,
        declared: u32,
        found: u32,
    },
    #[error("block at byte {at}: {extra} stray bytes after its last record")]
    TrailingBytes { at: usize, extra: usize },
    #[error("record at byte {at}: unknown flags {flags:#04x}")]
    UnknownFlags { at: usize, flags: u8 },
    #[error("{what} at byte {at} is not a JSON object")]
    BadFields { at: usize, what: &'static str },
    #[error("block at byte {at} names an agent: only the collector sets it")]
    ClaimsAgent { at: usize },
}

/// Metadata shared by all records of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader<'a> {
    pub host: &'a str,
    pub source: &'a str,
    pub source_id: u64,
    /// Static fields (JSON object) or empty.
    pub fields: &'a [u8],
    pub record_count: u32,
    /// The sender's authenticated identity, or empty (see the module docs).
    pub agent: &'a str,
}

impl<'a> BlockHeader<'a> {
    /// Whose deduplication state the block's records belong to: the authenticated
    /// agent when there is one (so no sender can touch another's high-water marks,
    /// whatever host it claims), else the claimed host.
    pub fn dedup_key(&self) -> &'a str {
        if self.agent.is_empty() {
            self.host
        } else {
            self.agent
        }
    }
}

/// One record, borrowed from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub flags: u8,
    pub timestamp_ms: i64,
    pub source_offset: u64,
    /// Per-record fields (JSON object) or empty.
    pub fields: &'a [u8],
    pub message: &'a [u8],
}

/// One block, borrowed from a payload: its header, its whole encoding and its records.
#[derive(Debug, Clone, Copy)]
pub struct BlockRef<'a> {
    pub header: BlockHeader<'a>,
    /// The complete encoded block, `block_len` prefix included.
    pub bytes: &'a [u8],
    records: &'a [u8],
    records_at: usize,
}

impl<'a> BlockRef<'a> {
    /// Iterate the records of this block. The block was validated when it was
    /// produced by [`Blocks`] with `validate`, so errors only arise from unvalidated input.
    pub fn records(&self) -> Records<'a> {
        Records {
            buf: self.records,
            pos: 0,
            base: self.records_at,
            remaining: self.header.record_count,
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = self.buf.len() - self.pos;
        if n > rest {
            return Err(DecodeError::Truncated {
                at: self.base + self.pos,
                needed: n - rest,
                what,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    #[inline]
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    #[inline]
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self, n: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        let at = self.base + self.pos;
        let b = self.take(n, what)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::NotUtf8 { at, what })
    }
}

/// Iterator over the blocks of a payload.
pub struct Blocks<'a> {
    buf: &'a [u8],
    pos: usize,
    validate: bool,
}

/// Iterate the blocks of `payload`. With `validate`, every record of every block is
/// checked (lengths, flags, UTF-8 of metadata, JSON shape of fields) before the block
/// is yielded; use it on anything that came from the network or the disk.
pub fn blocks(payload: &[u8], validate: bool) -> Blocks<'_> {
    Blocks {
        buf: payload,
        pos: 0,
        validate,
    }
}

impl<'a> Blocks<'a> {
    fn next_block(&mut self) -> Result<BlockRef<'a>, DecodeError> {
        let start = self.pos;
        let mut c = Cursor {
            buf: self.buf,
            pos: self.pos,
            base: 0,
        };
        let word = c.u32("block length")?;
        let len = (word & !BLOCK_HAS_AGENT) as usize;
        let body = c.take(len, "block body")?;
        self.pos = c.pos;
        let mut b = Cursor {
            buf: body,
            pos: 0,
            base: start + 4,
        };
        let host_len = b.u16("host length")? as usize;
        let host = b.str(host_len, "host")?;
        let source_len = b.u16("source length")? as usize;
        let source = b.str(source_len, "source")?;
        let agent = if word & BLOCK_HAS_AGENT != 0 {
            let n = b.u16("agent length")? as usize;
            b.str(n, "agent")?
        } else {
            ""
        };
        let source_id = b.u64("source id")?;
        let fields_len = b.u32("fields length")? as usize;
        let fields_at = b.base + b.pos;
        let fields = b.take(fields_len, "block fields")?;
        let record_count = b.u32("record count")?;
        if self.validate && !fields.is_empty() && !is_json_object(fields) {
            return Err(DecodeError::BadFields {
                at: fields_at,
                what: "block fields",
            });
        }
        let block = BlockRef {
            header: BlockHeader {
                host,
                source,
                source_id,
                fields,
                record_count,
                agent,
            },
            bytes: &self.buf[start..self.pos],
            records: &body[b.pos..],
            records_at: b.base + b.pos,
        };
        if self.validate {
            let mut found = 0u32;
            let mut it = block.records();
            it.remaining = u32::MAX;
            let mut end = 0;
            while it.pos < it.buf.len() {
                let r = it.decode_one()?;
                if !r.fields.is_empty() && !is_json_object(r.fields) {
                    return Err(DecodeError::BadFields {
                        at: it.base + end,
                        what: "record fields",
                    });
                }
                end = it.pos;
                found = found.saturating_add(1);
                if found > record_count {
                    return Err(DecodeError::TrailingBytes {
                        at: start,
                        extra: it.buf.len() - end,
                    });
                }
            }
            if found != record_count {
                return Err(DecodeError::CountMismatch {
                    at: start,
                    declared: record_count,
                    found,
                });
            }
        }
        Ok(block)
    }
}

impl<'a> Iterator for Blocks<'a> {
    type Item = Result<BlockRef<'a>, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let r = self.next_block();
        if r.is_err() {
            self.pos = self.buf.len();
        }
        Some(r)
    }
}

/// Iterator over the records of one block.
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    remaining: u32,
}

impl<'a> Records<'a> {
    fn decode_one(&mut self) -> Result<RecordRef<'a>, DecodeError> {
        let at = self.base + self.pos;
        let mut c = Cursor {
            buf: self.buf,
            pos: self.pos,
            base: self.base,
        };
        let message_len = c.u32("message length")? as usize;
        let flags = c.take(1, "record flags")?[0];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DecodeError::UnknownFlags { at, flags });
        }
        let timestamp_ms = c.u64("timestamp")? as i64;
        let source_offset = c.u64("source offset")?;
        let fields = if flags & FLAG_HAS_FIELDS != 0 {
            let n = c.u32("record fields length")? as usize;
            c.take(n, "record fields")?
        } else {
            &[]
        };
        let message = c.take(message_len, "message")?;
        self.pos = c.pos;
        Ok(RecordRef {
            flags,
            timestamp_ms,
            source_offset,
            fields,
            message,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.pos >= self.buf.len() {
            return None;
        }
        self.remaining -= 1;
        let r = self.decode_one();
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}

fn is_json_object(b: &[u8]) -> bool {
    // Checked without building it: valid UTF-8 JSON whose value is an object.
    std::str::from_utf8(b).is_ok() && crate::json::is_object(b)
}

/// What a validated payload holds, for batch headers and partition routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadSummary {
    pub records: u32,
    pub blocks: u32,
    pub first_timestamp_ms: i64,
    pub last_timestamp_ms: i64,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
}

/// Validate a whole payload and summarise it.
pub fn summarize(payload: &[u8]) -> Result<PayloadSummary, DecodeError> {
    let mut s = PayloadSummary::default();
    let mut first = true;
    for block in blocks(payload, true) {
        let block = block?;
        s.blocks += 1;
        for r in block.records() {
            let r = r?;
            s.add(r.timestamp_ms, first);
            first = false;
        }
    }
    Ok(s)
}

impl PayloadSummary {
    /// Account for one record (`first`: it is the payload's first record).
    pub fn add(&mut self, ts: i64, first: bool) {
        if first {
            self.first_timestamp_ms = ts;
            self.min_timestamp_ms = ts;
            self.max_timestamp_ms = ts;
        }
        self.records += 1;
        self.last_timestamp_ms = ts;
        self.min_timestamp_ms = self.min_timestamp_ms.min(ts);
        self.max_timestamp_ms = self.max_timestamp_ms.max(ts);
    }
}

/// Builds one block in place inside a payload buffer: the header is written when the
/// block starts and its length and count are patched when it is finished, so records
/// are encoded exactly once, straight into the buffer that will be compressed.
pub struct BlockWriter {
    start: usize,
    count_at: usize,
    count: u32,
    flags: u32,
}

impl BlockWriter {
    /// Start a block at the end of `buf`. Host and source longer than 65,535 bytes are
    /// cut (at a character boundary) since they are metadata, not data.
    pub fn begin(
        buf: &mut Vec<u8>,
        host: &str,
        source: &str,
        source_id: u64,
        fields: &[u8],
    ) -> Self {
        Self::begin_as(buf, host, source, "", source_id, fields)
    }

    /// Start a block with the same metadata as `h` (agent included).
    pub fn begin_like(buf: &mut Vec<u8>, h: &BlockHeader<'_>) -> Self {
        Self::begin_as(buf, h.host, h.source, h.agent, h.source_id, h.fields)
    }

    /// Start a block stamped with `agent` (none when empty).
    pub fn begin_as(
        buf: &mut Vec<u8>,
        host: &str,
        source: &str,
        agent: &str,
        source_id: u64,
        fields: &[u8],
    ) -> Self {
        let start = buf.len();
        let host = cut_str(host, u16::MAX as usize);
        let source = cut_str(source, u16::MAX as usize);
        let agent = cut_str(agent, u16::MAX as usize);
        buf.put_u32_le(0);
        buf.put_u16_le(host.len() as u16);
        buf.put_slice(host.as_bytes());
        buf.put_u16_le(source.len() as u16);
        buf.put_slice(source.as_bytes());
        if !agent.is_empty() {
            buf.put_u16_le(agent.len() as u16);
            buf.put_slice(agent.as_bytes());
        }
        buf.put_u64_le(source_id);
        buf.put_u32_le(fields.len() as u32);
        buf.put_slice(fields);
        let count_at = buf.len();
        buf.put_u32_le(0);
        BlockWriter {
            start,
            count_at,
            count: 0,
            flags: if agent.is_empty() { 0 } else { BLOCK_HAS_AGENT },
        }
    }

    /// Append one record.
    pub fn push(
        &mut self,
        buf: &mut Vec<u8>,
        flags: u8,
        timestamp_ms: i64,
        source_offset: u64,
        fields: &[u8],
        message: &[u8],
    ) {
        let mut flags = flags & (FLAG_PARTIAL | FLAG_TRUNCATED);
        if !fields.is_empty() {
            flags |= FLAG_HAS_FIELDS;
        }
        buf.reserve(RECORD_HEADER_LEN + 4 + fields.len() + message.len());
        buf.put_u32_le(message.len() as u32);
        buf.put_u8(flags);
        buf.put_i64_le(timestamp_ms);
        buf.put_u64_le(source_offset);
        if !fields.is_empty() {
            buf.put_u32_le(fields.len() as u32);
            buf.put_slice(fields);
        }
        buf.put_slice(message);
        self.count += 1;
    }

    /// Records pushed so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Patch the length and count. A block without records is removed again.
    pub fn finish(self, buf: &mut Vec<u8>) {
        if self.count == 0 {
            buf.truncate(self.start);
            return;
        }
        self.finish_nonempty(buf);
    }

    fn finish_nonempty(self, buf: &mut [u8]) {
        let len = (buf.len() - self.start - 4) as u32 | self.flags;
        buf[self.start..self.start + 4].copy_from_slice(&len.to_le_bytes());
        buf[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_le_bytes());
    }
}

/// Copy `payload` into `out` with every block stamped with `agent`, the
/// identity the collector authenticated; a block that already names one is
/// refused (senders never set it). The records are copied as they are.
pub fn stamp_agent(payload: &[u8], agent: &str, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.reserve(payload.len() + 64);
    let mut at = 0;
    for block in blocks(payload, false) {
        let block = block?;
        let h = block.header;
        if !h.agent.is_empty() {
            return Err(DecodeError::ClaimsAgent { at });
        }
        at += block.bytes.len();
        let mut w = BlockWriter::begin_as(out, h.host, h.source, agent, h.source_id, h.fields);
        out.extend_from_slice(block.records);
        w.count = h.record_count;
        // A block without records (allowed on the wire) keeps its header.
        w.finish_nonempty(out);
    }
    Ok(())
}

/// The byte offset of the first block that names an agent, if any.
pub fn claims_agent(payload: &[u8]) -> Result<Option<usize>, DecodeError> {
    let mut at = 0;
    for block in blocks(payload, false) {
        let block = block?;
        if !block.header.agent.is_empty() {
            return Ok(Some(at));
        }
        at += block.bytes.len();
    }
    Ok(None)
}

fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The partition a block belongs to. A file is known by its `source_id` (device,
/// inode, first bytes), not by its path: a renamed (rotated) file keeps its
/// partition, so its records stay in order in one place and the collector's
/// per-partition deduplication recognises them when they are sent again under the
/// new name. Sources without an id (syslog) go by host and source name.
pub fn partition_for_block(header: &BlockHeader<'_>, partitions: u32) -> u32 {
    if header.source_id == 0 {
        return partition_for(header.host, header.source, partitions);
    }
    let h = crc32c::crc32c_append(crc32c::crc32c(header.host.as_bytes()), &[1]);
    let h = crc32c::crc32c_append(h, &header.source_id.to_le_bytes());
    h % partitions.max(1)
}

/// The partition of a named source: a stable hash of host and source, so every
/// record of one source lands, in order, in one partition, across restarts and versions.
pub fn partition_for(host: &str, source: &str, partitions: u32) -> u32 {
    let h = crc32c::crc32c_append(crc32c::crc32c(host.as_bytes()), &[0]);
    let h = crc32c::crc32c_append(h, source.as_bytes());
    h % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        let mut b = BlockWriter::begin(
            &mut buf,
            "web-01",
            "/var/log/a.log",
            7,
            br#"{"env":"prod"}"#,
        );
        b.push(&mut buf, 0, 1000, 0, b"", b"hello");
        b.push(
            &mut buf,
            FLAG_PARTIAL,
            1001,
            6,
            br#"{"k":1}"#,
            b"\xff\xfebin",
        );
        b.finish(&mut buf);
        let b = BlockWriter::begin(&mut buf, "web-01", "/var/log/empty.log", 8, b"");
        b.finish(&mut buf);
        let mut b = BlockWriter::begin(&mut buf, "web-02", "syslog+udp://10.0.0.1", 0, b"");
        b.push(&mut buf, 0, 999, 0, b"", b"");
        b.finish(&mut buf);
        buf
    }

    #[test]
    fn stamped_agent_roundtrips_and_cannot_be_claimed() {
        let plain = sample();
        assert_eq!(claims_agent(&plain), Ok(None));
        let mut stamped = Vec::new();
        stamp_agent(&plain, "web-01.example", &mut stamped).unwrap();
        let before: Vec<_> = blocks(&plain, true).collect::<Result<_, _>>().unwrap();
        let after: Vec<_> = blocks(&stamped, true).collect::<Result<_, _>>().unwrap();
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.header.agent, "");
            assert_eq!(b.header.dedup_key(), b.header.host);
            assert_eq!(a.header.agent, "web-01.example");
            assert_eq!(a.header.dedup_key(), "web-01.example");
            assert_eq!(
                BlockHeader {
                    agent: "",
                    ..a.header
                },
                b.header
            );
            let rb: Vec<_> = b.records().collect::<Result<_, _>>().unwrap();
            let ra: Vec<_> = a.records().collect::<Result<_, _>>().unwrap();
            assert_eq!(rb, ra);
        }
        assert_eq!(summarize(&stamped).unwrap().records, 3);
        // A block copied with begin_like keeps its agent.
        let mut copy = Vec::new();
        let mut w = BlockWriter::begin_like(&mut copy, &after[0].header);
        w.push(&mut copy, 0, 5, 9, b"", b"x");
        w.finish(&mut copy);
        let c = blocks(&copy, true).next().unwrap().unwrap();
        assert_eq!(c.header.agent, "web-01.example");
        // A sender cannot bring its own identity.
        assert_eq!(claims_agent(&stamped), Ok(Some(0)));
        assert_eq!(
            stamp_agent(&stamped, "other", &mut Vec::new()),
            Err(DecodeError::ClaimsAgent { at: 0 })
        );
    }

    #[test]
    fn roundtrip() {
        let buf = sample();
        let blocks: Vec<_> = blocks(&buf, true).collect::<Result<_, _>>().unwrap();
        assert_eq!(blocks.len(), 2, "empty block is dropped");
        assert_eq!(blocks[0].header.host, "web-01");
        assert_eq!(blocks[0].header.source, "/var/log/a.log");
        assert_eq!(blocks[0].header.source_id, 7);
        assert_eq!(blocks[0].header.fields, br#"{"env":"prod"}"#);
        let recs: Vec<_> = blocks[0].records().collect::<Result<_, _>>().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].message, b"hello");
        assert_eq!(recs[0].flags, 0);
        assert_eq!(recs[1].flags, FLAG_PARTIAL | FLAG_HAS_FIELDS);
        assert_eq!(recs[1].fields, br#"{"k":1}"#);
        assert_eq!(recs[1].message, b"\xff\xfebin");
        assert_eq!(recs[1].source_offset, 6);
        let s = summarize(&buf).unwrap();
        assert_eq!(s.records, 3);
        assert_eq!(s.blocks, 2);
        assert_eq!((s.first_timestamp_ms, s.last_timestamp_ms), (1000, 999));
        assert_eq!((s.min_timestamp_ms, s.max_timestamp_ms), (999, 1001));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = sample();
        // A cut exactly between blocks leaves a valid, shorter payload.
        let first_block_end = blocks(&buf, true).next().unwrap().unwrap().bytes.len();
        for cut in 0..buf.len() {
            let r = summarize(&buf[..cut]);
            match cut {
                0 => assert_eq!(r.unwrap().records, 0),
                c if c == first_block_end => assert_eq!(r.unwrap().records, 2),
                _ => assert!(r.is_err(), "cut at {cut} accepted"),
            }
        }
    }

    #[test]
    fn count_mismatch_and_bad_fields_are_refused() {
        let mut buf = sample();
        // Record count of the first block lives right before its first record.
        let count_at = 4 + 2 + 6 + 2 + 14 + 8 + 4 + 14;
        buf[count_at] = 3;
        assert!(matches!(
            summarize(&buf),
            Err(DecodeError::CountMismatch { .. })
        ));
        let mut buf = Vec::new();
        let mut b = BlockWriter::begin(&mut buf, "h", "s", 0, b"[1]");
        b.push(&mut buf, 0, 0, 0, b"", b"x");
        b.finish(&mut buf);
        assert!(matches!(
            summarize(&buf),
            Err(DecodeError::BadFields { .. })
        ));
    }

    const PINNED_HASH: u32 = 331_067_990;

    #[test]
    fn partition_is_stable() {
        // Pinned values: changing the hash would move existing sources to other
        // partitions and break their order.
        let h = crc32c::crc32c(b"web-01\0/var/log/app/api.log");
        assert_eq!(partition_for("web-01", "/var/log/app/api.log", 8), h % 8);
        assert_eq!(
            partition_for("web-01", "/var/log/app/api.log", 1_000_003),
            h % 1_000_003
        );
        assert_eq!(h, PINNED_HASH);
        assert_eq!(partition_for("h", "s", 0), 0);
        // Files go by identity, whatever their path.
        let a = BlockHeader {
            host: "web-01",
            source: "/var/log/a.log",
            source_id: 77,
            fields: b"",
            record_count: 1,
            agent: "",
        };
        let renamed = BlockHeader {
            source: "/var/log/a.log.1",
            ..a
        };
        assert_eq!(
            partition_for_block(&a, 1_000_003),
            partition_for_block(&renamed, 1_000_003)
        );
        let syslog = BlockHeader { source_id: 0, ..a };
        assert_eq!(
            partition_for_block(&syslog, 8),
            partition_for("web-01", "/var/log/a.log", 8)
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = summarize(&data);
            for b in blocks(&data, false).flatten() {
                for _ in b.records() {}
            }
        }
    }
}
