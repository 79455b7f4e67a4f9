//! The deduplication table at open: the newest valid snapshot whose offset is the
//! base of a segment, less the sources last seen below the first segment (deleted
//! by retention), then a scan of the segments from there on; without one, a scan
//! of every segment. Either way the table is what a scan of every segment gives.
//!
//! The scan reads every batch (CRC-checked) with a [`Walk`](crate::walk::Walk), so damage in a
//! segment is stepped over with a warning; the table then only misses what cannot
//! be read anyway.

use std::path::Path;
use std::sync::Arc;

use tracing::warn;

use crate::segment::Segment;
use crate::walk::Step;

use super::{Sources, snapshot};

/// The table for a partition in `dir` with these `segments` (oldest first) and
/// snapshot files at `snapshots` (sorted offsets).
pub(crate) fn load(dir: &Path, segments: &[Arc<Segment>], snapshots: &[u64]) -> Sources {
    for &offset in snapshots.iter().rev() {
        let Ok(first) = segments.binary_search_by_key(&offset, |s| s.base_offset) else {
            continue;
        };
        match snapshot::read(dir, offset) {
            Ok(Ok(mut sources)) => {
                sources.prune(segments[0].base_offset);
                tracing::debug!(partition = %dir.display(), offset, scanned_segments = segments.len() - first,
                    "deduplication state loaded from a snapshot");
                scan(&mut sources, &segments[first..]);
                return sources;
            }
            Ok(Err(reason)) => warn!(partition = %dir.display(), offset, %reason,
                "ignoring a damaged deduplication snapshot; scanning more of the log"),
            Err(e) => warn!(error = %e,
                "cannot read a deduplication snapshot; scanning more of the log"),
        }
    }
    let mut sources = Sources::default();
    scan(&mut sources, segments);
    sources
}

/// Account for every readable record of `segments` (consecutive, oldest first).
fn scan(sources: &mut Sources, segments: &[Arc<Segment>]) {
    for (i, seg) in segments.iter().enumerate() {
        let upper = segments.get(i + 1).map_or(u64::MAX, |s| s.base_offset);
        let reader = match seg.reader() {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot scan a segment for deduplication");
                continue;
            }
        };
        let walk = match reader.walk(0, seg.base_offset, upper) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot scan a segment for deduplication");
                continue;
            }
        };
        for step in walk {
            match step {
                Ok(Step::Batch { pos, header }) => match reader.read_payload(pos, &header) {
                    Ok(payload) => {
                        if let Err(e) = sources.observe(&payload, header.base_offset) {
                            warn!(segment = %seg.log_path.display(), position = pos, error = %e,
                                "undecodable batch skipped while rebuilding deduplication state");
                        }
                    }
                    Err(e) => warn!(error = %e,
                        "damaged batch skipped while rebuilding deduplication state"),
                },
                Ok(Step::Damaged {
                    pos,
                    first_offset,
                    reason,
                    ..
                }) => {
                    warn!(segment = %seg.log_path.display(), position = pos, offset = first_offset, %reason,
                    "damaged bytes skipped while rebuilding deduplication state")
                }
                Err(e) => {
                    warn!(error = %e, "stopped rebuilding deduplication state for this segment");
                    break;
                }
            }
        }
    }
}
