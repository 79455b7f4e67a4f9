//! Data written before batches were compressed on disk: the store opens it, reads
//! it unchanged, appends compressed batches after it (segments then mix codecs)
//! and still deduplicates against it.
//!
//! `tests/fixtures/uncompressed-v2/` is a data directory written by the store as
//! it was before compression existed (commit bd9ee1d), by [`legacy_records`]
//! through `Store::create_topic` and `Partition::append_at`: topic `legacy`, two
//! partitions, 600-byte segments (so several segments, indexes and `.sources`
//! snapshots). To write it again with an old store, run this file's
//! `write_fixture` test there with `TRIBUTARY_WRITE_FIXTURE=<dir>`.

use std::path::Path;

use tributary_common::record::{self, BlockWriter};
use tributary_store::{Compression, Store, StoreOptions, TopicConfig};

/// Partition, source id, source offset, timestamp and message of every record the
/// fixture holds, in append order, one record per batch.
fn legacy_records() -> Vec<(u32, u64, u64, i64, String)> {
    (0..40u64)
        .map(|i| {
            let part = (i % 2) as u32;
            let source_id = 100 + u64::from(part);
            (
                part,
                source_id,
                1 + i / 2,
                1_700_000_000_000 + i as i64 * 1000,
                format!("legacy line {i}: GET /index.html 200 user=42"),
            )
        })
        .collect()
}

fn payload(source_id: u64, offset: u64, ts: i64, message: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = BlockWriter::begin(&mut buf, "old-host", "/var/log/old.log", source_id, b"");
    w.push(&mut buf, 0, ts, offset, b"", message.as_bytes());
    w.finish(&mut buf);
    buf
}

fn write(dir: &Path) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let t = store
        .create_topic(
            "legacy",
            TopicConfig {
                partitions: 2,
                segment_bytes: 600,
            },
        )
        .unwrap();
    for (part, source_id, offset, ts, message) in legacy_records() {
        let p = &t.partitions()[part as usize];
        let payload = payload(source_id, offset, ts, &message);
        let summary = record::summarize(&payload).unwrap();
        p.append_at(&payload, &summary, ts).unwrap();
    }
    for p in t.partitions() {
        p.sync().unwrap();
    }
}

/// Writes the fixture with the store it is built with (see the module docs).
#[test]
fn write_fixture() {
    let Some(dir) = std::env::var_os("TRIBUTARY_WRITE_FIXTURE") else {
        return;
    };
    write(Path::new(&dir));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn data_from_before_compression_reads_unchanged_and_mixes_with_new_batches() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/uncompressed-v2");
    let work = tempfile::tempdir().unwrap();
    copy_dir(&fixture, work.path());
    let logs = |p: &Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        v.sort();
        v
    };
    let before: Vec<Vec<u8>> = logs(&work.path().join("topics/legacy/0"))
        .iter()
        .map(|l| std::fs::read(l).unwrap())
        .collect();
    assert!(before.len() >= 3, "the fixture has several segments");

    let want = legacy_records();
    let check_legacy = |store: &Store| {
        let t = store.topic("legacy").expect("the old topic opens");
        for part in 0..2u32 {
            let p = &t.partitions()[part as usize];
            let mine: Vec<_> = want.iter().filter(|r| r.0 == part).collect();
            let got = p.read(0, 1000, 1 << 20).unwrap();
            assert!(got.records.len() >= mine.len());
            for (i, (r, w)) in got.records.iter().zip(&mine).enumerate() {
                assert_eq!(r.offset, i as u64);
                assert_eq!(r.block.source_id, w.1);
                assert_eq!(r.source_offset, w.2);
                assert_eq!(r.timestamp_ms, w.3);
                assert_eq!(r.message, w.4.as_bytes());
                assert_eq!(&*r.block.host, "old-host");
                assert_eq!(&*r.block.source, "/var/log/old.log");
            }
        }
    };
    {
        let store = Store::open(work.path(), StoreOptions::default()).unwrap();
        check_legacy(&store);
        let t = store.topic("legacy").unwrap();
        t.set_compression(Compression::Lz4);
        let p = &t.partitions()[0];
        // The old records again: all duplicates of what the old store kept.
        let (_, sid, off, ts, msg) = &want[0];
        let dup = payload(*sid, *off, *ts, msg);
        let r = p.append(&dup, &record::summarize(&dup).unwrap()).unwrap();
        assert_eq!((r.appended, r.duplicates), (0, 1));
        // New records, compressed, after the old ones.
        let end = p.end_offset();
        let mut big = Vec::new();
        let mut w = BlockWriter::begin(&mut big, "new-host", "/var/log/new.log", 7, b"");
        for i in 0..200u64 {
            let m = format!("new line {i}: GET /index.html 200 user=42 ok");
            w.push(&mut big, 0, 1_800_000_000_000, i + 1, b"", m.as_bytes());
        }
        w.finish(&mut big);
        let r = p.append(&big, &record::summarize(&big).unwrap()).unwrap();
        assert_eq!((r.base_offset, r.appended), (end, 200));
        p.sync().unwrap();
    }
    // Reopened: the old segments are byte for byte as they were, the old records
    // read as before, the new ones after them, and the newest batch is compressed.
    let store = Store::open(work.path(), StoreOptions::default()).unwrap();
    check_legacy(&store);
    let after = logs(&work.path().join("topics/legacy/0"));
    for (old, now) in before.iter().zip(&after) {
        let now = std::fs::read(now).unwrap();
        assert_eq!(&now[..old.len()], &old[..], "old bytes untouched");
    }
    let p = store.topic("legacy").unwrap().partitions()[0].clone();
    let mine = want.iter().filter(|r| r.0 == 0).count() as u64;
    let got = p.read(mine, 1000, 1 << 20).unwrap();
    assert_eq!(got.records.len(), 200);
    assert_eq!(
        &got.records[199].message[..],
        b"new line 199: GET /index.html 200 user=42 ok"
    );
    let last = std::fs::read(after.last().unwrap()).unwrap();
    let codecs: Vec<u8> = {
        let mut v = Vec::new();
        let mut pos = 0usize;
        while pos + tributary_store::batch::HEADER_LEN <= last.len() {
            let h = tributary_store::batch::BatchHeader::decode(
                last[pos..pos + tributary_store::batch::HEADER_LEN]
                    .try_into()
                    .unwrap(),
            )
            .unwrap();
            v.push(h.attributes);
            pos += h.total_len() as usize;
        }
        v
    };
    assert_eq!(
        codecs.last(),
        Some(&Compression::Lz4.code()),
        "new batches are compressed: {codecs:?}"
    );
    assert!(
        (last.len() as u64) < 200 * 40,
        "200 lines of 45 bytes take {} bytes",
        last.len()
    );
}
