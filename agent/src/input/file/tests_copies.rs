//! Rotated copies and compressed rotations are the same content as the file they
//! came from: they continue its lineage from what was acknowledged, and only what
//! is new in them is read.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::reader::{StartAt, Step, Tail};
use super::tests::{Rec, decode, drain, msgs, open_tail, tail_config};

/// Lines `from..to` as a log would hold them (a header first, like a CSV).
fn lines(from: u32, to: u32) -> Vec<u8> {
    let mut out = Vec::new();
    if from == 0 {
        out.extend_from_slice(b"header of every content\n");
    }
    for i in from..to {
        writeln!(out, "line {i:06} of the original").unwrap();
    }
    out
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Read the original to its end in small chunks (positions known along the way)
/// and let the collector acknowledge `acked` bytes of it.
fn read_original(path: &Path, acked: u64) -> (Arc<super::reader::TailConfig>, u64, Vec<Rec>) {
    let cfg = tail_config(1000, 1 << 20);
    let mut t = open_tail(path, cfg.clone(), StartAt::Beginning);
    let recs = drain(&mut t);
    let fid = recs[0].source_id;
    let data = fs::read(path).unwrap();
    let anchor = super::Anchor {
        offset: acked,
        end_hash: super::fingerprint::end_hash_of(&data[..acked as usize]),
        base: 0,
        crc: crc32c::crc32c(&data[..acked as usize]),
    };
    cfg.marks.acked(fid, acked, Some(anchor));
    (cfg, fid, recs)
}

/// Step a compressed file's tail to its end: records, and whether it finished.
fn drain_gz(t: &mut Tail) -> (Vec<Rec>, bool) {
    let mut out = Vec::new();
    loop {
        match t.step().unwrap() {
            Step::Chunk(c) => out.extend(decode(&c)),
            Step::Progress => {}
            Step::Finished => return (out, true),
            Step::Eof | Step::Truncated { .. } => return (out, false),
        }
    }
}

#[test]
fn a_copy_continues_the_original_under_its_identity_from_the_acknowledged_offset() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("web.log");
    let content = lines(0, 3000);
    fs::write(&orig, &content).unwrap();
    // The collector acknowledged a line boundary well inside the file.
    let acked = content.len() as u64 - 40 * 28;
    let (cfg, fid, all) = read_original(&orig, acked);
    assert_eq!(all.len(), 3001);

    // copytruncate: the copy holds everything, plus lines the agent never read.
    let copy = dir.path().join("web.log.1");
    let mut copied = content.clone();
    copied.extend(lines(3000, 3010));
    fs::write(&copy, &copied).unwrap();
    let mut t = open_tail(&copy, cfg.clone(), StartAt::Beginning);
    let info = t
        .registration()
        .expect("a copy is registered before it is read");
    assert_eq!(info.offset, acked);
    assert_eq!(info.lineage.as_ref().map(|l| l.sid), Some(fid));
    let recs = drain(&mut t);
    // From the acknowledged offset: the unacknowledged tail again (the collector
    // drops what it already has), then the 10 lines only the copy holds.
    assert_eq!(recs.len(), 40 + 10);
    assert_eq!(recs[0].offset, acked);
    assert!(recs.iter().all(|r| r.source_id == fid));
    assert!(recs.iter().all(|r| r.path == orig.to_str().unwrap()));
    assert_eq!(recs.last().unwrap().msg, b"line 003009 of the original");
    for r in &recs[..40] {
        let same = all.iter().find(|o| o.offset == r.offset).unwrap();
        assert_eq!(same.msg, r.msg, "same bytes at the same offset");
    }
}

#[test]
fn a_shorter_copy_is_the_same_content_and_other_bytes_are_a_new_source() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("app.log");
    let content = lines(0, 3000);
    fs::write(&orig, &content).unwrap();
    let (cfg, fid, _) = read_original(&orig, content.len() as u64);

    // Taken before the last lines were written (and acknowledged): everything in it
    // was delivered. It continues at the last known position it holds, under the
    // original's identity, so what it sends is dropped as duplicates.
    let short = dir.path().join("app.log.1");
    let cut = content.len() - 28 * 500;
    fs::write(&short, &content[..cut]).unwrap();
    let mut t = open_tail(&short, cfg.clone(), StartAt::Beginning);
    let recs = drain(&mut t);
    assert!(recs.iter().all(|r| r.source_id == fid));
    assert!(
        recs.len() < 40,
        "only the bytes after the last known position: {}",
        recs.len()
    );

    // The same header but other lines: a new source, read from 0.
    let other = dir.path().join("app.log.2");
    let mut data = b"header of every content\n".to_vec();
    for i in 0..3000 {
        writeln!(data, "line {i:06} of another one").unwrap();
    }
    fs::write(&other, &data).unwrap();
    // While it is young it may be a copy still being written: not opened yet.
    let key = super::fingerprint::FileKey::of(&fs::metadata(&other).unwrap());
    let err = Tail::open(cfg.clone(), &other, key, StartAt::Beginning)
        .err()
        .expect("a young look-alike waits");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    let mut t = loop {
        match Tail::open(cfg.clone(), &other, key, StartAt::Beginning) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            r => break r.unwrap().unwrap(),
        }
    };
    assert!(t.registration().is_some_and(|r| r.lineage.is_none()));
    let recs = drain(&mut t);
    assert_eq!(recs.len(), 3001);
    assert!(recs.iter().all(|r| r.source_id != fid));

    // A file created under the original's own name (rename-and-create) is new
    // content even when it starts with the same bytes.
    fs::rename(&orig, dir.path().join("app.log.old")).unwrap();
    fs::write(&orig, &content[..cut]).unwrap();
    let key = super::fingerprint::FileKey::of(&fs::metadata(&orig).unwrap());
    let mut t = loop {
        match Tail::open(cfg.clone(), &orig, key, StartAt::Beginning) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            r => break r.unwrap().unwrap(),
        }
    };
    let recs = drain(&mut t);
    assert_eq!(recs[0].offset, 0);
    assert!(recs.iter().all(|r| r.source_id != fid));
}

#[test]
fn a_compressed_rotation_of_a_finished_file_is_skipped_and_of_an_unfinished_one_yields_its_tail() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("web.log");
    let content = lines(0, 5000);
    fs::write(&orig, &content).unwrap();
    let (cfg, fid, _) = read_original(&orig, content.len() as u64);

    // Read to its end already: nothing to read, and it is registered with its
    // decompressed size so that a restart skips it without decompressing.
    let done = dir.path().join("web.log.2.gz");
    fs::write(&done, gz(&content)).unwrap();
    let mut t = open_tail(&done, cfg.clone(), StartAt::Beginning);
    let (recs, finished) = drain_gz(&mut t);
    assert!(finished && recs.is_empty());
    let info = t.registration().unwrap();
    assert_eq!(info.total, Some(content.len() as u64));
    assert_eq!(info.lineage.map(|l| l.sid), Some(fid));
    let closed = t.closed(false);
    assert!(closed.done);
    // Reopened with that state: done at once, nothing decompressed.
    let mut again = open_tail(&done, cfg.clone(), StartAt::Resume(closed));
    assert!(matches!(again.step().unwrap(), Step::Finished));

    // The original had lines the agent never read before it was compressed away.
    let mut more = content.clone();
    more.extend(lines(5000, 5007));
    more.extend_from_slice(b"a last line without newline");
    let tail_gz = dir.path().join("web.log.1.gz");
    fs::write(&tail_gz, gz(&more)).unwrap();
    let mut t = open_tail(&tail_gz, cfg.clone(), StartAt::Beginning);
    let (recs, finished) = drain_gz(&mut t);
    assert!(finished);
    assert_eq!(recs.len(), 8);
    assert_eq!(recs[0].offset, content.len() as u64);
    assert_eq!(recs[7].msg, b"a last line without newline");
    assert!(recs.iter().all(|r| r.source_id == fid));

    // A compressed file of content never seen is read whole, as its own source.
    let mut other = b"another header\n".to_vec();
    other.extend(lines(1, 100));
    let new = dir.path().join("web.log.3.gz");
    fs::write(&new, gz(&other)).unwrap();
    let mut t = open_tail(&new, cfg, StartAt::Beginning);
    let (recs, finished) = drain_gz(&mut t);
    assert!(finished);
    assert_eq!(msgs(&recs)[0], b"another header");
    assert_eq!(recs.len(), 100);
    assert!(recs.iter().all(|r| r.source_id != fid));
}

#[test]
fn a_corrupt_or_cut_compressed_file_is_refused_before_any_line() {
    let dir = tempfile::tempdir().unwrap();
    let content = lines(0, 2000);
    let whole = gz(&content);
    let cut = dir.path().join("a.log.1.gz");
    fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    // Pretend it was written long ago (not one being written right now).
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let mut t = open_tail(&cut, tail_config(1000, 1 << 20), StartAt::Beginning);
    let err = loop {
        match t.step() {
            Ok(Step::Progress) => {}
            Ok(other) => panic!("no records from a cut file: {other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(
        err.to_string().contains("not a complete gzip file"),
        "{err}"
    );
    // One being written right now waits for the writer instead.
    let fresh = dir.path().join("a.log.2.gz");
    fs::write(&fresh, &whole[..whole.len() / 2]).unwrap();
    let mut t = open_tail(&fresh, tail_config(1000, 1 << 20), StartAt::Beginning);
    let err = loop {
        match t.step() {
            Ok(Step::Progress) => {}
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
}

#[test]
fn the_copy_of_a_later_generation_continues_that_generation() {
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("ct.log");
    fs::write(&orig, lines(0, 500)).unwrap();
    let cfg = tail_config(1000, 1 << 20);
    let mut t = open_tail(&orig, cfg.clone(), StartAt::Beginning);
    let first = drain(&mut t);
    // copytruncate: truncated, then the same header and new lines.
    fs::write(&orig, b"").unwrap();
    let mut again = lines(0, 0);
    again.extend(lines(1000, 1400));
    fs::write(&orig, &again).unwrap();
    let second = drain(&mut t);
    assert_eq!(second.len(), 401);
    let gen1 = second[0].source_id;
    assert_ne!(gen1, first[0].source_id);
    let copy = dir.path().join("ct.log.1");
    fs::write(&copy, &again).unwrap();
    let mut c = open_tail(&copy, cfg, StartAt::Beginning);
    let recs = drain(&mut c);
    assert!(
        recs.iter().all(|r| r.source_id == gen1),
        "{:?}",
        recs.first()
    );
}

#[test]
fn a_generation_rewritten_while_nobody_looked_is_told_apart_by_its_registered_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ct.log");
    fs::write(&p, lines(0, 50)).unwrap();
    let cfg = tail_config(1 << 16, 1 << 20);
    let mut t = open_tail(&p, cfg.clone(), StartAt::Beginning);
    drain(&mut t);
    // copytruncate, then a new generation read once; its registration carries the
    // anchor where reading stands (nothing of it is acknowledged yet).
    let mut gen1 = lines(0, 0);
    gen1.extend(lines(100, 150));
    fs::write(&p, &gen1).unwrap();
    assert_eq!(drain(&mut t).len(), 51);
    let info = t.registration().expect("a new generation registers");
    let proof = info.proof.expect("with the anchor where reading stands");
    assert!(proof.is_strong(info.mark.fp_len));
    let mut cp = t.closed(false);
    cp.offset = 0;
    cp.end_hash = 0;
    cp.crc = Some((0, 0));
    cp.proof = Some(proof);
    drop(t);
    // The same content, grown: still that generation, from its acknowledged offset.
    let mut grown = gen1.clone();
    grown.extend(lines(150, 160));
    fs::write(&p, &grown).unwrap();
    let mut t = open_tail(&p, cfg.clone(), StartAt::Resume(cp.clone()));
    assert_eq!(t.closed(false).generation, cp.generation);
    assert_eq!(drain(&mut t).len(), 61);
    // Truncated again while the agent was down: the same first line, other lines.
    let mut gen2 = lines(0, 0);
    gen2.extend(lines(200, 260));
    fs::write(&p, &gen2).unwrap();
    let mut t = open_tail(&p, cfg, StartAt::Resume(cp.clone()));
    assert_eq!(
        t.closed(false).generation,
        cp.generation + 1,
        "a new generation"
    );
    assert_eq!(drain(&mut t).len(), 61);
}
