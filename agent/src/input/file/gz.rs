//! Compressed rotations: files whose name ends in `.gz` (logrotate's `compress`) are
//! decompressed (gzip, several members in a row allowed), read once to their end and
//! never followed.
//!
//! A compressed file is first decompressed whole once ([`Scan`]): that checks every
//! member's CRC and length (a file that is cut or damaged, or still being written,
//! is refused before any of its lines is sent), takes the fingerprint of its
//! decompressed first line, and checks the anchors it may be recognized by (its
//! checkpoint, or the known anchors of the file it is a rotation of). Then it is decompressed again from the start and read from where it
//! continues ([`Read`]); offsets are offsets in the decompressed content, so a
//! compressed rotation holds the same lines at the same offsets as the file it came
//! from. Both passes run in bounded steps on the blocking pool.

use std::fs::File;
use std::io::{self, BufReader, Read as _};
use std::os::unix::fs::FileExt;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::anchor::{Anchor, Verifier, slide};
use super::fingerprint::{Fingerprint, end_hash_of};

/// Whether `path` names a compressed file this input decompresses.
pub(crate) fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// Decompressed bytes handled per step (the reader yields between steps).
pub(crate) const STEP_BYTES: usize = 4 << 20;

/// A sequential reader over a file by positional reads, on its own descriptor.
struct At {
    file: File,
    pos: u64,
}

impl io::Read for At {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

type Decoder = MultiGzDecoder<BufReader<At>>;

fn decoder(file: &File) -> io::Result<Decoder> {
    let at = At {
        file: file.try_clone()?,
        pos: 0,
    };
    Ok(MultiGzDecoder::new(BufReader::with_capacity(64 << 10, at)))
}

/// Fill `buf` as far as the stream goes (a short count means its end).
fn read_full(dec: &mut Decoder, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match dec.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What the whole-file pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Fingerprint of the decompressed content (`None`: it is empty).
    pub fp: Option<Fingerprint>,
    /// Decompressed size.
    pub total: u64,
    /// The anchors asked for, and whether the content reproduces each.
    pub anchors: Vec<Anchor>,
    pub verified: Vec<bool>,
}

/// The whole-file pass, in steps.
pub(crate) struct Scan {
    dec: Decoder,
    pos: u64,
    cap: usize,
    verifier: Option<Verifier>,
    fp: Option<Fingerprint>,
    buf: Vec<u8>,
}

impl Scan {
    pub(crate) fn new(file: &File, max_line_bytes: usize) -> io::Result<Scan> {
        Ok(Scan {
            dec: decoder(file)?,
            pos: 0,
            cap: Fingerprint::cap(max_line_bytes),
            verifier: None,
            fp: None,
            buf: Vec::new(),
        })
    }

    /// Decompress up to [`STEP_BYTES`]. `anchors(fp)` names the anchors to check,
    /// once, when the fingerprint is known (from the first step). `Some` once the
    /// file was read to its end intact; an error when it is not a complete gzip file.
    pub(crate) fn step(
        &mut self,
        anchors: impl FnOnce(Option<Fingerprint>) -> Vec<Anchor>,
    ) -> io::Result<Option<Scanned>> {
        self.buf.resize(STEP_BYTES, 0);
        let n = read_full(&mut self.dec, &mut self.buf)?;
        let eof = n < self.buf.len();
        if self.verifier.is_none() {
            // STEP_BYTES is far more than a fingerprint covers.
            self.fp = Fingerprint::of_head(&self.buf[..n], self.cap, eof);
            self.verifier = Some(Verifier::new(anchors(self.fp), 0));
        }
        if let Some(v) = self.verifier.as_mut() {
            v.feed(&self.buf[..n]);
        }
        self.pos += n as u64;
        if !eof {
            return Ok(None);
        }
        self.buf = Vec::new();
        let (anchors, verified) = match self.verifier.take() {
            Some(v) => (v.anchors().to_vec(), v.results()),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Some(Scanned {
            fp: self.fp,
            total: self.pos,
            anchors,
            verified,
        }))
    }
}

/// The reading pass: decompressed content from a position to the end.
pub(crate) struct Read {
    dec: Decoder,
    /// The last up to 32 bytes before the reader's offset (for end hashes).
    pub window: Vec<u8>,
}

impl Read {
    /// Decompress from the start and skip to `start` (whose preceding bytes are
    /// kept for end hashes).
    pub(crate) fn open_at(file: &File, start: u64) -> io::Result<Read> {
        let mut dec = decoder(file)?;
        let mut left = start;
        let mut skip = vec![0u8; (64 << 10).min(start as usize).max(1)];
        let mut window = Vec::new();
        while left > 0 {
            let want = (left as usize).min(skip.len());
            let n = read_full(&mut dec, &mut skip[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "compressed file is shorter than where reading continues",
                ));
            }
            left -= n as u64;
            slide(&mut window, &skip[..n]);
        }
        Ok(Read { dec, window })
    }

    /// Up to `buf.len()` more decompressed bytes; 0 at the end.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_full(&mut self.dec, buf)
    }

    /// Move the window past `data` (the bytes just consumed after it) and return
    /// the end hash there.
    pub(crate) fn consume(&mut self, data: &[u8]) -> u64 {
        slide(&mut self.window, data);
        end_hash_of(&self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(parts: &[&[u8]]) -> Vec<u8> {
        // One member per part: `MultiGzDecoder` reads them as one stream.
        let mut out = Vec::new();
        for p in parts {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(p).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn scan(f: &File, anchors: Vec<Anchor>) -> io::Result<Scanned> {
        let mut s = Scan::new(f, 1 << 20)?;
        let mut a = Some(anchors);
        loop {
            if let Some(done) = s.step(|_| a.take().unwrap_or_default())? {
                return Ok(done);
            }
        }
    }

    fn anchor(data: &[u8], base: u64, offset: u64) -> Anchor {
        Anchor {
            offset,
            end_hash: end_hash_of(&data[..offset as usize]),
            base,
            crc: crc32c::crc32c(&data[base as usize..offset as usize]),
        }
    }

    #[test]
    fn scans_members_fingerprint_and_anchors() {
        let text: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let (a, b) = text.split_at(text.len() / 3);
        let f = file_with(&gz(&[a, b]));
        let end = text.len() as u64;
        let mut wrong = anchor(&text, 0, 5000);
        wrong.crc ^= 1;
        let anchors = vec![
            anchor(&text, 0, 7),
            anchor(&text, 100, end - 5),
            wrong,
            Anchor {
                offset: end + 1,
                ..anchor(&text, 0, 10)
            },
        ];
        let s = scan(&f, anchors).unwrap();
        assert_eq!(s.total, end);
        assert_eq!(s.fp, Some(Fingerprint::of(b"line 0\n")));
        assert_eq!(s.verified, vec![true, true, false, false]);
        // Reading from an offset gives the rest, with the bytes before it known.
        let mut r = Read::open_at(&f, 20).unwrap();
        assert_eq!(end_hash_of(&r.window), end_hash_of(&text[..20]));
        let mut rest = vec![0; text.len()];
        let n = r.read(&mut rest).unwrap();
        assert_eq!(&rest[..n], &text[20..]);
    }

    #[test]
    fn cut_or_damaged_files_are_errors() {
        let whole = gz(&[b"one\ntwo\n".repeat(1000).as_slice()]);
        let cut = file_with(&whole[..whole.len() - 10]);
        assert!(scan(&cut, vec![]).is_err());
        let mut flipped = whole.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        assert!(scan(&file_with(&flipped), vec![]).is_err());
        assert!(scan(&file_with(b"not gzip at all\n"), vec![]).is_err());
        let empty = scan(&file_with(&gz(&[b""])), vec![]).unwrap();
        assert_eq!((empty.fp, empty.total), (None, 0));
    }
}
