//! Splitting a syslog byte stream (TCP, TLS) into messages, per RFC 6587.
//!
//! Real senders mix the two framings, so the choice is made per message:
//! - **Octet counting** (`MSG-LEN SP MSG`, RFC 6587 §3.4.1, and RFC 5425 over TLS):
//!   the message starts with a non-zero digit, at most 10 digits, then a space.
//! - **Non-transparent framing** (everything else): the message ends at `LF` or `NUL`;
//!   a `CR` before the `LF` is dropped and empty lines are skipped, so `CRLF` and
//!   `NUL` trailers work too. An unterminated last message is emitted at end of stream.
//!
//! Size limit: a message longer than `max` is cut to `max` bytes and marked
//! truncated; the rest is read and discarded (up to the next `LF` for
//! non-transparent framing, the declared length for octet counting), so the buffer
//! never holds more than `max` bytes of one message plus one read. Bytes scanned
//! without finding a delimiter are remembered, so a slow sender dribbling one byte
//! at a time costs linear, not quadratic, work.
//!
//! [`Framer`] is pure: it works on the caller's buffer and never does I/O.

use std::ops::Range;

use memchr::memchr2;

/// Longest MSG-LEN accepted as a length (10 digits); longer digit runs are text.
const MAX_LEN_DIGITS: usize = 10;

/// One message found in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message bytes within the buffer passed to [`Framer::next`].
    pub range: Range<usize>,
    /// The message was longer than the limit (or cut short by the end of the stream).
    pub truncated: bool,
}

/// Stream state between calls: what to discard and how far a line was scanned.
#[derive(Debug)]
pub struct Framer {
    max: usize,
    /// Bytes of an over-long octet-counted message still to discard.
    discard: u64,
    /// Discarding the rest of an over-long line, up to its delimiter.
    skip_line: bool,
    /// Bytes after the read position already known to hold no delimiter.
    scanned: usize,
}

impl Framer {
    /// `max`: largest message kept whole (at least 1).
    pub fn new(max: usize) -> Self {
        Framer {
            max: max.max(1),
            discard: 0,
            skip_line: false,
            scanned: 0,
        }
    }

    /// The next message in `buf[*pos..]`, advancing `*pos` past it (and past any bytes
    /// discarded). `None`: more bytes are needed (everything before `*pos` may be
    /// dropped by the caller). With `eof`, whatever is left is emitted.
    pub fn next(&mut self, buf: &[u8], pos: &mut usize, eof: bool) -> Option<Frame> {
        loop {
            let avail = buf.len() - *pos;
            if self.discard > 0 {
                let n = self.discard.min(avail as u64) as usize;
                *pos += n;
                self.discard -= n as u64;
                if self.discard > 0 {
                    return None;
                }
                continue;
            }
            if self.skip_line {
                match memchr2(b'\n', 0, &buf[*pos..]) {
                    Some(i) => {
                        *pos += i + 1;
                        self.skip_line = false;
                        continue;
                    }
                    None => {
                        *pos = buf.len();
                        return None;
                    }
                }
            }
            if avail == 0 {
                return None;
            }
            let rest = &buf[*pos..];
            let digits = rest
                .iter()
                .take(MAX_LEN_DIGITS + 1)
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits > 0 && digits <= MAX_LEN_DIGITS && rest[0] != b'0' {
                if rest.get(digits) == Some(&b' ') {
                    return self.counted(buf, pos, digits, eof);
                }
                if digits == avail && !eof {
                    // `12` could still become `12 <34>…`.
                    return None;
                }
            }
            if let Some(f) = self.line(buf, pos, eof) {
                if f.range.is_empty() {
                    continue;
                }
                return Some(f);
            }
            return None;
        }
    }

    fn counted(&mut self, buf: &[u8], pos: &mut usize, digits: usize, eof: bool) -> Option<Frame> {
        let rest = &buf[*pos..];
        let len = rest[..digits]
            .iter()
            .fold(0u64, |n, c| n * 10 + (c - b'0') as u64);
        let start = *pos + digits + 1;
        let have = (buf.len() - start) as u64;
        let keep = len.min(self.max as u64);
        if have >= keep {
            let end = start + keep as usize;
            *pos = end;
            self.scanned = 0;
            self.discard = len - keep;
            return Some(Frame {
                range: start..end,
                truncated: len > keep,
            });
        }
        if eof {
            *pos = buf.len();
            self.scanned = 0;
            return Some(Frame {
                range: start..buf.len(),
                truncated: true,
            });
        }
        None
    }

    /// A non-transparent frame; an empty range means "skipped an empty line".
    fn line(&mut self, buf: &[u8], pos: &mut usize, eof: bool) -> Option<Frame> {
        let start = *pos;
        let from = start + self.scanned.min(buf.len() - start);
        // Look no further than two bytes past the limit: the `CRLF` of a line of
        // exactly `max` bytes is still found, a longer line is cut.
        let limit = (start + self.max + 2).min(buf.len());
        let found = if from < limit {
            memchr2(b'\n', 0, &buf[from..limit]).map(|i| from + i)
        } else {
            None
        };
        match found {
            Some(i) => {
                *pos = i + 1;
                self.scanned = 0;
                let mut end = i;
                if buf[i] == b'\n' && end > start && buf[end - 1] == b'\r' {
                    end -= 1;
                }
                let truncated = end - start > self.max;
                Some(Frame {
                    range: start..end.min(start + self.max),
                    truncated,
                })
            }
            None if buf.len() - start > self.max + 1 => {
                *pos = start + self.max;
                self.scanned = 0;
                self.skip_line = true;
                Some(Frame {
                    range: start..start + self.max,
                    truncated: true,
                })
            }
            None if eof => {
                *pos = buf.len();
                self.scanned = 0;
                let mut end = buf.len();
                if end > start && buf[end - 1] == b'\r' {
                    end -= 1;
                }
                Some(Frame {
                    range: start..end.min(start + self.max),
                    truncated: end - start > self.max,
                })
            }
            None => {
                self.scanned = buf.len() - start;
                None
            }
        }
    }
}

/// Drop a trailing `LF`, `CRLF` or `NUL` (and combinations) from a datagram.
pub fn trim_trailer(m: &[u8]) -> &[u8] {
    let mut end = m.len();
    while end > 0 && matches!(m[end - 1], b'\n' | b'\r' | 0) {
        end -= 1;
    }
    &m[..end]
}
