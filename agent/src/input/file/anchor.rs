//! Anchors: points of a file's content that another file must reproduce to be taken
//! for a copy of it.
//!
//! An [`Anchor`] says: the bytes from `base` to `offset` have the CRC32C `crc`, and
//! the 32 bytes before `offset` hash to `end_hash` (see `fingerprint::end_hash_of`).
//! A reader keeps a running CRC32C of what it consumed since the point where it
//! started reading the content (`base`: 0 for a file read from its start), so every
//! chunk it reads ends on an anchor for free (CRC32C runs at memory speed). A window
//! of at least [`MIN_WINDOW`] bytes, together with the first-line fingerprint, tells
//! a copy from other content even when lines end alike (`… status=200\n`), which a
//! 32-byte hash alone does not.
//!
//! A [`Verifier`] checks many anchors against a stream of bytes in one pass.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::fingerprint::{END_HASH_BYTES, end_hash_of};

/// Shortest window an anchor needs to count as proof of the same content.
pub(crate) const MIN_WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub offset: u64,
    pub end_hash: u64,
    pub base: u64,
    pub crc: u32,
}

impl Anchor {
    /// Whether matching it proves more than a fingerprint of `fp_len` bytes does.
    pub(crate) fn is_strong(&self, fp_len: u16) -> bool {
        self.offset > u64::from(fp_len)
            && self.end_hash != 0
            && self.offset.saturating_sub(self.base) >= MIN_WINDOW
    }
}

/// Checks anchors against bytes fed in order from `start` (which must be at most
/// each anchor's base, less 32 bytes for its end hash to be seen whole).
pub(crate) struct Verifier {
    anchors: Vec<Anchor>,
    /// Sorted distinct bases and offsets: where the running CRCs change.
    points: Vec<u64>,
    next: usize,
    /// (base, CRC of the bytes from base to `pos`) for bases already reached.
    crcs: Vec<(u64, u32)>,
    window: Vec<u8>,
    pos: u64,
    ok: Vec<bool>,
}

impl Verifier {
    pub(crate) fn new(anchors: Vec<Anchor>, start: u64) -> Verifier {
        let mut points: Vec<u64> = anchors
            .iter()
            .flat_map(|a| [a.base, a.offset])
            .filter(|&p| p >= start)
            .collect();
        points.sort_unstable();
        points.dedup();
        let ok = vec![false; anchors.len()];
        Verifier {
            anchors,
            points,
            next: 0,
            crcs: Vec::new(),
            window: Vec::new(),
            pos: start,
            ok,
        }
    }

    /// Where feeding must start for `anchors`.
    pub(crate) fn start_for(anchors: &[Anchor]) -> u64 {
        anchors
            .iter()
            .map(|a| a.base.min(a.offset.saturating_sub(END_HASH_BYTES as u64)))
            .min()
            .unwrap_or(0)
    }

    /// The next bytes of the stream.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        let end = self.pos + data.len() as u64;
        while let Some(&p) = self.points.get(self.next) {
            if p > end {
                break;
            }
            let k = (p - self.pos) as usize;
            self.advance(&data[..k]);
            data = &data[k..];
            self.next += 1;
            if self.anchors.iter().any(|a| a.base == p) && !self.crcs.iter().any(|c| c.0 == p) {
                self.crcs.push((p, 0));
            }
            let end_hash = end_hash_of(&self.window);
            for (i, a) in self.anchors.iter().enumerate() {
                if a.offset == p {
                    let crc = self.crcs.iter().find(|c| c.0 == a.base).map(|c| c.1);
                    self.ok[i] = crc == Some(a.crc) && (a.offset == 0 || end_hash == a.end_hash);
                }
            }
        }
        self.advance(data);
    }

    fn advance(&mut self, seg: &[u8]) {
        for c in &mut self.crcs {
            c.1 = crc32c::crc32c_append(c.1, seg);
        }
        slide(&mut self.window, seg);
        self.pos += seg.len() as u64;
    }

    /// Which anchors the bytes fed so far reproduce, in the order given.
    pub(crate) fn results(self) -> Vec<bool> {
        self.ok
    }

    pub(crate) fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }
}

/// Keep in `window` the last [`END_HASH_BYTES`] of `window` followed by `data`.
pub(crate) fn slide(window: &mut Vec<u8>, data: &[u8]) {
    if data.len() >= END_HASH_BYTES {
        window.clear();
        window.extend_from_slice(&data[data.len() - END_HASH_BYTES..]);
    } else {
        window.extend_from_slice(data);
        let cut = window.len().saturating_sub(END_HASH_BYTES);
        window.drain(..cut);
    }
}

/// Check `anchors` against the first `size` bytes of a plain file, reading it once
/// from the earliest point they need.
pub(crate) fn verify_file(file: &File, size: u64, anchors: Vec<Anchor>) -> io::Result<Vec<bool>> {
    let anchors: Vec<Anchor> = anchors;
    let last = anchors
        .iter()
        .map(|a| a.offset)
        .filter(|&o| o <= size)
        .max()
        .unwrap_or(0);
    let start = Verifier::start_for(&anchors);
    let mut v = Verifier::new(anchors, start);
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    while pos < last {
        let want = ((last - pos) as usize).min(buf.len());
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        v.feed(&buf[..n]);
        pos += n as u64;
    }
    Ok(v.results())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(data: &[u8], base: u64, offset: u64) -> Anchor {
        Anchor {
            offset,
            end_hash: end_hash_of(&data[..offset as usize]),
            base,
            crc: crc32c::crc32c(&data[base as usize..offset as usize]),
        }
    }

    #[test]
    fn one_pass_checks_anchors_of_several_bases_whatever_the_cuts() {
        let data: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("{i} ok status=200\n").into_bytes())
            .collect();
        let mut other = data.clone();
        other[30_000] ^= 1;
        let anchors = vec![
            anchor(&data, 0, 100),
            anchor(&data, 0, 40_000),
            anchor(&data, 20_000, 20_100),
            anchor(&data, 20_000, 60_000),
            anchor(&data, 500, 500),
        ];
        for cut in [1usize, 7, 4096, 100_000] {
            for (bytes, want) in [
                (&data, vec![true, true, true, true, true]),
                (&other, vec![true, false, true, false, true]),
            ] {
                let start = Verifier::start_for(&anchors);
                let mut v = Verifier::new(anchors.clone(), start);
                for piece in bytes[start as usize..].chunks(cut) {
                    v.feed(piece);
                }
                assert_eq!(v.results(), want, "cut {cut}");
            }
        }
        // Lines that end alike fool a 32-byte hash but not the window's CRC.
        let shifted = anchor(&data, 0, 40_000);
        let mut lookalike = data.clone();
        lookalike[1000..1010].copy_from_slice(b"9999999999");
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&lookalike, 0).unwrap();
        assert_eq!(
            verify_file(&f, lookalike.len() as u64, vec![shifted]).unwrap(),
            vec![false]
        );
        f.write_all_at(&data, 0).unwrap();
        assert_eq!(
            verify_file(&f, data.len() as u64, vec![shifted]).unwrap(),
            vec![true]
        );
        // Past the end of a shorter file: not reproduced.
        assert_eq!(verify_file(&f, 39_999, vec![shifted]).unwrap(), vec![false]);
    }
}
