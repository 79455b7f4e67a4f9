//! Batch payloads for the benchmark: realistic log lines, encoded as the agent
//! sends them (one block per batch from one file source) with
//! `tributary_common::record::BlockWriter`, and re-stamped in place so that
//! building payloads costs nothing inside the timing.

use std::sync::Arc;

use tributary_common::record::{self, BlockWriter, PayloadSummary, RECORD_HEADER_LEN};

/// Prebuilt batches per writer, re-stamped in turn.
const TEMPLATES: usize = 4;
const KIB: usize = 1 << 10;

/// splitmix64: small, fast and deterministic.
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
        self.next() % n.max(1)
    }
}

/// Log lines: generated in a few common shapes, or cycled from a file.
pub struct Lines {
    rng: Rng,
    pool: Arc<Vec<Vec<u8>>>,
    next: usize,
}

const PATHS: [&str; 6] = [
    "/api/v1/items",
    "/api/v1/orders",
    "/static/app.js",
    "/healthz",
    "/api/v2/search",
    "/login",
];
const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "curl/8.5.0",
];

impl Lines {
    pub fn new(seed: u64, pool: Arc<Vec<Vec<u8>>>) -> Lines {
        Lines {
            rng: Rng(seed),
            pool,
            next: 0,
        }
    }

    pub fn next_line(&mut self) -> Vec<u8> {
        if !self.pool.is_empty() {
            let l = self.pool[self.next % self.pool.len()].clone();
            self.next += 1;
            return l;
        }
        let r = &mut self.rng;
        let (h, m, s, ms) = (r.below(24), r.below(60), r.below(60), r.below(1000));
        let line = match r.below(4) {
            0 => format!(
                "10.{}.{}.{} - - [25/Nov/2026:{h:02}:{m:02}:{s:02} +0000] \"GET {}/{} HTTP/1.1\" {} {} \"-\" \"{}\"",
                r.below(256),
                r.below(256),
                r.below(256),
                PATHS[r.below(6) as usize],
                r.below(1_000_000),
                [200, 200, 200, 304, 404, 500][r.below(6) as usize],
                r.below(200_000),
                AGENTS[r.below(3) as usize],
            ),
            1 => format!(
                "{{\"ts\":\"2026-11-25T{h:02}:{m:02}:{s:02}.{ms:03}Z\",\"level\":\"{}\",\"msg\":\"request completed\",\"method\":\"POST\",\"path\":\"{}/{}\",\"status\":{},\"duration_ms\":{},\"trace_id\":\"{:016x}\"}}",
                ["info", "info", "warn", "debug"][r.below(4) as usize],
                PATHS[r.below(6) as usize],
                r.below(100_000),
                [200, 201, 400, 503][r.below(4) as usize],
                r.below(5000),
                r.next(),
            ),
            2 => format!(
                "<{}>Nov 25 {h:02}:{m:02}:{s:02} web-{:02} sshd[{}]: Accepted publickey for deploy from 10.1.{}.{} port {} ssh2: ED25519 SHA256:{:016x}",
                [38, 86, 190][r.below(3) as usize],
                r.below(32),
                r.below(65_536),
                r.below(256),
                r.below(256),
                1024 + r.below(60_000),
                r.next(),
            ),
            _ => format!(
                "2026-11-25 {h:02}:{m:02}:{s:02},{ms:03} {} [pool-3-thread-{}] c.e.billing.InvoiceService - retrying invoice INV-{:08} after upstream timeout ({} ms, attempt {} of 5)",
                ["INFO ", "WARN ", "ERROR"][r.below(3) as usize],
                r.below(64),
                r.below(100_000_000),
                r.below(30_000),
                1 + r.below(5),
            ),
        };
        line.into_bytes()
    }
}

/// One prebuilt batch payload: a single block from one file source, with where each
/// record's timestamp and source offset live, so the batch can be re-stamped in place.
struct Template {
    payload: Vec<u8>,
    /// Byte position of each record header in `payload`.
    records: Vec<usize>,
    /// Each record's source offset relative to the batch's first record.
    rel_offsets: Vec<u64>,
    /// Source bytes the batch covers (its lines plus newlines).
    span: u64,
}

/// One file source of one writer: prebuilt batches used in turn, and where the
/// source (its byte offset and its clock) has got to.
pub struct Source {
    templates: Vec<Template>,
    next: usize,
    source_offset: u64,
    timestamp_ms: i64,
}

// Record header layout (tributary_common::record): u32 message_len, u8 flags,
// i64 timestamp_ms, u64 source_offset.
const TS_AT: usize = 5;
const SRC_OFF_AT: usize = 13;

impl Source {
    pub fn new(id: u64, batch_bytes: usize, lines: &mut Lines, start_ms: i64) -> Source {
        let source = format!("/var/log/app/bench-{id}.log");
        let templates = (0..TEMPLATES)
            .map(|_| {
                let mut payload = Vec::with_capacity(batch_bytes + 4 * KIB);
                let mut w = BlockWriter::begin(
                    &mut payload,
                    "web-01",
                    &source,
                    0x5eed_0000 + id,
                    br#"{"env":"bench","team":"storage"}"#,
                );
                let (mut records, mut rel_offsets, mut span) = (Vec::new(), Vec::new(), 0u64);
                loop {
                    let line = lines.next_line();
                    if !records.is_empty()
                        && payload.len() + RECORD_HEADER_LEN + line.len() > batch_bytes
                    {
                        break;
                    }
                    records.push(payload.len());
                    rel_offsets.push(span);
                    w.push(&mut payload, 0, 0, 0, &[], &line);
                    span += line.len() as u64 + 1;
                }
                w.finish(&mut payload);
                Template {
                    payload,
                    records,
                    rel_offsets,
                    span,
                }
            })
            .collect();
        Source {
            templates,
            next: 0,
            source_offset: 0,
            timestamp_ms: start_ms,
        }
    }

    /// The next batch of this source: the next template, re-stamped in place with
    /// the following source offsets and one millisecond per record.
    pub fn next_batch(&mut self) -> (&[u8], PayloadSummary) {
        let t = &mut self.templates[self.next % TEMPLATES];
        self.next += 1;
        let first_ts = self.timestamp_ms;
        for (i, (&at, &rel)) in t.records.iter().zip(&t.rel_offsets).enumerate() {
            let ts = first_ts + i as i64;
            t.payload[at + TS_AT..at + TS_AT + 8].copy_from_slice(&ts.to_le_bytes());
            t.payload[at + SRC_OFF_AT..at + SRC_OFF_AT + 8]
                .copy_from_slice(&(self.source_offset + rel).to_le_bytes());
        }
        let n = t.records.len() as u32;
        let last_ts = first_ts + i64::from(n) - 1;
        self.source_offset += t.span;
        self.timestamp_ms = last_ts + 1;
        let summary = PayloadSummary {
            records: n,
            blocks: 1,
            first_timestamp_ms: first_ts,
            last_timestamp_ms: last_ts,
            min_timestamp_ms: first_ts,
            max_timestamp_ms: last_ts,
        };
        (&t.payload, summary)
    }

    /// Check once that re-stamping writes where the record format keeps timestamps and
    /// source offsets: the stamped batch must decode to the summary we compute.
    pub fn check_layout(&mut self) -> Result<(), String> {
        let (payload, summary) = self.next_batch();
        let decoded = record::summarize(payload).map_err(|e| e.to_string())?;
        if decoded != summary {
            return Err(format!(
                "re-stamped batch decodes to {decoded:?}, expected {summary:?}"
            ));
        }
        // Start over so the source's offsets begin at 0 again.
        self.next = 0;
        self.source_offset = 0;
        self.timestamp_ms = summary.first_timestamp_ms;
        Ok(())
    }
}
