//! One tailed file: big positional reads, lines split with `memchr`, records encoded
//! straight into one block per read.
//!
//! [`Tail`] is synchronous and owns the file; [`follow`] is the async loop that runs
//! each [`Tail::step`] on the blocking pool, sends the resulting [`Chunk`] (waiting when
//! the channel is full) and sleeps until a watcher event or the poll tick.
//!
//! Line rules ([`encode_lines`]): a line ends at `\n`; a `\r` right before it is
//! dropped; an unfinished last line is held (its bytes stay at the front of the read
//! buffer, the file offset is not advanced past them). A line longer than
//! `max_line_bytes` becomes pieces of `max_line_bytes`, every piece but the last
//! marked [`FLAG_PARTIAL`]; full pieces are emitted before the newline arrives, so a
//! reader never holds more than `max_line_bytes + 1` bytes of one line. Piece
//! boundaries are always multiples of `max_line_bytes` from the line start, so the
//! records are the same however the writes and reads were cut.
//!
//! This module must not decide which files to read nor when a file is gone: the
//! coordinator does that and tells the reader through `orphaned`.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memchr::memchr;
use tributary_common::record::{
    BLOCK_HEADER_FIXED_LEN, BlockWriter, FLAG_PARTIAL, RECORD_HEADER_LEN,
};

use super::anchor::{self, Anchor};
use super::fingerprint::{FileKey, Fingerprint, end_hash, end_hash_of, source_id};
use super::gz;
use super::{Chunk, FileMark, Lineage, Marks, RegistrationInfo};

mod assemble;
mod compressed;
pub(crate) mod follow;
mod identity;

use self::assemble::{Assembly, End, encode_assembled};
pub(crate) use self::follow::{ExitReason, Follow, ReaderExit, follow};
use self::identity::{match_copy, resume_anchor, same_content};
use crate::input::container::{Format, k8s_fields};
use crate::input::multiline::Multiline;

/// An idle reader keeps at most this much read buffer.
const IDLE_BUF_BYTES: usize = 16 * 1024;

/// What every reader of one input shares.
#[derive(Debug)]
pub(crate) struct TailConfig {
    pub topic: Arc<str>,
    pub host: Arc<str>,
    pub fields: Arc<[u8]>,
    pub chunk_bytes: usize,
    pub max_line_bytes: usize,
    /// `parse: json`: lines that are JSON objects become fields, message and time.
    pub json: Option<Arc<crate::input::json::JsonParse>>,
    /// `format: cri | docker`: runtime lines decoded, their pieces merged.
    pub format: Option<Format>,
    /// `multiline`: lines grouped into records.
    pub multiline: Option<Arc<Multiline>>,
    /// Where every file version read in this run registers its identity.
    pub marks: Arc<Marks>,
}

/// Where a newly opened file starts (unless it is recognized as a copy of content
/// already known, see `marks`).
#[derive(Debug, Clone)]
pub(crate) enum StartAt {
    Beginning,
    End,
    /// The same inode was read earlier in this run: continue where it stopped if its
    /// first bytes still match, else it is new content and starts at 0.
    Resume(Closed),
}

/// What is remembered of a file whose reader stopped.
#[derive(Debug, Clone)]
pub(crate) struct Closed {
    pub fp: Option<Fingerprint>,
    /// The identity its records carry when it continues another file's content.
    pub lineage: Option<Lineage>,
    pub offset: u64,
    /// Hash of the bytes before `offset` (0: unknown, not checked).
    pub end_hash: u64,
    /// (base, CRC32C of the bytes from base to `offset`), when known.
    pub crc: Option<(u64, u32)>,
    /// The anchor registered before its first records were sent, when it is past
    /// `offset`: a restart checks the content still reproduces it.
    pub proof: Option<Anchor>,
    /// Bytes read when closed (`offset` plus an unfinished line): a file of another
    /// size changed after the last read, whatever its `ctime` says.
    pub read_pos: u64,
    /// Truncations seen so far (part of the source id).
    pub generation: u32,
    /// The reader stopped on an error: only retry once the file changed (`ctime`).
    pub failed: bool,
    /// The reader closed an idle file: reopen it once the file changed (`ctime`).
    pub idle: bool,
    /// Decompressed size of a compressed file.
    pub total: Option<u64>,
    /// A compressed file read to its end: not opened again unless it changes.
    pub done: bool,
    pub ctime: (i64, i64),
    pub at: Instant,
}

/// Outcome of one [`Tail::step`].
#[derive(Debug)]
pub(crate) enum Step {
    /// Complete records were read.
    Chunk(Chunk),
    /// Bytes were read but no record completed (a long unfinished line).
    Progress,
    /// Nothing more to read right now.
    Eof,
    /// The file shrank below the read position; reading restarts at 0.
    Truncated { at: u64, size: u64 },
    /// A compressed file was read to its end: it is never followed.
    Finished,
}

/// How far a version's registration in the checkpoints went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registered {
    No,
    /// Registered, with no anchor that tells its content apart yet (the first
    /// line only, say): registered again with the first strong one.
    Weak,
    Strong,
}

/// Where a compressed file's reading stands.
enum GzPhase {
    /// Decompressing it whole once, then deciding where it starts.
    Scan(Box<gz::Scan>, StartAt),
    Read(gz::Read),
    Done,
}

/// One open, tailed file.
pub(crate) struct Tail {
    cfg: Arc<TailConfig>,
    file: File,
    key: FileKey,
    path: Arc<str>,
    fp: Option<Fingerprint>,
    /// The version id (see `marks`): what checkpoints are kept under.
    source_id: u64,
    /// The identity records carry when this file continues another one's content.
    lineage: Option<Lineage>,
    /// Where this version started being read and the hash before it: what a
    /// registration records.
    start: (u64, u64),
    /// How far its registration went (see [`Tail::registration`]).
    registered: Registered,
    /// When this version started (a new generation waits a moment for lines that
    /// tell it apart from others starting alike).
    started: Instant,
    /// Truncations seen (copytruncate); part of the source id.
    generation: u32,
    /// Set for a compressed file.
    gz: Option<Box<GzPhase>>,
    /// Decompressed size of a compressed file, once known.
    total: Option<u64>,
    /// File offset of `buf[0]`.
    offset: u64,
    /// Hash of the bytes before `offset` (see `fingerprint::end_hash_of`).
    end_hash: u64,
    /// CRC32C of the bytes from `crc_base` to `offset`: every chunk ends on an
    /// [`Anchor`] a copy of this content can be recognized by.
    crc_base: u64,
    crc: u32,
    /// `buf[..carry]` holds the start of an unfinished line.
    carry: usize,
    /// Read buffer; its length is a high-water mark, reused across reads.
    buf: Vec<u8>,
    /// Payload bytes per 1024 input bytes seen in the last chunk, to size the next one.
    ratio: usize,
    /// The block fields: the input's, with the pod's names for a container log.
    fields: Arc<[u8]>,
}

impl Tail {
    /// Open `path`, which a scan saw as `expected`. `Ok(None)` when the path now names
    /// another file (replaced between the scan and the open) or no regular file.
    pub(crate) fn open(
        cfg: Arc<TailConfig>,
        path: &Path,
        expected: FileKey,
        start: StartAt,
    ) -> io::Result<Option<Tail>> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || FileKey::of(&meta) != expected {
            return Ok(None);
        }
        let path_str: Arc<str> = path.to_string_lossy().into();
        let fields = file_fields(&cfg, &path_str);
        // Stopped before it had a fingerprint (not ready, failed): nothing of it is
        // known, so it starts as a file seen for the first time.
        let start = match start {
            StartAt::Resume(c) if c.fp.is_none() && c.generation == 0 => StartAt::Beginning,
            s => s,
        };
        let mut tail = Tail {
            cfg,
            file,
            key: expected,
            path: path_str.clone(),
            fp: None,
            source_id: 0,
            lineage: None,
            start: (0, 0),
            registered: Registered::No,
            started: Instant::now(),
            generation: 0,
            gz: None,
            total: None,
            offset: 0,
            end_hash: 0,
            crc_base: 0,
            crc: 0,
            carry: 0,
            buf: Vec::new(),
            ratio: 1400,
            fields,
        };
        if gz::is_gz(path) {
            tail.open_gz(start)?;
            return Ok(Some(tail));
        }
        let size = meta.len();
        let max_line = tail.cfg.max_line_bytes;
        let file = &tail.file;
        let mut crc = None;
        let mut registered = Registered::No;
        let (offset, fp, generation, lineage) = match start {
            StartAt::Beginning | StartAt::End => {
                let fp = Fingerprint::read(file, size, max_line)?;
                // Content already known (a rotated copy) continues under its identity.
                let copy = match fp {
                    Some(fp) => match_copy(&tail.cfg.marks, file, &path_str, fp, &meta)?,
                    None => None,
                };
                match copy {
                    Some(c) => (c.offset, fp, 0, Some(c.lineage)),
                    None if matches!(start, StartAt::End) => (size, fp, 0, None),
                    None => (0, fp, 0, None),
                }
            }
            StartAt::Resume(c) => match c.fp {
                Some(fp)
                    if size >= c.offset
                        && Fingerprint::prefix(file, u64::from(fp.len))? == Some(fp)
                        && (c.end_hash == 0 || end_hash(file, c.offset)? == c.end_hash)
                        && same_content(file, size, &c)? =>
                {
                    crc = c.crc;
                    registered = if c.proof.is_some_and(|p| p.is_strong(fp.len))
                        || resume_anchor(&c).is_strong(fp.len)
                    {
                        Registered::Strong
                    } else {
                        Registered::Weak
                    };
                    (c.offset, Some(fp), c.generation, c.lineage.clone())
                }
                // Shorter than where we were, other first bytes, or other bytes
                // before the offset: it was truncated (or rewritten) meanwhile, so
                // this is new content from 0, a new generation even when it starts
                // with the same bytes.
                Some(_) => (
                    0,
                    Fingerprint::read(file, size, max_line)?,
                    c.generation + 1,
                    None,
                ),
                None => (
                    0,
                    Fingerprint::read(file, size, max_line)?,
                    c.generation,
                    None,
                ),
            },
        };
        let end_hash = if offset == 0 {
            0
        } else {
            end_hash(file, offset)?
        };
        tail.offset = offset;
        tail.end_hash = end_hash;
        (tail.crc_base, tail.crc) = crc.unwrap_or((offset, 0));
        tail.registered = registered;
        tail.generation = generation;
        tail.lineage = lineage;
        tail.start = (offset, end_hash);
        tail.set_fingerprint(fp);
        Ok(Some(tail))
    }

    fn set_fingerprint(&mut self, fp: Option<Fingerprint>) {
        self.fp = fp;
        self.source_id = fp.map_or(0, |fp| source_id(self.key, fp, self.generation));
        if let Some(fp) = fp {
            self.cfg.marks.insert(
                self.source_id,
                FileMark {
                    dev: self.key.dev,
                    ino: self.key.ino,
                    btime: self.key.btime,
                    fp_len: fp.len,
                    fp_hash: fp.hash,
                    generation: self.generation,
                },
                self.path.clone(),
                self.lineage.clone(),
            );
        }
    }

    /// Truncated or rewritten: what follows is a new generation read from 0. Its id
    /// comes from its own first bytes once the reader takes its fingerprint. The
    /// version before it stays known for a while, for a copy that shows up later.
    fn restart(&mut self) {
        if self.fp.is_some() {
            self.cfg.marks.supersede(self.source_id);
        }
        self.offset = 0;
        self.end_hash = 0;
        (self.crc_base, self.crc) = (0, 0);
        self.carry = 0;
        self.generation += 1;
        self.lineage = None;
        self.start = (0, 0);
        self.registered = Registered::No;
        self.started = Instant::now();
        self.set_fingerprint(None);
    }

    /// Where reading stands, as an anchor a copy can be recognized by.
    pub(crate) fn anchor(&self) -> Anchor {
        Anchor {
            offset: self.offset,
            end_hash: self.end_hash,
            base: self.crc_base,
            crc: self.crc,
        }
    }

    /// The records' source id and path: the lineage's, or this version's own.
    fn record_identity(&self) -> (u64, &Arc<str>) {
        match &self.lineage {
            Some(l) => (l.sid, &l.path),
            None => (self.source_id, &self.path),
        }
    }

    /// What to register in the checkpoints before this version's records are sent,
    /// so that a restart knows the content whatever happens to the file meanwhile
    /// (renamed and compressed, truncated and rewritten with the same first line):
    /// every version, at the offset it starts from; a copy with the lineage it
    /// continues; a compressed file with its size (a restart need not decompress it
    /// again once read). `None` when it is registered already.
    ///
    /// The registration carries the anchor where reading stands (the end of the
    /// chunk about to be sent): a restart that finds the file no longer reproduces
    /// it knows the file was rewritten meanwhile, even when it starts with the same
    /// line. Until that anchor proves more than the first line, the version is
    /// registered again with the first one that does.
    pub(crate) fn registration(&self) -> Option<RegistrationInfo> {
        let mark = self.mark()?;
        let proof = self.anchor();
        let strong = proof.is_strong(mark.fp_len);
        let due = match self.registered {
            Registered::No => true,
            Registered::Weak => strong,
            Registered::Strong => false,
        };
        if !due {
            return None;
        }
        Some(RegistrationInfo {
            source_id: self.source_id,
            mark,
            path: self.path.clone(),
            offset: self.start.0,
            end_hash: self.start.1,
            lineage: self.lineage.clone(),
            total: self.total,
            proof: (proof.offset > self.start.0).then_some(proof),
        })
    }

    /// The registration `r` is saved.
    fn registered(&mut self, r: &RegistrationInfo) {
        self.registered = if r.proof.is_some_and(|p| p.is_strong(r.mark.fp_len)) {
            Registered::Strong
        } else {
            Registered::Weak
        };
    }

    /// The identity of the current content, once it has a fingerprint.
    pub(crate) fn mark(&self) -> Option<FileMark> {
        self.fp.map(|fp| FileMark {
            dev: self.key.dev,
            ino: self.key.ino,
            btime: self.key.btime,
            fp_len: fp.len,
            fp_hash: fp.hash,
            generation: self.generation,
        })
    }

    pub(crate) fn key(&self) -> FileKey {
        self.key
    }

    pub(crate) fn path(&self) -> &Arc<str> {
        &self.path
    }

    /// File offset just past the last consumed byte.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    fn read_pos(&self) -> u64 {
        self.offset + self.carry as u64
    }

    /// Read up to `chunk_bytes` and encode the complete records in them.
    pub(crate) fn step(&mut self) -> io::Result<Step> {
        if self.gz.is_some() {
            return self.step_gz();
        }
        let size = self.file.metadata()?.len();
        let read_pos = self.read_pos();
        if size < read_pos {
            self.restart();
            return Ok(Step::Truncated { at: read_pos, size });
        }
        // Truncated and written again past our position between two looks
        // (copytruncate under load, or while reading waited on a full pipeline):
        // the first bytes, or the bytes just before our offset, are no longer ours.
        if let Some(fp) = self.fp
            && read_pos > 0
            && (Fingerprint::prefix(&self.file, u64::from(fp.len))? != Some(fp)
                || (self.end_hash != 0 && end_hash(&self.file, self.offset)? != self.end_hash))
        {
            self.restart();
            return Ok(Step::Truncated { at: read_pos, size });
        }
        if self.fp.is_none() {
            if size == 0 {
                return Ok(Step::Eof);
            }
            let Some(fp) = Fingerprint::read(&self.file, size, self.cfg.max_line_bytes)? else {
                return Ok(Step::Eof);
            };
            // A file opened before it held a first line (a copy being written, say)
            // is recognized now, before anything of it is read.
            if self.offset == 0 && self.generation == 0 && self.lineage.is_none() {
                let meta = self.file.metadata()?;
                match match_copy(&self.cfg.marks, &self.file, &self.path, fp, &meta) {
                    Ok(Some(c)) => {
                        self.offset = c.offset;
                        self.end_hash = if c.offset == 0 {
                            0
                        } else {
                            end_hash(&self.file, c.offset)?
                        };
                        (self.crc_base, self.crc) = (c.offset, 0);
                        self.start = (c.offset, self.end_hash);
                        self.lineage = Some(c.lineage);
                    }
                    Ok(None) => {}
                    // Maybe a copy still being written: look again at the next poll.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Eof),
                    Err(e) => return Err(e),
                }
            }
            self.set_fingerprint(Some(fp));
            return Ok(Step::Progress);
        }
        if size == read_pos {
            return Ok(Step::Eof);
        }
        // A new generation holding little more than its first line so far: give it
        // a moment to grow, so that its registration can prove more than that line
        // (after a copytruncate many contents start alike).
        if let Some(fp) = self.fp
            && self.generation > 0
            && self.offset == 0
            && self.registered == Registered::No
            && size < u64::from(fp.len) + anchor::MIN_WINDOW
            && self.started.elapsed() < Duration::from_secs(1)
        {
            return Ok(Step::Eof);
        }
        let want = (size - read_pos).min(self.cfg.chunk_bytes as u64) as usize;
        let need = self.carry + want;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let n = loop {
            match self.file.read_at(&mut self.buf[self.carry..need], read_pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        if n == 0 {
            return Ok(Step::Eof);
        }
        let at_end = read_pos + n as u64 >= size;
        Ok(match self.encode(self.carry + n, End::Wait)? {
            Step::Chunk(c) => Step::Chunk(Chunk { at_end, ..c }),
            step => step,
        })
    }

    /// Whether records can span lines (`multiline`, `format`).
    pub(crate) fn assembles(&self) -> bool {
        self.cfg.format.is_some() || self.cfg.multiline.is_some()
    }

    fn assembly(&self) -> Option<Assembly<'_>> {
        (self.cfg.format.is_some() || self.cfg.multiline.is_some()).then(|| Assembly {
            format: self.cfg.format,
            multiline: self.cfg.multiline.as_deref(),
        })
    }

    /// Encode the complete records of `buf[..data_len]` (an unfinished line, and with
    /// `multiline` or `format` an unfinished record, stay unless `end` says).
    fn encode(&mut self, data_len: usize, end: End) -> io::Result<Step> {
        let cfg = self.cfg.clone();
        let (sid, record_path) = self.record_identity();
        let record_path = record_path.clone();
        let header =
            BLOCK_HEADER_FIXED_LEN + cfg.host.len() + record_path.len() + self.fields.len();
        let mut payload =
            Vec::with_capacity(header + data_len / 1024 * self.ratio + data_len / 16 + 64);
        let mut block =
            BlockWriter::begin(&mut payload, &cfg.host, &record_path, sid, &self.fields);
        let rules = LineRules {
            max_line: cfg.max_line_bytes,
            ts: now_ms(),
            json: cfg.json.as_deref(),
        };
        let data = &self.buf[..data_len];
        let consumed = match self.assembly() {
            Some(asm) => {
                encode_assembled(data, self.offset, rules, asm, end, &mut block, &mut payload)
            }
            None => encode_lines(
                data,
                self.carry,
                self.offset,
                rules,
                &mut block,
                &mut payload,
            ),
        };
        let records = block.count();
        block.finish(&mut payload);
        let start_offset = self.offset;
        if consumed > 0 {
            self.end_hash = self.hash_before(consumed)?;
            self.crc = crc32c::crc32c_append(self.crc, &self.buf[..consumed]);
        }
        self.buf.copy_within(consumed..data_len, 0);
        self.carry = data_len - consumed;
        self.offset += consumed as u64;
        if records == 0 {
            return Ok(Step::Progress);
        }
        self.ratio =
            (payload.len().saturating_sub(header) * 1024 / consumed.max(1)).clamp(1024, 64 * 1024);
        cfg.marks.read_to(self.source_id, self.anchor());
        Ok(Step::Chunk(Chunk {
            topic: cfg.topic.clone(),
            payload,
            records,
            source_id: self.source_id,
            path: self.path.clone(),
            start_offset,
            end_offset: self.offset,
            end_hash: self.end_hash,
            crc_base: self.crc_base,
            crc: self.crc,
            cursor: None,
            at_end: true,
        }))
    }

    /// The end hash at `offset + n`, where `buf[..n]` holds the bytes from `offset`
    /// (which are being consumed): from the buffer when it holds enough of them, else
    /// from the file, or for a compressed file from the bytes kept before `offset`.
    fn hash_before(&mut self, n: usize) -> io::Result<u64> {
        if let Some(phase) = self.gz.as_deref_mut() {
            return Ok(match phase {
                GzPhase::Read(r) => r.consume(&self.buf[..n]),
                _ => 0,
            });
        }
        if n >= super::fingerprint::END_HASH_BYTES {
            Ok(end_hash_of(&self.buf[..n]))
        } else {
            end_hash(&self.file, self.offset + n as u64)
        }
    }

    /// Whether complete lines wait for the next one to tell where their record ends
    /// (`multiline`, or pieces of a runtime line): what a timeout flushes.
    pub(crate) fn pending(&self) -> bool {
        self.assembles() && memchr(b'\n', &self.buf[..self.carry]).is_some()
    }

    /// How long a record may wait for its next line.
    pub(crate) fn pending_timeout(&self) -> Duration {
        self.cfg
            .multiline
            .as_ref()
            .map_or(Duration::from_secs(1), |m| m.timeout)
    }

    /// Send the record waiting for its next line (no line came for the timeout, or
    /// the agent stops); an unfinished line stays.
    pub(crate) fn flush_pending(&mut self) -> io::Result<Option<Chunk>> {
        if !self.pending() {
            return Ok(None);
        }
        match self.encode(self.carry, End::Pending)? {
            Step::Chunk(c) => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// Emit the held unfinished line as a last record: used when a file that is gone
    /// is closed, since nobody will complete it.
    pub(crate) fn flush_final(&mut self) -> Option<Chunk> {
        if self.carry == 0 {
            return None;
        }
        if self.assembly().is_some() {
            return match self.encode(self.carry, End::All) {
                Ok(Step::Chunk(c)) => Some(c),
                _ => None,
            };
        }
        let cfg = self.cfg.clone();
        let (sid, record_path) = self.record_identity();
        let record_path = record_path.clone();
        let mut payload =
            Vec::with_capacity(BLOCK_HEADER_FIXED_LEN + 256 + self.carry + 2 * RECORD_HEADER_LEN);
        let mut block =
            BlockWriter::begin(&mut payload, &cfg.host, &record_path, sid, &self.fields);
        let ts = now_ms();
        push_line(
            &self.buf[..self.carry],
            self.offset,
            LineRules {
                max_line: cfg.max_line_bytes,
                ts,
                json: cfg.json.as_deref(),
            },
            &mut block,
            &mut payload,
        );
        let records = block.count();
        block.finish(&mut payload);
        let start_offset = self.offset;
        // 0 ("unknown, not checked") if the file cannot be read any more.
        self.end_hash = self.hash_before(self.carry).unwrap_or(0);
        self.crc = crc32c::crc32c_append(self.crc, &self.buf[..self.carry]);
        self.offset += self.carry as u64;
        self.carry = 0;
        Some(Chunk {
            topic: cfg.topic.clone(),
            payload,
            records,
            source_id: self.source_id,
            path: self.path.clone(),
            start_offset,
            end_offset: self.offset,
            end_hash: self.end_hash,
            crc_base: self.crc_base,
            crc: self.crc,
            cursor: None,
            at_end: true,
        })
    }

    /// Whether the file's size differs from the read position (growth, truncation or a
    /// first fingerprint to take). One `fstat`, cheap enough for the async poll tick;
    /// an error answers `true` so that [`Tail::step`] reports it.
    pub(crate) fn has_news(&self) -> bool {
        if let Some(phase) = self.gz.as_deref() {
            return !matches!(phase, GzPhase::Done);
        }
        self.file
            .metadata()
            .map_or(true, |m| m.len() != self.read_pos())
    }

    /// Give back a big read buffer while the file is idle.
    pub(crate) fn shrink_idle(&mut self) {
        if self.buf.len() > IDLE_BUF_BYTES.max(self.carry) {
            self.buf.truncate(self.carry);
            self.buf.shrink_to(IDLE_BUF_BYTES);
        }
    }

    /// What to remember of this file once its reader stops.
    pub(crate) fn closed(&self, failed: bool) -> Closed {
        let ctime = self
            .file
            .metadata()
            .map_or((0, 0), |m| (m.ctime(), m.ctime_nsec()));
        Closed {
            fp: self.fp,
            lineage: self.lineage.clone(),
            offset: self.offset,
            end_hash: self.end_hash,
            crc: Some((self.crc_base, self.crc)),
            proof: None,
            read_pos: self.read_pos(),
            generation: self.generation,
            failed,
            idle: false,
            total: self.total,
            done: matches!(self.gz.as_deref(), Some(GzPhase::Done)),
            ctime,
            at: Instant::now(),
        }
    }
}

/// The block fields of a file: the input's, and with a `format` the pod's names
/// when the path is a Kubernetes container log.
fn file_fields(cfg: &TailConfig, path: &str) -> Arc<[u8]> {
    let k8s = match cfg.format {
        Some(_) => k8s_fields(path),
        None => None,
    };
    let Some(k8s) = k8s else {
        return cfg.fields.clone();
    };
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&cfg.fields).unwrap_or_default();
    let names = k8s
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
        .collect();
    map.entry("k8s").or_insert(serde_json::Value::Object(names));
    serde_json::to_vec(&map).map_or_else(|_| cfg.fields.clone(), Arc::from)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Encode the records of `data`, which starts at file offset `base` with a line start;
/// `data[..scan_from]` is known to hold no newline. Returns how many bytes were
/// consumed: everything up to the last newline, plus the full pieces of an over-long
/// unfinished line. The rest is an unfinished line to keep.
pub(crate) fn encode_lines(
    data: &[u8],
    scan_from: usize,
    base: u64,
    rules: LineRules<'_>,
    block: &mut BlockWriter,
    out: &mut Vec<u8>,
) -> usize {
    let LineRules { max_line, ts, .. } = rules;
    let mut start = 0;
    let mut search = scan_from.min(data.len());
    while let Some(i) = memchr(b'\n', &data[search..]) {
        let nl = search + i;
        let end = if nl > start && data[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        push_line(&data[start..end], base + start as u64, rules, block, out);
        start = nl + 1;
        search = start;
    }
    // More than max_line + 1 bytes without a newline: even if the next bytes are "\r\n"
    // the line is longer than max_line, so a full piece is certain.
    while data.len() - start > max_line.saturating_add(1) {
        block.push(
            out,
            FLAG_PARTIAL,
            ts,
            base + start as u64,
            b"",
            &data[start..start + max_line],
        );
        start += max_line;
    }
    start
}

/// How lines become records: pieces of at most `max_line` bytes, read at `ts`,
/// and with `json` a line that fits in one piece is parsed (see `input::json`).
#[derive(Clone, Copy)]
pub(crate) struct LineRules<'a> {
    pub max_line: usize,
    pub ts: i64,
    pub json: Option<&'a crate::input::json::JsonParse>,
}

/// One line without its terminator, as [`LineRules`] say.
fn push_line(
    line: &[u8],
    at: u64,
    rules: LineRules<'_>,
    block: &mut BlockWriter,
    out: &mut Vec<u8>,
) {
    let LineRules { max_line, ts, json } = rules;
    if let Some(j) = json
        && line.len() <= max_line
    {
        let p = j.parse(line);
        let message = p.message.as_deref().unwrap_or(line);
        block.push(out, 0, p.timestamp_ms.unwrap_or(ts), at, &p.fields, message);
        return;
    }
    let mut s = 0;
    while line.len() - s > max_line {
        block.push(
            out,
            FLAG_PARTIAL,
            ts,
            at + s as u64,
            b"",
            &line[s..s + max_line],
        );
        s += max_line;
    }
    block.push(out, 0, ts, at + s as u64, b"", &line[s..]);
}
