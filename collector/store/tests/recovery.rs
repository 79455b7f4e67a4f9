//! Crash recovery: torn tails, garbage, lost or damaged indexes, corrupt bytes.

mod util;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use tributary_store::batch::HEADER_LEN;
use tributary_store::{Compression, Error, Store, StoreOptions, TopicConfig};
use util::{
    Rec, Rng, append, batch_bounds, capture_logs, copy_dir, flat, gen_batch, headers, logs,
    read_all, recs,
};

/// Batches are stored with these in turn (a codec that does not shrink a batch
/// stores it plain).
const CODECS: [Compression; 3] = [Compression::Lz4, Compression::None, Compression::Gzip];

const OPTS: StoreOptions = StoreOptions {
    publish_on_sync: false,
    index_interval_bytes: 128,
    ..StoreOptions::DEFAULT
};

/// A store with one single-partition topic `t`, filled with `n` batches; returns
/// the records and the partition directory. The store is closed.
fn template(dir: &Path, segment_bytes: u64, n: usize, seed: u64) -> (Vec<Rec>, PathBuf) {
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
    let mut rng = Rng(seed);
    let mut all = Vec::new();
    for i in 0..n {
        // Keep the final batch small so cutting at each of its bytes stays cheap.
        let b = if i + 1 == n {
            gen_batch(&mut rng, 1, 2, 30)
        } else {
            let (blocks, per) = (1 + rng.below(2) as usize, 1 + rng.below(3) as usize);
            gen_batch(&mut rng, blocks, per, 80)
        };
        // Every codec, mixed in each segment: damage must be found in any of them.
        p.set_compression(CODECS[i % CODECS.len()]);
        append(&p, &b);
        all.extend(flat(&b));
    }
    p.sync().unwrap();
    let codecs: std::collections::BTreeSet<u8> = logs(p.dir())
        .iter()
        .flat_map(|l| headers(l))
        .map(|(_, h)| h.attributes)
        .collect();
    if n >= 20 {
        assert_eq!(codecs.len(), 3, "every stored codec is present: {codecs:?}");
    }
    (all, p.dir().to_owned())
}

fn reopen(dir: &Path) -> (Store, std::sync::Arc<tributary_store::Partition>) {
    let store = Store::open(dir, OPTS).unwrap();
    let p = store.topic("t").unwrap().partitions()[0].clone();
    (store, p)
}

fn rel(p: &Path, root: &Path) -> PathBuf {
    p.strip_prefix(root).unwrap().to_owned()
}

/// Offsets fully contained in the first `cut` bytes of the last segment.
fn expected_end(bounds: &[(u64, u64, u64, u64)], seg_base: u64, cut: u64) -> u64 {
    bounds
        .iter()
        .filter(|b| b.1 <= cut)
        .map(|b| b.3)
        .max()
        .unwrap_or(seg_base)
}

#[test]
fn cut_tail_at_every_byte_of_the_last_batch() {
    let tpl = tempfile::tempdir().unwrap();
    let (all, pdir) = template(tpl.path(), 1200, 25, 11);
    let segs = logs(&pdir);
    assert!(segs.len() >= 2);
    let last = rel(segs.last().unwrap(), tpl.path());
    let bounds = batch_bounds(segs.last().unwrap());
    let seg_base = bounds[0].2;
    let len = bounds.last().unwrap().1;
    let final_start = bounds.last().unwrap().0;
    // Every byte of the final batch, and a stride through the rest of the segment.
    let cuts: Vec<u64> = (0..final_start)
        .step_by(41)
        .chain(final_start..=len)
        .collect();
    let mut rng = Rng(5);
    for cut in cuts {
        let work = tempfile::tempdir().unwrap();
        copy_dir(tpl.path(), work.path());
        let log = work.path().join(&last);
        OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (store, p) = reopen(work.path());
        let want = expected_end(&bounds, seg_base, cut);
        assert_eq!(p.end_offset(), want, "cut at {cut}");
        let boundary = bounds
            .iter()
            .filter(|b| b.1 <= cut)
            .map(|b| b.1)
            .max()
            .unwrap_or(0);
        assert_eq!(
            fs::metadata(&log).unwrap().len(),
            boundary,
            "truncated to the batch boundary"
        );
        assert_eq!(
            recs(&read_all(&p, 0, 1000)),
            all[..want as usize],
            "cut at {cut}"
        );
        let b = gen_batch(&mut rng, 1, 2, 10);
        assert_eq!(append(&p, &b).base_offset, want);
        drop((p, store));
        let (_store, p) = reopen(work.path());
        assert_eq!(p.end_offset(), want + 2);
        let mut expect = all[..want as usize].to_vec();
        expect.extend(flat(&b));
        assert_eq!(recs(&read_all(&p, 0, 1000)), expect);
    }
}

#[test]
fn garbage_after_the_tail_is_truncated() {
    let tpl = tempfile::tempdir().unwrap();
    let (all, pdir) = template(tpl.path(), 2000, 12, 12);
    let last = rel(logs(&pdir).last().unwrap(), tpl.path());
    let good_len = fs::metadata(tpl.path().join(&last)).unwrap().len();
    let first_header = fs::read(tpl.path().join(&last)).unwrap()[..HEADER_LEN + 20].to_vec();
    let mut rng = Rng(6);
    let random: Vec<u8> = (0..3000).map(|_| rng.next() as u8).collect();
    let mut next_header = first_header.clone();
    next_header[..8].copy_from_slice(&(all.len() as u64).to_le_bytes());
    for garbage in [
        random,
        vec![0u8; 4096],
        first_header,
        next_header,
        vec![0xff; 7],
    ] {
        let work = tempfile::tempdir().unwrap();
        copy_dir(tpl.path(), work.path());
        let log = work.path().join(&last);
        OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(&garbage)
            .unwrap();
        let ((_store, p), text) = capture_logs(|| reopen(work.path()));
        assert!(
            text.contains("truncating torn or corrupt segment tail")
                && text.contains(&log.display().to_string())
                && text.contains(&format!("position={good_len}")),
            "no warning naming file and byte: {text}"
        );
        assert_eq!(p.end_offset(), all.len() as u64);
        assert_eq!(fs::metadata(&log).unwrap().len(), good_len);
        assert_eq!(recs(&read_all(&p, 0, 5)), all);
        assert_eq!(
            append(&p, &gen_batch(&mut rng, 1, 1, 5)).base_offset,
            all.len() as u64
        );
    }
}

#[test]
fn lost_or_damaged_indexes_are_rebuilt() {
    let tpl = tempfile::tempdir().unwrap();
    let (all, pdir) = template(tpl.path(), 1500, 40, 13);
    let indexes: Vec<PathBuf> = logs(&pdir)
        .iter()
        .map(|l| rel(&l.with_extension("index"), tpl.path()))
        .collect();
    assert!(indexes.len() >= 3);
    let originals: Vec<Vec<u8>> = indexes
        .iter()
        .map(|i| fs::read(tpl.path().join(i)).unwrap())
        .collect();
    assert!(
        originals.iter().all(|o| o.len() >= 16),
        "indexes have several entries"
    );
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 5] = [
        ("deleted", |p| fs::remove_file(p).unwrap()),
        ("emptied", |p| fs::write(p, b"").unwrap()),
        ("odd length", |p| {
            let mut b = fs::read(p).unwrap();
            b.pop();
            fs::write(p, b).unwrap()
        }),
        ("points past the log", |p| {
            let mut b = fs::read(p).unwrap();
            b.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0x7f]);
            fs::write(p, b).unwrap()
        }),
        ("not monotonic", |p| {
            let mut b = fs::read(p).unwrap();
            let n = b.len();
            b.copy_within(0..8, n - 8);
            fs::write(p, b).unwrap()
        }),
    ];
    for (what, damage) in damages {
        let work = tempfile::tempdir().unwrap();
        copy_dir(tpl.path(), work.path());
        for i in &indexes {
            damage(&work.path().join(i));
        }
        let (_store, p) = reopen(work.path());
        assert_eq!(p.end_offset(), all.len() as u64, "{what}");
        for (i, original) in indexes.iter().zip(&originals) {
            assert_eq!(
                &fs::read(work.path().join(i)).unwrap(),
                original,
                "{what}: rebuilt index differs"
            );
        }
        for o in 0..all.len() as u64 {
            let r = p.read(o, 1, usize::MAX).unwrap();
            assert_eq!(Rec::of(&r.records[0]), all[o as usize], "{what}");
        }
    }
}

#[test]
fn damage_in_an_older_segment_fails_only_the_reads_that_reach_it() {
    let tpl = tempfile::tempdir().unwrap();
    let (all, pdir) = template(tpl.path(), 1500, 40, 14);
    let segs = logs(&pdir);
    assert!(segs.len() >= 3);
    let bounds = batch_bounds(&segs[0]);
    assert!(bounds.len() >= 3);
    let (start, _, base, next) = bounds[1];
    let n = all.len() as u64;
    // A payload byte (CRC mismatch) and a header byte (record count) of batch 1.
    for at in [start + HEADER_LEN as u64 + 3, start + 19] {
        let work = tempfile::tempdir().unwrap();
        copy_dir(tpl.path(), work.path());
        let log = work.path().join(rel(&segs[0], tpl.path()));
        let mut bytes = fs::read(&log).unwrap();
        bytes[at as usize] ^= 0x5a;
        fs::write(&log, bytes).unwrap();
        let (_store, p) = reopen(work.path());
        assert_eq!(p.end_offset(), n, "older segments are not truncated");
        for o in base..next {
            match p.read(o, 1, usize::MAX) {
                Err(Error::Corrupt { path, position, .. }) => {
                    assert_eq!(path, log);
                    assert_eq!(position, start);
                }
                other => panic!("read at {o} over damaged byte {at}: {other:?}"),
            }
        }
        assert!(p.read(0, usize::MAX, usize::MAX).is_err());
        // Reads before and after the damaged batch work.
        let r = p.read(0, base as usize, usize::MAX).unwrap();
        assert_eq!(recs(&r.records), all[..base as usize]);
        assert_eq!(recs(&read_all(&p, next, 3)), all[next as usize..]);
        assert_eq!(append(&p, &gen_batch(&mut Rng(1), 1, 1, 1)).base_offset, n);
    }
}

/// Position of the last entry of a segment's index.
fn last_index_position(index: &Path) -> u64 {
    let b = fs::read(index).unwrap();
    u64::from(u32::from_le_bytes(b[b.len() - 4..].try_into().unwrap()))
}

#[test]
fn damage_at_or_after_the_last_index_entry_truncates_the_last_segment() {
    let tpl = tempfile::tempdir().unwrap();
    let (all, pdir) = template(tpl.path(), 100_000, 30, 15);
    let seg = logs(&pdir).pop().unwrap();
    let bounds = batch_bounds(&seg);
    let last_entry = last_index_position(&seg.with_extension("index"));
    let n = all.len() as u64;
    let tail: Vec<_> = bounds
        .iter()
        .filter(|b| b.0 >= last_entry)
        .copied()
        .collect();
    assert!(!tail.is_empty() && tail[0].0 == last_entry);
    // Damage the batch the last index entry points to (the validation then falls
    // back to a scan from the start), and each later batch.
    for (start, _, base, _) in tail {
        for at in [start + HEADER_LEN as u64 + 1, start + 3, start + 17] {
            let work = tempfile::tempdir().unwrap();
            copy_dir(tpl.path(), work.path());
            let log = work.path().join(rel(&seg, tpl.path()));
            let mut bytes = fs::read(&log).unwrap();
            bytes[at as usize] ^= 1;
            fs::write(&log, bytes).unwrap();
            let (_store, p) = reopen(work.path());
            assert_eq!(p.end_offset(), base, "damage at {at}");
            assert_eq!(fs::metadata(&log).unwrap().len(), start);
            assert_eq!(recs(&read_all(&p, 0, 100)), all[..base as usize]);
            assert_eq!(
                append(&p, &gen_batch(&mut Rng(1), 1, 1, 1)).base_offset,
                base
            );
        }
    }
    // Damage before the last index entry of the last segment is, like damage in an
    // older segment, found by the reads that reach it.
    let (start, _, base, next) = bounds[1];
    assert!(start < last_entry);
    let work = tempfile::tempdir().unwrap();
    copy_dir(tpl.path(), work.path());
    let log = work.path().join(rel(&seg, tpl.path()));
    let mut bytes = fs::read(&log).unwrap();
    bytes[start as usize + HEADER_LEN + 1] ^= 1;
    fs::write(&log, bytes).unwrap();
    let (_store, p) = reopen(work.path());
    assert_eq!(p.end_offset(), n);
    assert!(matches!(
        p.read(base, 1, usize::MAX),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(recs(&read_all(&p, next, 100)), all[next as usize..]);
}

#[test]
fn empty_segment_left_by_an_interrupted_roll() {
    let tpl = tempfile::tempdir().unwrap();
    let (all, pdir) = template(tpl.path(), 1 << 20, 5, 16);
    let n = all.len() as u64;
    fs::File::create(pdir.join(format!("{n:020}.log"))).unwrap();
    let (_store, p) = reopen(tpl.path());
    assert_eq!(p.end_offset(), n);
    assert_eq!(recs(&read_all(&p, 0, 2)), all);
    let b = gen_batch(&mut Rng(2), 1, 3, 10);
    assert_eq!(append(&p, &b).base_offset, n);
    assert_eq!(recs(&read_all(&p, n, 2)), flat(&b));
    assert!(
        fs::metadata(pdir.join(format!("{n:020}.log")))
            .unwrap()
            .len()
            > 0
    );
}

#[test]
fn bad_topic_metadata_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    template(dir.path(), 1 << 20, 1, 17);
    let meta = dir.path().join("topics/t/topic.json");
    let text = fs::read_to_string(&meta).unwrap();
    assert!(text.contains(r#""version":1"#) && text.contains(r#""partitions":1"#));
    for bad in [
        &b"{"[..],
        br#"{"version":2,"partitions":1,"segment_bytes":10}"#,
        br#"{"version":1,"partitions":0,"segment_bytes":10}"#,
    ] {
        fs::write(&meta, bad).unwrap();
        let err = Store::open(dir.path(), OPTS)
            .err()
            .expect("bad metadata accepted");
        assert!(err.to_string().contains("topic.json"), "{err}");
    }
    // Unknown fields (written by a later version) are tolerated.
    fs::write(
        &meta,
        br#"{"version":1,"partitions":1,"segment_bytes":1048576,"retention":{}}"#,
    )
    .unwrap();
    Store::open(dir.path(), OPTS).unwrap();
}

#[test]
fn damaged_headers_in_an_older_segment_are_stepped_over() {
    let tpl = tempfile::tempdir().unwrap();
    let (all, pdir) = template(tpl.path(), 1500, 40, 18);
    let segs = logs(&pdir);
    assert!(segs.len() >= 3);
    let bounds = batch_bounds(&segs[0]);
    assert!(bounds.len() >= 4);
    let (start, _, base, next) = bounds[1];
    let n = all.len() as u64;
    type Damage = fn(&mut [u8]);
    let damages: [(&str, Damage); 3] = [
        ("insane length", |h| {
            h[8..12].copy_from_slice(&u32::MAX.to_le_bytes())
        }),
        ("wrong base offset", |h| h[0] ^= 0x40),
        ("zeroed header", |h| h[..HEADER_LEN].fill(0)),
    ];
    for (what, damage) in damages {
        // Indexes kept, rebuilt, and rebuilt with one entry per segment (so that
        // reads after the damage must resync themselves).
        for (drop_index, interval) in [(false, 128), (true, 128), (true, 1 << 20)] {
            let work = tempfile::tempdir().unwrap();
            copy_dir(tpl.path(), work.path());
            let log = work.path().join(rel(&segs[0], tpl.path()));
            let mut bytes = fs::read(&log).unwrap();
            damage(&mut bytes[start as usize..]);
            fs::write(&log, bytes).unwrap();
            if drop_index {
                fs::remove_file(log.with_extension("index")).unwrap();
                fs::remove_file(log.with_extension("timeindex")).unwrap();
            }
            let opts = StoreOptions {
                index_interval_bytes: interval,
                ..OPTS
            };
            let ((_store, p), text) = capture_logs(|| {
                let store = Store::open(work.path(), opts).unwrap();
                let p = store.topic("t").unwrap().partitions()[0].clone();
                (store, p)
            });
            if drop_index {
                assert!(
                    text.contains("damaged bytes in a segment")
                        && text.contains(&log.display().to_string())
                        && text.contains(&format!("offsets={base}..{next}")),
                    "{what}: {text}"
                );
            }
            assert_eq!(p.end_offset(), n, "{what}");
            for o in 0..n {
                let r = p.read(o, 1, usize::MAX);
                if (base..next).contains(&o) {
                    match r {
                        Err(Error::Corrupt { path, position, .. }) => {
                            assert_eq!((path, position), (log.clone(), start), "{what}")
                        }
                        other => panic!("{what}: read at {o} in the damage: {other:?}"),
                    }
                } else {
                    let r = r.unwrap_or_else(|e| {
                        panic!("{what}, index dropped {drop_index}: read at {o}: {e}")
                    });
                    assert_eq!(Rec::of(&r.records[0]), all[o as usize], "{what}");
                }
            }
            assert!(p.read(0, usize::MAX, usize::MAX).is_err(), "a read across");
            assert_eq!(recs(&read_all(&p, next, 5)), all[next as usize..]);
            assert_eq!(
                p.offset_for_timestamp(i64::MIN).unwrap().map(|f| f.offset),
                Some(0),
                "a lookup that needs no damaged batch"
            );
            assert_eq!(append(&p, &gen_batch(&mut Rng(1), 1, 1, 1)).base_offset, n);
        }
    }
}

#[test]
fn random_damage_never_yields_wrong_records_or_answers() {
    let tpl = tempfile::tempdir().unwrap();
    let (all, pdir) = template(tpl.path(), 1200, 40, 19);
    let segs = logs(&pdir);
    assert!(segs.len() >= 3);
    let lens: Vec<u64> = segs
        .iter()
        .map(|s| fs::metadata(s).unwrap().len())
        .collect();
    let mut rng = Rng(20);
    for round in 0..60 {
        let work = tempfile::tempdir().unwrap();
        copy_dir(tpl.path(), work.path());
        // One to three flipped bytes in the older segments.
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(segs.len() as u64 - 1) as usize;
            let log = work.path().join(rel(&segs[i], tpl.path()));
            let mut bytes = fs::read(&log).unwrap();
            let at = rng.below(lens[i]) as usize;
            bytes[at] ^= 1 << rng.below(8);
            fs::write(&log, bytes).unwrap();
        }
        let (_store, p) = reopen(work.path());
        assert_eq!(p.end_offset(), all.len() as u64, "round {round}");
        let mut readable = 0;
        for o in 0..all.len() as u64 {
            match p.read(o, 1 + rng.below(4) as usize, usize::MAX) {
                Ok(r) => {
                    assert!(!r.records.is_empty());
                    for rec in &r.records {
                        assert_eq!(Rec::of(rec), all[rec.offset as usize], "round {round}");
                    }
                    readable += 1;
                }
                Err(Error::Corrupt { .. }) => {}
                Err(e) => panic!("round {round}: read at {o}: {e}"),
            }
        }
        assert!(
            readable > all.len() / 2,
            "round {round}: {readable} readable"
        );
        for _ in 0..40 {
            let target = all[rng.below(all.len() as u64) as usize].ts + rng.below(3) as i64 - 1;
            let want = all
                .iter()
                .position(|r| r.ts >= target)
                .map(|i| (i as u64, all[i].ts));
            match p.offset_for_timestamp(target) {
                Ok(got) => assert_eq!(
                    got.map(|f| (f.offset, f.timestamp_ms)),
                    want,
                    "round {round}: lookup of {target}"
                ),
                Err(Error::Corrupt { .. }) => {}
                Err(e) => panic!("round {round}: lookup of {target}: {e}"),
            }
        }
    }
}

#[test]
fn half_created_topics_are_repaired_or_ignored_at_open() {
    let dir = tempfile::tempdir().unwrap();
    template(dir.path(), 1 << 20, 1, 18);
    let topics = dir.path().join("topics");
    // Stopped before topic.json: a directory and the index of a first segment.
    fs::create_dir_all(topics.join("early/0")).unwrap();
    fs::write(topics.join("early/0").join(format!("{:020}.index", 0)), b"").unwrap();
    // Stopped after topic.json, before the second partition's directory.
    fs::create_dir_all(topics.join("late/0")).unwrap();
    fs::write(
        topics.join("late/topic.json"),
        br#"{"version":1,"partitions":2,"segment_bytes":1048576}"#,
    )
    .unwrap();

    let store = Store::open(dir.path(), OPTS).unwrap();
    let names: Vec<_> = store.topics().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(
        names,
        ["late", "t"],
        "a topic without topic.json is skipped"
    );
    let late = store.topic("late").unwrap();
    assert_eq!(late.partitions().len(), 2);
    for p in late.partitions() {
        let b = gen_batch(&mut Rng(3), 1, 2, 10);
        assert_eq!(append(p, &b).base_offset, 0);
        assert_eq!(recs(&read_all(p, 0, 4)), flat(&b));
    }
    // The skipped one can be created again, over its leftovers.
    let early = store
        .create_topic(
            "early",
            TopicConfig {
                partitions: 1,
                segment_bytes: 1 << 20,
            },
        )
        .unwrap();
    let p = &early.partitions()[0];
    let b = gen_batch(&mut Rng(4), 1, 3, 10);
    assert_eq!(append(p, &b).base_offset, 0);
    assert_eq!(recs(&read_all(p, 0, 4)), flat(&b));
    drop((store, late, early));
    let store = Store::open(dir.path(), OPTS).unwrap();
    assert_eq!(store.topics().len(), 3);
    assert_eq!(
        store.topic("early").unwrap().partitions()[0].end_offset(),
        3
    );
}
