//! Deduplication of file records: exactly-once storage across agent retries and
//! restarts.
//!
//! Every file record carries its source identity (`source_id`, never 0 for files)
//! and its byte offset in that source; offsets of one source only grow. A partition
//! keeps, per (host, source_id), the highest source offset it has stored, and an
//! append drops every record at or below it. The table is not a separate file: it
//! is rebuilt from the log itself when the partition opens, so it is exactly as
//! durable as the records it describes (a record that did not survive a crash is
//! not in the table either, and its resend is accepted).
//!
//! Records with `source_id == 0` (syslog, which has no replayable source) are never
//! deduplicated. The host is part of the key (compared in full) so that two hosts
//! with the same inode numbers and identical first lines (cloned images) stay apart.

use std::collections::HashMap;

use tributary_common::record::{self, BlockWriter, DecodeError, PayloadSummary};

/// Highest stored source offset per (host, source): by source id, then host (one
/// host per id in practice; the host is compared in full, never by a hash).
#[derive(Debug, Default)]
pub(crate) struct Sources {
    high: HashMap<u64, Vec<(Box<str>, u64)>>,
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
    /// Account for records that are in the log now.
    pub(crate) fn observe(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
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
                let hosts = self.high.entry(block.header.source_id).or_default();
                match hosts.iter_mut().find(|(h, _)| &**h == block.header.host) {
                    Some((_, high)) => *high = (*high).max(last),
                    None => hosts.push((block.header.host.into(), last)),
                }
            }
        }
        Ok(())
    }

    /// Split `payload` into what is new and what is already stored.
    pub(crate) fn filter(&self, payload: &[u8]) -> Result<Filtered, DecodeError> {
        // Fast path: no block overlaps what is stored.
        let mut overlap = false;
        for block in record::blocks(payload, false) {
            let block = block?;
            if block.header.source_id == 0 {
                continue;
            }
            if let Some(high) = self.get(block.header.host, block.header.source_id)
                && let Some(first) = block.records().next()
                && first?.source_offset <= high
            {
                overlap = true;
                break;
            }
        }
        if !overlap {
            return Ok(Filtered::All);
        }
        let mut out = Vec::with_capacity(payload.len());
        let mut summary = PayloadSummary::default();
        let mut dropped = 0u32;
        for block in record::blocks(payload, false) {
            let block = block?;
            let h = block.header;
            let high = (h.source_id != 0)
                .then(|| self.get(h.host, h.source_id))
                .flatten();
            let mut w = BlockWriter::begin(&mut out, h.host, h.source, h.source_id, h.fields);
            for r in block.records() {
                let r = r?;
                if high.is_some_and(|high| r.source_offset <= high) {
                    dropped += 1;
                    continue;
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
            .find(|(h, _)| &**h == host)
            .map(|(_, high)| *high)
    }

    /// Number of (host, source) pairs tracked.
    pub(crate) fn len(&self) -> usize {
        self.high.values().map(Vec::len).sum()
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
        s.observe(&first).unwrap();

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
        s.observe(&syslog).unwrap();
        assert!(matches!(s.filter(&syslog).unwrap(), Filtered::All));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn mixed_blocks_keep_new_blocks_whole() {
        let mut s = Sources::default();
        s.observe(&payload("h", 1, &[0, 5])).unwrap();
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
