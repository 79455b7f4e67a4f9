//! Counts per time bucket (`GET /v1/histogram`): the same filters as a query, over
//! `since..until` cut into equal buckets of a round width (1 s … 1 d), each count
//! split by syslog severity where records have one. The partitions are planned
//! through the time index like a query and scanned side by side with
//! [`PartitionReader::scan_blocking`], which borrows records from the stored
//! batches (nothing is copied per record), so the counts are exactly what a query
//! with the same filters returns, bucket by bucket.

use std::ops::ControlFlow;
use std::time::Instant;

use tributary_store::Error as StoreError;

use super::filter::severity_in;
use super::{Filter, QueryError};
use crate::storage::{PartitionReader, TopicReader};

/// Most buckets one answer holds.
pub const MAX_BUCKETS: usize = 1000;
/// Buckets when none are asked for.
pub const DEFAULT_BUCKETS: usize = 60;
/// Round bucket widths, in milliseconds.
const WIDTHS: [i64; 17] = [
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
    1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
];
const DAY: i64 = 86_400_000;
/// Offsets scanned per step (the deadline is checked between steps).
const STEP: u64 = 65_536;
/// Severity slots: the eight syslog levels, then "none".
pub const SLOTS: usize = 9;

/// The buckets of `since..=until` (`since` rounded down to a multiple of the width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    pub start_ms: i64,
    pub width_ms: i64,
    pub count: usize,
}

impl Buckets {
    /// Buckets of the smallest round width that cuts `since..until` into at most
    /// `max` (one more when `since` is not on a bucket boundary).
    pub fn new(since: i64, until: i64, max: usize) -> Buckets {
        let max = max.clamp(1, MAX_BUCKETS) as i64;
        let span = (until - since).max(1);
        let need = (span + max - 1) / max;
        let width = WIDTHS
            .iter()
            .copied()
            .find(|&w| w >= need)
            .unwrap_or_else(|| (need + DAY - 1) / DAY * DAY);
        let start = since.div_euclid(width) * width;
        let count = ((until - start) / width + 1) as usize;
        Buckets {
            start_ms: start,
            width_ms: width,
            count,
        }
    }

    fn index(&self, ts: i64) -> Option<usize> {
        if ts < self.start_ms {
            return None;
        }
        let i = ((ts - self.start_ms) / self.width_ms) as usize;
        (i < self.count).then_some(i)
    }
}

/// What the scan found.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Per bucket, counts per severity slot (`SLOTS - 1`: no severity).
    pub counts: Vec<[u64; SLOTS]>,
    pub scanned_records: u64,
    /// False when the deadline cut the scan short.
    pub complete: bool,
}

impl Histogram {
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }
}

/// Count the records of `topic` matching `f` (whose `since`/`until` must be set)
/// into `b`, until `deadline`.
pub fn run(
    topic: &TopicReader,
    f: &Filter,
    b: Buckets,
    deadline: Instant,
) -> Result<Histogram, QueryError> {
    let parts = topic.partitions();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = parts.len().div_ceil(threads).max(1);
    let results: Vec<Result<Histogram, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .chunks(per)
            .map(|group| {
                s.spawn(move || {
                    let mut h = Histogram {
                        counts: vec![[0; SLOTS]; b.count],
                        complete: true,
                        ..Default::default()
                    };
                    for p in group {
                        count_partition(p, f, b, deadline, &mut h)?;
                    }
                    Ok(h)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StoreError::Io {
                        op: "histogram scan thread",
                        path: std::path::PathBuf::new(),
                        source: std::io::Error::other("scan thread panicked"),
                    })
                })
            })
            .collect()
    });
    let mut out = Histogram {
        counts: vec![[0; SLOTS]; b.count],
        complete: true,
        ..Default::default()
    };
    for r in results {
        let h = r?;
        for (o, c) in out.counts.iter_mut().zip(&h.counts) {
            for (x, y) in o.iter_mut().zip(c) {
                *x += y;
            }
        }
        out.scanned_records += h.scanned_records;
        out.complete &= h.complete;
    }
    Ok(out)
}

fn count_partition(
    p: &PartitionReader,
    f: &Filter,
    b: Buckets,
    deadline: Instant,
    h: &mut Histogram,
) -> Result<(), StoreError> {
    let (lo, hi) = super::plan_range(p, f)?;
    let mut at = lo;
    // The severity of the last block fields seen (blocks of one source repeat them).
    let mut block_sev: Option<(Vec<u8>, Option<u8>)> = None;
    while at < hi {
        if Instant::now() >= deadline {
            h.complete = false;
            return Ok(());
        }
        let to = hi.min(at.saturating_add(STEP));
        let next = p.scan_blocking(at, to, |_, block, r| {
            h.scanned_records += 1;
            if !f.matches_parts(
                r.timestamp_ms,
                block.host,
                block.source,
                r.message,
                block.fields,
                r.fields,
            ) {
                return ControlFlow::Continue(());
            }
            let Some(i) = b.index(r.timestamp_ms) else {
                return ControlFlow::Continue(());
            };
            let sev = match severity_in(r.fields) {
                Some(s) => Some(s),
                None => match &block_sev {
                    Some((k, s)) if k.as_slice() == block.fields => *s,
                    _ => {
                        let s = severity_in(block.fields);
                        block_sev = Some((block.fields.to_vec(), s));
                        s
                    }
                },
            };
            let slot = sev.map_or(SLOTS - 1, |s| usize::from(s.min(7)));
            h.counts[i][slot] += 1;
            ControlFlow::Continue(())
        })?;
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_have_round_widths_and_cover_the_range() {
        let h = 3_600_000;
        let b = Buckets::new(10 * h + 123, 11 * h + 123, 60);
        assert_eq!(b.width_ms, 60_000);
        assert_eq!(b.start_ms, 10 * h);
        assert_eq!(b.count, 61);
        assert_eq!(b.index(10 * h + 123), Some(0));
        assert_eq!(b.index(11 * h + 123), Some(60));
        assert_eq!(b.index(10 * h - 1), None);
        let day = Buckets::new(0, 24 * h, 48);
        assert_eq!(day.width_ms, 1_800_000);
        let week = Buckets::new(0, 7 * 24 * h, 10);
        assert_eq!(week.width_ms, DAY);
        let tiny = Buckets::new(5, 5, 100);
        assert_eq!((tiny.width_ms, tiny.count), (1_000, 1));
        assert!(Buckets::new(0, 365 * 24 * h, 5000).count <= MAX_BUCKETS + 1);
    }
}
