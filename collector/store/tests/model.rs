//! Model-based test: random appends, syncs, reads, clean reopens and crashes that
//! cut the last segment at a random byte past what was fsynced, checked against a
//! plain in-memory list of records.

mod util;

use std::fs::OpenOptions;
use std::sync::Arc;

use proptest::prelude::*;
use tributary_store::{Partition, Store, StoreOptions, TopicConfig};
use util::{Rec, Rng, append, batch_bounds, flat, gen_batch, logs, read_all, recs};

#[derive(Debug, Clone)]
enum Op {
    Append {
        blocks: usize,
        per: usize,
        max_msg: usize,
        seed: u64,
    },
    Sync,
    Read {
        at: u64,
        max: usize,
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
        2 => Just(Op::Sync),
        3 => (any::<u64>(), 1..20usize).prop_map(|(at, max)| Op::Read { at, max }),
        1 => Just(Op::Reopen),
        2 => (0..=65536u32).prop_map(|cut| Op::Crash { cut }),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    opts: StoreOptions,
    store: Option<Store>,
    p: Option<Arc<Partition>>,
}

impl Harness {
    fn open(&mut self) -> Arc<Partition> {
        let store = Store::open(self.dir.path(), self.opts).unwrap();
        let p = store.topic("t").unwrap().partitions()[0].clone();
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

fn run(ops: Vec<Op>, segment_bytes: u64, index_interval_bytes: u32, publish_on_sync: bool) {
    let opts = StoreOptions {
        publish_on_sync,
        index_interval_bytes,
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
        store: None,
        p: None,
    };
    h.open();
    let pdir = h.p().dir().to_owned();

    // Model: every record not lost, how many of them are durable, and the largest
    // end offset a reader was shown.
    let mut written: Vec<Rec> = Vec::new();
    let mut durable = 0u64;
    let mut max_seen = 0u64;
    for op in ops {
        match op {
            Op::Append {
                blocks,
                per,
                max_msg,
                seed,
            } => {
                let b = gen_batch(&mut Rng(seed), blocks, per, max_msg);
                let r = append(h.p(), &b);
                assert_eq!(r.base_offset, written.len() as u64, "offsets continue");
                written.extend(flat(&b));
                assert_eq!(r.next_offset, written.len() as u64);
            }
            Op::Sync => {
                h.p().sync().unwrap();
                assert_eq!(h.p().durable_end_offset(), written.len() as u64);
            }
            Op::Read { at, max } => {
                let end = h.p().end_offset();
                let offset = at % (end + 3);
                let r = h.p().read(offset, max, usize::MAX).unwrap();
                let n = if offset < end {
                    max.min((end - offset) as usize)
                } else {
                    0
                };
                let want = if n == 0 {
                    &[][..]
                } else {
                    &written[offset as usize..offset as usize + n]
                };
                assert_eq!(recs(&r.records), want);
                assert_eq!(r.next_offset, offset + n as u64);
            }
            Op::Reopen => {
                h.close();
                h.open();
                assert_eq!(
                    h.p().end_offset(),
                    written.len() as u64,
                    "a clean reopen loses nothing"
                );
            }
            Op::Crash { cut } => {
                h.close();
                let last = logs(&pdir).pop().unwrap();
                let bounds = batch_bounds(&last);
                let seg_base = last
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap();
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
                written.truncate(end as usize);
                max_seen = max_seen.min(end);
            }
        }
        let p = h.p();
        let end = p.end_offset();
        durable = p.durable_end_offset();
        assert!(durable <= written.len() as u64);
        if publish_on_sync {
            assert_eq!(end, durable);
        } else {
            assert_eq!(end, written.len() as u64);
        }
        max_seen = max_seen.max(end);
    }
    let end = h.p().end_offset() as usize;
    assert_eq!(recs(&read_all(h.p(), 0, 9)), written[..end]);
    let total: u64 = logs(&pdir)
        .iter()
        .map(|l| std::fs::metadata(l).unwrap().len())
        .sum();
    assert_eq!(h.p().size_bytes(), total);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn store_matches_model(
        ops in proptest::collection::vec(op(), 1..40),
        segment_bytes in 200..4000u64,
        index_interval_bytes in 0..800u32,
        publish_on_sync in any::<bool>(),
    ) {
        run(ops, segment_bytes, index_interval_bytes, publish_on_sync);
    }
}
