//! `Partition::scan` visits exactly the records `read` returns, borrowed, from any
//! offset, across batches and segments, and stops when asked.

mod util;

use std::ops::ControlFlow;

use tributary_store::{Store, StoreOptions, TopicConfig};
use util::{Rng, append, gen_batch, read_all};

#[test]
fn scan_sees_what_read_sees_from_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            publish_on_sync: false,
            index_interval_bytes: 256,
            budget: tributary_store::Budget::MIN,
            read_cache_bytes: 64 << 10,
        },
    )
    .unwrap();
    let t = store
        .create_topic(
            "t",
            TopicConfig {
                partitions: 1,
                // Small segments: the scan crosses many.
                segment_bytes: 4096,
            },
        )
        .unwrap();
    let p = t.partitions()[0].clone();
    let mut rng = Rng(7);
    for _ in 0..40 {
        let blocks = 1 + rng.below(3) as usize;
        let per = 1 + rng.below(6) as usize;
        append(&p, &gen_batch(&mut rng, blocks, per, 80));
    }
    let all = read_all(&p, 0, 1000);
    let end = p.end_offset();
    assert_eq!(all.len() as u64, end);
    for from in [0, 1, 7, end / 2, end - 1, end, end + 5] {
        let mut seen = Vec::new();
        let next = p
            .scan(from, u64::MAX, |off, h, r| {
                seen.push((off, h.host.to_owned(), r.message.to_vec(), r.source_offset));
                ControlFlow::Continue(())
            })
            .unwrap();
        let want: Vec<_> = all
            .iter()
            .filter(|r| r.offset >= from)
            .map(|r| {
                (
                    r.offset,
                    r.block.host.to_string(),
                    r.message.to_vec(),
                    r.source_offset,
                )
            })
            .collect();
        assert_eq!(seen, want, "from {from}");
        assert_eq!(next, end, "from {from}: never past the visible end");
    }
    // A bounded range, and a visitor that stops.
    let mut n = 0;
    let next = p
        .scan(3, 10, |off, _, _| {
            assert!((3..10).contains(&off));
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!((n, next), (7, 10));
    let next = p
        .scan(5, end, |off, _, _| {
            if off == 8 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(next, 9, "continue after the record that stopped it");
}
