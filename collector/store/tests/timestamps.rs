//! Lookups by timestamp, rolls by age, and the time index: written, checked and
//! rebuilt at open.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tributary_store::{Partition, Store, StoreOptions, TimestampOffset, TopicConfig};
use util::{Batch, Rec, Rng, append, base_of, capture_logs, copy_dir, flat, gen_batch, logs};

const OPTS: StoreOptions = StoreOptions {
    publish_on_sync: false,
    index_interval_bytes: 128,
    ..StoreOptions::DEFAULT
};
const T0: i64 = 1_700_000_000_000;

fn open(dir: &Path, segment_bytes: u64) -> (Store, Arc<Partition>) {
    let store = Store::open(dir, OPTS).unwrap();
    let t = store
        .create_topic(
            "t",
            TopicConfig {
                partitions: 1,
                segment_bytes,
            },
        )
        .unwrap();
    let p = t.partitions()[0].clone();
    (store, p)
}

/// A batch of one block whose records carry exactly `stamps`.
fn stamped(rng: &mut Rng, stamps: &[i64]) -> Batch {
    let mut b = gen_batch(rng, 1, stamps.len(), 40);
    for (r, &ts) in b[0].iter_mut().zip(stamps) {
        r.ts = ts;
    }
    b
}

/// Kafka's answer by brute force over the batches (base offset, records).
fn expected(batches: &[(u64, Vec<Rec>)], target: i64) -> Option<TimestampOffset> {
    batches.iter().find_map(|(base, recs)| {
        if recs.iter().map(|r| r.ts).max()? < target {
            return None;
        }
        let i = recs.iter().position(|r| r.ts >= target)?;
        Some(TimestampOffset {
            offset: base + i as u64,
            timestamp_ms: recs[i].ts,
        })
    })
}

/// A partition of many small segments whose batches have jittery, mostly rising
/// timestamps (some far in the past, one in the future); returns the batches.
fn fill(p: &Partition, n: usize, seed: u64) -> Vec<(u64, Vec<Rec>)> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for i in 0..n {
        let now = T0 + i as i64 * 1000;
        let k = 1 + rng.below(4) as usize;
        let stamps: Vec<i64> = (0..k)
            .map(|_| match rng.below(20) {
                0 => now - 3_600_000,
                1 if i == n / 2 => now + 86_400_000,
                _ => now + rng.below(5000) as i64 - 2500,
            })
            .collect();
        let b = stamped(&mut rng, &stamps);
        let r = append(p, &b);
        out.push((r.base_offset, flat(&b)));
    }
    out
}

fn targets(batches: &[(u64, Vec<Rec>)]) -> Vec<i64> {
    let mut t: Vec<i64> = batches
        .iter()
        .flat_map(|(_, recs)| recs.iter().flat_map(|r| [r.ts - 1, r.ts, r.ts + 1]))
        .collect();
    t.extend([i64::MIN, i64::MAX, T0 - 10_000_000, T0 + 10_000_000_000]);
    t.sort_unstable();
    t.dedup();
    t
}

fn check_all(p: &Partition, batches: &[(u64, Vec<Rec>)]) {
    for target in targets(batches) {
        assert_eq!(
            p.offset_for_timestamp(target).unwrap(),
            expected(batches, target),
            "target {target}"
        );
    }
}

#[test]
fn lookups_find_the_first_batch_reaching_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, p) = open(dir.path(), 1500);
    assert_eq!(p.offset_for_timestamp(0).unwrap(), None, "empty partition");
    let batches = fill(&p, 120, 1);
    assert!(logs(p.dir()).len() > 5, "several segments");
    check_all(&p, &batches);
    // The data really is out of order.
    let stamps: Vec<i64> = batches
        .iter()
        .flat_map(|(_, r)| r.iter().map(|r| r.ts))
        .collect();
    assert!(stamps.windows(2).filter(|w| w[0] > w[1]).count() > 10);
}

#[test]
fn lookups_survive_reopen_and_rebuilt_time_indexes() {
    let tpl = tempfile::tempdir().unwrap();
    let (store, p) = open(tpl.path(), 1500);
    let batches = fill(&p, 100, 2);
    let pdir = p.dir().strip_prefix(tpl.path()).unwrap().to_owned();
    drop((p, store));
    let timeindexes: Vec<PathBuf> = logs(&tpl.path().join(&pdir))
        .iter()
        .map(|l| l.with_extension("timeindex"))
        .collect();
    assert!(timeindexes.len() > 3);
    let originals: Vec<Vec<u8>> = timeindexes.iter().map(|t| fs::read(t).unwrap()).collect();
    assert!(originals.iter().all(|o| o.len() >= 24 && o.len() % 12 == 0));

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 6] = [
        ("deleted", |p| fs::remove_file(p).unwrap()),
        ("emptied", |p| fs::write(p, b"").unwrap()),
        ("odd length", |p| {
            let mut b = fs::read(p).unwrap();
            b.pop();
            fs::write(p, b).unwrap()
        }),
        ("time goes back", |p| {
            let mut b = fs::read(p).unwrap();
            b[12..20].copy_from_slice(&i64::MIN.to_le_bytes());
            fs::write(p, b).unwrap()
        }),
        ("offsets do not match the index", |p| {
            let mut b = fs::read(p).unwrap();
            let n = b.len();
            b[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
            fs::write(p, b).unwrap()
        }),
        ("last entries lost", |p| {
            let mut b = fs::read(p).unwrap();
            b.truncate(12);
            fs::write(p, b).unwrap()
        }),
    ];
    for (what, damage) in damages {
        let work = tempfile::tempdir().unwrap();
        copy_dir(tpl.path(), work.path());
        for t in &timeindexes {
            damage(&work.path().join(t.strip_prefix(tpl.path()).unwrap()));
        }
        let ((store, p), logs_text) = capture_logs(|| open(work.path(), 1500));
        assert!(logs_text.contains("time index"), "{what}: no warning");
        for (t, original) in timeindexes.iter().zip(&originals) {
            let rebuilt = fs::read(work.path().join(t.strip_prefix(tpl.path()).unwrap())).unwrap();
            assert_eq!(&rebuilt, original, "{what}: rebuilt time index differs");
        }
        check_all(&p, &batches);
        drop((p, store));
    }

    // Both indexes of every segment gone: rebuilt, lookups and reads still right.
    let work = tempfile::tempdir().unwrap();
    copy_dir(tpl.path(), work.path());
    for l in logs(&work.path().join(&pdir)) {
        fs::remove_file(l.with_extension("index")).unwrap();
        fs::remove_file(l.with_extension("timeindex")).unwrap();
    }
    let (_store, p) = open(work.path(), 1500);
    for (t, original) in timeindexes.iter().zip(&originals) {
        let rebuilt = fs::read(work.path().join(t.strip_prefix(tpl.path()).unwrap())).unwrap();
        assert_eq!(&rebuilt, original, "rebuilt with the offset index");
    }
    check_all(&p, &batches);
    let all: Vec<Rec> = batches.iter().flat_map(|(_, r)| r.clone()).collect();
    assert_eq!(util::recs(&util::read_all(&p, 0, 7)), all);
}

#[test]
fn lookups_see_only_visible_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            publish_on_sync: true,
            ..OPTS
        },
    )
    .unwrap();
    let p = store
        .create_topic("t", TopicConfig::default())
        .unwrap()
        .partitions()[0]
        .clone();
    let mut rng = Rng(3);
    append(&p, &stamped(&mut rng, &[T0]));
    p.sync().unwrap();
    append(&p, &stamped(&mut rng, &[T0 + 100]));
    assert_eq!(
        p.offset_for_timestamp(T0 + 50).unwrap(),
        None,
        "not yet durable"
    );
    p.sync().unwrap();
    assert_eq!(
        p.offset_for_timestamp(T0 + 50).unwrap(),
        Some(TimestampOffset {
            offset: 1,
            timestamp_ms: T0 + 100
        })
    );
}

#[test]
fn segments_roll_by_age_on_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let (store, p) = open(dir.path(), 1 << 20);
    store
        .topic("t")
        .unwrap()
        .set_segment_age(Duration::from_secs(10));
    let mut rng = Rng(4);
    // Batch i is stamped T0 + 4 s * i (two records, the batch's newest is the
    // second): a segment takes batches until one is 10 s newer than its first.
    let mut bases = Vec::new();
    for i in 0..10i64 {
        let ts = T0 + 4000 * i;
        let r = append(&p, &stamped(&mut rng, &[ts - 500, ts]));
        bases.push(r.base_offset);
    }
    let segs: Vec<u64> = logs(p.dir()).iter().map(|l| base_of(l)).collect();
    assert_eq!(segs, [bases[0], bases[3], bases[6], bases[9]]);
    // An old (replayed) batch does not roll; a far-future one does, once.
    append(&p, &stamped(&mut rng, &[T0 - 86_400_000]));
    assert_eq!(logs(p.dir()).len(), 4);
    let future = append(&p, &stamped(&mut rng, &[T0 + 86_400_000]));
    let after = append(&p, &stamped(&mut rng, &[T0 + 40_000]));
    let segs: Vec<u64> = logs(p.dir()).iter().map(|l| base_of(l)).collect();
    assert_eq!(segs.last(), Some(&future.base_offset));
    assert_eq!(segs.len(), 5, "{after:?}");
    // The rule holds across a reopen (the first batch's time comes from the index).
    drop((p, store));
    let (store, p) = open(dir.path(), 1 << 20);
    store
        .topic("t")
        .unwrap()
        .set_segment_age(Duration::from_secs(10));
    let r = append(&p, &stamped(&mut rng, &[T0 + 86_400_000 + 9_999]));
    assert_eq!(logs(p.dir()).len(), 5);
    let r2 = append(&p, &stamped(&mut rng, &[T0 + 86_400_000 + 10_000]));
    assert_eq!(logs(p.dir()).len(), 6);
    assert_eq!(base_of(logs(p.dir()).last().unwrap()), r2.base_offset);
    assert_eq!(r2.base_offset, r.next_offset);
    // The default rolls after a day of event time.
    drop((p, store));
    let (_store, p) = open(dir.path(), 1 << 20);
    append(&p, &stamped(&mut rng, &[T0 + 2 * 86_400_000]));
    assert_eq!(logs(p.dir()).len(), 6);
    append(&p, &stamped(&mut rng, &[T0 + 3 * 86_400_000]));
    assert_eq!(logs(p.dir()).len(), 7);
}
