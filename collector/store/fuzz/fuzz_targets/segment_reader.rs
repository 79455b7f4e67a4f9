//! Fuzz the segment reader and recovery: segment files (and index files) built
//! from the input are put into a partition directory, then opened, recovered and
//! read through the public API only (`Store::open`, `Partition::read`/`append`).
//!
//! The input drives a small builder rather than being one raw file, so that the
//! fuzzer reaches batches whose CRC32C matches (random bytes almost never do):
//! ```text
//! flags u8      bits 0-1: segments - 1; bit 2: segments are raw input bytes;
//!               bit 4: publish_on_sync; bits 5-6: index interval; bit 7: small segments
//! base  u8      base offset of the first segment
//! per segment:  u8 flags (bits 0-2: batches, bits 3-4: index none|raw|exact|damaged,
//!               bits 5-6: gap to the next segment), then its batches: each a kind byte
//!               (valid, CRC-valid arbitrary payload, garbage, damaged valid batch,
//!               valid batch with a wrong length or base offset) and its material;
//!               valid batches are stored with a codec the input picks (none, lz4,
//!               gzip), arbitrary payloads claim one (so bytes that do not
//!               decompress, or not to their stated length, are exercised).
//! ```
//! Checked, beyond "no panic":
//! - `Store::open` succeeds: file contents are data to recover, never an error;
//! - reads are dense (records start at the asked offset, `next_offset` follows the
//!   last) and a failed read is `Error::Corrupt`;
//! - every record read comes from a batch in the files whose header is sane and whose
//!   CRC32C matches, at the offset that batch gives it, with the same timestamp,
//!   source offset and message bytes;
//! - an active (last) segment without an index file is validated from its start, so
//!   recovery keeps exactly its longest valid prefix (sane header, expected base
//!   offset, CRC32C, payload holding the declared record count), truncates the file
//!   there, and every offset of that prefix reads back;
//! - reopening gives the same offsets and the same reads (recovery is idempotent);
//! - the recovered partition takes an append at its end offset, which reads back and
//!   survives another reopen.

#![no_main]

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tributary_common::codec;
use tributary_common::record::{self, BlockWriter};
use tributary_store::Compression;
use tributary_store::batch::{self, BatchHeader, HEADER_LEN};
use tributary_store::index::{self, IndexEntry};
use tributary_store::{Error, Partition, Store, StoreOptions};

/// Reads the input front to back; past its end every number is 0.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
}

/// A valid payload: one or two blocks of a few records.
fn valid_payload(inp: &mut Input<'_>, source_offset: &mut u64) -> (Vec<u8>, u32, i64, i64) {
    let mut buf = Vec::new();
    let blocks = 1 + inp.u8() % 2;
    for b in 0..blocks {
        let source_id = u64::from(inp.u8() % 3); // 0: never deduplicated
        let fields: &[u8] = if inp.u8() & 1 == 1 {
            br#"{"env":"fuzz"}"#
        } else {
            b""
        };
        let source = if b == 0 {
            "/var/log/a.log"
        } else {
            "/var/log/b.log"
        };
        let mut w = BlockWriter::begin(&mut buf, "host", source, source_id, fields);
        for _ in 0..1 + inp.u8() % 5 {
            let ts = i64::from(inp.u16()) - 1000;
            let flags = inp.u8() & 3;
            let len = usize::from(inp.u8() % 48);
            let msg = inp.bytes(len);
            *source_offset += msg.len() as u64 + 1;
            w.push(&mut buf, flags, ts, *source_offset, b"", msg);
        }
        w.finish(&mut buf);
    }
    let s = record::summarize(&buf).expect("a payload built with BlockWriter decodes");
    (buf, s.records, s.min_timestamp_ms, s.max_timestamp_ms)
}

/// `payload` as stored with a codec the input picks (lz4 and gzip fall back to
/// none when they do not shrink it, as appends do), or as an agent's compressed
/// bytes with an identity beside them that readers stamp on the blocks
/// (`ATTR_AGENT`). Returns the header's attributes and the stored bytes.
fn stored(inp: &mut Input<'_>, payload: &[u8]) -> (u8, Vec<u8>) {
    let codec = Compression::from_code(inp.u8() % 3).unwrap_or(Compression::None);
    if codec != Compression::None && inp.u8() & 1 == 1 {
        let mut scratch = Vec::new();
        let sent = codec::compress(codec, payload, &mut scratch);
        let out = batch::store_compressed_as("agent-1.example", payload.len(), sent);
        return (codec.code() | batch::ATTR_AGENT, out);
    }
    let mut out = Vec::new();
    let codec = batch::store_payload(codec, payload, &mut out);
    (codec.code(), out)
}

fn encode(h: &BatchHeader, payload: &[u8]) -> Vec<u8> {
    let mut b = h.encode().to_vec();
    b.extend_from_slice(payload);
    b
}

/// Append one batch (or something in its place) to `log`.
fn push_batch(
    inp: &mut Input<'_>,
    log: &mut Vec<u8>,
    next: &mut u64,
    source_offset: &mut u64,
    starts: &mut Vec<(u64, u64)>,
) {
    let pos = log.len() as u64;
    match inp.u8() % 6 {
        0 | 1 => {
            let (payload, n, min, max) = valid_payload(inp, source_offset);
            let (codec, payload) = stored(inp, &payload);
            log.extend(encode(
                &BatchHeader::with_attributes(*next, codec, &payload, n, min, max),
                &payload,
            ));
            starts.push((pos, *next));
            *next += u64::from(n);
        }
        2 => {
            // CRC-valid header over an arbitrary payload, codec and record count
            // (compressed bytes that do not decompress, or to the wrong length).
            let codec = (inp.u8() % 3) | (inp.u8() & batch::ATTR_AGENT);
            let len = usize::from(inp.u8());
            let payload = inp.bytes(len).to_vec();
            let n = u32::from(inp.u8());
            let h = BatchHeader::with_attributes(*next, codec, &payload, n, 0, 0);
            log.extend(encode(&h, &payload));
            starts.push((pos, *next));
            *next += u64::from(n);
        }
        3 => {
            let len = usize::from(inp.u8());
            log.extend_from_slice(inp.bytes(len));
        }
        4 => {
            // A valid batch, then cut short or with one byte flipped.
            let (payload, n, min, max) = valid_payload(inp, source_offset);
            let (codec, payload) = stored(inp, &payload);
            let mut b = encode(
                &BatchHeader::with_attributes(*next, codec, &payload, n, min, max),
                &payload,
            );
            let at = usize::from(inp.u16()) % b.len();
            if inp.u8() & 1 == 0 {
                b.truncate(at);
            } else {
                b[at] ^= inp.u8() | 1;
            }
            log.extend(b);
            starts.push((pos, *next));
            *next += u64::from(n);
        }
        _ => {
            // Fields the CRC does not cover: the base offset and the length.
            let (payload, n, min, max) = valid_payload(inp, source_offset);
            let (codec, payload) = stored(inp, &payload);
            let mut h = BatchHeader::with_attributes(*next, codec, &payload, n, min, max);
            match inp.u8() % 4 {
                0 => h.base_offset = h.base_offset.wrapping_sub(1),
                1 => h.base_offset += 1 + u64::from(inp.u8()),
                2 => h.length = h.length.wrapping_add(u32::from(inp.u16())),
                _ => h.length = h.length.wrapping_sub(1 + u32::from(inp.u8())),
            }
            log.extend(encode(&h, &payload));
            starts.push((pos, *next));
            *next += u64::from(n);
        }
    }
}

struct SegmentFile {
    base: u64,
    log: Vec<u8>,
    has_index: bool,
}

/// Build the segments described by the input and write them into `dir`.
fn write_segments(inp: &mut Input<'_>, flags: u8, dir: &Path) -> Vec<SegmentFile> {
    let count = 1 + usize::from(flags & 3);
    let raw = flags & 4 != 0;
    let mut base = u64::from(inp.u8());
    let mut source_offset = 0u64;
    let mut out = Vec::new();
    for _ in 0..count {
        let sflags = inp.u8();
        let mut log = Vec::new();
        let mut next = base;
        let mut starts = Vec::new();
        if raw {
            let len = usize::from(inp.u16() % 4096);
            log.extend_from_slice(inp.bytes(len));
        } else {
            for _ in 0..sflags & 7 {
                push_batch(inp, &mut log, &mut next, &mut source_offset, &mut starts);
            }
        }
        let exact = || {
            let entries: Vec<IndexEntry> = starts
                .iter()
                .map(|&(pos, off)| IndexEntry {
                    relative_offset: off.saturating_sub(base) as u32,
                    position: pos as u32,
                })
                .collect();
            index::encode_all(&entries)
        };
        let index = match (sflags >> 3) & 3 {
            0 => None,
            1 => {
                let len = usize::from(inp.u8());
                Some(inp.bytes(len).to_vec())
            }
            2 => Some(exact()),
            _ => {
                let mut b = exact();
                if !b.is_empty() {
                    let at = usize::from(inp.u8()) % b.len();
                    b[at] ^= inp.u8() | 1;
                    if inp.u8() & 1 == 1 {
                        b.truncate(at);
                    }
                }
                Some(b)
            }
        };
        let stem = format!("{base:020}");
        fs::write(dir.join(format!("{stem}.log")), &log).expect("write segment");
        if let Some(ix) = &index {
            fs::write(dir.join(format!("{stem}.index")), ix).expect("write index");
        }
        out.push(SegmentFile {
            base,
            log,
            has_index: index.is_some(),
        });
        let gap = match (sflags >> 5) & 3 {
            0 | 1 => 0,
            2 => 1,
            _ => u64::from(inp.u8()),
        };
        base = next.max(base + 1) + gap;
    }
    out
}

/// One stored record as a read returns it: what the model can check.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: u64,
    timestamp_ms: i64,
    source_offset: u64,
    message: Vec<u8>,
}

/// Every record of every batch, at any position of any segment, whose header is
/// sane and whose CRC32C matches: what a read may return, by offset.
fn crc_valid_records(segments: &[SegmentFile]) -> HashMap<u64, Vec<Rec>> {
    let mut out: HashMap<u64, Vec<Rec>> = HashMap::new();
    for seg in segments {
        let log = &seg.log;
        for pos in 0..log.len() {
            let Some(hb) = log.get(pos..pos + HEADER_LEN) else {
                break;
            };
            let Ok(h) = BatchHeader::decode(hb.try_into().expect("header length")) else {
                continue;
            };
            let end = pos as u64 + h.total_len();
            let Some(payload) = log.get(pos + HEADER_LEN..end as usize) else {
                continue;
            };
            if h.compute_crc(payload) != h.crc {
                continue;
            }
            let Ok(payload) = h.expand(payload.to_vec()) else {
                continue;
            };
            let mut off = h.base_offset;
            'blocks: for block in record::blocks(&payload, false) {
                let Ok(block) = block else { break };
                for r in block.records() {
                    let Ok(r) = r else { break 'blocks };
                    out.entry(off).or_default().push(Rec {
                        offset: off,
                        timestamp_ms: r.timestamp_ms,
                        source_offset: r.source_offset,
                        message: r.message.to_vec(),
                    });
                    off += 1;
                }
            }
        }
    }
    out
}

/// The longest valid prefix of a segment validated from its start, as recovery
/// defines it: (bytes kept, next offset).
fn valid_prefix(log: &[u8], base: u64) -> (u64, u64) {
    let (mut pos, mut expected) = (0usize, base);
    while pos < log.len() {
        let Some(hb) = log.get(pos..pos + HEADER_LEN) else {
            break;
        };
        let Ok(h) = BatchHeader::decode(hb.try_into().expect("header length")) else {
            break;
        };
        if h.base_offset != expected
            || h.next_offset() - base > u64::from(u32::MAX)
            || pos as u64 > u64::from(u32::MAX)
        {
            break;
        }
        let end = pos as u64 + h.total_len();
        let Some(payload) = log.get(pos + HEADER_LEN..end as usize) else {
            break;
        };
        if h.compute_crc(payload) != h.crc {
            break;
        }
        let Ok(payload) = h.expand(payload.to_vec()) else {
            break;
        };
        match record::summarize(&payload) {
            Ok(s) if s.records == h.record_count => {}
            _ => break,
        }
        pos = end as usize;
        expected = h.next_offset();
    }
    (pos as u64, expected)
}

/// What reading the whole partition gave: per read, its records or its error.
type Transcript = Vec<(u64, Result<Vec<Rec>, String>)>;

/// Read from the start to the end, skipping to the next segment after a damaged one.
fn read_all(p: &Partition, bases: &[u64], max_records: usize, max_bytes: usize) -> Transcript {
    let (start, end) = (p.start_offset(), p.end_offset());
    let mut out = Vec::new();
    let mut off = start;
    while off < end {
        match p.read(off, max_records, max_bytes) {
            Ok(r) => {
                assert!(!r.records.is_empty(), "empty read at {off} below end {end}");
                assert!(r.records.len() <= max_records);
                for (i, rec) in r.records.iter().enumerate() {
                    assert_eq!(rec.offset, off + i as u64, "records are dense");
                }
                let next = off + r.records.len() as u64;
                assert_eq!(r.next_offset, next);
                assert!(next <= end, "read past the end offset");
                let recs = r
                    .records
                    .into_iter()
                    .map(|r| Rec {
                        offset: r.offset,
                        timestamp_ms: r.timestamp_ms,
                        source_offset: r.source_offset,
                        message: r.message.to_vec(),
                    })
                    .collect();
                out.push((off, Ok(recs)));
                off = next;
            }
            Err(e) => {
                assert!(matches!(e, Error::Corrupt { .. }), "read at {off}: {e}");
                out.push((off, Err(e.to_string())));
                match bases.iter().find(|&&b| b > off) {
                    Some(&b) => off = b,
                    None => break,
                }
            }
        }
    }
    out
}

fn open(dir: &Path, opts: StoreOptions) -> Store {
    match Store::open(dir, opts) {
        Ok(s) => s,
        Err(e) => panic!("Store::open failed on file contents: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input { data, pos: 0 };
    let flags = inp.u8();
    let opts = StoreOptions {
        publish_on_sync: flags & 16 != 0,
        // 0 indexes every batch (it once made recovery write two entries for one
        // batch, an index that failed its own check at the next open).
        index_interval_bytes: [0, 38, 100, 4096][usize::from((flags >> 5) & 3)],
        // The smallest budget: handles are closed and reopened all the time.
        budget: tributary_store::Budget::MIN,
        // Small: batches come from the cache and from disk, and are evicted.
        read_cache_bytes: 64 << 10,
    };
    let segment_bytes: u64 = if flags & 128 != 0 { 256 } else { 1 << 20 };
    let max_records = 1 + data.len() % 7;
    let max_bytes = [1, 100, 1 << 20][data.len() % 3];

    let tmp = tempfile::Builder::new()
        .prefix("segment-reader")
        .tempdir_in(if Path::new("/dev/shm").is_dir() {
            Path::new("/dev/shm")
        } else {
            Path::new("/tmp")
        })
        .expect("temp dir");
    let root = tmp.path();
    let topic_dir = root.join("topics").join("t");
    let part_dir = topic_dir.join("0");
    fs::create_dir_all(&part_dir).expect("create partition dir");
    fs::write(
        topic_dir.join("topic.json"),
        format!(r#"{{"version":1,"partitions":1,"segment_bytes":{segment_bytes}}}"#),
    )
    .expect("write topic.json");
    let segments = write_segments(&mut inp, flags, &part_dir);
    let bases: Vec<u64> = segments.iter().map(|s| s.base).collect();
    let model = crc_valid_records(&segments);
    let active = segments.last().expect("at least one segment");

    // Open, recover and read everything.
    let store = open(root, opts);
    let p = store
        .topic("t")
        .expect("topic")
        .partition(0)
        .expect("partition")
        .clone();
    assert_eq!(p.start_offset(), segments[0].base);
    let first = read_all(&p, &bases, max_records, max_bytes);
    for (_, r) in &first {
        for rec in r.iter().flatten() {
            let ok = model.get(&rec.offset).is_some_and(|c| c.contains(rec));
            assert!(ok, "read a record that no CRC-valid batch holds: {rec:?}");
        }
    }
    if !active.has_index {
        // Validated from its start: exactly the longest valid prefix survives.
        let (kept, next) = valid_prefix(&active.log, active.base);
        assert_eq!(p.end_offset(), next, "end offset after recovery");
        let log_path = part_dir.join(format!("{:020}.log", active.base));
        let len = fs::metadata(&log_path).expect("active segment").len();
        assert_eq!(len, kept, "active segment truncated at the first bad batch");
        for (off, r) in &first {
            if *off >= active.base {
                assert!(
                    r.is_ok(),
                    "read at {off} in a recovered active segment: {r:?}"
                );
            }
        }
    }

    // Recovery is idempotent.
    let end = p.end_offset();
    drop(p);
    drop(store);
    let store = open(root, opts);
    let p = store
        .topic("t")
        .expect("topic")
        .partition(0)
        .expect("partition")
        .clone();
    assert_eq!(p.end_offset(), end, "end offset changed on reopen");
    assert_eq!(
        read_all(&p, &bases, max_records, max_bytes),
        first,
        "reads changed on reopen"
    );

    // The partition still takes appends at its end.
    let mut buf = Vec::new();
    let mut w = BlockWriter::begin(&mut buf, "host", "syslog+udp://127.0.0.1", 0, b"");
    w.push(&mut buf, 0, 1, 0, b"", b"after recovery");
    w.finish(&mut buf);
    let summary = record::summarize(&buf).expect("decodes");
    let r = match p.append(&buf, &summary) {
        Ok(r) => r,
        Err(e) => panic!("append after recovery: {e}"),
    };
    assert_eq!(r.base_offset, end);
    assert_eq!(r.appended, 1);
    p.sync().expect("sync");
    let got = p.read(end, 1, 1 << 20).expect("read the appended record");
    assert_eq!(got.records.len(), 1);
    assert_eq!(&got.records[0].message[..], b"after recovery");
    drop(p);
    drop(store);
    let store = open(root, opts);
    let p = store
        .topic("t")
        .expect("topic")
        .partition(0)
        .expect("partition")
        .clone();
    assert_eq!(p.end_offset(), end + 1, "the append survives a reopen");
});
