//! Records made of more than one line: container runtime pieces merged into lines
//! (`format`), then lines grouped into records (`multiline`).
//!
//! [`encode_assembled`] is the counterpart of `encode_lines` for inputs with a
//! `format` or `multiline`. It works on the reader's buffer from a record boundary,
//! so nothing is kept between calls: what it does not consume (an unfinished line,
//! the pieces of an unfinished runtime line, the lines of a record that the next
//! line may still continue) stays at the front of the buffer and is read again with
//! what follows. The consumed offset is always a record boundary, which is what
//! makes checkpoints exact: a record still being assembled is never acknowledged,
//! and after a restart reading resumes at its first line.
//!
//! Every record's source offset is where its last line starts: offsets grow with the
//! records, and a record that a restart rebuilds longer than it was sent (more
//! continuation lines came after a timeout flush) is stored again rather than lost.

use memchr::memchr;
use tributary_common::record::{BlockWriter, FLAG_PARTIAL};

use super::LineRules;
use crate::input::container::{Format, Stream};
use crate::input::multiline::{Multiline, State};

/// How far to go at the end of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Keep what more lines may still change.
    Wait,
    /// No line came for `timeout`, or the agent stops: the complete lines read end
    /// their record; an unfinished line stays.
    Pending,
    /// The file is gone: everything, the unfinished line too.
    All,
}

/// The assembly rules of an input.
#[derive(Clone, Copy)]
pub(crate) struct Assembly<'a> {
    pub format: Option<Format>,
    pub multiline: Option<&'a Multiline>,
}

/// One line after runtime pieces are merged.
struct Line<'d> {
    /// Index in the data of its first byte (its first piece's).
    start: usize,
    /// Where its last piece starts (the record offset when it ends a record).
    last: usize,
    message: &'d [u8],
    time: Option<i64>,
    stream: Option<Stream>,
}

/// The record being assembled.
struct Record {
    start: usize,
    last: usize,
    lines: usize,
    message: Vec<u8>,
    /// Length of the message without the blank lines at its end.
    trimmed: usize,
    time: Option<i64>,
    stream: Option<Stream>,
    state: State,
}

/// A runtime line whose pieces are still coming.
struct Pieces {
    start: usize,
    last: usize,
    message: Vec<u8>,
    time: Option<i64>,
    stream: Option<Stream>,
}

impl Pieces {
    fn line(&self) -> Line<'_> {
        Line {
            start: self.start,
            last: self.last,
            message: &self.message,
            time: self.time,
            stream: self.stream,
        }
    }
}

struct Out<'b, 'o> {
    rules: LineRules<'b>,
    block: &'o mut BlockWriter,
    out: &'o mut Vec<u8>,
    base: u64,
}

impl Out<'_, '_> {
    fn push(
        &mut self,
        flags: u8,
        last: usize,
        message: &[u8],
        time: Option<i64>,
        stream: Option<Stream>,
    ) {
        let at = self.base + last as u64;
        let ts = time.unwrap_or(self.rules.ts);
        if let Some(j) = self.rules.json
            && message.len() <= self.rules.max_line
        {
            let p = j.parse(message);
            let mut fields = p.fields;
            if let Some(s) = stream {
                add_stream(&mut fields, s);
            }
            let m = p.message.as_deref().unwrap_or(message);
            self.block.push(
                self.out,
                flags,
                p.timestamp_ms.unwrap_or(ts),
                at,
                &fields,
                m,
            );
            return;
        }
        let fields = stream.map_or(&b""[..], Stream::fields);
        self.block.push(self.out, flags, ts, at, fields, message);
    }

    /// A line longer than `max`: pieces, all but the last marked partial. Their
    /// offsets count from the line's start (a merged line's message is never longer
    /// than the bytes it came from, so they stay below the next line's).
    fn push_long(&mut self, line: &Line<'_>, max: usize) {
        let mut s = 0;
        while line.message.len() - s > max {
            let m = &line.message[s..s + max];
            self.push(FLAG_PARTIAL, line.start + s, m, line.time, line.stream);
            s += max;
        }
        self.push(
            0,
            line.start + s,
            &line.message[s..],
            line.time,
            line.stream,
        );
    }
}

/// `{"a":1}` + stream → `{"a":1,"stream":"stdout"}` (the parsed line's own
/// `stream` key wins).
fn add_stream(fields: &mut Vec<u8>, s: Stream) {
    if fields.windows(9).any(|w| w == b"\"stream\":") {
        return;
    }
    if fields.len() >= 2 && fields.last() == Some(&b'}') {
        fields.pop();
        if fields.len() > 1 {
            fields.push(b',');
        }
        fields.extend_from_slice(b"\"stream\":\"");
        fields.extend_from_slice(s.name().as_bytes());
        fields.extend_from_slice(b"\"}");
    }
}

struct Assembler<'m> {
    ml: Option<&'m Multiline>,
    record: Option<Record>,
    /// Everything before it was emitted.
    consumed: usize,
}

impl Assembler<'_> {
    fn emit_record(&mut self, o: &mut Out<'_, '_>, flags: u8) {
        if let Some(r) = self.record.take() {
            o.push(flags, r.last, &r.message[..r.trimmed], r.time, r.stream);
        }
    }

    /// One complete line, ending at `end` (past its newline).
    fn line(&mut self, o: &mut Out<'_, '_>, line: Line<'_>, end: usize) {
        let Some(ml) = self.ml else {
            if line.message.len() > o.rules.max_line {
                o.push_long(&line, o.rules.max_line);
            } else {
                o.push(0, line.last, line.message, line.time, line.stream);
            }
            self.consumed = end;
            return;
        };
        let max = o.rules.max_line.min(ml.max_bytes);
        if line.message.len() > max {
            // Fits in no record: the record before it ends, the line goes in pieces.
            self.emit_record(o, 0);
            o.push_long(&line, max);
            self.consumed = end;
            return;
        }
        let state;
        if let Some(r) = &mut self.record {
            if ml.continues(&mut r.state, line.message) {
                let len = r.message.len() + 1 + line.message.len();
                if r.lines < ml.max_lines && len <= ml.max_bytes {
                    r.message.push(b'\n');
                    r.message.extend_from_slice(line.message);
                    if !line.message.is_empty() {
                        r.trimmed = r.message.len();
                    }
                    r.lines += 1;
                    r.last = line.last;
                    return;
                }
                // Cut: this record is marked partial, the line starts the next one.
                state = r.state;
                self.emit_record(o, FLAG_PARTIAL);
            } else {
                self.emit_record(o, 0);
                state = ml.first(line.message);
            }
        } else {
            state = ml.first(line.message);
        }
        self.consumed = line.start;
        self.record = Some(Record {
            start: line.start,
            last: line.last,
            lines: 1,
            message: line.message.to_vec(),
            trimmed: line.message.len(),
            time: line.time,
            stream: line.stream,
            state,
        });
    }

    /// Whatever is pending (pieces of a runtime line, a record) ends at `at`.
    fn end_before(&mut self, o: &mut Out<'_, '_>, pieces: &mut Option<Pieces>, at: usize) {
        if let Some(p) = pieces.take() {
            self.line(o, p.line(), at);
        }
        self.emit_record(o, 0);
        self.consumed = at;
    }

    /// Where the unconsumed data starts.
    fn keep_from(&self, pieces: &Option<Pieces>, pos: usize) -> usize {
        match (&self.record, pieces) {
            (Some(r), _) => r.start,
            (None, Some(p)) => p.start,
            (None, None) => pos,
        }
    }
}

/// Encode the records of `data` (which starts at file offset `base`, on a record
/// boundary); returns how many bytes were consumed. See the module doc.
///
/// A line longer than `max_line` as read (before any decoding) is never decoded: it
/// ends the record before it and leaves in pieces of `max_line` bytes from its
/// start, the last (shorter) one then read like any line. Full pieces leave before
/// the newline arrives, so however the reads were cut the records are the same.
pub(crate) fn encode_assembled(
    data: &[u8],
    base: u64,
    rules: LineRules<'_>,
    asm: Assembly<'_>,
    end: End,
    block: &mut BlockWriter,
    out: &mut Vec<u8>,
) -> usize {
    let mut o = Out {
        rules,
        block,
        out,
        base,
    };
    let mut a = Assembler {
        ml: asm.multiline,
        record: None,
        consumed: 0,
    };
    let mut pieces: Option<Pieces> = None;
    let max = rules.max_line;
    let mut pos = 0;
    loop {
        let (line_end, next) = match memchr(b'\n', &data[pos..]) {
            Some(i) => {
                let nl = pos + i;
                let e = if nl > pos && data[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                (e, nl + 1)
            }
            None if end == End::All && pos < data.len() => (data.len(), data.len()),
            None => break,
        };
        let mut start = pos;
        if line_end - start > max {
            a.end_before(&mut o, &mut pieces, start);
            while line_end - start > max {
                o.push(FLAG_PARTIAL, start, &data[start..start + max], None, None);
                start += max;
            }
            a.consumed = start;
        }
        let raw = &data[start..line_end];
        let plain = Line {
            start,
            last: start,
            message: raw,
            time: None,
            stream: None,
        };
        match asm.format.map(|f| f.decode(raw)) {
            None => a.line(&mut o, plain, next),
            // A whole line in one piece (the usual case) is not copied.
            Some(Ok(piece)) if pieces.is_none() && !piece.partial => a.line(
                &mut o,
                Line {
                    start,
                    last: start,
                    message: &piece.message,
                    time: piece.time_ms,
                    stream: Some(piece.stream),
                },
                next,
            ),
            Some(Ok(piece)) => {
                let p = pieces.get_or_insert_with(|| Pieces {
                    start,
                    last: start,
                    message: Vec::new(),
                    time: piece.time_ms,
                    stream: Some(piece.stream),
                });
                p.last = start;
                p.message.extend_from_slice(&piece.message);
                // Merged lines are bounded like any line: past max_line the line
                // ends here and the next pieces start another.
                if (!piece.partial || p.message.len() >= max)
                    && let Some(p) = pieces.take()
                {
                    a.line(&mut o, p.line(), next);
                }
            }
            // Not a runtime line: kept as it is, after the pieces before it.
            Some(Err(_)) => {
                if let Some(p) = pieces.take() {
                    a.line(&mut o, p.line(), start);
                }
                a.line(&mut o, plain, next);
            }
        }
        pos = next;
    }
    if end != End::Wait {
        a.end_before(&mut o, &mut pieces, pos);
        return a.consumed;
    }
    // An unfinished line longer than max_line (+1 for a `\r` that may come): what is
    // before it ends, and its full pieces leave now, so a reader never holds more
    // than a record and a line.
    if data.len() - pos > max.saturating_add(1) {
        a.end_before(&mut o, &mut pieces, pos);
        let mut s = pos;
        while data.len() - s > max.saturating_add(1) {
            o.push(FLAG_PARTIAL, s, &data[s..s + max], None, None);
            s += max;
        }
        return s;
    }
    a.keep_from(&pieces, pos)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use tributary_common::record::blocks;

    use super::*;
    use crate::input::multiline::Rule;

    /// (flags, source offset, message, record fields, time)
    type Rec = (u8, u64, String, String, i64);

    fn ml(rule: Rule, max_lines: usize) -> Multiline {
        Multiline {
            rule,
            timeout: Duration::from_secs(1),
            max_lines,
            max_bytes: 1 << 20,
        }
    }

    /// Feed `data` to the assembler as a reader would, in reads cut at `cuts`,
    /// then close the file (`End::All`).
    fn run(data: &[u8], cuts: &[usize], asm: Assembly<'_>, max_line: usize) -> Vec<Rec> {
        let mut recs = Vec::new();
        let mut offset = 0usize;
        let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c < data.len()).collect();
        ends.sort_unstable();
        ends.push(data.len());
        let step = |to: usize, end: End, offset: &mut usize, recs: &mut Vec<Rec>| {
            let mut out = Vec::new();
            let mut block = BlockWriter::begin(&mut out, "h", "/p", 1, b"");
            let rules = LineRules {
                max_line,
                ts: 1_700_000_000_000,
                json: None,
            };
            let n = encode_assembled(
                &data[*offset..to],
                *offset as u64,
                rules,
                asm,
                end,
                &mut block,
                &mut out,
            );
            block.finish(&mut out);
            for b in blocks(&out, true) {
                for r in b.unwrap().records() {
                    let r = r.unwrap();
                    recs.push((
                        r.flags & FLAG_PARTIAL,
                        r.source_offset,
                        String::from_utf8_lossy(r.message).into_owned(),
                        String::from_utf8_lossy(r.fields).into_owned(),
                        r.timestamp_ms,
                    ));
                }
            }
            *offset += n;
        };
        for e in ends {
            step(e, End::Wait, &mut offset, &mut recs);
        }
        step(data.len(), End::All, &mut offset, &mut recs);
        assert_eq!(offset, data.len());
        recs
    }

    fn messages(r: &[Rec]) -> Vec<&str> {
        r.iter().map(|r| r.2.as_str()).collect()
    }

    const JAVA: &str = "2024-01-01 INFO start\n\
Exception in thread \"main\" java.lang.RuntimeException: outer\n\
\tat Main.main(Main.java:5)\n\
Caused by: java.lang.IllegalStateException: inner\n\
\tat Main.inner(Main.java:10)\n\
\t... 1 more\n\
2024-01-01 INFO next\r\n\
2024-01-01 INFO last";

    #[test]
    fn java_records_and_offsets() {
        let m = ml(Rule::Java, 500);
        let asm = Assembly {
            format: None,
            multiline: Some(&m),
        };
        let r = run(JAVA.as_bytes(), &[], asm, 1 << 20);
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r[0].2, "2024-01-01 INFO start");
        assert_eq!(r[1].2.lines().count(), 5);
        assert_eq!(r[2].2, "2024-01-01 INFO next");
        assert_eq!(r[3].2, "2024-01-01 INFO last");
        // Offsets: where each record's last line starts.
        assert_eq!(r[1].1 as usize, JAVA.find("\t... 1 more").unwrap());
        assert!(r.windows(2).all(|w| w[0].1 < w[1].1));
    }

    #[test]
    fn waits_for_the_next_line_then_pending_flushes() {
        let m = ml(Rule::Java, 500);
        let asm = Assembly {
            format: None,
            multiline: Some(&m),
        };
        let data = b"first\n\tat a\nsecond\n\tat b\n";
        let mut out = Vec::new();
        let mut block = BlockWriter::begin(&mut out, "h", "/p", 1, b"");
        let rules = LineRules {
            max_line: 1024,
            ts: 1,
            json: None,
        };
        let n = encode_assembled(data, 0, rules, asm, End::Wait, &mut block, &mut out);
        assert_eq!(block.count(), 1);
        assert_eq!(n, 12, "the second record may still grow: kept");
        let n2 = encode_assembled(
            &data[n..],
            n as u64,
            rules,
            asm,
            End::Pending,
            &mut block,
            &mut out,
        );
        assert_eq!(n + n2, data.len());
        assert_eq!(block.count(), 2);
    }

    #[test]
    fn max_lines_cuts_and_marks() {
        let m = ml(Rule::Java, 3);
        let asm = Assembly {
            format: None,
            multiline: Some(&m),
        };
        let r = run(b"e\n\t1\n\t2\n\t3\n\t4\nnext\n", &[], asm, 1024);
        assert_eq!(messages(&r), ["e\n\t1\n\t2", "\t3\n\t4", "next"]);
        assert_eq!(r[0].0, FLAG_PARTIAL);
        assert_eq!(r[1].0, 0);
    }

    #[test]
    fn max_bytes_cuts_and_long_lines_go_in_pieces() {
        let mut m = ml(Rule::Java, 500);
        m.max_bytes = 10;
        let asm = Assembly {
            format: None,
            multiline: Some(&m),
        };
        let r = run(
            b"abcd\n\tefg\n\thij\nxxxxxxxxxxxxxxxxxxxxxxxx\nz\n",
            &[],
            asm,
            1024,
        );
        assert_eq!(
            messages(&r),
            [
                "abcd\n\tefg",
                "\thij",
                "xxxxxxxxxx",
                "xxxxxxxxxx",
                "xxxx",
                "z"
            ]
        );
        assert_eq!(r[0].0, FLAG_PARTIAL);
        assert_eq!((r[2].0, r[3].0, r[4].0), (FLAG_PARTIAL, FLAG_PARTIAL, 0));
        assert!(r.windows(2).all(|w| w[0].1 < w[1].1), "{r:?}");
    }

    const CRI: &str = "2024-05-01T10:00:00.000000001Z stdout F hello\n\
2024-05-01T10:00:01.5Z stderr P part one, \n\
2024-05-01T10:00:01.6Z stderr P part two, \n\
2024-05-01T10:00:01.7Z stderr F part three\n\
not a cri line\n\
2024-05-01T10:00:02Z stdout F \n";

    #[test]
    fn cri_pieces_merge() {
        let asm = Assembly {
            format: Some(Format::Cri),
            multiline: None,
        };
        let r = run(CRI.as_bytes(), &[], asm, 1024);
        assert_eq!(
            messages(&r),
            [
                "hello",
                "part one, part two, part three",
                "not a cri line",
                ""
            ]
        );
        assert_eq!(r[0].3, r#"{"stream":"stdout"}"#);
        assert_eq!(r[1].3, r#"{"stream":"stderr"}"#);
        assert_eq!(r[1].4, 1_714_557_601_500, "the first piece's time");
        assert_eq!(r[2].3, "");
        assert_eq!(r[2].4, 1_700_000_000_000, "read time for other lines");
    }

    #[test]
    fn docker_pieces_merge_then_multiline() {
        let text = concat!(
            r#"{"log":"Exception in thread \"main\" java.lang.Error: x\n","stream":"stderr","time":"2024-05-01T10:00:00Z"}"#,
            "\n",
            r#"{"log":"\tat A.b(A.java:1","stream":"stderr","time":"2024-05-01T10:00:00Z"}"#,
            "\n",
            r#"{"log":"23)\n","stream":"stderr","time":"2024-05-01T10:00:00Z"}"#,
            "\n",
            r#"{"log":"done\n","stream":"stdout","time":"2024-05-01T10:00:01Z"}"#,
            "\n",
        );
        let m = ml(Rule::Java, 500);
        let asm = Assembly {
            format: Some(Format::Docker),
            multiline: Some(&m),
        };
        let r = run(text.as_bytes(), &[], asm, 1024);
        assert_eq!(
            messages(&r),
            [
                "Exception in thread \"main\" java.lang.Error: x\n\tat A.b(A.java:123)",
                "done"
            ]
        );
    }

    proptest! {
        /// However the reads are cut, the records are the same: what makes a
        /// restart from any checkpoint rebuild the same records.
        #[test]
        fn reads_cut_anywhere_give_the_same_records(
            cuts in proptest::collection::vec(0usize..400, 0..8),
            which in 0usize..3,
            max_line in 30usize..120,
        ) {
            let java = ml(Rule::Java, 4);
            let (text, asm): (String, Assembly<'_>) = match which {
                0 => (JAVA.repeat(3), Assembly { format: None, multiline: Some(&java) }),
                1 => (CRI.repeat(3), Assembly { format: Some(Format::Cri), multiline: None }),
                _ => (CRI.repeat(3), Assembly { format: Some(Format::Cri), multiline: Some(&java) }),
            };
            let whole = run(text.as_bytes(), &[], asm, max_line);
            let cut = run(text.as_bytes(), &cuts, asm, max_line);
            prop_assert_eq!(whole, cut);
        }
    }
}
