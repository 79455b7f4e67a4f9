//! The journal export format (`journalctl -o export`), read one entry at a time.
//!
//! An entry is a run of fields ended by an empty line. A field is `NAME=value\n`
//! when the value is text, or `NAME\n`, a little-endian u64 length, the value's
//! bytes and `\n` when it may hold anything (a newline, binary). Every read is
//! bounded: a value longer than `max_value` keeps its first `max_value` bytes and
//! the field is marked cut; an entry with more than [`MAX_FIELDS`] fields keeps the
//! first ones.

use std::io::{self, BufRead, Read};

/// Most fields kept per entry.
pub const MAX_FIELDS: usize = 1024;
/// Longest field name accepted (journald allows 64).
const MAX_NAME: usize = 256;

/// One entry's fields, in order; buffers are reused from entry to entry.
#[derive(Debug, Default)]
pub struct Entry {
    fields: Vec<(Vec<u8>, Vec<u8>, bool)>,
    len: usize,
}

impl Entry {
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], bool)> {
        self.fields[..self.len]
            .iter()
            .map(|(n, v, cut)| (n.as_slice(), v.as_slice(), *cut))
    }

    /// The first field named `name`: (value, cut).
    pub fn get(&self, name: &[u8]) -> Option<(&[u8], bool)> {
        self.iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, c)| (v, c))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self) -> Option<&mut (Vec<u8>, Vec<u8>, bool)> {
        if self.len == MAX_FIELDS {
            return None;
        }
        if self.len == self.fields.len() {
            self.fields.push(Default::default());
        }
        let f = &mut self.fields[self.len];
        self.len += 1;
        f.0.clear();
        f.1.clear();
        f.2 = false;
        Some(f)
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("journal export stream: {what}"),
    )
}

/// Read up to and including `\n`, keeping at most `max` bytes (without the
/// newline) in `out`. Returns (bytes read, whether the line was longer than max);
/// 0 at the end of the stream.
fn read_line(r: &mut impl BufRead, out: &mut Vec<u8>, max: usize) -> io::Result<(usize, bool)> {
    let mut total = 0;
    let mut cut = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((total, cut));
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&buf[..take.min(room)]);
        cut |= take > room;
        let used = if done { take + 1 } else { take };
        r.consume(used);
        total += used;
        if done {
            return Ok((total, cut));
        }
    }
}

/// Read the next entry into `e`. `Ok(false)` at the end of the stream (an entry
/// cut short by it is dropped: journalctl writes whole entries).
pub fn read_entry(r: &mut impl BufRead, e: &mut Entry, max_value: usize) -> io::Result<bool> {
    e.len = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let (n, cut) = read_line(r, &mut line, max_value.saturating_add(MAX_NAME + 1))?;
        if n == 0 {
            return Ok(false);
        }
        if line.is_empty() && !cut {
            if e.is_empty() {
                continue;
            }
            return Ok(true);
        }
        match memchr::memchr(b'=', &line) {
            Some(eq) => {
                if eq == 0 || eq > MAX_NAME {
                    return Err(bad("field name missing or too long"));
                }
                if let Some(f) = e.push() {
                    f.0.extend_from_slice(&line[..eq]);
                    let v = &line[eq + 1..];
                    f.1.extend_from_slice(&v[..v.len().min(max_value)]);
                    f.2 = cut || v.len() > max_value;
                }
            }
            None => {
                // NAME, then a binary value.
                if line.len() > MAX_NAME || cut {
                    return Err(bad("field name too long"));
                }
                let mut len = [0u8; 8];
                r.read_exact(&mut len)?;
                let len = u64::from_le_bytes(len);
                let keep = len.min(max_value as u64) as usize;
                let slot = e.push();
                let mut value = Vec::new();
                let target = match slot {
                    Some(f) => {
                        f.0.extend_from_slice(&line);
                        f.2 = len > keep as u64;
                        &mut f.1
                    }
                    None => &mut value,
                };
                target.reserve(keep);
                r.by_ref().take(keep as u64).read_to_end(target)?;
                if target.len() != keep {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let skip = len - keep as u64;
                if io::copy(&mut r.by_ref().take(skip), &mut io::sink())? != skip {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let mut nl = [0u8; 1];
                r.read_exact(&mut nl)?;
                if nl[0] != b'\n' {
                    return Err(bad("binary field not followed by a newline"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_fields_and_limits() {
        let mut s = Vec::new();
        s.extend_from_slice(b"__CURSOR=s=ab;i=1\nMESSAGE=hello\n_PID=7\n\n");
        s.extend_from_slice(b"MESSAGE\n");
        s.extend_from_slice(&11u64.to_le_bytes());
        s.extend_from_slice(b"two\nlines\0!\n");
        s.extend_from_slice(b"LONG=0123456789abcdef\n\n");
        let mut r = io::BufReader::with_capacity(7, &s[..]);
        let mut e = Entry::default();
        assert!(read_entry(&mut r, &mut e, 10).unwrap());
        assert_eq!(e.get(b"MESSAGE"), Some((&b"hello"[..], false)));
        assert_eq!(e.get(b"_PID"), Some((&b"7"[..], false)));
        assert!(read_entry(&mut r, &mut e, 10).unwrap());
        assert_eq!(e.get(b"MESSAGE"), Some((&b"two\nlines\0"[..], true)));
        assert_eq!(e.get(b"LONG"), Some((&b"0123456789"[..], true)));
        assert!(e.get(b"_PID").is_none());
        assert!(!read_entry(&mut r, &mut e, 10).unwrap());
    }

    #[test]
    fn hostile_streams_fail_cleanly() {
        let mut e = Entry::default();
        for s in [
            &b"=novalue\n\n"[..],
            b"BIN\n\xff\xff\xff\xff\xff\xff\xff\xff",
            b"BIN\n\x02\0\0\0\0\0\0\0abX",
        ] {
            let mut r = io::BufReader::new(s);
            assert!(read_entry(&mut r, &mut e, 1 << 20).is_err(), "{s:?}");
        }
    }
}
