//! Walking a segment batch by batch by its headers, across damage.
//!
//! A [`Walk`] reads one 38-byte header per batch and jumps by the batch length; it
//! never loads payloads (their CRC is checked by whoever reads them). A header that
//! is not sane, does not carry the expected base offset, runs past the end of the
//! file or past the walk's offset bound is damage: the walk then *resyncs*, scanning
//! forward byte by byte for the next position holding a batch whose header is sane,
//! whose offsets lie between the expected offset and the bound, and whose CRC32C
//! checks out, and reports the damaged range as [`Step::Damaged`] before going on
//! from there. Callers decide what damage means for them: a read that needs an
//! offset inside the damaged range fails with [`Error::Corrupt`]; a read of a later
//! offset, an index rebuild or the deduplication scan go on after it. Nothing is
//! skipped silently.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::batch::{BatchHeader, FORMAT_VERSION, HEADER_LEN};
use crate::error::Error;

/// Bytes read at a time while resyncing.
const RESYNC_CHUNK: usize = 64 << 10;

/// One step of a [`Walk`].
#[derive(Debug)]
pub(crate) enum Step {
    /// A batch whose header checks out; its payload is not read.
    Batch { pos: u64, header: BatchHeader },
    /// The bytes at `pos` do not hold the batch with base offset `first_offset`.
    /// `resume` is the next good batch, where the walk goes on (the offsets
    /// `first_offset..resume base` are lost in the damage); `None` when there is
    /// none before the end of the file or the offset bound.
    Damaged {
        pos: u64,
        first_offset: u64,
        reason: String,
        resume: Option<(u64, BatchHeader)>,
    },
}

/// An iterator over the batches of one segment file; see the module docs.
pub(crate) struct Walk<'a> {
    file: &'a File,
    path: &'a Path,
    len: u64,
    pos: u64,
    expected: u64,
    upper: u64,
    done: bool,
}

impl<'a> Walk<'a> {
    /// Walk `file` (of `len` bytes) from `pos`, where the batch with base offset
    /// `expected` starts, up to (not including) offset `upper`.
    pub(crate) fn new(
        file: &'a File,
        path: &'a Path,
        len: u64,
        pos: u64,
        expected: u64,
        upper: u64,
    ) -> Walk<'a> {
        Walk {
            file,
            path,
            len,
            pos,
            expected,
            upper,
            done: false,
        }
    }

    /// The header at `pos` if it is the expected batch; else why not.
    fn check(&self) -> Result<Result<BatchHeader, String>, Error> {
        let rest = self.len - self.pos;
        if rest < HEADER_LEN as u64 {
            return Ok(Err(format!("torn batch header ({rest} bytes)")));
        }
        let mut b = [0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut b, self.pos)
            .map_err(Error::io("read", self.path))?;
        let h = match BatchHeader::decode(&b) {
            Ok(h) => h,
            Err(reason) => return Ok(Err(reason)),
        };
        Ok(if h.base_offset != self.expected {
            Err(format!(
                "batch has base offset {} where {} was expected",
                h.base_offset, self.expected
            ))
        } else if h.total_len() > rest {
            Err(format!(
                "batch of {} bytes runs past the end of the segment ({rest} bytes left)",
                h.total_len()
            ))
        } else if h.next_offset() > self.upper {
            Err(format!(
                "batch ends at offset {}, past the segment's bound {}",
                h.next_offset(),
                self.upper
            ))
        } else {
            Ok(h)
        })
    }

    fn step(&mut self) -> Result<Step, Error> {
        match self.check()? {
            Ok(header) => {
                let pos = self.pos;
                self.pos += header.total_len();
                self.expected = header.next_offset();
                Ok(Step::Batch { pos, header })
            }
            Err(reason) => {
                let (pos, first_offset) = (self.pos, self.expected);
                let resume = resync(
                    self.file,
                    self.path,
                    pos + 1,
                    self.len,
                    first_offset,
                    self.upper,
                )?;
                match &resume {
                    Some((at, h)) => {
                        self.pos = *at;
                        self.expected = h.base_offset;
                    }
                    None => self.done = true,
                }
                Ok(Step::Damaged {
                    pos,
                    first_offset,
                    reason,
                    resume,
                })
            }
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<Step, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.len || self.expected >= self.upper {
            return None;
        }
        let step = self.step();
        if step.is_err() {
            self.done = true;
        }
        Some(step)
    }
}

/// The first position at or after `from` holding a batch whose header is sane,
/// whose offsets lie in `lower..upper`, which fits in the file, and whose CRC32C
/// checks out.
pub(crate) fn resync(
    file: &File,
    path: &Path,
    from: u64,
    len: u64,
    lower: u64,
    upper: u64,
) -> Result<Option<(u64, BatchHeader)>, Error> {
    let mut buf = vec![0u8; RESYNC_CHUNK + HEADER_LEN];
    let mut start = from;
    while start.saturating_add(HEADER_LEN as u64) <= len {
        let n = usize::try_from(len - start).map_or(buf.len(), |rest| rest.min(buf.len()));
        file.read_exact_at(&mut buf[..n], start)
            .map_err(Error::io("read", path))?;
        let candidates = n - HEADER_LEN + 1;
        for i in 0..candidates {
            // Cheap pre-check of the two fixed header bytes before decoding.
            if buf[i + 16] != FORMAT_VERSION || buf[i + 17] != 0 {
                continue;
            }
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(&buf[i..i + HEADER_LEN]);
            let Ok(h) = BatchHeader::decode(&hb) else {
                continue;
            };
            let at = start + i as u64;
            if h.base_offset < lower || h.next_offset() > upper || h.total_len() > len - at {
                continue;
            }
            let mut payload = vec![0u8; h.payload_len()];
            file.read_exact_at(&mut payload, at + HEADER_LEN as u64)
                .map_err(Error::io("read", path))?;
            if h.compute_crc(&payload) == h.crc {
                return Ok(Some((at, h)));
            }
        }
        start += candidates as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn batch(base: u64, payload: &[u8]) -> Vec<u8> {
        let h = BatchHeader::for_payload(base, payload, 2, 10, 20);
        let mut b = h.encode().to_vec();
        b.extend_from_slice(payload);
        b
    }

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        (f, bytes.len() as u64)
    }

    fn steps(f: &File, len: u64, upper: u64) -> Vec<String> {
        Walk::new(f, Path::new("t.log"), len, 0, 0, upper)
            .map(|s| match s.unwrap() {
                Step::Batch { pos, header } => format!("{pos}:{}", header.base_offset),
                Step::Damaged {
                    pos,
                    first_offset,
                    resume,
                    ..
                } => format!(
                    "damaged {pos}:{first_offset}->{:?}",
                    resume.map(|(p, h)| (p, h.base_offset))
                ),
            })
            .collect()
    }

    #[test]
    fn walks_clean_batches_and_stops_at_the_bound() {
        let mut bytes = Vec::new();
        for base in [0, 2, 4] {
            bytes.extend(batch(base, &[base as u8; 30]));
        }
        let (f, len) = file_of(&bytes);
        assert_eq!(steps(f.as_file(), len, u64::MAX), ["0:0", "68:2", "136:4"]);
        assert_eq!(steps(f.as_file(), len, 4), ["0:0", "68:2"]);
        assert_eq!(
            steps(f.as_file(), len, 3),
            ["0:0", "damaged 68:2->None"],
            "a batch reaching past the bound is not returned"
        );
    }

    #[test]
    fn resyncs_after_damage() {
        let mut bytes = Vec::new();
        for base in [0, 2, 4, 6] {
            bytes.extend(batch(base, &[base as u8 + 1; 30]));
        }
        // Destroy the length of batch 2 (it cannot be skipped any more).
        bytes[68 + 8..68 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let (f, len) = file_of(&bytes);
        assert_eq!(
            steps(f.as_file(), len, u64::MAX),
            ["0:0", "damaged 68:2->Some((136, 4))", "136:4", "204:6"]
        );
        // A payload byte of batch 4 as well: its CRC fails, so the resync goes on
        // to batch 6.
        bytes[136 + HEADER_LEN + 3] ^= 1;
        let (f, len) = file_of(&bytes);
        assert_eq!(
            steps(f.as_file(), len, u64::MAX),
            ["0:0", "damaged 68:2->Some((204, 6))", "204:6"]
        );
        // Garbage after the last batch: damage without a resume.
        bytes.extend_from_slice(&[7u8; 100]);
        let (f, len) = file_of(&bytes);
        let s = steps(f.as_file(), len, u64::MAX);
        assert_eq!(s.last().unwrap(), "damaged 272:8->None");
    }
}
