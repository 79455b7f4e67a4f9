//! Content identity for a [`Tail`](super::Tail): is a new file a copy of known
//! content, and does a resumed file still hold the content of its checkpoint.

use std::fs::File;
use std::io;
use std::time::Duration;

use super::super::anchor::{self, Anchor};
use super::super::fingerprint::Fingerprint;
use super::super::{CopyOf, Marks};
use super::Closed;

/// The known content a new file continues, if it is a copy of it (see `marks`).
/// `WouldBlock` when it is named and starts like known content but holds none of it
/// yet, while it is young: maybe a copy being written (logrotate copies in pieces),
/// to be looked at again once it has settled.
pub(super) fn match_copy(
    marks: &Marks,
    file: &File,
    path: &str,
    fp: Fingerprint,
    meta: &std::fs::Metadata,
) -> io::Result<Option<CopyOf>> {
    let fp = (fp.len, fp.hash);
    let size = meta.len();
    let anchors = marks.copy_anchors(path, fp, size);
    let copy = if anchors.is_empty() {
        None
    } else {
        let ok = anchor::verify_file(file, size, anchors.clone())?;
        marks.find_copy(path, fp, &anchors, &ok)
    };
    if copy.is_none() && young(meta) && marks.has_related(path, fp) {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "may be a copy still being written",
        ));
    }
    Ok(copy)
}

/// Created within the last three seconds (a file written for longer, a log in
/// use, is never waited for; without birth times nothing is).
pub(super) fn young(meta: &std::fs::Metadata) -> bool {
    meta.created()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(3))
}

/// Whether a plain file still holds the content of `c` up to its offset: the CRC
/// anchor there (when its window is small enough to read at start-up, 4 MiB) and
/// the registered anchor past it, if any. The first line and the 32 bytes before
/// the offset were checked already; they alone do not tell apart contents that
/// start with the same line and end lines alike.
pub(super) fn same_content(file: &File, size: u64, c: &Closed) -> io::Result<bool> {
    let mut anchors = Vec::new();
    if c.crc.is_some() {
        let a = resume_anchor(c);
        if a.offset > a.base && a.offset - a.base <= 4 << 20 {
            anchors.push(a);
        }
    }
    if let Some(p) = c.proof.filter(|p| p.offset > c.offset) {
        if p.offset > size {
            return Ok(false);
        }
        anchors.push(p);
    }
    if anchors.is_empty() {
        return Ok(true);
    }
    Ok(anchor::verify_file(file, size, anchors)?
        .iter()
        .all(|ok| *ok))
}

/// The anchor a compressed file's checkpoint must reproduce to be resumed.
pub(super) fn resume_anchor(c: &Closed) -> Anchor {
    let (base, crc) = c.crc.unwrap_or((c.offset, 0));
    Anchor {
        offset: c.offset,
        end_hash: c.end_hash,
        base,
        crc,
    }
}
