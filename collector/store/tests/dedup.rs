//! Exactly-once storage: resent file records are dropped, before and after a
//! reopen (the table is rebuilt from the log, starting from the newest valid
//! snapshot), while syslog records never are.

mod util;

use std::fs;
use std::path::Path;

use tributary_common::record::{self, BlockWriter};
use tributary_store::{Store, StoreOptions, TopicConfig};

fn payload(source_id: u64, lines: std::ops::Range<u64>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = BlockWriter::begin(&mut buf, "web-01", "/var/log/a.log", source_id, b"");
    for i in lines {
        b.push(
            &mut buf,
            0,
            1000 + i as i64,
            i * 100,
            b"",
            format!("line {i}").as_bytes(),
        );
    }
    b.finish(&mut buf);
    buf
}

fn messages(p: &tributary_store::Partition) -> Vec<String> {
    let r = p.read(0, 100_000, usize::MAX).unwrap();
    r.records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.message).into_owned())
        .collect()
}

#[test]
fn resends_are_dropped_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TopicConfig {
        partitions: 1,
        segment_bytes: 1 << 20,
    };
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let p = store
            .create_topic("app", cfg)
            .unwrap()
            .partition(0)
            .unwrap()
            .clone();
        let first = payload(42, 0..10);
        let r = p
            .append(&first, &record::summarize(&first).unwrap())
            .unwrap();
        assert_eq!(
            (r.base_offset, r.next_offset, r.appended, r.duplicates),
            (0, 10, 10, 0)
        );
        // An exact resend: nothing appended, the end still covers the originals.
        let r = p
            .append(&first, &record::summarize(&first).unwrap())
            .unwrap();
        assert_eq!((r.next_offset, r.appended, r.duplicates), (10, 0, 10));
        // Syslog records (source 0) are never dropped.
        let syslog = payload(0, 0..2);
        let s = record::summarize(&syslog).unwrap();
        p.append(&syslog, &s).unwrap();
        let r = p.append(&syslog, &s).unwrap();
        assert_eq!((r.appended, r.duplicates), (2, 0));
        p.sync().unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let p = store.topic("app").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.tracked_sources(), 1, "rebuilt from the log");
    // A re-read after an agent restart overlaps: only the new lines are stored.
    let again = payload(42, 5..15);
    let r = p
        .append(&again, &record::summarize(&again).unwrap())
        .unwrap();
    assert_eq!((r.base_offset, r.appended, r.duplicates), (14, 5, 5));
    let mut want: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
    want.extend((0..2).chain(0..2).map(|i| format!("line {i}")));
    want.extend((10..15).map(|i| format!("line {i}")));
    assert_eq!(messages(&p), want);
}

/// A partition with source 42 only in its first batch, then enough syslog batches
/// (never deduplicated) to roll several segments, then source 7. Closed.
fn snapshot_template(dir: &Path) -> std::path::PathBuf {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let p = store
        .create_topic(
            "app",
            TopicConfig {
                partitions: 1,
                segment_bytes: 600,
            },
        )
        .unwrap()
        .partition(0)
        .unwrap()
        .clone();
    let first = payload(42, 0..5);
    p.append(&first, &record::summarize(&first).unwrap())
        .unwrap();
    for k in 0..30 {
        let syslog = payload(0, k * 3..k * 3 + 3);
        p.append(&syslog, &record::summarize(&syslog).unwrap())
            .unwrap();
    }
    let last = payload(7, 0..3);
    p.append(&last, &record::summarize(&last).unwrap()).unwrap();
    p.sync().unwrap();
    assert_eq!(p.tracked_sources(), 2);
    p.dir().to_owned()
}

fn reopen(dir: &Path) -> (Store, std::sync::Arc<tributary_store::Partition>) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let p = store.topic("app").unwrap().partition(0).unwrap().clone();
    (store, p)
}

/// Whether a resend of source 42's lines is dropped whole.
fn remembers_42(p: &tributary_store::Partition) -> bool {
    let again = payload(42, 0..5);
    let r = p
        .append(&again, &record::summarize(&again).unwrap())
        .unwrap();
    r.duplicates == 5
}

fn snapshots(pdir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sources"))
        .collect();
    v.sort();
    v
}

#[test]
fn rolls_write_snapshots_that_open_loads() {
    let tpl = tempfile::tempdir().unwrap();
    let pdir = snapshot_template(tpl.path());
    let logs = util::logs(&pdir);
    assert!(logs.len() > 3);
    // One snapshot per segment but the first, named by the segment's base.
    let want: Vec<_> = logs[1..]
        .iter()
        .map(|l| l.with_extension("sources"))
        .collect();
    assert_eq!(snapshots(&pdir), want);
    let rel = |p: &Path| p.strip_prefix(tpl.path()).unwrap().to_owned();
    // Damage the batch of source 42: a scan can no longer see it, but the
    // snapshots still remember it, so open did not scan the first segment.
    let first_log = rel(&logs[0]);
    let damaged = tempfile::tempdir().unwrap();
    util::copy_dir(tpl.path(), damaged.path());
    let log = damaged.path().join(&first_log);
    let mut bytes = fs::read(&log).unwrap();
    bytes[tributary_store::batch::HEADER_LEN + 10] ^= 0x55;
    fs::write(&log, &bytes).unwrap();
    let (_store, p) = reopen(damaged.path());
    assert_eq!(p.tracked_sources(), 2);
    assert!(remembers_42(&p));
    drop((_store, p));
    // Without snapshots the scan steps over the damaged batch and forgets 42.
    for s in snapshots(&damaged.path().join(rel(&pdir))) {
        fs::remove_file(s).unwrap();
    }
    let (_store, p) = reopen(damaged.path());
    assert_eq!(p.tracked_sources(), 1);
    assert!(!remembers_42(&p));
}

#[test]
fn damaged_snapshots_fall_back_to_older_ones_or_a_scan() {
    let tpl = tempfile::tempdir().unwrap();
    let pdir = snapshot_template(tpl.path());
    let rel = pdir.strip_prefix(tpl.path()).unwrap().to_owned();
    let n = snapshots(&pdir).len();
    for damaged in [1, n] {
        let work = tempfile::tempdir().unwrap();
        util::copy_dir(tpl.path(), work.path());
        // Damage the newest `damaged` snapshots (a flipped byte, then a cut one).
        for (i, s) in snapshots(&work.path().join(&rel))
            .iter()
            .rev()
            .take(damaged)
            .enumerate()
        {
            let mut b = fs::read(s).unwrap();
            if i % 2 == 0 {
                let k = b.len() / 2;
                b[k] ^= 1;
            } else {
                b.truncate(b.len() - 3);
            }
            fs::write(s, b).unwrap();
        }
        let ((_store, p), text) = util::capture_logs(|| reopen(work.path()));
        assert!(
            text.contains("ignoring a damaged deduplication snapshot"),
            "{text}"
        );
        assert_eq!(p.tracked_sources(), 2, "{damaged} damaged");
        assert!(remembers_42(&p));
        let again = payload(7, 0..4);
        let r = p
            .append(&again, &record::summarize(&again).unwrap())
            .unwrap();
        assert_eq!((r.appended, r.duplicates), (1, 3));
    }
}
