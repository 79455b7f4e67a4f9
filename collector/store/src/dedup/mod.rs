//! Deduplication of file records: exactly-once storage across agent retries and
//! restarts.
//!
//! Every file record carries its source identity (`source_id`, never 0 for files)
//! and its byte offset in that source; offsets of one source only grow. A partition
//! keeps, per (host, source_id), the highest source offset it has stored, and an
//! append drops every record at or below it. The log is the truth for the table:
//! when the partition opens it is rebuilt from the log, so it is exactly as durable
//! as the records it describes (a record that did not survive a crash is not in the
//! table either, and its resend is accepted). To spare scanning every segment at
//! open, a roll writes the table as it stands at the end of the sealed segment to a
//! snapshot (`snapshot.rs`); open starts from the newest valid snapshot and scans
//! only the segments after it (`rebuild.rs`). Snapshots cover fsynced segments only,
//! so they never hold a record the log lost.
//!
//! Records with `source_id == 0` (syslog, which has no replayable source) are never
//! deduplicated. The sender is part of the key (compared in full) so that two hosts
//! with the same inode numbers and identical first lines (cloned images) stay apart:
//! its authenticated identity when the block carries one (mutual TLS), else the host
//! it claims ([`BlockHeader::dedup_key`](tributary_common::record::BlockHeader::dedup_key)).
//! So with mutual TLS no agent can raise another agent's marks, whatever host and
//! source id it claims.

mod rebuild;
mod snapshot;

use std::collections::HashMap;

use tributary_common::record::{self, BlockWriter, DecodeError, PayloadSummary};

pub(crate) use rebuild::load;
pub(crate) use snapshot::write as write_snapshot;

/// Highest stored source offset per (host, source): by source id, then host (one
/// host per id in practice; the host is compared in full, never by a hash).
///
/// Each entry also keeps the base offset of the last batch that held a record of
/// it, so that the entries of sources whose records retention deleted can be
/// [`prune`](Sources::prune)d: the table is then exactly what a scan of the
/// segments still stored would give (a source's offsets only grow, so its highest
/// offset is in its last batch), and it does not grow forever with rotated files.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    high: HashMap<u64, Vec<Seen>>,
}

/// One (host, source) entry.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub host: Box<str>,
    /// Highest source offset stored.
    pub high: u64,
    /// Base offset of the last batch holding a record of this source.
    pub batch: u64,
}

/// What an append keeps of a payload.
#[derive(Debug)]
pub(crate) enum Filtered {
    /// Nothing was stored before: append the payload as it is.
    All,
    /// Some records were already stored: append this rebuilt payload instead.
    Some {
        payload: Vec<u8>,
        summary: PayloadSummary,
        dropped: u32,
    },
    /// Every record was already stored.
    None { dropped: u32 },
}

impl Sources {
    /// Account for records that are in the log now, in the batch at `batch`.
    pub(crate) fn observe(&mut self, payload: &[u8], batch: u64) -> Result<(), DecodeError> {
        for block in record::blocks(payload, false) {
            let block = block?;
            if block.header.source_id == 0 {
                continue;
            }
            let mut last = None;
            for r in block.records() {
                last = Some(r?.source_offset);
            }
            if let Some(last) = last {
                self.raise(
                    block.header.source_id,
                    block.header.dedup_key(),
                    last,
                    batch,
                );
            }
        }
        Ok(())
    }

    /// Split `payload` into what is new and what is already stored, or already
    /// earlier in the same payload (two files of one source, a file and its rotated
    /// copy, can be read into one batch).
    pub(crate) fn filter(&self, payload: &[u8]) -> Result<Filtered, DecodeError> {
        // Fast path: no block overlaps what is stored or an earlier block.
        let mut overlap = false;
        let mut local: Vec<(&str, u64, u64)> = Vec::new();
        for block in record::blocks(payload, false) {
            let block = block?;
            let h = block.header;
            if h.source_id == 0 {
                continue;
            }
            let mut records = block.records();
            let Some(first) = records.next() else {
                continue;
            };
            let first = first?.source_offset;
            let mut last = first;
            for r in records {
                last = r?.source_offset;
            }
            let seen = local
                .iter_mut()
                .find(|(host, id, _)| *id == h.source_id && *host == h.dedup_key());
            if self
                .get(h.dedup_key(), h.source_id)
                .is_some_and(|high| first <= high)
                || seen.as_ref().is_some_and(|s| first <= s.2)
            {
                overlap = true;
                break;
            }
            match seen {
                Some(s) => s.2 = last,
                None => local.push((h.dedup_key(), h.source_id, last)),
            }
        }
        if !overlap {
            return Ok(Filtered::All);
        }
        local.clear();
        let mut out = Vec::with_capacity(payload.len());
        let mut summary = PayloadSummary::default();
        let mut dropped = 0u32;
        for block in record::blocks(payload, false) {
            let block = block?;
            let h = block.header;
            let stored = (h.source_id != 0)
                .then(|| self.get(h.dedup_key(), h.source_id))
                .flatten();
            let earlier = local
                .iter()
                .find(|(host, id, _)| *id == h.source_id && *host == h.dedup_key())
                .map(|s| s.2);
            let mut high = stored.max(earlier);
            let mut w = BlockWriter::begin_like(&mut out, &h);
            for r in block.records() {
                let r = r?;
                if high.is_some_and(|high| r.source_offset <= high) {
                    dropped += 1;
                    continue;
                }
                if h.source_id != 0 {
                    high = Some(r.source_offset);
                }
                summary.add(r.timestamp_ms, summary.records == 0);
                w.push(
                    &mut out,
                    r.flags,
                    r.timestamp_ms,
                    r.source_offset,
                    r.fields,
                    r.message,
                );
            }
            w.finish(&mut out);
            if let Some(high) = high.filter(|_| h.source_id != 0) {
                match local
                    .iter_mut()
                    .find(|(host, id, _)| *id == h.source_id && *host == h.dedup_key())
                {
                    Some(s) => s.2 = high,
                    None => local.push((h.dedup_key(), h.source_id, high)),
                }
            }
        }
        if summary.records == 0 {
            return Ok(Filtered::None { dropped });
        }
        summary.blocks = record::blocks(&out, false).count() as u32;
        Ok(Filtered::Some {
            payload: out,
            summary,
            dropped,
        })
    }

    fn get(&self, host: &str, source_id: u64) -> Option<u64> {
        self.high
            .get(&source_id)?
            .iter()
            .find(|s| &*s.host == host)
            .map(|s| s.high)
    }

    /// Number of (host, source) pairs tracked.
    pub(crate) fn len(&self) -> usize {
        self.high.values().map(Vec::len).sum()
    }

    /// Every entry with its source id, sorted.
    pub(crate) fn entries(&self) -> Vec<(u64, &Seen)> {
        let mut v: Vec<(u64, &Seen)> = self
            .high
            .iter()
            .flat_map(|(&id, hosts)| hosts.iter().map(move |s| (id, s)))
            .collect();
        v.sort_unstable_by(|a, b| (a.0, &a.1.host).cmp(&(b.0, &b.1.host)));
        v
    }

    /// Raise the entry of (host, source) to at least `high`, seen at `batch`.
    pub(crate) fn raise(&mut self, source_id: u64, host: &str, high: u64, batch: u64) {
        let hosts = self.high.entry(source_id).or_default();
        match hosts.iter_mut().find(|s| &*s.host == host) {
            Some(s) => {
                s.high = s.high.max(high);
                s.batch = s.batch.max(batch);
            }
            None => hosts.push(Seen {
                host: host.into(),
                high,
                batch,
            }),
        }
    }

    /// Forget the sources whose last batch is below `start` (deleted by retention).
    pub(crate) fn prune(&mut self, start: u64) {
        self.high.retain(|_, hosts| {
            hosts.retain(|s| s.batch >= start);
            !hosts.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(host: &str, source_id: u64, offsets: &[u64]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut b = BlockWriter::begin(&mut buf, host, "/f", source_id, b"");
        for &o in offsets {
            b.push(
                &mut buf,
                0,
                o as i64,
                o,
                b"",
                format!("line at {o}").as_bytes(),
            );
        }
        b.finish(&mut buf);
        buf
    }

    fn offsets(p: &[u8]) -> Vec<u64> {
        record::blocks(p, true)
            .flat_map(|b| {
                b.unwrap()
                    .records()
                    .map(|r| r.unwrap().source_offset)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn drops_what_is_stored_and_keeps_the_rest() {
        let mut s = Sources::default();
        let first = payload("h", 7, &[0, 10, 20]);
        assert!(matches!(s.filter(&first).unwrap(), Filtered::All));
        s.observe(&first, 0).unwrap();

        // An exact resend is dropped whole.
        assert!(matches!(
            s.filter(&first).unwrap(),
            Filtered::None { dropped: 3 }
        ));
        // A re-read that overlaps keeps only the new tail, re-encoded.
        match s.filter(&payload("h", 7, &[10, 20, 30, 40])).unwrap() {
            Filtered::Some {
                payload,
                summary,
                dropped,
            } => {
                assert_eq!(dropped, 2);
                assert_eq!(offsets(&payload), [30, 40]);
                assert_eq!(summary.records, 2);
                assert_eq!(
                    (summary.min_timestamp_ms, summary.max_timestamp_ms),
                    (30, 40)
                );
                assert_eq!(record::summarize(&payload).unwrap(), summary);
            }
            other => panic!("{other:?}"),
        }
        // Other sources, other hosts and syslog (source 0) are untouched.
        assert!(matches!(
            s.filter(&payload("h", 8, &[0])).unwrap(),
            Filtered::All
        ));
        assert!(matches!(
            s.filter(&payload("other", 7, &[0])).unwrap(),
            Filtered::All
        ));
        let syslog = payload("h", 0, &[0, 0]);
        s.observe(&syslog, 1).unwrap();
        assert!(matches!(s.filter(&syslog).unwrap(), Filtered::All));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn overlaps_inside_one_payload_are_dropped_too() {
        // A file and its rotated copy, read into one batch under one source.
        let s = Sources::default();
        let mut both = payload("h", 7, &[100, 200, 300]);
        both.extend(payload("h", 7, &[200, 300, 400]));
        both.extend(payload("h", 8, &[0]));
        match s.filter(&both).unwrap() {
            Filtered::Some {
                payload, dropped, ..
            } => {
                assert_eq!(dropped, 2);
                assert_eq!(offsets(&payload), [100, 200, 300, 400, 0]);
            }
            other => panic!("{other:?}"),
        }
        // Consecutive pieces of one file in one batch are not an overlap.
        let mut pieces = payload("h", 7, &[100, 200]);
        pieces.extend(payload("h", 7, &[300]));
        assert!(matches!(s.filter(&pieces).unwrap(), Filtered::All));
    }

    #[test]
    fn pruning_forgets_sources_whose_batches_are_gone() {
        let mut s = Sources::default();
        s.observe(&payload("h", 1, &[0, 5]), 0).unwrap();
        s.observe(&payload("h", 2, &[0]), 10).unwrap();
        s.observe(&payload("h", 1, &[9]), 20).unwrap();
        s.observe(&payload("g", 2, &[3]), 30).unwrap();
        s.prune(20);
        let left: Vec<_> = s
            .entries()
            .into_iter()
            .map(|(id, e)| (id, e.host.to_string(), e.high, e.batch))
            .collect();
        assert_eq!(left, [(1, "h".into(), 9, 20), (2, "g".into(), 3, 30)]);
        s.prune(31);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn mixed_blocks_keep_new_blocks_whole() {
        let mut s = Sources::default();
        s.observe(&payload("h", 1, &[0, 5]), 0).unwrap();
        let mut p = payload("h", 1, &[0, 5]);
        p.extend_from_slice(&payload("h", 2, &[0, 1]));
        match s.filter(&p).unwrap() {
            Filtered::Some {
                payload, dropped, ..
            } => {
                assert_eq!(dropped, 2);
                assert_eq!(offsets(&payload), [0, 1]);
                assert_eq!(
                    record::blocks(&payload, true).count(),
                    1,
                    "empty block removed"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
