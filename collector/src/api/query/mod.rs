//! Queries over the centralized logs (`GET /v1/query`, `tributary query`): filter
//! the records of one topic and merge its partitions by timestamp.
//!
//! - [`Filter`] is the predicate (time range, host, source glob, severity,
//!   substring, regex). The CLI's `--follow` applies the same one to new records.
//! - [`run`] plans per partition with the time index (`since` and `until` become an
//!   offset range through the time index, so segments outside the
//!   range are never read), scans the partitions in parallel in bounded steps, and
//!   merges their heads by timestamp until `limit` matches are out or the deadline
//!   passes. Memory is bounded by the per-partition buffers, never by the topic.
//!
//! Time ranges follow the time index (Kafka's semantics for event times): a
//! partition is read from the first batch holding a record at or after `since` to
//! the first batch holding one after `until`; within that range every record is
//! checked. A record that arrived far out of time order, outside those batches, is
//! not found by a time-bounded query. Within a partition records come in offset
//! order, so the merge is by timestamp exactly when each partition is in time
//! order (file lines and most syslog traffic).

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinError;
use tributary_common::record::{BlockHeader, RecordRef};
use tributary_store::{Block, Error as StoreError, StoredRecord};

use crate::storage::{PartitionReader, TopicReader};

pub mod context;
mod filter;
pub mod histogram;
#[cfg(test)]
mod tests;

pub use filter::{
    DEFAULT_LIMIT, Filter, MAX_LIMIT, Order, Query, QueryParams, parse_absolute, parse_time,
};

/// Records read per partition per step.
const STEP_RECORDS: usize = 2048;
/// Payload bytes read per partition per step.
const STEP_BYTES: usize = 1 << 20;

/// Why a query cannot run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task running the scan panicked or was cancelled.
    #[error("query task failed")]
    Task(#[from] JoinError),
}

/// What a query found.
#[derive(Debug, Default)]
pub struct QueryResult {
    /// (partition, record), merged in the query's order.
    pub records: Vec<(u32, StoredRecord)>,
    /// Records read and checked.
    pub scanned_records: u64,
    /// Message bytes of the records read.
    pub scanned_bytes: u64,
    /// False when the deadline cut the scan short (the records are still ordered,
    /// but more may match).
    pub complete: bool,
    /// Per partition, the end offset when the query started (where `--follow`
    /// continues).
    pub end_offsets: Vec<(u32, u64)>,
}

/// The parts a block's records share, made once per block for the matches copied
/// out of it.
#[derive(Default)]
struct SharedParts {
    block: Option<Arc<Block>>,
}

impl SharedParts {
    fn record(&mut self, offset: u64, h: &BlockHeader<'_>, r: &RecordRef<'_>) -> StoredRecord {
        let block = match &self.block {
            Some(b) if b.is(h) => b.clone(),
            _ => {
                let b = Arc::new(Block::of(h));
                self.block = Some(b.clone());
                b
            }
        };
        StoredRecord::copied(offset, block, r)
    }
}

/// One partition's scan: an offset range read in steps, its matches buffered.
struct Cursor {
    partition: PartitionReader,
    /// Next offset to read (asc) or one past the next to read (desc).
    next: u64,
    lo: u64,
    hi: u64,
    buf: VecDeque<StoredRecord>,
    done: bool,
    scanned_records: u64,
    scanned_bytes: u64,
}

impl Cursor {
    fn plan(partition: PartitionReader, f: &Filter, order: Order) -> Result<Cursor, QueryError> {
        let (lo, hi) = plan_range(&partition, f)?;
        Ok(Cursor {
            partition,
            next: if order == Order::Asc { lo } else { hi },
            lo,
            hi,
            buf: VecDeque::new(),
            done: lo >= hi,
            scanned_records: 0,
            scanned_bytes: 0,
        })
    }

    /// Read steps until some matches are buffered (ascending: `want` of them, the
    /// most the answer can still take, at most a step's worth), the range is done,
    /// or about `budget` bytes were read.
    fn fill(
        &mut self,
        f: &Filter,
        order: Order,
        budget: usize,
        want: usize,
    ) -> Result<(), StoreError> {
        let want = want.clamp(1, STEP_RECORDS);
        let mut read = 0usize;
        while !self.done && self.buf.is_empty() && read < budget {
            // Retention may have deleted the start of the range meanwhile.
            let start = self.partition.start_offset();
            if start > self.lo {
                self.lo = start;
                if order == Order::Asc {
                    self.next = self.next.max(start);
                }
            }
            // One step covers the window [from, to); ascending steps may stop early
            // at the byte budget. Descending windows are sized from the average
            // record seen so far, so a window of huge records stays small.
            let window = match self.scanned_bytes.checked_div(self.scanned_records) {
                Some(avg) => ((4 * STEP_BYTES) as u64 / avg.max(1)).clamp(1, STEP_RECORDS as u64),
                None => 64,
            };
            // Ascending, one scan runs to the end of the range and stops at the
            // byte budget or once a step's worth of matches is buffered: each stored
            // batch is read and expanded about once, and only matches are copied.
            let (from, to) = match order {
                Order::Asc => (self.next, self.hi),
                Order::Desc => (self.next.saturating_sub(window).max(self.lo), self.next),
            };
            if from >= to {
                self.done = true;
                break;
            }
            let mut matched = Vec::new();
            let (mut records, mut bytes) = (0u64, 0u64);
            let mut shared = SharedParts::default();
            let at = self.partition.scan_blocking(from, to, |off, h, r| {
                read += r.message.len() + r.fields.len();
                bytes += r.message.len() as u64;
                records += 1;
                if f.matches_parts(
                    r.timestamp_ms,
                    h.host,
                    h.source,
                    r.message,
                    h.fields,
                    r.fields,
                ) {
                    matched.push(shared.record(off, h, r));
                }
                if order == Order::Asc && (read >= budget || matched.len() >= want) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            self.scanned_records += records;
            self.scanned_bytes += bytes;
            match order {
                Order::Asc => {
                    self.buf.extend(matched);
                    // `at` is where reading stopped (the budget, or `to`).
                    self.next = if at > from { at } else { to };
                    self.done = self.next >= self.hi;
                }
                Order::Desc => {
                    self.buf.extend(matched.into_iter().rev());
                    self.next = from;
                    self.done = self.next <= self.lo;
                }
            }
        }
        Ok(())
    }
}

/// The offsets of `partition` a query with filter `f` reads: from the first batch
/// holding a record at or after `since` to past the first one holding a record
/// after `until`, through the time index.
pub(crate) fn plan_range(
    partition: &PartitionReader,
    f: &Filter,
) -> Result<(u64, u64), StoreError> {
    let end = partition.end_offset();
    let start = partition.start_offset();
    let lo = match f.since_ms {
        Some(s) => partition
            .offset_for_timestamp_blocking(s)?
            .map_or(end, |t| t.offset),
        None => start,
    };
    let hi = match f.until_ms {
        Some(u) => partition
            .offset_for_timestamp_blocking(u.saturating_add(1))?
            .map_or(end, |t| t.offset)
            // The batch holding the first newer record may hold older ones too.
            .saturating_add(STEP_RECORDS as u64)
            .min(end),
        None => end,
    };
    Ok((lo.max(start), hi))
}

/// Run `q` over `topic` on the blocking pool, at most until `deadline`.
pub async fn search(
    topic: TopicReader,
    q: Query,
    deadline: Instant,
) -> Result<QueryResult, QueryError> {
    tokio::task::spawn_blocking(move || run(&topic, &q, deadline)).await?
}

/// Run `q` over `topic` on this thread, at most until `deadline`.
pub fn run(topic: &TopicReader, q: &Query, deadline: Instant) -> Result<QueryResult, QueryError> {
    let mut result = QueryResult {
        complete: true,
        ..Default::default()
    };
    let mut cursors = Vec::new();
    for p in topic.partitions() {
        result.end_offsets.push((p.id(), p.end_offset()));
        cursors.push(Cursor::plan(p, &q.filter, q.order)?);
    }
    'merge: while result.records.len() < q.limit {
        // Every live cursor needs a head before the smallest can be chosen; fill
        // the empty ones in parallel.
        loop {
            let empty: Vec<usize> = (0..cursors.len())
                .filter(|&i| cursors[i].buf.is_empty() && !cursors[i].done)
                .collect();
            if empty.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                result.complete = false;
                break 'merge;
            }
            let want = q.limit - result.records.len();
            fill_parallel(&mut cursors, &empty, &q.filter, q.order, want)?;
        }
        let best = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buf.front().map(|r| (i, r.timestamp_ms, c.partition.id())))
            .reduce(|a, b| {
                let better = match q.order {
                    Order::Asc => (b.1, b.2) < (a.1, a.2),
                    Order::Desc => (b.1, std::cmp::Reverse(b.2)) > (a.1, std::cmp::Reverse(a.2)),
                };
                if better { b } else { a }
            });
        let Some((i, _, pid)) = best else {
            break;
        };
        if let Some(r) = cursors[i].buf.pop_front() {
            result.records.push((pid, r));
        }
    }
    for c in &cursors {
        result.scanned_records += c.scanned_records;
        result.scanned_bytes += c.scanned_bytes;
    }
    Ok(result)
}

/// Fill the cursors `which`, one thread each (the machine's cores scan partitions
/// side by side); one cursor is filled on this thread.
fn fill_parallel(
    cursors: &mut [Cursor],
    which: &[usize],
    f: &Filter,
    order: Order,
    want: usize,
) -> Result<(), StoreError> {
    let budget = 8 * STEP_BYTES;
    if which.len() == 1 {
        return cursors[which[0]].fill(f, order, budget, want);
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut picked: Vec<&mut Cursor> = cursors
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| which.contains(i))
        .map(|(_, c)| c)
        .collect();
    let per = picked.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = picked
            .chunks_mut(per)
            .map(|group| {
                s.spawn(move || -> Result<(), StoreError> {
                    for c in group {
                        c.fill(f, order, budget, want)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(StoreError::Io {
                        op: "query scan thread",
                        path: std::path::PathBuf::new(),
                        source: std::io::Error::other("scan thread panicked"),
                    });
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    })
}

/// Scanning a query must end: the default deadline of `/v1/query`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
