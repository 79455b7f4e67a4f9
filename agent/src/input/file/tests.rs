//! Tests of the file reader on real files in temporary directories, and the
//! helpers the other file input tests share. Nothing sleeps and
//! hopes: tests poll the chunk channel (or `/proc/self/fd`) until the expected state
//! arrives, with a generous deadline.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tributary_common::record::{FLAG_PARTIAL, blocks};

use super::fingerprint::FileKey;
use super::reader::{StartAt, Step, Tail, TailConfig};
use super::*;

pub(super) const DEADLINE: Duration = Duration::from_secs(30);

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rec {
    pub path: String,
    pub source_id: u64,
    pub offset: u64,
    pub flags: u8,
    pub msg: Vec<u8>,
}

/// Decode a chunk, checking that it is one valid block consistent with its metadata.
pub(super) fn decode(c: &Chunk) -> Vec<Rec> {
    let bs: Vec<_> = blocks(&c.payload, true)
        .collect::<Result<_, _>>()
        .expect("valid payload");
    assert_eq!(bs.len(), 1, "one block per chunk");
    let h = bs[0].header;
    // The block carries the records' identity: the file's own, or for a copy the
    // lineage it continues (then the chunk's version id is the copy's own).
    assert_ne!(c.source_id, 0);
    assert_ne!(h.source_id, 0);
    assert_eq!(h.source_id == c.source_id, h.source == &*c.path);
    assert_eq!(h.host, "test-host");
    assert_eq!(h.record_count, c.records);
    let recs: Vec<Rec> = bs[0]
        .records()
        .map(|r| {
            let r = r.unwrap();
            assert!(r.timestamp_ms > 1_600_000_000_000);
            Rec {
                path: h.source.to_string(),
                source_id: h.source_id,
                offset: r.source_offset,
                flags: r.flags,
                msg: r.message.to_vec(),
            }
        })
        .collect();
    assert_eq!(recs.len() as u32, c.records);
    assert_eq!(recs[0].offset, c.start_offset);
    let last = recs.last().unwrap();
    assert!(c.end_offset >= last.offset + last.msg.len() as u64);
    recs
}

pub(super) fn tail_config(chunk_bytes: usize, max_line_bytes: usize) -> Arc<TailConfig> {
    Arc::new(TailConfig {
        topic: "t".into(),
        host: "test-host".into(),
        fields: Arc::from(&br#"{"env":"test"}"#[..]),
        chunk_bytes,
        max_line_bytes,
        json: None,
        format: None,
        multiline: None,
        marks: Arc::default(),
    })
}

pub(super) fn open_tail(path: &Path, cfg: Arc<TailConfig>, start: StartAt) -> Tail {
    let key = FileKey::of(&fs::metadata(path).unwrap());
    Tail::open(cfg, path, key, start).unwrap().unwrap()
}

/// Step a tail until it reports the end of the file.
pub(super) fn drain(tail: &mut Tail) -> Vec<Rec> {
    let mut out = Vec::new();
    loop {
        match tail.step().unwrap() {
            Step::Chunk(c) => out.extend(decode(&c)),
            Step::Progress | Step::Truncated { .. } => {}
            Step::Eof | Step::Finished => return out,
        }
    }
}

pub(super) fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

pub(super) fn msgs(recs: &[Rec]) -> Vec<&[u8]> {
    recs.iter().map(|r| r.msg.as_slice()).collect()
}

/// The records a file's content must produce (complete lines only), by a plain model.
pub(super) fn model(content: &[u8], max: usize) -> Vec<(u64, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in content.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let mut line = &content[start..i];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let mut s = 0;
        loop {
            let end = (s + max).min(line.len());
            let partial = line.len() - s > max;
            out.push((
                (start + s) as u64,
                if partial { FLAG_PARTIAL } else { 0 },
                line[s..end].to_vec(),
            ));
            if !partial {
                break;
            }
            s = end;
        }
        start = i + 1;
    }
    out
}

// ---------------------------------------------------------------- line splitting

#[test]
fn lines_split_on_lf_and_crlf_keep_empty_lines_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let content: &[u8] = b"one\ntwo\r\n\n\r\nbin\x00\xff\xfe\rx\n";
    fs::write(&p, content).unwrap();
    let mut t = open_tail(&p, tail_config(1 << 16, 1024), StartAt::Beginning);
    let recs = drain(&mut t);
    assert_eq!(
        msgs(&recs),
        vec![&b"one"[..], b"two", b"", b"", b"bin\x00\xff\xfe\rx"]
    );
    assert_eq!(
        recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 4, 9, 10, 12]
    );
    assert!(recs.iter().all(|r| r.flags == 0));
    assert_eq!(t.offset(), content.len() as u64);
}

#[test]
fn unfinished_line_is_held_until_completed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    fs::write(&p, b"first\nsec").unwrap();
    let mut t = open_tail(&p, tail_config(1 << 16, 1024), StartAt::Beginning);
    let recs = drain(&mut t);
    assert_eq!(msgs(&recs), vec![&b"first"[..]]);
    assert_eq!(t.offset(), 6, "the unfinished line is not consumed");
    append(&p, b"ond");
    assert!(drain(&mut t).is_empty());
    append(&p, b"\r");
    assert!(drain(&mut t).is_empty());
    append(&p, b"\nthird\n");
    let recs = drain(&mut t);
    assert_eq!(msgs(&recs), vec![&b"second"[..], b"third"]);
    assert_eq!((recs[0].offset, recs[1].offset), (6, 14));
}

#[test]
fn long_lines_are_split_and_marked_partial_even_before_the_newline() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    // 10 bytes exactly (one record), 25 bytes (10P 10P 5), 20 bytes + \r (10P 10).
    fs::write(
        &p,
        b"0123456789\nabcdefghijklmnopqrstuvwxy\nABCDEFGHIJKLMNOPQRST\r\n",
    )
    .unwrap();
    let mut t = open_tail(&p, tail_config(7, 10), StartAt::Beginning);
    let recs = drain(&mut t);
    let got: Vec<(u64, u8, &[u8])> = recs
        .iter()
        .map(|r| (r.offset, r.flags, r.msg.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 0, &b"0123456789"[..]),
            (11, FLAG_PARTIAL, b"abcdefghij"),
            (21, FLAG_PARTIAL, b"klmnopqrst"),
            (31, 0, b"uvwxy"),
            (37, FLAG_PARTIAL, b"ABCDEFGHIJ"),
            (47, 0, b"KLMNOPQRST"),
        ]
    );

    // Without a newline, full pieces are emitted as soon as the line is known to be
    // longer than the limit, so memory stays bounded.
    let q = dir.path().join("b.log");
    fs::write(&q, vec![b'z'; 35]).unwrap();
    let mut t = open_tail(&q, tail_config(1 << 16, 10), StartAt::Beginning);
    let recs = drain(&mut t);
    assert_eq!(recs.len(), 3);
    assert!(
        recs.iter()
            .all(|r| r.flags == FLAG_PARTIAL && r.msg.len() == 10)
    );
    assert_eq!(t.offset(), 30);
    append(&q, b"\n");
    let recs = drain(&mut t);
    assert_eq!(
        (recs[0].offset, recs[0].flags, recs[0].msg.len()),
        (30, 0, 5)
    );
}

#[test]
fn records_do_not_depend_on_how_writes_and_reads_were_cut() {
    // A small deterministic generator: lines of 0..40 bytes, some CRLF, some binary.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut content = Vec::new();
    for _ in 0..400 {
        let len = next(40) as usize;
        for _ in 0..len {
            content.push(match next(10) {
                0 => b'\r',
                1 => 0xff,
                _ => b'a' + next(26) as u8,
            });
        }
        if next(4) == 0 {
            content.push(b'\r');
        }
        content.push(b'\n');
    }
    let max = 9;
    let expected = model(&content, max);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..6 {
        let p = dir.path().join(format!("{round}.log"));
        File::create(&p).unwrap();
        let chunk = 1 + next(64) as usize;
        let mut t = open_tail(&p, tail_config(chunk, max), StartAt::Beginning);
        let mut got = Vec::new();
        let mut written = 0;
        while written < content.len() {
            let n = (1 + next(50) as usize).min(content.len() - written);
            append(&p, &content[written..written + n]);
            written += n;
            got.extend(drain(&mut t));
        }
        let got: Vec<(u64, u8, Vec<u8>)> = got
            .into_iter()
            .map(|r| (r.offset, r.flags, r.msg))
            .collect();
        assert_eq!(got, expected, "round {round}, chunk {chunk}");
    }
}

#[test]
fn chunks_carry_identity_and_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let mut content = Vec::new();
    for i in 0..1000 {
        writeln!(content, "line {i}").unwrap();
    }
    fs::write(&p, &content).unwrap();
    let mut t = open_tail(&p, tail_config(100, 1024), StartAt::Beginning);
    let mut end = 0;
    let mut ids = Vec::new();
    loop {
        match t.step().unwrap() {
            Step::Chunk(c) => {
                assert_eq!(c.start_offset, end);
                end = c.end_offset;
                ids.push(c.source_id);
                let bs: Vec<_> = blocks(&c.payload, true).map(|b| b.unwrap()).collect();
                assert_eq!(bs[0].header.fields, br#"{"env":"test"}"#);
                assert_eq!(&*c.topic, "t");
            }
            Step::Progress | Step::Truncated { .. } => {}
            Step::Eof | Step::Finished => break,
        }
    }
    assert_eq!(end, content.len() as u64);
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn resume_tells_rewritten_content_from_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    fs::write(&p, b"header\nold one\nold two\n").unwrap();
    let cfg = tail_config(1 << 16, 1 << 20);
    let mut t = open_tail(&p, cfg.clone(), StartAt::Beginning);
    assert_eq!(drain(&mut t).len(), 3);
    let closed = t.closed(false);
    assert_eq!(closed.offset, 23);
    assert_ne!(closed.end_hash, 0);
    drop(t);

    // The same content, grown: continue at the offset, same generation.
    append(&p, b"old three\n");
    let mut t = open_tail(&p, cfg.clone(), StartAt::Resume(closed.clone()));
    let recs = drain(&mut t);
    assert_eq!(msgs(&recs), vec![&b"old three"[..]]);
    assert_eq!(recs[0].offset, 23);
    drop(t);

    // Truncated and rewritten past the old offset with the same first line (while
    // nobody looked): the bytes before the offset differ, so it is a new generation
    // read from 0.
    // (Longer than the first line plus 64 bytes: a new generation that short waits
    // a moment for more, see `Tail::step`.)
    fs::write(
        &p,
        b"header\nnew content, longer than before, and long enough to tell it apart from others\n",
    )
    .unwrap();
    let mut t = open_tail(&p, cfg, StartAt::Resume(closed.clone()));
    let recs = drain(&mut t);
    assert_eq!(
        msgs(&recs),
        vec![
            &b"header"[..],
            b"new content, longer than before, and long enough to tell it apart from others"
        ]
    );
    assert_eq!(recs[0].offset, 0);
    assert_eq!(t.closed(false).generation, closed.generation + 1);
}

#[test]
fn a_live_reader_sees_a_refill_past_its_position_with_the_same_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    fs::write(&p, b"header\nold one\n").unwrap();
    let mut t = open_tail(&p, tail_config(1 << 16, 1 << 20), StartAt::Beginning);
    assert_eq!(drain(&mut t).len(), 2);
    // Between two looks: truncated and written again, longer than before, same header.
    fs::write(
        &p,
        b"header\nNEW CONTENT, longer, and long enough to tell it apart from others\n",
    )
    .unwrap();
    assert!(matches!(t.step().unwrap(), Step::Truncated { at: 15, .. }));
    let recs = drain(&mut t);
    assert_eq!(
        msgs(&recs),
        vec![
            &b"header"[..],
            b"NEW CONTENT, longer, and long enough to tell it apart from others"
        ]
    );
    assert_eq!(t.closed(false).generation, 1);
}

/// Reader throughput: a 100 MB file through [`Tail::step`] into chunks.
/// `cargo test -p tributary-agent --release input::file::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore = "writes 100 MB; run by hand for the figure"]
fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.log");
    let line = format!(
        "{} {}\n",
        "2026-11-25T14:01:34.123Z INFO api:",
        "x".repeat(114)
    );
    let mut content = Vec::with_capacity(100 << 20);
    while content.len() + line.len() <= 100_000_000 {
        content.extend_from_slice(line.as_bytes());
    }
    fs::write(&p, &content).unwrap();
    let mut best = 0f64;
    for round in 0..3 {
        let mut t = open_tail(&p, tail_config(256 << 10, 1 << 20), StartAt::Beginning);
        let started = std::time::Instant::now();
        let (mut records, mut bytes) = (0u64, 0usize);
        loop {
            match t.step().unwrap() {
                Step::Chunk(c) => {
                    records += u64::from(c.records);
                    bytes += c.payload.len();
                }
                Step::Progress | Step::Truncated { .. } => {}
                Step::Eof | Step::Finished => break,
            }
        }
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(records as usize, content.len() / line.len());
        eprintln!(
            "round {round}: {records} lines of {} B, {:.2} M lines/s, {:.0} MB/s in, {:.0} MB/s payload",
            line.len(),
            records as f64 / secs / 1e6,
            content.len() as f64 / secs / 1e6,
            bytes as f64 / secs / 1e6
        );
        best = best.max(records as f64 / secs);
    }
    eprintln!("best: {:.2} M lines/s", best / 1e6);
}
