//! The disk spool: batches waiting for a collector, in order, on disk.
//!
//! While no collector answers, the shipper moves batches from the batcher into the
//! spool instead of stopping, so files keep being read (a file rotated away and
//! deleted during an outage is not lost) while memory stays bounded. When the spool
//! holds `max_bytes`, the shipper stops taking batches and the readers stop: files
//! wait on disk, nothing is dropped.
//!
//! Order is what makes deduplication safe: a later batch of a file must never be
//! stored before an earlier one. So the shipper sends strictly in this order:
//! in-flight batches (resent after a reconnect), then the spool (oldest first), then
//! new batches; while the spool is not empty, new batches go behind it.
//!
//! Layout: `data_dir/spool/<id:020>.batch`, one batch per file, written to a temp
//! name, fsynced and renamed (a crash never leaves a half file under a real name):
//! ```text
//! "TSP2" | u32 crc32c of the rest | u32 frame_len | BATCH frame (wire encoding, seq 0)
//!        | u32 json_len | positions (JSON)
//! ```
//! Spooled batches survive restarts and are sent first; their records are also
//! re-read from the files (checkpoints only move on acknowledgement), and the
//! collector drops the copies it already has.
//!
//! Damage (a bad CRC, a cut file: a disk error or power loss) is checked for every
//! file at open. A damaged file and every file after it are moved to
//! `spool/damaged/`, not sent: sending the later ones would store lines past the gap,
//! and the collector would then drop the gap's lines, re-read from the files, as
//! duplicates. Without them the files are re-read from their checkpoints, which never
//! pass an unacknowledged batch, so only lines of files deleted meanwhile are lost;
//! the error log says how many batches were set aside. Damage found while running
//! (the file was sound at open or written since: a disk error) sets that one file
//! aside and its lines are lost; the error log says so.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};
use tributary_common::wire::{DEFAULT_MAX_FRAME_BYTES, Frame, FrameCodec};

use crate::batch::{Batch, Position};

const MAGIC: &[u8; 4] = b"TSP2";
/// Where damaged files are moved, inside the spool directory.
const DAMAGED_DIR: &str = "damaged";

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<tributary_common::fs::WriteError> for SpoolError {
    fn from(e: tributary_common::fs::WriteError) -> SpoolError {
        SpoolError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError {
    let path = path.to_owned();
    move |source| SpoolError::Io { op, path, source }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SpooledPosition {
    source_id: u64,
    path: String,
    end_offset: u64,
    #[serde(default)]
    end_hash: u64,
    #[serde(default)]
    crc_base: u64,
    #[serde(default)]
    crc: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
}

/// A FIFO of batches on disk with a size limit. A batch's file is deleted only when
/// the batch is acknowledged, so a crash while it is in flight sends it again.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    bytes: u64,
    /// Waiting to be sent, oldest first: (id, size).
    unsent: VecDeque<(u64, u64)>,
    /// Sent (in flight) and still on disk until acknowledged: id → size.
    sent: std::collections::HashMap<u64, u64>,
    next_id: u64,
}

impl Spool {
    /// Open `dir` (created when missing) and take what an earlier run left, oldest
    /// first: everything on disk is unsent again, up to the first damaged file.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".batch")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                files.push((id, size));
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        files.sort_unstable();
        let next_id = files.last().map_or(0, |f| f.0 + 1);
        if let Some(bad) = files
            .iter()
            .position(|&(id, _)| !is_sound(&dir.join(format!("{id:020}.batch"))))
        {
            let aside = dir.join(DAMAGED_DIR);
            std::fs::create_dir_all(&aside).map_err(io_err("create directory", &aside))?;
            let moved = files.split_off(bad);
            for &(id, _) in &moved {
                let name = format!("{id:020}.batch");
                let from = dir.join(&name);
                std::fs::rename(&from, aside.join(&name)).map_err(io_err("rename", &from))?;
            }
            tracing::error!(first = %dir.join(format!("{:020}.batch", moved[0].0)).display(),
                set_aside = moved.len(), moved_to = %aside.display(),
                "damaged spool file: it and every later spooled batch are set aside; their lines are read \
                 again from the files' checkpoints (lines of files deleted meanwhile are lost)");
        }
        let bytes = files.iter().map(|f| f.1).sum();
        if !files.is_empty() {
            tracing::info!(batches = files.len(), bytes, dir = %dir.display(), "spool holds batches from an earlier run; sending them first");
        }
        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            bytes,
            unsent: files.into(),
            sent: std::collections::HashMap::new(),
            next_id,
        })
    }

    /// Nothing waits to be sent (batches in flight may still be on disk).
    pub fn is_empty(&self) -> bool {
        self.unsent.is_empty()
    }

    /// Batches waiting to be sent.
    pub fn len(&self) -> usize {
        self.unsent.len()
    }

    /// Bytes on disk (waiting and in flight).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether one more batch may be added (the last one may pass the limit).
    pub fn has_room(&self) -> bool {
        self.bytes < self.max_bytes
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.batch"))
    }

    fn write(&mut self, batch: &Batch) -> Result<(u64, u64), SpoolError> {
        let mut frame = BytesMut::new();
        // The batcher never builds a frame over the limit; encoding cannot fail.
        let _ = FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
            .encode(Frame::Batch(batch.frame.clone()), &mut frame);
        let positions: Vec<SpooledPosition> = batch
            .positions
            .iter()
            .map(|p| SpooledPosition {
                source_id: p.source_id,
                path: p.path.to_string(),
                end_offset: p.end_offset,
                end_hash: p.end_hash,
                crc_base: p.crc_base,
                crc: p.crc,
                cursor: p.cursor.as_deref().map(str::to_owned),
            })
            .collect();
        let json = serde_json::to_vec(&positions).unwrap_or_default();
        let mut data = Vec::with_capacity(16 + frame.len() + json.len());
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&[0; 4]);
        data.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        data.extend_from_slice(&frame);
        data.extend_from_slice(&(json.len() as u32).to_le_bytes());
        data.extend_from_slice(&json);
        let crc = crc32c::crc32c(&data[8..]);
        data[4..8].copy_from_slice(&crc.to_le_bytes());
        let id = self.next_id;
        let path = self.path(id);
        tributary_common::fs::write_atomic(&path, &data)?;
        self.next_id += 1;
        self.bytes += data.len() as u64;
        Ok((id, data.len() as u64))
    }

    /// Append a batch at the back, to be sent.
    pub fn push(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let f = self.write(batch)?;
        self.unsent.push_back(f);
        Ok(())
    }

    /// Store a batch that is already in flight, so that after a crash it is sent
    /// again before anything spooled later. Returns its id for [`ack`](Self::ack).
    pub fn push_sent(&mut self, batch: &Batch) -> Result<u64, SpoolError> {
        let (id, size) = self.write(batch)?;
        self.sent.insert(id, size);
        Ok(id)
    }

    /// The oldest unsent batch, now in flight (its file stays until [`ack`](Self::ack)).
    /// A damaged file is logged and set aside.
    pub fn next_unsent(&mut self) -> Result<Option<(u64, Batch)>, SpoolError> {
        while let Some((id, size)) = self.unsent.pop_front() {
            let path = self.path(id);
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) => {
                    // Still first in line: nothing may overtake it.
                    self.unsent.push_front((id, size));
                    return Err(io_err("read", &path)(e));
                }
            };
            match decode(&data) {
                Some(batch) => {
                    self.sent.insert(id, size);
                    return Ok(Some((id, batch)));
                }
                None => {
                    let aside = self.dir.join(DAMAGED_DIR);
                    std::fs::create_dir_all(&aside).map_err(io_err("create directory", &aside))?;
                    let to = aside.join(format!("{id:020}.batch"));
                    tracing::error!(path = %path.display(), moved_to = %to.display(),
                        "spool file damaged since it was written (disk error?); its lines are lost");
                    self.bytes = self.bytes.saturating_sub(size);
                    std::fs::rename(&path, &to).map_err(io_err("rename", &path))?;
                }
            }
        }
        Ok(None)
    }

    /// The batch `id` was acknowledged: remove its file.
    pub fn ack(&mut self, id: u64) -> Result<(), SpoolError> {
        if let Some(size) = self.sent.remove(&id) {
            self.bytes = self.bytes.saturating_sub(size);
            let path = self.path(id);
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        Ok(())
    }
}

/// Whether the file at `path` reads back whole with its CRC.
fn is_sound(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|d| checked(&d).is_some())
}

/// The bytes after the CRC field, if the magic and the CRC check out.
fn checked(data: &[u8]) -> Option<&[u8]> {
    let rest = data.strip_prefix(MAGIC)?;
    let (crc, rest) = rest.split_first_chunk::<4>()?;
    (crc32c::crc32c(rest) == u32::from_le_bytes(*crc)).then_some(rest)
}

fn decode(data: &[u8]) -> Option<Batch> {
    let rest = checked(data)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let frame = rest.get(..len)?;
    let rest = rest.get(len..)?;
    let (jlen, rest) = rest.split_first_chunk::<4>()?;
    let json = rest.get(..u32::from_le_bytes(*jlen) as usize)?;
    let mut buf = BytesMut::from(frame);
    let Ok(Some(Frame::Batch(frame))) = FrameCodec::new(DEFAULT_MAX_FRAME_BYTES).decode(&mut buf)
    else {
        return None;
    };
    let positions: Vec<SpooledPosition> = serde_json::from_slice(json).ok()?;
    Some(Batch {
        frame,
        positions: positions
            .into_iter()
            .map(|p| Position {
                source_id: p.source_id,
                path: p.path.into(),
                end_offset: p.end_offset,
                end_hash: p.end_hash,
                crc_base: p.crc_base,
                crc: p.crc,
                cursor: p.cursor.map(std::sync::Arc::from),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_common::codec::Compression;
    use tributary_common::record::BlockWriter;
    use tributary_common::wire::BatchFrame;

    fn batch(n: u64) -> Batch {
        let mut p = Vec::new();
        let mut b = BlockWriter::begin(&mut p, "h", "/f", 9, b"");
        b.push(&mut p, 0, 1, n, b"", format!("line {n}").as_bytes());
        b.finish(&mut p);
        Batch {
            frame: BatchFrame::build(0, "app", Compression::Lz4, 1, &p, &mut Vec::new()),
            positions: vec![Position {
                source_id: 9,
                path: "/f".into(),
                end_offset: n,
                end_hash: n,
                crc_base: 0,
                crc: 0,
                cursor: None,
            }],
        }
    }

    #[test]
    fn fifo_across_reopen_with_limit_and_delete_on_ack() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1).unwrap();
        assert!(s.has_room());
        s.push(&batch(1)).unwrap();
        assert!(!s.has_room(), "the limit is reached");
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.push(&batch(2)).unwrap();
        let id3 = s.push_sent(&batch(3)).unwrap();
        s.push(&batch(4)).unwrap();
        assert_eq!(s.len(), 3, "the in-flight batch is not waiting");
        // Sent but not acknowledged: still there after a crash, in order.
        let (id1, b1) = s.next_unsent().unwrap().unwrap();
        assert_eq!(b1.positions[0].end_offset, 1);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut order = Vec::new();
        while let Some((id, b)) = s.next_unsent().unwrap() {
            order.push(b.positions[0].end_offset);
            assert_eq!(b.frame, batch(b.positions[0].end_offset).frame);
            s.ack(id).unwrap();
        }
        assert_eq!(order, [1, 2, 3, 4]);
        assert_eq!(s.bytes(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let _ = (id1, id3);
    }

    #[test]
    fn a_damaged_file_and_everything_after_it_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for n in 1..=4 {
            s.push(&batch(n)).unwrap();
        }
        // One flipped byte in the third file.
        let third = dir.path().join(format!("{:020}.batch", 2));
        let mut data = std::fs::read(&third).unwrap();
        let at = data.len() / 2;
        data[at] ^= 0x40;
        std::fs::write(&third, &data).unwrap();
        std::fs::write(dir.path().join("x.tmp"), b"half").unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut got = Vec::new();
        while let Some((id, b)) = s.next_unsent().unwrap() {
            got.push(b.positions[0].end_offset);
            s.ack(id).unwrap();
        }
        assert_eq!(got, [1, 2], "nothing past the damage is sent");
        let aside: Vec<_> = std::fs::read_dir(dir.path().join(DAMAGED_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(aside.len(), 2, "{aside:?}");
        assert!(!dir.path().join("x.tmp").exists());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn a_cut_file_is_damage_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.push(&batch(1)).unwrap();
        let f = dir.path().join(format!("{:020}.batch", 0));
        let data = std::fs::read(&f).unwrap();
        for cut in [0, 3, 8, data.len() - 1] {
            std::fs::write(&f, &data[..cut]).unwrap();
            assert!(!is_sound(&f), "cut at {cut}");
        }
        std::fs::write(&f, &data).unwrap();
        assert!(is_sound(&f));
    }
}
