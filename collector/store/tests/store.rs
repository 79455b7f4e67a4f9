//! Appends, reads, segment rolls, reopen, visibility and concurrency.

mod util;

use std::sync::Arc;

use tributary_common::record;
use tributary_store::{Error, Store, StoreOptions, TopicConfig};
use util::{Rec, Rng, append, flat, gen_batch, logs, read_all, recs};

fn opts() -> StoreOptions {
    StoreOptions {
        publish_on_sync: false,
        index_interval_bytes: 256,
        ..StoreOptions::DEFAULT
    }
}

fn small(partitions: u32, segment_bytes: u64) -> TopicConfig {
    TopicConfig {
        partitions,
        segment_bytes,
    }
}

/// Append `n` random batches to partition 0 of `topic`; returns all records.
fn fill(store: &Store, topic: &str, n: usize, seed: u64) -> Vec<Rec> {
    let p = store.topic(topic).unwrap().partitions()[0].clone();
    let mut rng = Rng(seed);
    let mut all = Vec::new();
    for _ in 0..n {
        let blocks = 1 + rng.below(3) as usize;
        let per = 1 + rng.below(4) as usize;
        let b = gen_batch(&mut rng, blocks, per, 120);
        let r = append(&p, &b);
        assert_eq!(r.base_offset, all.len() as u64);
        all.extend(flat(&b));
        assert_eq!(r.next_offset, all.len() as u64);
    }
    all
}

#[test]
fn append_and_read_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic("app", small(1, 700)).unwrap();
    let all = fill(&store, "app", 80, 1);
    let p = store.topic("app").unwrap().partitions()[0].clone();
    let n = all.len() as u64;
    assert_eq!(p.start_offset(), 0);
    assert_eq!(p.end_offset(), n);
    let segs = logs(p.dir());
    assert!(segs.len() > 5, "only {} segments", segs.len());
    let total: u64 = segs
        .iter()
        .map(|s| std::fs::metadata(s).unwrap().len())
        .sum();
    assert_eq!(p.size_bytes(), total);
    for s in &segs {
        assert!(std::fs::metadata(s).unwrap().len() <= 700 || util::batch_bounds(s).len() == 1);
    }

    // Every offset, alone and to the end.
    for o in 0..n {
        let one = p.read(o, 1, usize::MAX).unwrap();
        assert_eq!(one.records.len(), 1);
        assert_eq!(one.records[0].offset, o);
        assert_eq!(Rec::of(&one.records[0]), all[o as usize]);
        assert_eq!(one.next_offset, o + 1);
        let rest = p.read(o, usize::MAX, usize::MAX).unwrap();
        assert_eq!(recs(&rest.records), all[o as usize..]);
        assert_eq!(rest.next_offset, n);
    }
    // At and past the end.
    for o in [n, n + 1, n + 1000] {
        let r = p.read(o, 10, usize::MAX).unwrap();
        assert!(r.records.is_empty());
        assert_eq!(r.next_offset, o);
    }
    assert!(p.read(0, 0, usize::MAX).unwrap().records.is_empty());

    // max_records.
    for k in [1usize, 2, 3, 7, 50] {
        for o in (0..n).step_by(5) {
            let r = p.read(o, k, usize::MAX).unwrap();
            let want = k.min((n - o) as usize);
            assert_eq!(r.records.len(), want);
            assert_eq!(r.next_offset, o + want as u64);
            assert_eq!(recs(&r.records), all[o as usize..o as usize + want]);
        }
    }
    // max_bytes: at least one record, then whole records while they fit.
    let size = |r: &Rec| r.message.len() + r.fields.len();
    for o in (0..n).step_by(3) {
        let r = p.read(o, usize::MAX, 0).unwrap();
        assert_eq!(r.records.len(), 1);
        let budget = 300;
        let r = p.read(o, usize::MAX, budget).unwrap();
        let got: usize = recs(&r.records).iter().map(size).sum();
        assert!(!r.records.is_empty());
        assert!(got <= budget || r.records.len() == 1);
        let next = (o as usize) + r.records.len();
        if next < all.len() {
            assert!(got + size(&all[next]) > budget, "stopped early at {o}");
        }
    }
    // Chunked reads see everything exactly once.
    assert_eq!(recs(&read_all(&p, 0, 7)), all);
}

#[test]
fn shared_metadata_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let t = store.create_topic("t", small(1, 1 << 20)).unwrap();
    let mut rng = Rng(9);
    append(&t.partitions()[0], &gen_batch(&mut rng, 1, 5, 10));
    let r = t.partitions()[0].read(0, 10, usize::MAX).unwrap();
    assert_eq!(r.records.len(), 5);
    assert!(Arc::ptr_eq(&r.records[0].block, &r.records[4].block));
    // Messages are not copied out of the expanded batch, and a read coming back
    // for the batch finds it in the store's cache.
    let again = t.partitions()[0].read(2, 10, usize::MAX).unwrap();
    assert_eq!(again.records[0].message, r.records[2].message);
    assert_eq!(
        again.records[0].message.as_ptr(),
        r.records[2].message.as_ptr()
    );
}

#[test]
fn reopen_keeps_data_and_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut all;
    {
        let store = Store::open(dir.path(), opts()).unwrap();
        store.create_topic("app", small(3, 900)).unwrap();
        store
            .create_topic("b.other-topic_1", small(1, 1 << 20))
            .unwrap();
        all = fill(&store, "app", 30, 2);
        assert!(matches!(
            Store::open(dir.path(), opts()),
            Err(Error::Locked { .. })
        ));
    }
    let store = Store::open(dir.path(), opts()).unwrap();
    let names: Vec<_> = store.topics().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(names, ["app", "b.other-topic_1"]);
    // The stored config wins over the one asked for.
    let t = store.create_topic("app", small(8, 5)).unwrap();
    assert_eq!(t.config(), small(3, 900));
    assert_eq!(t.partitions().len(), 3);
    assert!(t.partition(2).is_some() && t.partition(3).is_none());
    let p = t.partition(0).unwrap();
    assert_eq!(p.end_offset(), all.len() as u64);
    assert_eq!(recs(&read_all(p, 0, 1000)), all);
    let mut rng = Rng(77);
    let b = gen_batch(&mut rng, 2, 2, 50);
    let r = append(p, &b);
    assert_eq!(r.base_offset, all.len() as u64);
    all.extend(flat(&b));
    assert_eq!(recs(&read_all(p, 0, 1000)), all);
    // Other partitions are empty and start at 0.
    let p1 = t.partition(1).unwrap();
    assert_eq!((p1.start_offset(), p1.end_offset()), (0, 0));
    assert_eq!(append(p1, &b).base_offset, 0);
}

#[test]
fn topic_names_and_configs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for bad in ["", "..", ".", "a/b", "../x", "x\u{e9}"] {
        assert!(matches!(
            store.create_topic(bad, small(1, 1024)),
            Err(Error::InvalidTopicName { .. })
        ));
    }
    assert!(matches!(
        store.create_topic("t", small(0, 1024)),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(store.topic("t").is_none());
    assert!(store.topics().is_empty());
    // Leftovers of an interrupted creation are ignored, then reused.
    std::fs::create_dir_all(dir.path().join("topics/half/0")).unwrap();
    std::fs::create_dir_all(dir.path().join("topics/not a topic")).unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(store.topics().is_empty());
    let t = store.create_topic("half", small(2, 1024)).unwrap();
    assert_eq!(t.partitions().len(), 2);
}

#[test]
fn bad_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let p = store
        .create_topic("t", small(1, 1 << 20))
        .unwrap()
        .partitions()[0]
        .clone();
    let mut rng = Rng(3);
    let payload = util::encode(&gen_batch(&mut rng, 2, 3, 10));
    let mut summary = record::summarize(&payload).unwrap();
    summary.records = 5;
    assert!(matches!(
        p.append(&payload, &summary),
        Err(Error::InvalidBatch { .. })
    ));
    assert!(matches!(
        p.append(&[], &record::PayloadSummary::default()),
        Err(Error::InvalidBatch { .. })
    ));
    let huge = vec![0u8; tributary_store::batch::MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        p.append(&huge, &summary),
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(p.end_offset(), 0);
    let summary = record::summarize(&payload).unwrap();
    assert_eq!(p.append(&payload, &summary).unwrap().base_offset, 0);
}

#[test]
fn publish_on_sync_hides_unsynced_records() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        publish_on_sync: true,
        ..opts()
    };
    let store = Store::open(dir.path(), o).unwrap();
    let p = store.create_topic("t", small(1, 600)).unwrap().partitions()[0].clone();
    let mut rng = Rng(4);
    let b1 = gen_batch(&mut rng, 1, 3, 40);
    let r1 = append(&p, &b1);
    assert_eq!(p.end_offset(), 0);
    assert_eq!(p.written_end_offset(), 3);
    assert!(p.read(0, 10, usize::MAX).unwrap().records.is_empty());
    p.sync_to(r1.next_offset).unwrap();
    assert_eq!(p.end_offset(), 3);
    assert_eq!(p.durable_end_offset(), 3);
    let b2 = gen_batch(&mut rng, 1, 2, 40);
    let r2 = append(&p, &b2);
    let r = p.read(0, 10, usize::MAX).unwrap();
    assert_eq!(recs(&r.records), flat(&b1));
    assert_eq!(r.next_offset, 3);
    // Syncing an offset already durable changes nothing; the later one publishes.
    p.sync_to(2).unwrap();
    assert_eq!(p.end_offset(), 3);
    p.sync_to(r2.next_offset).unwrap();
    assert_eq!(p.end_offset(), 5);
    // Rolls make the old segment durable and therefore visible too.
    let mut n = 5;
    while logs(p.dir()).len() < 3 {
        n = append(&p, &gen_batch(&mut rng, 1, 2, 200)).next_offset;
    }
    assert!(p.end_offset() > 5 && p.end_offset() < n);
    p.sync().unwrap();
    assert_eq!(p.end_offset(), n);
    assert_eq!(read_all(&p, 0, 4).len() as u64, n);
}

#[test]
fn concurrent_appends_syncs_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        publish_on_sync: true,
        index_interval_bytes: 512,
        ..StoreOptions::DEFAULT
    };
    let store = Arc::new(Store::open(dir.path(), o).unwrap());
    let p = store
        .create_topic("t", small(1, 8192))
        .unwrap()
        .partitions()[0]
        .clone();
    const WRITERS: u64 = 4;
    const BATCHES: usize = 60;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let p = p.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Acquire)
                || (seen.len() as u64) < p.end_offset()
            {
                let r = p.read(seen.len() as u64, 50, 1 << 20).unwrap();
                assert!(r.next_offset <= p.end_offset());
                if r.records.is_empty() {
                    std::thread::yield_now();
                }
                seen.extend(r.records);
            }
            seen
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(100 + w);
                let mut mine = Vec::new();
                for _ in 0..BATCHES {
                    let per = 1 + rng.below(4) as usize;
                    let b = gen_batch(&mut rng, 1, per, 100);
                    let r = append(&p, &b);
                    p.sync_to(r.next_offset).unwrap();
                    assert!(p.end_offset() >= r.next_offset);
                    assert!(p.durable_end_offset() >= r.next_offset);
                    mine.push((r, flat(&b)));
                }
                mine
            })
        })
        .collect();
    let mut ranges: Vec<_> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    done.store(true, std::sync::atomic::Ordering::Release);
    let seen = reader.join().unwrap();
    ranges.sort_by_key(|(r, _)| r.base_offset);
    let mut expected = Vec::new();
    for (r, b) in &ranges {
        assert_eq!(
            r.base_offset,
            expected.len() as u64,
            "offsets are contiguous and unique"
        );
        assert_eq!(r.next_offset - r.base_offset, b.len() as u64);
        expected.extend(b.iter().cloned());
    }
    assert_eq!(p.end_offset(), expected.len() as u64);
    assert_eq!(recs(&seen), expected);
    assert_eq!(recs(&read_all(&p, 0, 33)), expected);
    drop(p);
    drop(store);
    let store = Store::open(dir.path(), o).unwrap();
    assert_eq!(
        recs(&read_all(
            &store.topic("t").unwrap().partitions()[0],
            0,
            1000
        )),
        expected
    );
}

#[test]
fn store_and_partition_are_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<tributary_store::Topic>();
    check::<tributary_store::Partition>();
}
