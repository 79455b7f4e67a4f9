//! Crash recovery from hand-built segment files: indexes that lie about offsets or
//! positions, rebuilt indexes, damaged first batches. Every case is opened twice:
//! the second open must find exactly what the first one left.

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tributary_store::index::{self, IndexEntry};
use tributary_store::{Error, Store, StoreOptions, TopicConfig};
use util::{Rec, Rng, append, batch_bytes, flat, gen_batch, read_all, recs};

const OPTS: StoreOptions = StoreOptions {
    publish_on_sync: false,
    index_interval_bytes: 128,
    ..StoreOptions::DEFAULT
};

/// A data directory whose topic `t` has one partition holding only the hand-built
/// `files` (name, bytes); returns the partition directory. The store is closed.
fn hand_built(root: &Path, files: &[(String, Vec<u8>)]) -> PathBuf {
    let store = Store::open(root, OPTS).unwrap();
    let t = store
        .create_topic(
            "t",
            TopicConfig {
                partitions: 1,
                segment_bytes: 1 << 20,
            },
        )
        .unwrap();
    let pdir = t.partitions()[0].dir().to_owned();
    drop(t);
    drop(store);
    for e in fs::read_dir(&pdir).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    for (name, bytes) in files {
        fs::write(pdir.join(name), bytes).unwrap();
    }
    pdir
}

/// What an open shows: the offsets, the read of every offset below the end (its
/// record or its error) and the partition's files.
#[derive(Debug, PartialEq)]
struct Seen {
    start: u64,
    end: u64,
    reads: Vec<Result<Rec, String>>,
    files: BTreeMap<String, Vec<u8>>,
}

fn open_and_look(root: &Path, opts: StoreOptions) -> Seen {
    let store = Store::open(root, opts).unwrap();
    let p = store.topic("t").unwrap().partitions()[0].clone();
    let (start, end) = (p.start_offset(), p.end_offset());
    let reads = (start..end)
        .map(|o| match p.read(o, 1, usize::MAX) {
            Ok(r) => {
                assert_eq!(r.records[0].offset, o);
                Ok(Rec::of(&r.records[0]))
            }
            Err(e) => {
                assert!(matches!(e, Error::Corrupt { .. }), "read at {o}: {e}");
                Err(e.to_string())
            }
        })
        .collect();
    let files = fs::read_dir(p.dir())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, fs::read(e.path()).unwrap())
        })
        .collect();
    Seen {
        start,
        end,
        reads,
        files,
    }
}

/// Open `root` twice: the second open must find exactly what the first one left
/// and saw (same offsets, same reads, files untouched). Returns what it saw.
fn open_twice(root: &Path, opts: StoreOptions, what: &str) -> Seen {
    let first = open_and_look(root, opts);
    let second = open_and_look(root, opts);
    assert_eq!(
        (second.start, second.end),
        (first.start, first.end),
        "{what}: offsets changed on reopen"
    );
    assert_eq!(second.reads, first.reads, "{what}: reads changed on reopen");
    for (name, bytes) in &first.files {
        assert!(
            second.files.get(name) == Some(bytes),
            "{what}: the second open changed {name}"
        );
    }
    assert_eq!(
        second, first,
        "{what}: a second open differs from the first"
    );
    first
}

fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}

fn index_name(base: u64) -> String {
    format!("{base:020}.index")
}

fn entry(relative_offset: u64, position: usize) -> IndexEntry {
    IndexEntry {
        relative_offset: u32::try_from(relative_offset).unwrap(),
        position: u32::try_from(position).unwrap(),
    }
}

const INTERVALS: [u32; 3] = [0, 128, 4096];

/// Found by the segment_reader fuzz target (crash-3a58e783…): the only index entry
/// of the last segment is at byte 0 but names the wrong offset. Validation from it
/// failed at once, yet (being at byte 0) it was taken for the segment start: the
/// first open truncated the segment to nothing and still reported end offset
/// base + 1; the second open reported base. Such an entry is distrusted like any
/// other that does not lead to a good batch: the whole segment is validated.
#[test]
fn an_index_entry_at_byte_0_naming_another_offset_is_not_trusted() {
    let base = 248;
    let b = gen_batch(&mut Rng(21), 2, 3, 20);
    let log = batch_bytes(base, &b);
    let all = flat(&b);
    let end = base + all.len() as u64;
    for interval in INTERVALS {
        let root = tempfile::tempdir().unwrap();
        let pdir = hand_built(
            root.path(),
            &[
                (log_name(base), log.clone()),
                (index_name(base), index::encode_all(&[entry(1, 0)])),
            ],
        );
        let opts = StoreOptions {
            index_interval_bytes: interval,
            ..OPTS
        };
        let seen = open_twice(root.path(), opts, &format!("interval {interval}"));
        assert_eq!((seen.start, seen.end), (base, end), "interval {interval}");
        assert_eq!(
            seen.reads,
            all.iter().cloned().map(Ok).collect::<Vec<_>>(),
            "interval {interval}"
        );
        assert_eq!(seen.files[&log_name(base)], log, "nothing truncated");
        let (_store, p) = reopen_with(root.path(), opts);
        let more = gen_batch(&mut Rng(22), 1, 2, 5);
        assert_eq!(append(&p, &more).base_offset, end);
        assert_eq!(
            recs(&read_all(&p, base, 3)),
            [all.clone(), flat(&more)].concat()
        );
        assert_eq!(fs::metadata(pdir.join(log_name(base))).unwrap().len(), {
            log.len() as u64 + batch_bytes(end, &more).len() as u64
        });
    }
}

/// Three batches A, B, C in the last segment with an exact index, B's length
/// (which the CRC does not cover) stretched into C. Validation from the last index
/// entry (C) kept everything, but the index entries do not all point to batch
/// starts (the header walk jumps from B into the middle of C), so the indexes were
/// rebuilt by that walk, ending at A or B; the next open validated from there, hit
/// B's CRC mismatch and cut the segment at B: offsets the first open served were
/// gone. Now a rebuilt index must lead, batch by batch, to the end recovery kept;
/// as it does not, the segment is validated from its start, at the first open.
#[test]
fn an_index_rebuilt_by_the_header_walk_must_lead_to_the_recovered_end() {
    let mut rng = Rng(23);
    let batches: Vec<_> = (0..3).map(|_| gen_batch(&mut rng, 1, 3, 40)).collect();
    let mut log = Vec::new();
    let mut starts = Vec::new();
    let mut next = 0;
    for b in &batches {
        starts.push((log.len(), next));
        log.extend(batch_bytes(next, b));
        next += flat(b).len() as u64;
    }
    let (b_pos, b_base) = starts[1];
    let c_len = log.len() - starts[2].0;
    let len_at = b_pos + 8;
    let stretched = u32::from_le_bytes(log[len_at..len_at + 4].try_into().unwrap())
        + u32::try_from(c_len / 2).unwrap();
    log[len_at..len_at + 4].copy_from_slice(&stretched.to_le_bytes());
    let idx: Vec<IndexEntry> = starts.iter().map(|&(pos, off)| entry(off, pos)).collect();
    for interval in INTERVALS {
        let root = tempfile::tempdir().unwrap();
        hand_built(
            root.path(),
            &[
                (log_name(0), log.clone()),
                (index_name(0), index::encode_all(&idx)),
            ],
        );
        let opts = StoreOptions {
            index_interval_bytes: interval,
            ..OPTS
        };
        let seen = open_twice(root.path(), opts, &format!("interval {interval}"));
        assert_eq!((seen.start, seen.end), (0, b_base), "interval {interval}");
        assert_eq!(
            seen.reads,
            flat(&batches[0]).into_iter().map(Ok).collect::<Vec<_>>()
        );
        assert_eq!(seen.files[&log_name(0)], log[..b_pos], "cut at B");
    }
}

/// The scenario of the fix in 040c975, kept as a test: the first batch of the last
/// segment has a damaged header (its base offset), the index is exact. The index is
/// rebuilt over the damage (starting at the second batch) and, as its last entry
/// leads to the end, kept: the batches after the damage stay readable, at this open
/// and the next ones.
#[test]
fn an_index_rebuilt_over_a_damaged_first_batch_keeps_the_batches_after_it() {
    let mut rng = Rng(24);
    let batches: Vec<_> = (0..3).map(|_| gen_batch(&mut rng, 1, 2, 40)).collect();
    let base = 1000;
    let mut log = Vec::new();
    let mut idx = Vec::new();
    let mut next = base;
    for b in &batches {
        idx.push(entry(next - base, log.len()));
        log.extend(batch_bytes(next, b));
        next += flat(b).len() as u64;
    }
    log[0] ^= 0x40; // the first batch's base offset
    let first_n = flat(&batches[0]).len();
    let later: Vec<Rec> = batches[1..].iter().flat_map(flat).collect();
    for interval in INTERVALS {
        let root = tempfile::tempdir().unwrap();
        hand_built(
            root.path(),
            &[
                (log_name(base), log.clone()),
                (index_name(base), index::encode_all(&idx)),
            ],
        );
        let opts = StoreOptions {
            index_interval_bytes: interval,
            ..OPTS
        };
        let seen = open_twice(root.path(), opts, &format!("interval {interval}"));
        assert_eq!((seen.start, seen.end), (base, next), "interval {interval}");
        assert!(seen.reads[..first_n].iter().all(|r| r.is_err()));
        assert_eq!(
            seen.reads[first_n..],
            later.iter().cloned().map(Ok).collect::<Vec<_>>()
        );
        assert_eq!(seen.files[&log_name(base)], log, "nothing truncated");
        assert_eq!(
            seen.files[&index_name(base)][..index::ENTRY_LEN],
            idx[1].encode(),
            "interval {interval}: the index starts at the second batch"
        );
    }
}

fn reopen_with(
    dir: &Path,
    opts: StoreOptions,
) -> (Store, std::sync::Arc<tributary_store::Partition>) {
    let store = Store::open(dir, opts).unwrap();
    let p = store.topic("t").unwrap().partitions()[0].clone();
    (store, p)
}
