//! Sender clocks are not trusted with the store: a record whose timestamp is more
//! than `ingest.max_clock_skew` away from the collector's clock (a device that
//! booted in 1970, a typo'd year) gets the time it arrived instead, and keeps the
//! time it was sent with in `fields.original_timestamp_ms`. Retention and segment
//! rolls go by append time anyway (see `tributary_store::batch`); this keeps
//! queries and time lookups meaningful.

use serde_json::{Map, Value};
use tributary_common::record::{self, BlockWriter, DecodeError, PayloadSummary};

/// The field that keeps a replaced timestamp (epoch milliseconds).
pub const ORIGINAL_TIMESTAMP_FIELD: &str = "original_timestamp_ms";

/// `payload` with every timestamp outside `now ± skew` replaced by `now`, and how
/// many were; `None` when all are inside (the common case: checked on the summary).
pub fn sanitize(
    payload: &[u8],
    summary: &PayloadSummary,
    now_ms: i64,
    skew_ms: i64,
) -> Result<Option<(Vec<u8>, PayloadSummary, u32)>, DecodeError> {
    let (lo, hi) = (
        now_ms.saturating_sub(skew_ms),
        now_ms.saturating_add(skew_ms),
    );
    if summary.min_timestamp_ms >= lo && summary.max_timestamp_ms <= hi {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(payload.len() + 64);
    let mut replaced = 0u32;
    for block in record::blocks(payload, false) {
        let block = block?;
        let h = block.header;
        let mut w = BlockWriter::begin_like(&mut out, &h);
        for r in block.records() {
            let r = r?;
            if (lo..=hi).contains(&r.timestamp_ms) {
                w.push(
                    &mut out,
                    r.flags,
                    r.timestamp_ms,
                    r.source_offset,
                    r.fields,
                    r.message,
                );
                continue;
            }
            replaced += 1;
            let fields = with_original(r.fields, r.timestamp_ms);
            w.push(
                &mut out,
                r.flags,
                now_ms,
                r.source_offset,
                &fields,
                r.message,
            );
        }
        w.finish(&mut out);
    }
    let summary = record::summarize(&out)?;
    Ok(Some((out, summary, replaced)))
}

/// The record's fields object with the original timestamp added.
fn with_original(fields: &[u8], ts: i64) -> Vec<u8> {
    let mut map: Map<String, Value> = if fields.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(fields) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    };
    map.insert(ORIGINAL_TIMESTAMP_FIELD.into(), Value::from(ts));
    serde_json::to_vec(&map).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(times: &[i64]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut b = BlockWriter::begin(&mut buf, "h", "syslog+udp://10.0.0.1", 0, b"");
        for (i, &t) in times.iter().enumerate() {
            let fields: &[u8] = if i == 0 {
                br#"{"severity":"err"}"#
            } else {
                b""
            };
            b.push(&mut buf, 0, t, 0, fields, format!("m{i}").as_bytes());
        }
        b.finish(&mut buf);
        buf
    }

    #[test]
    fn out_of_window_times_become_arrival_times_and_keep_the_original() {
        let now = 1_800_000_000_000;
        let day = 86_400_000;
        let p = payload(&[0, now - day, now + 400 * day]);
        let s = record::summarize(&p).unwrap();
        let (out, s2, n) = sanitize(&p, &s, now, 365 * day).unwrap().unwrap();
        assert_eq!(n, 2);
        assert_eq!(s2.records, 3);
        let recs: Vec<_> = record::blocks(&out, true)
            .flat_map(|b| b.unwrap().records().map(|r| r.unwrap()).collect::<Vec<_>>())
            .collect();
        assert_eq!(recs[0].timestamp_ms, now);
        let f: Value = serde_json::from_slice(recs[0].fields).unwrap();
        assert_eq!(
            f,
            serde_json::json!({"severity": "err", "original_timestamp_ms": 0})
        );
        assert_eq!(recs[1].timestamp_ms, now - day);
        assert!(recs[1].fields.is_empty());
        assert_eq!(recs[2].timestamp_ms, now);
        // Inside the window: untouched, no copy.
        let fine = payload(&[now, now - day]);
        let s = record::summarize(&fine).unwrap();
        assert!(sanitize(&fine, &s, now, 365 * day).unwrap().is_none());
    }
}
