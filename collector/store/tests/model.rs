//! Model-based test: random appends (with event times that move on and jitter),
//! syncs, reads, lookups by timestamp, retention passes, clean reopens and crashes
//! that cut the last segment at a random byte past what was fsynced, with segments
//! rolling by size and by age, checked against a plain in-memory list of records
//! and batches.

mod util;

use std::fs::OpenOptions;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tributary_store::{
    Budget, Error, Partition, RetentionPolicy, Store, StoreOptions, TimestampOffset, TopicConfig,
};
use util::{
    Rec, Rng, append_at, base_of, batch_bounds, flat, gen_batch, headers, logs, read_all, recs,
    shift,
};

/// Event times start here (2020-09-13), well before the machine's clock, so that
/// file modification times never decide retention in this test.
const EPOCH_MS: i64 = 1_600_000_000_000;
/// `gen_batch` stamps records 1_700_000_000_000 ± 50 s.
const GEN_MS: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Append {
        blocks: usize,
        per: usize,
        max_msg: usize,
        seed: u64,
    },
    /// Event time moves on.
    Tick {
        ms: i64,
    },
    Sync,
    Read {
        at: u64,
        max: usize,
    },
    /// Look up an offset by timestamp, `delta` away from the current event time.
    Lookup {
        delta: i64,
    },
    /// Look up the exact timestamp of a stored record (picked by `pick`), plus `plus`.
    LookupRecord {
        pick: u64,
        plus: i64,
    },
    /// A retention pass at `ahead` ms past the current event time.
    Retain {
        max_age: Option<u64>,
        max_bytes: Option<u64>,
        ahead: i64,
    },
    Reopen,
    /// Crash: cut the last segment somewhere (fraction of 2^16) between the end of
    /// the durable data and the end of the file.
    Crash {
        cut: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..3usize, 1..6usize, 0..300usize, any::<u64>())
            .prop_map(|(blocks, per, max_msg, seed)| Op::Append { blocks, per, max_msg, seed }),
        2 => (0..400_000i64).prop_map(|ms| Op::Tick { ms }),
        2 => Just(Op::Sync),
        3 => (any::<u64>(), 1..20usize).prop_map(|(at, max)| Op::Read { at, max }),
        2 => (-2_000_000..200_000i64).prop_map(|delta| Op::Lookup { delta }),
        2 => (any::<u64>(), -1..=1i64).prop_map(|(pick, plus)| Op::LookupRecord { pick, plus }),
        1 => (
            proptest::option::of(0..2_000_000u64),
            proptest::option::of(0..6000u64),
            0..1_000_000i64,
        )
            .prop_map(|(max_age, max_bytes, ahead)| Op::Retain { max_age, max_bytes, ahead }),
        1 => Just(Op::Reopen),
        2 => (0..=65536u32).prop_map(|cut| Op::Crash { cut }),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    opts: StoreOptions,
    segment_age: Duration,
    store: Option<Store>,
    p: Option<Arc<Partition>>,
}

impl Harness {
    fn open(&mut self) -> Arc<Partition> {
        let store = Store::open(self.dir.path(), self.opts).unwrap();
        let t = store.topic("t").unwrap();
        t.set_segment_age(self.segment_age);
        let p = t.partitions()[0].clone();
        self.store = Some(store);
        self.p = Some(p.clone());
        p
    }
    fn close(&mut self) {
        self.p = None;
        self.store = None;
    }
    fn p(&self) -> &Partition {
        self.p.as_ref().unwrap()
    }
}

/// The model: every record not lost (offset = index, deleted ones included), the
/// batch boundaries, and the first offset retention kept.
struct Model {
    written: Vec<Rec>,
    batches: Vec<(u64, u64)>,
    start: u64,
}

impl Model {
    fn truncate(&mut self, end: u64) {
        self.written.truncate(end as usize);
        self.batches.retain(|b| b.1 <= end);
    }

    /// Kafka's answer: in the first visible batch whose largest timestamp is
    /// `>= target`, the first record that new.
    fn lookup(&self, target: i64, end: u64) -> Option<TimestampOffset> {
        self.batches
            .iter()
            .filter(|b| b.0 >= self.start && b.1 <= end)
            .find_map(|&(base, next)| {
                let recs = &self.written[base as usize..next as usize];
                let max = recs.iter().map(|r| r.ts).max()?;
                (max >= target).then(|| {
                    let i = recs.iter().position(|r| r.ts >= target)?;
                    Some(TimestampOffset {
                        offset: base + i as u64,
                        timestamp_ms: recs[i].ts,
                    })
                })?
            })
    }
}

/// What retention must do, from the segment files on disk: the new start offset.
fn expected_start(
    pdir: &std::path::Path,
    policy: &RetentionPolicy,
    now: i64,
    next_offset: u64,
) -> u64 {
    let segs: Vec<(u64, u64, i64)> = logs(pdir)
        .iter()
        .map(|l| {
            let hs = headers(l);
            let max = hs
                .iter()
                .map(|(_, h)| h.append_ms().unwrap_or(h.last_timestamp_ms))
                .max()
                .unwrap_or(i64::MIN);
            (base_of(l), std::fs::metadata(l).unwrap().len(), max)
        })
        .collect();
    let cutoff = policy.max_age.map(|a| now - a.as_millis() as i64);
    let expired = |s: &(u64, u64, i64)| cutoff.is_some_and(|c| s.2 < c);
    let sealed = &segs[..segs.len() - 1];
    let active = segs.last().unwrap();
    let by_age = sealed.iter().take_while(|s| expired(s)).count();
    let mut by_bytes = 0;
    if let Some(max) = policy.max_bytes {
        let mut total: u64 = segs.iter().map(|s| s.1).sum();
        while by_bytes < sealed.len() && total > max {
            total -= sealed[by_bytes].1;
            by_bytes += 1;
        }
    }
    if by_age == sealed.len() && active.1 > 0 && expired(active) {
        return next_offset;
    }
    let n = by_age.max(by_bytes);
    segs[n].0
}

fn run(
    ops: Vec<Op>,
    segment_bytes: u64,
    segment_age: Duration,
    index_interval_bytes: u32,
    publish_on_sync: bool,
) {
    let opts = StoreOptions {
        publish_on_sync,
        index_interval_bytes,
        // Tiny: handles are evicted and reopened all the time.
        budget: Budget::MIN,
        // Small: batches come from the cache and from disk, and are evicted.
        read_cache_bytes: 64 << 10,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    store
        .create_topic(
            "t",
            TopicConfig {
                partitions: 1,
                segment_bytes,
            },
        )
        .unwrap();
    drop(store);
    let mut h = Harness {
        dir,
        opts,
        segment_age,
        store: None,
        p: None,
    };
    h.open();
    let pdir = h.p().dir().to_owned();

    let mut m = Model {
        written: Vec::new(),
        batches: Vec::new(),
        start: 0,
    };
    // How many records are durable, the largest end offset a reader was shown,
    // and the event time.
    let mut durable = 0u64;
    let mut max_seen = 0u64;
    let mut clock = EPOCH_MS;
    for op in ops {
        match op {
            Op::Append {
                blocks,
                per,
                max_msg,
                seed,
            } => {
                let mut b = gen_batch(&mut Rng(seed), blocks, per, max_msg);
                shift(&mut b, clock - GEN_MS);
                // Appended when the simulated clock says: retention and rolls by age
                // go by the append time.
                let r = append_at(h.p(), &b, clock);
                assert_eq!(r.base_offset, m.written.len() as u64, "offsets continue");
                m.written.extend(flat(&b));
                assert_eq!(r.next_offset, m.written.len() as u64);
                m.batches.push((r.base_offset, r.next_offset));
            }
            Op::Tick { ms } => clock += ms,
            Op::Sync => {
                h.p().sync().unwrap();
                assert_eq!(h.p().durable_end_offset(), m.written.len() as u64);
            }
            Op::Read { at, max } => {
                let end = h.p().end_offset();
                let offset = at % (end + 3);
                if offset < m.start {
                    match h.p().read(offset, max, usize::MAX) {
                        Err(Error::OffsetOutOfRange { start, .. }) => assert_eq!(start, m.start),
                        other => panic!("read below the start {}: {other:?}", m.start),
                    }
                    continue;
                }
                let r = h.p().read(offset, max, usize::MAX).unwrap();
                let n = if offset < end {
                    max.min((end - offset) as usize)
                } else {
                    0
                };
                let want = if n == 0 {
                    &[][..]
                } else {
                    &m.written[offset as usize..offset as usize + n]
                };
                assert_eq!(recs(&r.records), want);
                assert_eq!(r.next_offset, offset + n as u64);
            }
            Op::Lookup { delta } => {
                let target = clock + delta;
                let end = h.p().end_offset();
                let got = h.p().offset_for_timestamp(target).unwrap();
                assert_eq!(got, m.lookup(target, end), "lookup of {target}");
            }
            Op::LookupRecord { pick, plus } => {
                if m.written.is_empty() {
                    continue;
                }
                let target = m.written[(pick % m.written.len() as u64) as usize].ts + plus;
                let end = h.p().end_offset();
                let got = h.p().offset_for_timestamp(target).unwrap();
                assert_eq!(got, m.lookup(target, end), "lookup of {target}");
            }
            Op::Retain {
                max_age,
                max_bytes,
                ahead,
            } => {
                let policy = RetentionPolicy {
                    max_age: max_age.map(Duration::from_millis),
                    max_bytes,
                };
                let now = clock + ahead;
                let want = expected_start(&pdir, &policy, now, m.written.len() as u64);
                let d = h.p().enforce_retention(&policy, now).unwrap();
                assert_eq!(d.start_offset, want, "{policy:?} at {now}");
                assert_eq!(d.previous_start, m.start);
                assert!(want >= m.start);
                m.start = want;
                assert_eq!(h.p().start_offset(), want);
            }
            Op::Reopen => {
                h.close();
                h.open();
                assert_eq!(
                    h.p().end_offset(),
                    m.written.len() as u64,
                    "a clean reopen loses nothing"
                );
            }
            Op::Crash { cut } => {
                h.close();
                let last = logs(&pdir).pop().unwrap();
                let bounds = batch_bounds(&last);
                let seg_base = base_of(&last);
                let len = std::fs::metadata(&last).unwrap().len();
                let durable_pos = bounds
                    .iter()
                    .filter(|b| b.3 <= durable)
                    .map(|b| b.1)
                    .max()
                    .unwrap_or(0);
                let at = durable_pos + (len - durable_pos) * u64::from(cut) / 65536;
                OpenOptions::new()
                    .write(true)
                    .open(&last)
                    .unwrap()
                    .set_len(at)
                    .unwrap();
                let want = bounds
                    .iter()
                    .filter(|b| b.1 <= at)
                    .map(|b| b.3)
                    .max()
                    .unwrap_or(seg_base);
                h.open();
                let end = h.p().end_offset();
                assert_eq!(
                    end, want,
                    "recovered exactly the whole batches before the cut"
                );
                assert!(end >= durable, "durable data survives a crash");
                if publish_on_sync {
                    assert!(end >= max_seen, "an offset a reader saw was lost");
                }
                m.truncate(end);
                max_seen = max_seen.min(end);
            }
        }
        let p = h.p();
        let end = p.end_offset();
        durable = p.durable_end_offset();
        assert!(durable <= m.written.len() as u64);
        if publish_on_sync {
            assert_eq!(end, durable);
        } else {
            assert_eq!(end, m.written.len() as u64);
        }
        assert_eq!(p.start_offset(), m.start, "retention start survives");
        max_seen = max_seen.max(end);
    }
    let p = h.p();
    let end = p.end_offset() as usize;
    assert_eq!(
        recs(&read_all(p, m.start, 9)),
        m.written[m.start as usize..end]
    );
    let total: u64 = logs(&pdir)
        .iter()
        .map(|l| std::fs::metadata(l).unwrap().len())
        .sum();
    assert_eq!(p.size_bytes(), total);
    // Every segment's time index points where its offset index does.
    for l in logs(&pdir) {
        let idx = std::fs::read(l.with_extension("index")).unwrap();
        let tidx = std::fs::read(l.with_extension("timeindex")).unwrap();
        assert_eq!(idx.len() / 8, tidx.len() / 12, "{}", l.display());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn store_matches_model(
        ops in proptest::collection::vec(op(), 1..60),
        segment_bytes in 200..4000u64,
        segment_age_ms in 50_000..2_000_000u64,
        index_interval_bytes in 0..800u32,
        publish_on_sync in any::<bool>(),
    ) {
        run(
            ops,
            segment_bytes,
            Duration::from_millis(segment_age_ms),
            index_interval_bytes,
            publish_on_sync,
        );
    }
}
