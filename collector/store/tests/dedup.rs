//! Exactly-once storage: resent file records are dropped, before and after a
//! reopen (the table is rebuilt from the log), while syslog records never are.

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
