//! Retention: whole old segments are deleted by age and by size, never the active
//! one (which is rolled when all of it expired); the start offset moves on, reads
//! below it are out of range, concurrent reads never see anything else, and
//! deduplication and reopen keep working.

mod util;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary_common::record::{self, BlockWriter};
use tributary_store::{Error, Partition, RetentionPolicy, Store, StoreOptions, TopicConfig};
use util::{
    Batch, Rec, Rng, append, append_at, base_of, capture_logs, encode, flat, gen_batch, logs,
    read_all, recs,
};

const OPTS: StoreOptions = StoreOptions {
    publish_on_sync: false,
    index_interval_bytes: 256,
    budget: tributary_store::Budget::MIN,
    read_cache_bytes: 64 << 10,
};
const T0: i64 = 1_600_000_000_000;
const HOUR: i64 = 3_600_000;

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
    t.set_segment_age(Duration::from_secs(3600));
    let p = t.partitions()[0].clone();
    (store, p)
}

fn stamped(rng: &mut Rng, n: usize, ts: i64) -> Batch {
    let mut b = gen_batch(rng, 1, n, 60);
    for r in b.iter_mut().flatten() {
        r.ts = ts;
    }
    b
}

/// `hours` segments, one per hour of event time (three batches each); returns
/// the records and each segment's base offset.
fn fill_hours(p: &Partition, rng: &mut Rng, hours: i64) -> (Vec<Rec>, Vec<u64>) {
    let mut bases = Vec::new();
    for h in 0..hours {
        for k in 0..3 {
            let r = append(p, &stamped(rng, 2, T0 + h * HOUR + k * 1000));
            if k == 0 {
                bases.push(r.base_offset);
            }
        }
    }
    (recs(&read_all(p, 0, 100)), bases)
}

fn age(hours: u64) -> RetentionPolicy {
    RetentionPolicy {
        max_age: Some(Duration::from_secs(hours * 3600)),
        max_bytes: None,
    }
}

#[test]
fn age_deletes_old_segments_then_the_expired_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, p) = open(dir.path(), 1 << 20);
    let mut rng = Rng(1);
    let (all, bases) = fill_hours(&p, &mut rng, 6);
    assert_eq!(logs(p.dir()).len(), 6, "one segment per hour");
    let end = all.len() as u64;
    let before = p.size_bytes();
    // Reading everything filled the read cache, within its budget.
    let cached = store.read_cache_bytes();
    assert!(cached > 0 && cached <= OPTS.read_cache_bytes, "{cached}");

    // At T0 + 7 h with a 4 h limit: the segments whose newest record is older
    // than T0 + 3 h go (hours 0..=2).
    let now = T0 + 7 * HOUR;
    let (d, text) = capture_logs(|| p.enforce_retention(&age(4), now).unwrap());
    assert_eq!(
        (d.segments, d.previous_start, d.start_offset),
        (3, 0, bases[3])
    );
    assert!(!d.rolled);
    assert!(text.contains("retention deleted old segments"), "{text}");
    assert!(
        store.read_cache_bytes() < cached,
        "the deleted segments' batches left the read cache"
    );
    assert_eq!(p.start_offset(), bases[3]);
    assert_eq!(p.size_bytes(), before - d.bytes);
    let names: Vec<String> = std::fs::read_dir(p.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for b in &bases[..3] {
        let stem = format!("{b:020}");
        assert!(
            !names.iter().any(|n| n.starts_with(&stem)),
            "files of {stem} left: {names:?}"
        );
    }
    match p.read(0, 10, usize::MAX) {
        Err(Error::OffsetOutOfRange {
            offset,
            start,
            end: e,
        }) => {
            assert_eq!((offset, start, e), (0, bases[3], end))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(recs(&read_all(&p, bases[3], 4)), all[bases[3] as usize..]);
    // Nothing more to do at the same time.
    assert_eq!(p.enforce_retention(&age(4), now).unwrap().segments, 0);

    // Much later everything expired: the active segment is rolled and goes too.
    let d = p.enforce_retention(&age(4), T0 + 100 * HOUR).unwrap();
    assert!(d.rolled);
    assert_eq!((d.segments, d.start_offset), (3, end));
    assert_eq!((p.start_offset(), p.end_offset()), (end, end));
    assert_eq!(p.size_bytes(), 0);
    assert_eq!(store.read_cache_bytes(), 0);
    assert_eq!(logs(p.dir()).len(), 1);
    assert!(p.read(end - 1, 1, usize::MAX).is_err());
    assert!(p.read(end, 1, usize::MAX).unwrap().records.is_empty());
    assert_eq!(p.offset_for_timestamp(0).unwrap(), None);

    // Appends continue at the end; a reopen keeps the start.
    let r = append(&p, &stamped(&mut rng, 3, T0 + 100 * HOUR));
    assert_eq!(r.base_offset, end);
    p.sync().unwrap();
    drop((p, store));
    let (_store, p) = open(dir.path(), 1 << 20);
    assert_eq!((p.start_offset(), p.end_offset()), (end, end + 3));
    assert_eq!(
        p.offset_for_timestamp(0).unwrap().map(|f| f.offset),
        Some(end)
    );
}

#[test]
fn size_keeps_the_newest_segments_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, p) = open(dir.path(), 1000);
    let mut rng = Rng(2);
    for _ in 0..60 {
        append(&p, &gen_batch(&mut rng, 1, 2, 100));
    }
    let all = recs(&read_all(&p, 0, 100));
    let segs = logs(p.dir());
    let sizes: Vec<u64> = segs
        .iter()
        .map(|s| std::fs::metadata(s).unwrap().len())
        .collect();
    let total: u64 = sizes.iter().sum();
    assert!(segs.len() > 6);
    let limit = total / 2;
    let policy = RetentionPolicy {
        max_age: None,
        max_bytes: Some(limit),
    };
    let d = p.enforce_retention(&policy, i64::MAX).unwrap();
    // The fewest oldest segments that bring the total to the limit or below.
    let mut left = total;
    let mut n = 0;
    while left > limit {
        left -= sizes[n];
        n += 1;
    }
    assert_eq!(d.segments, n);
    assert_eq!(p.size_bytes(), left);
    assert!(p.size_bytes() <= limit);
    let start = base_of(&segs[n]);
    assert_eq!(p.start_offset(), start);
    assert_eq!(recs(&read_all(&p, start, 7)), all[start as usize..]);
    // A limit below the active segment keeps only the active segment.
    let d = p
        .enforce_retention(
            &RetentionPolicy {
                max_age: None,
                max_bytes: Some(0),
            },
            i64::MAX,
        )
        .unwrap();
    assert!(!d.rolled);
    assert_eq!(logs(p.dir()).len(), 1);
    assert_eq!(p.start_offset(), base_of(&logs(p.dir())[0]));
}

#[test]
fn wrong_sender_clocks_expire_by_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, p) = open(dir.path(), 600);
    let mut rng = Rng(3);
    let now = tributary_common::timefmt::now_ms();
    // Stamped in the year 2100 and in 2001 by wrong clocks, appended now.
    for ts in [4_102_444_800_000, 1_000_000_000_000].repeat(5) {
        let b = stamped(&mut rng, 2, ts);
        let payload = encode(&b);
        p.append_at(&payload, &record::summarize(&payload).unwrap(), now)
            .unwrap();
    }
    let n = logs(p.dir()).len();
    assert!(n > 2);
    assert_eq!(p.enforce_retention(&age(1), now).unwrap().segments, 0);
    // Two hours from now the files are more than an hour old.
    let d = p.enforce_retention(&age(1), now + 2 * HOUR).unwrap();
    assert_eq!(
        d.segments, n,
        "all sealed segments and the rolled active one"
    );
    assert!(d.rolled);
}

/// Rolls by age follow the append time: 3,000 one-record batches stamped a day
/// apart but appended within a minute share one segment; another segment starts
/// only once segment_age (1h) of arrival time has passed.
#[test]
fn rolls_by_age_happen_once_per_segment_age_whatever_the_stamps() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, p) = open(dir.path(), 1 << 30);
    let mut rng = Rng(4);
    let now = tributary_common::timefmt::now_ms();
    for i in 0..3000i64 {
        let b = stamped(&mut rng, 1, T0 + i * 24 * HOUR);
        append_at(&p, &b, now + i * 20);
    }
    assert_eq!(
        logs(p.dir()).len(),
        1,
        "one segment for one minute of arrivals"
    );
    append_at(&p, &stamped(&mut rng, 1, T0), now + HOUR - 1);
    assert_eq!(logs(p.dir()).len(), 1, "not yet an hour old");
    append_at(&p, &stamped(&mut rng, 1, T0), now + HOUR);
    assert_eq!(logs(p.dir()).len(), 2, "an hour after the first append");
    for i in 1..100 {
        append_at(&p, &stamped(&mut rng, 1, T0 - i * HOUR), now + HOUR + i);
    }
    assert_eq!(logs(p.dir()).len(), 2);
    assert_eq!(read_all(&p, 0, 500).len(), 3101);
}

#[test]
fn reads_racing_retention_see_records_or_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, p) = open(dir.path(), 800);
    let stored: Arc<Mutex<Vec<Rec>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3u64)
        .map(|i| {
            let (p, stored, stop) = (p.clone(), stored.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(100 + i);
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let end = p.end_offset();
                    let at = rng.below(end + 1);
                    match p.read(at, 1 + rng.below(50) as usize, usize::MAX) {
                        Ok(r) => {
                            let s = stored.lock().unwrap();
                            for rec in &r.records {
                                assert_eq!(Rec::of(rec), s[rec.offset as usize]);
                            }
                            reads += 1;
                        }
                        Err(Error::OffsetOutOfRange { start, .. }) => assert!(at < start),
                        Err(e) => panic!("read at {at}: {e}"),
                    }
                    if let Err(e) = p.offset_for_timestamp(rng.next() as i64) {
                        panic!("lookup: {e}");
                    }
                }
                reads
            })
        })
        .collect();
    let mut rng = Rng(4);
    let policy = RetentionPolicy {
        max_age: None,
        max_bytes: Some(3000),
    };
    let mut deleted = 0;
    for i in 0..400 {
        let b = gen_batch(&mut rng, 1, 3, 80);
        // Publish the records before they become readable.
        stored.lock().unwrap().extend(flat(&b));
        append(&p, &b);
        if i % 10 == 0 {
            deleted += p.enforce_retention(&policy, 0).unwrap().segments;
        }
    }
    deleted += p.enforce_retention(&policy, 0).unwrap().segments;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert!(deleted > 20, "only {deleted} segments deleted");
    assert!(p.size_bytes() <= 3000 + 800);
}

fn file_payload(source_id: u64, lines: std::ops::Range<u64>, ts: i64) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = BlockWriter::begin(&mut buf, "web-01", "/var/log/a.log", source_id, b"");
    for i in lines {
        b.push(&mut buf, 0, ts, i * 10, b"", format!("line {i}").as_bytes());
    }
    b.finish(&mut buf);
    buf
}

#[test]
fn deduplication_forgets_exactly_what_retention_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let append_lines = |p: &Partition, source: u64, lines: std::ops::Range<u64>, ts: i64| {
        let payload = file_payload(source, lines, ts);
        p.append_at(&payload, &record::summarize(&payload).unwrap(), ts)
            .unwrap()
    };
    let resend = |p: &Partition, source: u64, lines: std::ops::Range<u64>| {
        let r = append_lines(p, source, lines, T0 + 10 * HOUR);
        (r.appended, r.duplicates)
    };
    {
        let (_store, p) = open(dir.path(), 700);
        // Source 9 only in the first hour; source 42 in every hour.
        append_lines(&p, 9, 0..5, T0);
        for h in 0..4 {
            append_lines(&p, 42, h * 5..h * 5 + 5, T0 + h as i64 * HOUR);
        }
        assert_eq!(p.tracked_sources(), 2);
        let d = p.enforce_retention(&age(2), T0 + 3 * HOUR).unwrap();
        assert!(d.segments > 0 && !d.rolled);
        // Source 9's records are gone, and so is its entry, as a scan of the
        // remaining segments would have it; source 42 is still known.
        assert_eq!(p.tracked_sources(), 1);
        assert_eq!(resend(&p, 42, 10..20), (0, 10));
        assert_eq!(resend(&p, 9, 0..5), (5, 0));
        p.sync().unwrap();
    }
    // After a reopen (the snapshot less the pruned sources, then a scan) the same.
    let (_store, p) = open(dir.path(), 700);
    assert_eq!(p.tracked_sources(), 2);
    assert_eq!(resend(&p, 42, 15..20), (0, 5));
    assert_eq!(resend(&p, 9, 0..6), (1, 5));
    // When everything expires the table empties, like a scan of no records.
    drop(p);
    drop(_store);
    let (_store, p) = open(dir.path(), 700);
    let d = p.enforce_retention(&age(1), T0 + 100 * HOUR).unwrap();
    assert!(d.rolled);
    assert_eq!(p.tracked_sources(), 0);
    drop(p);
    drop(_store);
    let (_store, p) = open(dir.path(), 700);
    assert_eq!(p.tracked_sources(), 0);
}
