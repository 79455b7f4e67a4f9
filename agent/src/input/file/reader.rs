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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memchr::memchr;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tributary_common::record::{
    BLOCK_HEADER_FIXED_LEN, BlockWriter, FLAG_PARTIAL, RECORD_HEADER_LEN,
};

use super::fingerprint::{FileKey, Fingerprint, end_hash, end_hash_of, source_id};
use super::{Chunk, FileMark, Marks};

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
    /// Where every file version read in this run registers its identity.
    pub marks: Arc<Marks>,
}

/// Where a newly opened file starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StartAt {
    Beginning,
    End,
    /// The same inode was read earlier in this run: continue where it stopped if its
    /// first bytes still match, else it is new content and starts at 0.
    Resume(Closed),
}

/// What is remembered of a file whose reader stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closed {
    pub fp: Option<Fingerprint>,
    pub offset: u64,
    /// Hash of the bytes before `offset` (0: unknown, not checked).
    pub end_hash: u64,
    /// Bytes read when closed (`offset` plus an unfinished line): a file of another
    /// size changed after the last read, whatever its `ctime` says.
    pub read_pos: u64,
    /// Truncations seen so far (part of the source id).
    pub generation: u32,
    /// The reader stopped on an error: only retry once the file changed (`ctime`).
    pub failed: bool,
    /// The reader closed an idle file: reopen it once the file changed (`ctime`).
    pub idle: bool,
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
}

/// One open, tailed file.
pub(crate) struct Tail {
    cfg: Arc<TailConfig>,
    file: File,
    key: FileKey,
    path: Arc<str>,
    fp: Option<Fingerprint>,
    source_id: u64,
    /// Truncations seen (copytruncate); part of the source id.
    generation: u32,
    /// File offset of `buf[0]`.
    offset: u64,
    /// Hash of the bytes before `offset` (see `fingerprint::end_hash_of`).
    end_hash: u64,
    /// `buf[..carry]` holds the start of an unfinished line.
    carry: usize,
    /// Read buffer; its length is a high-water mark, reused across reads.
    buf: Vec<u8>,
    /// Payload bytes per 1024 input bytes seen in the last chunk, to size the next one.
    ratio: usize,
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
        let size = meta.len();
        let (offset, fp, generation) = match start {
            StartAt::Beginning => (0, Fingerprint::read(&file, size, cfg.max_line_bytes)?, 0),
            StartAt::End => (size, Fingerprint::read(&file, size, cfg.max_line_bytes)?, 0),
            StartAt::Resume(c) => match c.fp {
                Some(fp)
                    if size >= c.offset
                        && Fingerprint::prefix(&file, u64::from(fp.len))? == Some(fp)
                        && (c.end_hash == 0 || end_hash(&file, c.offset)? == c.end_hash) =>
                {
                    (c.offset, Some(fp), c.generation)
                }
                // Shorter than where we were, other first bytes, or other bytes
                // before the offset: it was truncated (or rewritten) meanwhile, so
                // this is new content from 0, a new generation even when it starts
                // with the same bytes.
                Some(_) => (
                    0,
                    Fingerprint::read(&file, size, cfg.max_line_bytes)?,
                    c.generation + 1,
                ),
                None => (
                    0,
                    Fingerprint::read(&file, size, cfg.max_line_bytes)?,
                    c.generation,
                ),
            },
        };
        let end_hash = match start {
            StartAt::Resume(c) if offset == c.offset => c.end_hash,
            _ if offset == 0 => 0,
            _ => end_hash(&file, offset)?,
        };
        let mut tail = Tail {
            cfg,
            file,
            key: expected,
            path: path.to_string_lossy().into(),
            fp: None,
            source_id: 0,
            generation,
            offset,
            end_hash,
            carry: 0,
            buf: Vec::new(),
            ratio: 1400,
        };
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
            );
        }
    }

    /// Truncated or rewritten: what follows is a new generation read from 0. Its id
    /// comes from its own first bytes once the reader takes its fingerprint.
    fn restart(&mut self) {
        self.offset = 0;
        self.end_hash = 0;
        self.carry = 0;
        self.generation += 1;
        self.set_fingerprint(None);
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
            let fp = Fingerprint::read(&self.file, size, self.cfg.max_line_bytes)?;
            self.set_fingerprint(fp);
            if self.fp.is_none() {
                return Ok(Step::Eof);
            }
        }
        if size == read_pos {
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
        let data_len = self.carry + n;
        let cfg = &*self.cfg;
        let header = BLOCK_HEADER_FIXED_LEN + cfg.host.len() + self.path.len() + cfg.fields.len();
        let mut payload =
            Vec::with_capacity(header + data_len / 1024 * self.ratio + data_len / 16 + 64);
        let mut block = BlockWriter::begin(
            &mut payload,
            &cfg.host,
            &self.path,
            self.source_id,
            &cfg.fields,
        );
        let consumed = encode_lines(
            &self.buf[..data_len],
            self.carry,
            self.offset,
            cfg.max_line_bytes,
            now_ms(),
            &mut block,
            &mut payload,
        );
        let records = block.count();
        block.finish(&mut payload);
        let start_offset = self.offset;
        if consumed > 0 {
            self.end_hash = self.hash_before(consumed)?;
        }
        self.buf.copy_within(consumed..data_len, 0);
        self.carry = data_len - consumed;
        self.offset += consumed as u64;
        if records == 0 {
            return Ok(Step::Progress);
        }
        self.ratio =
            (payload.len().saturating_sub(header) * 1024 / consumed.max(1)).clamp(1024, 64 * 1024);
        Ok(Step::Chunk(Chunk {
            topic: cfg.topic.clone(),
            payload,
            records,
            source_id: self.source_id,
            path: self.path.clone(),
            start_offset,
            end_offset: self.offset,
            end_hash: self.end_hash,
        }))
    }

    /// The end hash at `offset + n`, where `buf[..n]` holds the bytes from `offset`:
    /// from the buffer when it holds enough of them, else from the file.
    fn hash_before(&self, n: usize) -> io::Result<u64> {
        if n >= super::fingerprint::END_HASH_BYTES {
            Ok(end_hash_of(&self.buf[..n]))
        } else {
            end_hash(&self.file, self.offset + n as u64)
        }
    }

    /// Emit the held unfinished line as a last record: used when a file that is gone
    /// is closed, since nobody will complete it.
    pub(crate) fn flush_final(&mut self) -> Option<Chunk> {
        if self.carry == 0 {
            return None;
        }
        let cfg = &*self.cfg;
        let mut payload =
            Vec::with_capacity(BLOCK_HEADER_FIXED_LEN + 256 + self.carry + 2 * RECORD_HEADER_LEN);
        let mut block = BlockWriter::begin(
            &mut payload,
            &cfg.host,
            &self.path,
            self.source_id,
            &cfg.fields,
        );
        let ts = now_ms();
        push_line(
            &self.buf[..self.carry],
            self.offset,
            cfg.max_line_bytes,
            ts,
            &mut block,
            &mut payload,
        );
        let records = block.count();
        block.finish(&mut payload);
        let start_offset = self.offset;
        // 0 ("unknown, not checked") if the file cannot be read any more.
        self.end_hash = self.hash_before(self.carry).unwrap_or(0);
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
        })
    }

    /// Whether the file's size differs from the read position (growth, truncation or a
    /// first fingerprint to take). One `fstat`, cheap enough for the async poll tick;
    /// an error answers `true` so that [`Tail::step`] reports it.
    pub(crate) fn has_news(&self) -> bool {
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
            offset: self.offset,
            end_hash: self.end_hash,
            read_pos: self.read_pos(),
            generation: self.generation,
            failed,
            idle: false,
            ctime,
            at: Instant::now(),
        }
    }
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
    max_line: usize,
    ts: i64,
    block: &mut BlockWriter,
    out: &mut Vec<u8>,
) -> usize {
    let mut start = 0;
    let mut search = scan_from.min(data.len());
    while let Some(i) = memchr(b'\n', &data[search..]) {
        let nl = search + i;
        let end = if nl > start && data[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        push_line(
            &data[start..end],
            base + start as u64,
            max_line,
            ts,
            block,
            out,
        );
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

/// One line without its terminator, cut into pieces of at most `max_line` bytes.
fn push_line(
    line: &[u8],
    at: u64,
    max_line: usize,
    ts: i64,
    block: &mut BlockWriter,
    out: &mut Vec<u8>,
) {
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

/// Why a reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// The file was gone from the scans, read to its end and closed.
    Orphaned,
    /// Reading failed; the error was logged.
    Failed,
    /// Nothing new for `close_inactive`: the file was closed to free its descriptor.
    Idle,
    Shutdown,
    /// The chunk receiver is gone.
    ChannelClosed,
}

#[derive(Debug)]
pub(crate) struct ReaderExit {
    pub key: FileKey,
    pub reason: ExitReason,
    pub closed: Option<Closed>,
}

/// How a reader talks to the rest of the input.
pub(crate) struct Follow {
    pub tx: mpsc::Sender<Chunk>,
    pub shutdown: CancellationToken,
    /// Woken by watcher events for this file's paths and by the coordinator.
    pub wake: Arc<Notify>,
    /// Set by the coordinator when the file no longer appears under any matching path.
    pub orphaned: Arc<AtomicBool>,
    pub poll_interval: Duration,
    /// Close the file after this long without new data (it is reopened by identity
    /// when it changes), so thousands of matched files do not hold thousands of
    /// descriptors. Only while more than [`CLOSE_IDLE_ABOVE`] files are open: a
    /// closed file that is renamed out of the globs right after new lines were
    /// written has no reader to finish it, so files stay open when there is room.
    pub close_inactive: Duration,
    /// The agent's counters (files open).
    pub stats: Arc<crate::stats::AgentStats>,
}

/// Idle files are closed only while more files than this are open.
pub(crate) const CLOSE_IDLE_ABOVE: u64 = 100;

/// Tail one file until shutdown, an error, or (once it is gone) its end.
pub(crate) async fn follow(mut tail: Tail, f: Follow) -> ReaderExit {
    let key = tail.key();
    let exit = |reason, closed| ReaderExit {
        key,
        reason,
        closed,
    };
    debug!(path = %tail.path(), offset = tail.offset(), "tailing file");
    let mut last_data = Instant::now();
    loop {
        let job = tokio::task::spawn_blocking(move || {
            let r = tail.step();
            (tail, r)
        });
        let (t, step) = tokio::select! {
            biased;
            _ = f.shutdown.cancelled() => return exit(ExitReason::Shutdown, None),
            r = job => match r {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "file reader task failed");
                    return exit(ExitReason::Failed, None);
                }
            },
        };
        tail = t;
        match step {
            Err(e) => {
                warn!(path = %tail.path(), error = %e, "reading file failed; dropping it");
                return exit(ExitReason::Failed, Some(tail.closed(true)));
            }
            Ok(Step::Chunk(chunk)) => {
                last_data = Instant::now();
                if let Some(reason) = make_durable(&tail, &f).await {
                    return exit(reason, None);
                }
                if let Some(reason) = send(&f, chunk).await {
                    return exit(reason, None);
                }
            }
            Ok(Step::Progress) => last_data = Instant::now(),
            Ok(Step::Truncated { at, size }) => {
                info!(path = %tail.path(), offset = at, size, "file truncated; reading it again from the start");
                last_data = Instant::now();
            }
            Ok(Step::Eof) => {
                let orphaned = f.orphaned.load(Ordering::Relaxed);
                if orphaned && last_data.elapsed() >= f.poll_interval {
                    if let Some(chunk) = tail.flush_final() {
                        if let Some(reason) = make_durable(&tail, &f).await {
                            return exit(reason, None);
                        }
                        if let Some(reason) = send(&f, chunk).await {
                            return exit(reason, None);
                        }
                    }
                    debug!(path = %tail.path(), offset = tail.offset(), "file is gone and read to its end; closing it");
                    return exit(ExitReason::Orphaned, Some(tail.closed(false)));
                }
                let crowded = f.stats.files_open.load(Ordering::Relaxed) > CLOSE_IDLE_ABOVE;
                if crowded && last_data.elapsed() >= f.close_inactive {
                    debug!(path = %tail.path(), offset = tail.offset(), "file inactive; closing it until it changes");
                    let mut closed = tail.closed(false);
                    closed.idle = true;
                    return exit(ExitReason::Idle, Some(closed));
                }
                tail.shrink_idle();
                // Look again after close_inactive: the file may be due for closing then,
                // or more files may be open by then (never a deadline in the past).
                let since = if crowded { last_data } else { Instant::now() };
                let idle_at = tokio::time::Instant::from_std(since + f.close_inactive);
                loop {
                    tokio::select! {
                        biased;
                        _ = f.shutdown.cancelled() => return exit(ExitReason::Shutdown, None),
                        _ = f.wake.notified() => break,
                        _ = tokio::time::sleep_until(idle_at) => break,
                        _ = tokio::time::sleep(f.poll_interval) => {
                            if f.orphaned.load(Ordering::Relaxed) || tail.has_news() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A generation after a truncation is registered in the saved checkpoints before
/// its first record leaves (see [`Marks::make_durable`]). `Some(reason)` when the
/// reader must stop instead.
async fn make_durable(tail: &Tail, f: &Follow) -> Option<ExitReason> {
    let mark = tail.mark()?;
    if mark.generation == 0 || tail.cfg.marks.is_durable(tail.source_id) {
        return None;
    }
    tokio::select! {
        biased;
        _ = f.shutdown.cancelled() => Some(ExitReason::Shutdown),
        () = tail.cfg.marks.make_durable(tail.source_id, mark, tail.path.clone()) => None,
    }
}

/// Send one chunk, waiting while the channel is full. `Some(reason)` when the reader
/// must stop instead.
async fn send(f: &Follow, chunk: Chunk) -> Option<ExitReason> {
    tokio::select! {
        biased;
        _ = f.shutdown.cancelled() => Some(ExitReason::Shutdown),
        r = f.tx.send(chunk) => r.is_err().then_some(ExitReason::ChannelClosed),
    }
}
