//! Batching: chunks of encoded records → compressed batches, one topic per batch.
//!
//! A batch is closed when it reaches `max_bytes` or `max_records`, or `linger`
//! after its first chunk arrived, or as soon as the output can take it once every
//! source in it has reached its end (see [`Chunk::at_end`]) and no other chunk
//! waits: a line written to a quiet file leaves at once, and `linger` only merges
//! what arrives while the output is busy. Chunks are whole encoded blocks, so
//! batching is a `memcpy`, and compression runs here, off the shipping task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tributary_common::codec::Compression;
use tributary_common::wire::BatchFrame;

use crate::input::Chunk;
use crate::stats::AgentStats;

/// How far a batch got in one source: what the checkpoint advances to once the
/// batch is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub source_id: u64,
    pub path: Arc<str>,
    pub end_offset: u64,
    /// Hash of the bytes before `end_offset` (see `Chunk::end_hash`).
    pub end_hash: u64,
    /// CRC32C of the bytes from `crc_base` to `end_offset` (see `Chunk::crc`).
    pub crc_base: u64,
    pub crc: u32,
    /// See `Chunk::cursor`.
    pub cursor: Option<Arc<str>>,
}

/// A closed, compressed batch waiting for a sequence number.
#[derive(Debug)]
pub struct Batch {
    pub frame: BatchFrame,
    pub positions: Vec<Position>,
}

impl Batch {
    pub fn records(&self) -> u32 {
        self.frame.records
    }
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_bytes: usize,
    pub max_records: u32,
    pub linger: Duration,
    pub compression: Compression,
}

struct Open {
    payload: Vec<u8>,
    records: u32,
    deadline: Instant,
    positions: Vec<Position>,
    /// Sources whose last chunk did not reach their end: more of them is coming.
    reading: Vec<u64>,
}

/// The batching stage.
pub struct Batcher {
    limits: BatchLimits,
    open: HashMap<Arc<str>, Open>,
    scratch: Vec<u8>,
    stats: Option<Arc<AgentStats>>,
}

impl Batcher {
    pub fn new(limits: BatchLimits) -> Self {
        Batcher {
            limits,
            open: HashMap::new(),
            scratch: Vec::new(),
            stats: None,
        }
    }

    /// Count lines and bytes read into `stats`.
    pub fn with_stats(mut self, stats: Arc<AgentStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Run until `rx` closes (inputs finished), then flush what is open and return.
    /// `shutdown` is not watched here on purpose: the inputs stop on it, their
    /// senders drop, and the last partial batches still go out.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Chunk>, tx: mpsc::Sender<Batch>) {
        loop {
            let deadline = self.open.values().map(|o| o.deadline).min();
            let idle = self
                .open
                .iter()
                .find(|(_, o)| o.reading.is_empty())
                .map(|(t, _)| t.clone());
            let chunk = tokio::select! {
                // Chunks first: whatever is already waiting joins the open batches.
                biased;
                c = rx.recv() => c,
                permit = tx.reserve(), if idle.is_some() => {
                    let Ok(permit) = permit else { return };
                    if let Some(batch) = idle.and_then(|t| self.close(&t)) {
                        permit.send(batch);
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    if !self.flush_due(&tx, Instant::now()).await {
                        return;
                    }
                    continue;
                }
            };
            let Some(chunk) = chunk else {
                self.flush_due(&tx, Instant::now() + Duration::from_secs(86_400 * 365))
                    .await;
                return;
            };
            if let Some(batch) = self.add(chunk)
                && tx.send(batch).await.is_err()
            {
                return;
            }
        }
    }

    /// Add a chunk; returns a batch when this chunk filled one.
    pub fn add(&mut self, chunk: Chunk) -> Option<Batch> {
        if let Some(stats) = &self.stats {
            stats
                .lines_read
                .fetch_add(chunk.records as u64, Ordering::Relaxed);
            stats.bytes_read.fetch_add(
                chunk.end_offset.saturating_sub(chunk.start_offset),
                Ordering::Relaxed,
            );
        }
        let linger = self.limits.linger;
        let open = self
            .open
            .entry(chunk.topic.clone())
            .or_insert_with(|| Open {
                payload: Vec::new(),
                records: 0,
                deadline: Instant::now() + linger,
                positions: Vec::new(),
                reading: Vec::new(),
            });
        match open.reading.iter().position(|&s| s == chunk.source_id) {
            Some(i) if chunk.at_end => {
                open.reading.swap_remove(i);
            }
            None if !chunk.at_end => open.reading.push(chunk.source_id),
            _ => {}
        }
        open.payload.extend_from_slice(&chunk.payload);
        open.records += chunk.records;
        match open
            .positions
            .iter_mut()
            .find(|p| p.source_id == chunk.source_id)
        {
            Some(p) => {
                if chunk.end_offset >= p.end_offset {
                    p.end_offset = chunk.end_offset;
                    p.end_hash = chunk.end_hash;
                    p.crc_base = chunk.crc_base;
                    p.crc = chunk.crc;
                    p.cursor = chunk.cursor.clone();
                }
            }
            None => open.positions.push(Position {
                source_id: chunk.source_id,
                path: chunk.path.clone(),
                end_offset: chunk.end_offset,
                end_hash: chunk.end_hash,
                crc_base: chunk.crc_base,
                crc: chunk.crc,
                cursor: chunk.cursor.clone(),
            }),
        }
        if open.payload.len() >= self.limits.max_bytes || open.records >= self.limits.max_records {
            return self.close(&chunk.topic);
        }
        None
    }

    fn close(&mut self, topic: &Arc<str>) -> Option<Batch> {
        let open = self.open.remove(topic)?;
        let frame = BatchFrame::build(
            0,
            topic,
            self.limits.compression,
            open.records,
            &open.payload,
            &mut self.scratch,
        );
        Some(Batch {
            frame,
            positions: open.positions,
        })
    }

    /// Send every batch whose deadline is at or before `now`. False when the receiver is gone.
    async fn flush_due(&mut self, tx: &mpsc::Sender<Batch>, now: Instant) -> bool {
        let due: Vec<Arc<str>> = self
            .open
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in due {
            if let Some(batch) = self.close(&topic)
                && tx.send(batch).await.is_err()
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_common::record::{self, BlockWriter};

    fn chunk(topic: &str, source_id: u64, lines: u32, end: u64) -> Chunk {
        let mut payload = Vec::new();
        let mut b = BlockWriter::begin(&mut payload, "h", "/f", source_id, b"");
        for i in 0..lines {
            b.push(&mut payload, 0, 1, i as u64, b"", b"0123456789");
        }
        b.finish(&mut payload);
        Chunk {
            topic: topic.into(),
            payload,
            records: lines,
            source_id,
            path: "/f".into(),
            start_offset: 0,
            end_offset: end,
            end_hash: end * 7,
            crc_base: 0,
            crc: 0,
            cursor: None,
            at_end: false,
        }
    }

    fn limits(max_bytes: usize, max_records: u32) -> BatchLimits {
        BatchLimits {
            max_bytes,
            max_records,
            linger: Duration::from_millis(200),
            compression: Compression::Lz4,
        }
    }

    #[test]
    fn closes_on_records_and_bytes_per_topic() {
        let mut b = Batcher::new(limits(1 << 20, 10));
        assert!(b.add(chunk("a", 1, 4, 40)).is_none());
        assert!(b.add(chunk("b", 2, 4, 40)).is_none());
        let batch = b
            .add(chunk("a", 1, 6, 100))
            .expect("10 records close topic a");
        assert_eq!(batch.frame.topic, "a");
        assert_eq!(batch.records(), 10);
        assert_eq!(
            batch.positions,
            vec![Position {
                source_id: 1,
                path: "/f".into(),
                end_offset: 100,
                end_hash: 700,
                crc_base: 0,
                crc: 0,
                cursor: None,
            }]
        );
        let (data, summary) = batch.frame.open(1 << 20).unwrap();
        assert_eq!(summary.records, 10);
        assert_eq!(record::blocks(&data, true).count(), 2);

        let mut b = Batcher::new(limits(100, 1000));
        assert!(b.add(chunk("a", 1, 1, 1)).is_none());
        assert!(b.add(chunk("a", 1, 5, 2)).is_some(), "bytes limit");
    }

    #[tokio::test]
    async fn linger_flushes_and_close_drains() {
        let (ctx, crx) = mpsc::channel(4);
        let (btx, mut brx) = mpsc::channel(4);
        let task = tokio::spawn(Batcher::new(limits(1 << 20, 1000)).run(crx, btx));
        ctx.send(chunk("a", 1, 3, 30)).await.unwrap();
        let start = Instant::now();
        let batch = brx.recv().await.unwrap();
        assert_eq!(batch.records(), 3);
        // The batch is not full, so only the linger can have closed it.
        assert!(
            start.elapsed() >= Duration::from_millis(190),
            "{:?}",
            start.elapsed()
        );
        ctx.send(chunk("b", 2, 2, 20)).await.unwrap();
        drop(ctx);
        // Closing the input flushes the open batch at once, without waiting for linger.
        let batch = brx.recv().await.unwrap();
        assert_eq!((batch.frame.topic.as_str(), batch.records()), ("b", 2));
        assert!(brx.recv().await.is_none());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_source_at_its_end_leaves_at_once_and_a_busy_output_merges() {
        let (ctx, crx) = mpsc::channel(8);
        let (btx, mut brx) = mpsc::channel(1);
        let task = tokio::spawn(Batcher::new(limits(1 << 20, 1000)).run(crx, btx));
        let at_end = |topic, source, lines, end| Chunk {
            at_end: true,
            ..chunk(topic, source, lines, end)
        };
        // Two sources: the batch waits while one of them is still being read.
        ctx.send(chunk("a", 1, 3, 30)).await.unwrap();
        ctx.send(at_end("a", 2, 1, 10)).await.unwrap();
        ctx.send(at_end("a", 1, 2, 50)).await.unwrap();
        let start = Instant::now();
        let batch = brx.recv().await.unwrap();
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(batch.records(), 6);
        // The output cannot take a batch (its queue holds one nobody reads): what
        // arrives meanwhile joins one open batch instead of one batch per chunk.
        ctx.send(at_end("a", 1, 1, 60)).await.unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while brx.is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for end in [70, 80, 90] {
            ctx.send(at_end("a", 1, 1, end)).await.unwrap();
        }
        assert_eq!(brx.recv().await.unwrap().records(), 1);
        let merged = brx.recv().await.unwrap();
        assert_eq!(merged.records(), 3);
        assert_eq!(merged.positions[0].end_offset, 90);
        drop(ctx);
        assert!(brx.recv().await.is_none());
        task.await.unwrap();
    }
}
