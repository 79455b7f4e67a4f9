//! Compressed files in a [`Tail`]: decompressed whole once (in steps) to check them
//! and decide where they start, then read to their end (see `gz`).

use std::io;
use std::time::Duration;

use super::super::fingerprint::{Fingerprint, end_hash_of};
use super::super::gz;
use super::{End, GzPhase, StartAt, Step, Tail, resume_anchor};
use crate::input::Chunk;

impl Tail {
    /// A compressed file: nothing is read here (decompressing takes a while; the
    /// reader's steps do it), except that one known to be read to its end is done.
    pub(super) fn open_gz(&mut self, start: StartAt) -> io::Result<()> {
        if let StartAt::Resume(c) = &start
            && let (Some(fp), Some(total)) = (c.fp, c.total)
            && c.offset >= total
        {
            self.offset = c.offset;
            self.end_hash = c.end_hash;
            (self.crc_base, self.crc) = c.crc.unwrap_or((c.offset, 0));
            self.generation = c.generation;
            self.lineage = c.lineage.clone();
            self.start = (c.offset, c.end_hash);
            self.total = Some(total);
            self.gz = Some(Box::new(GzPhase::Done));
            self.set_fingerprint(Some(fp));
            return Ok(());
        }
        let scan = gz::Scan::new(&self.file, self.cfg.max_line_bytes)?;
        self.gz = Some(Box::new(GzPhase::Scan(Box::new(scan), start)));
        Ok(())
    }

    /// One step of a compressed file: decompress it whole once (in steps), decide
    /// where it starts, then read it to its end.
    pub(super) fn step_gz(&mut self) -> io::Result<Step> {
        let Some(phase) = self.gz.as_deref_mut() else {
            return Ok(Step::Finished);
        };
        match phase {
            GzPhase::Scan(scan, start) => {
                let marks = self.cfg.marks.clone();
                let path = self.path.clone();
                // Its checkpoint when it has one, else the anchors of what it may
                // be a rotation of.
                let resume = match &*start {
                    StartAt::Resume(c) => c.fp.map(|fp| (fp, resume_anchor(c))),
                    _ => None,
                };
                let targets = |fp: Option<Fingerprint>| match (fp, resume) {
                    (Some(fp), Some((was, a))) if fp == was => vec![a],
                    (Some(fp), _) => marks.copy_anchors(&path, (fp.len, fp.hash), u64::MAX),
                    (None, _) => Vec::new(),
                };
                let scanned = match scan.step(targets) {
                    Ok(Some(s)) => s,
                    Ok(None) => return Ok(Step::Progress),
                    Err(e) => return Err(self.gz_error(e)),
                };
                let start = std::mem::replace(start, StartAt::Beginning);
                self.start_gz(start, scanned)
            }
            GzPhase::Read(r) => {
                let want = self.cfg.chunk_bytes;
                let need = self.carry + want;
                if self.buf.len() < need {
                    self.buf.resize(need, 0);
                }
                let n = r
                    .read(&mut self.buf[self.carry..need])
                    .map_err(|e| self.gz_error(e))?;
                if n > 0 {
                    // More follows (or the end, whose last line comes next).
                    return Ok(match self.encode(self.carry + n, End::Wait)? {
                        Step::Chunk(c) => Step::Chunk(Chunk { at_end: false, ..c }),
                        step => step,
                    });
                }
                // The end: an unfinished last line is a record too (nothing follows).
                let last = self.flush_final();
                self.gz = Some(Box::new(GzPhase::Done));
                Ok(last.map_or(Step::Finished, Step::Chunk))
            }
            GzPhase::Done => Ok(Step::Finished),
        }
    }

    /// Where a scanned compressed file starts: at its checkpoint when it is the same
    /// content, where the file it is a rotation of stopped, or by the input's rule.
    fn start_gz(&mut self, start: StartAt, s: gz::Scanned) -> io::Result<Step> {
        let Some(fp) = s.fp else {
            // Empty: nothing to read, nothing to remember.
            self.gz = Some(Box::new(GzPhase::Done));
            return Ok(Step::Finished);
        };
        let (offset, generation, lineage) = match start {
            StartAt::Resume(c)
                if c.fp == Some(fp)
                    && c.offset <= s.total
                    && (c.offset == 0 || c.end_hash == 0 || s.verified.first() == Some(&true)) =>
            {
                (c.offset, c.generation, c.lineage)
            }
            StartAt::Resume(c) => (0, c.generation + 1, None),
            StartAt::Beginning | StartAt::End => {
                let copy = self.cfg.marks.find_copy(
                    &self.path,
                    (fp.len, fp.hash),
                    &s.anchors,
                    &s.verified,
                );
                match copy {
                    Some(c) => (c.offset, 0, Some(c.lineage)),
                    None if matches!(start, StartAt::End) => (s.total, 0, None),
                    None => (0, 0, None),
                }
            }
        };
        // The bytes before the start are known once the reading pass got there.
        let reader = if offset < s.total {
            Some(gz::Read::open_at(&self.file, offset).map_err(|e| self.gz_error(e))?)
        } else {
            None
        };
        let end_hash = reader.as_ref().map_or(0, |r| end_hash_of(&r.window));
        self.offset = offset;
        self.end_hash = end_hash;
        (self.crc_base, self.crc) = (offset, 0);
        self.generation = generation;
        self.lineage = lineage;
        self.start = (offset, end_hash);
        self.total = Some(s.total);
        self.set_fingerprint(Some(fp));
        match reader {
            None => {
                self.gz = Some(Box::new(GzPhase::Done));
                Ok(Step::Finished)
            }
            Some(r) => {
                self.gz = Some(Box::new(GzPhase::Read(r)));
                Ok(Step::Progress)
            }
        }
    }

    /// A compressed file that does not decompress: damaged, cut, or still being
    /// written (then `WouldBlock`, and it is looked at again once it changes).
    fn gz_error(&self, e: io::Error) -> io::Error {
        let recent = self
            .file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(5));
        if recent {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("compressed file is still being written ({e}); reading it once complete"),
            )
        } else {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a complete gzip file ({e}); skipping it until it changes"),
            )
        }
    }
}
