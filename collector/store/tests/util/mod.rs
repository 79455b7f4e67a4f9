//! Helpers shared by the integration tests: deterministic record generation,
//! payload encoding with `BlockWriter`, and comparison of stored records.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tributary_common::record::{self, BlockWriter, FLAG_HAS_FIELDS, FLAG_PARTIAL};
use tributary_store::batch::BatchHeader;
use tributary_store::{AppendResult, Partition, StoredRecord};

/// A record as the tests expect to read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub host: String,
    pub source: String,
    pub source_id: u64,
    pub block_fields: Vec<u8>,
    pub ts: i64,
    pub source_offset: u64,
    pub flags: u8,
    pub fields: Vec<u8>,
    pub message: Vec<u8>,
}

impl Rec {
    pub fn of(s: &StoredRecord) -> Rec {
        Rec {
            host: s.block.host.clone(),
            source: s.block.source.clone(),
            source_id: s.block.source_id,
            block_fields: s.block.fields.clone(),
            ts: s.timestamp_ms,
            source_offset: s.source_offset,
            flags: s.flags,
            fields: s.fields.to_vec(),
            message: s.message.to_vec(),
        }
    }
}

/// splitmix64: small, deterministic, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// A batch: blocks of records (every record of a block shares its metadata).
pub type Batch = Vec<Vec<Rec>>;

/// A deterministic batch of `blocks` blocks of `per_block` records with messages
/// of up to `max_msg` bytes.
pub fn gen_batch(rng: &mut Rng, blocks: usize, per_block: usize, max_msg: usize) -> Batch {
    (0..blocks)
        .map(|b| {
            let host = format!("host-{}", rng.below(3));
            let source = format!("/var/log/app-{b}.log");
            let source_id = rng.next();
            let block_fields = if rng.below(2) == 0 {
                Vec::new()
            } else {
                format!(r#"{{"env":"e{}"}}"#, rng.below(10)).into_bytes()
            };
            (0..per_block)
                .map(|_| {
                    let fields = if rng.below(4) == 0 {
                        format!(r#"{{"k":{}}}"#, rng.below(1000)).into_bytes()
                    } else {
                        Vec::new()
                    };
                    let len = rng.below(max_msg as u64 + 1) as usize;
                    // Half log-like text (which compresses, so batches are stored
                    // compressed), half arbitrary bytes (stored as they are).
                    let message: Vec<u8> = if rng.below(2) == 0 {
                        (0..len).map(|_| rng.next() as u8).collect()
                    } else {
                        const WORDS: [&str; 8] = [
                            "GET ",
                            "/index.html ",
                            "200 ",
                            "user=",
                            "42 ",
                            "ms ",
                            "ok ",
                            "- ",
                        ];
                        let mut m = Vec::with_capacity(len + 12);
                        while m.len() < len {
                            m.extend_from_slice(WORDS[rng.below(8) as usize].as_bytes());
                        }
                        m.truncate(len);
                        m
                    };
                    let mut flags = if rng.below(5) == 0 { FLAG_PARTIAL } else { 0 };
                    if !fields.is_empty() {
                        flags |= FLAG_HAS_FIELDS;
                    }
                    Rec {
                        host: host.clone(),
                        source: source.clone(),
                        source_id,
                        block_fields: block_fields.clone(),
                        ts: 1_700_000_000_000 + rng.below(100_000) as i64 - 50_000,
                        source_offset: rng.next() >> 20,
                        flags,
                        fields,
                        message,
                    }
                })
                .collect()
        })
        .collect()
}

/// Encode a batch with `BlockWriter`.
pub fn encode(batch: &Batch) -> Vec<u8> {
    let mut buf = Vec::new();
    for block in batch {
        let Some(first) = block.first() else { continue };
        let mut w = BlockWriter::begin(
            &mut buf,
            &first.host,
            &first.source,
            first.source_id,
            &first.block_fields,
        );
        for r in block {
            w.push(
                &mut buf,
                r.flags,
                r.ts,
                r.source_offset,
                &r.fields,
                &r.message,
            );
        }
        w.finish(&mut buf);
    }
    buf
}

/// A batch as it is stored in a segment: its header (base offset `base`, CRC
/// included) followed by the encoded payload.
pub fn batch_bytes(base: u64, batch: &Batch) -> Vec<u8> {
    let payload = encode(batch);
    let s = record::summarize(&payload).unwrap();
    // Appended "when" its newest record was written: these tests reason in event
    // time, and rolls and retention by age go by the append time.
    let h = BatchHeader::for_payload(
        base,
        &payload,
        s.records,
        s.max_timestamp_ms,
        s.max_timestamp_ms,
    );
    let mut b = h.encode().to_vec();
    b.extend_from_slice(&payload);
    b
}

/// The records of a batch in offset order.
pub fn flat(batch: &Batch) -> Vec<Rec> {
    batch.iter().flatten().cloned().collect()
}

/// Append `batch`, "when" its newest record was written (see [`batch_bytes`]).
pub fn append(p: &Partition, batch: &Batch) -> AppendResult {
    let payload = encode(batch);
    let summary = record::summarize(&payload).unwrap();
    p.append_at(&payload, &summary, summary.max_timestamp_ms)
        .unwrap()
}

/// [`append`] with the append time `now_ms`.
pub fn append_at(p: &Partition, batch: &Batch, now_ms: i64) -> AppendResult {
    let payload = encode(batch);
    let summary = record::summarize(&payload).unwrap();
    p.append_at(&payload, &summary, now_ms).unwrap()
}

/// Every visible record from `from` on, read in chunks of `chunk` records.
pub fn read_all(p: &Partition, from: u64, chunk: usize) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = p.read(next, chunk, usize::MAX).unwrap();
        if r.records.is_empty() {
            assert_eq!(r.next_offset, next);
            return out;
        }
        for (i, rec) in r.records.iter().enumerate() {
            assert_eq!(rec.offset, next + i as u64, "offsets are dense");
        }
        next = r.next_offset;
        out.extend(r.records);
    }
}

pub fn recs(stored: &[StoredRecord]) -> Vec<Rec> {
    stored.iter().map(Rec::of).collect()
}

/// Segment `.log` files of a partition directory, sorted.
pub fn logs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != ".lock" {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Batch boundaries of a segment file: (start position, end position, base, next offset).
pub fn batch_bounds(log: &Path) -> Vec<(u64, u64, u64, u64)> {
    use tributary_store::batch::{BatchHeader, HEADER_LEN};
    let bytes = std::fs::read(log).unwrap();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER_LEN <= bytes.len() {
        let h = BatchHeader::decode(bytes[pos..pos + HEADER_LEN].try_into().unwrap()).unwrap();
        let end = pos + h.total_len() as usize;
        assert!(end <= bytes.len());
        out.push((pos as u64, end as u64, h.base_offset, h.next_offset()));
        pos = end;
    }
    assert_eq!(pos, bytes.len(), "segment ends on a batch boundary");
    out
}

/// The batch headers of a segment file with their positions.
pub fn headers(log: &Path) -> Vec<(u64, BatchHeader)> {
    use tributary_store::batch::HEADER_LEN;
    let bytes = std::fs::read(log).unwrap();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER_LEN <= bytes.len() {
        let h = BatchHeader::decode(bytes[pos..pos + HEADER_LEN].try_into().unwrap()).unwrap();
        out.push((pos as u64, h));
        pos += h.total_len() as usize;
    }
    out
}

/// The base offset in a segment file's name.
pub fn base_of(log: &Path) -> u64 {
    log.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap()
}

/// Add `ms` to every record timestamp of a batch.
pub fn shift(batch: &mut Batch, ms: i64) {
    for r in batch.iter_mut().flatten() {
        r.ts += ms;
    }
}

/// Run `f` and return what it logged on this thread (INFO and up).
///
/// One global subscriber, installed once, writes each event to the buffer of the
/// thread that emitted it, if that thread is capturing. A subscriber scoped with
/// `with_default` instead loses events now and then: tests on other threads emit
/// through the same callsites with no subscriber, and tracing may cache that the
/// callsite is disabled.
pub fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, String) {
    use std::cell::RefCell;
    thread_local! {
        static CAPTURE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    }
    struct ThisThread;
    impl std::io::Write for ThisThread {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            CAPTURE.with(|c| {
                if let Some(buf) = c.borrow_mut().as_mut() {
                    buf.extend_from_slice(b);
                }
            });
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(|| ThisThread)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the store tests");
    });
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f();
    let text = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, String::from_utf8_lossy(&text).into_owned())
}
